"""The dashboard against a real Prometheus: the service serves /metrics (OTEL_METRICS_EXPORTER=
prometheus), a Prometheus on loopback scrapes it every second, and every PromQL query of
config/dashboards/grafana-routing.json returns at least one series. Also: the exporter's variables,
read and refused by name, and `serve` saying where it serves /metrics."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.client import RoutingClient
from orxaq_grpc.config.load import load_config
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.routing.router import Router
from orxaq_grpc.scoring import CatalogKernel
from orxaq_grpc.telemetry.export import TelemetryConfigError, TelemetrySettings, configure
from tests.conftest import LoopbackServer, ServerProcess, set_toml
from tests.test_dashboard import expressions, referenced_series
from tests.test_reports import report_for
from tests.test_scale_service import request as scale_request

PROMETHEUS = shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="no prometheus binary (Debian package prometheus; .ci/run installs it)"
)
# Grafana's range variables, as a panel over the last minute would have them.
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__range": "1m", "__interval": "1s"}
SCRAPE_INTERVAL_S = 1
DEADLINE_S = 25.0  # for Prometheus to start and for each wait; the run takes a few seconds
ROUTE = pb.RouteRequest(
    lane="codex", task=pb.Task(id="t-1", title="Add a retry to the upload worker", input_tokens=9_000)
)
SERVING_METRICS = r"metrics: prometheus http://127\.0\.0\.1:(\d+)/metrics"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def wait_for(what: str, attempt: Callable[[], Any], deadline_s: float = DEADLINE_S) -> Any:
    """Calls `attempt` until it returns something true; fails naming `what` and its last answer."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = attempt()
        if result or time.monotonic() > deadline:
            assert result, f"{what}: not within {deadline_s:.0f} s (last: {result!r})"
            return result
        time.sleep(0.2)


def promql(expr: str) -> str:
    """A dashboard query as Grafana sends it: its variables replaced (a template variable by `.*`,
    which suits the `=~` matchers it would stand in)."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: GRAFANA_VARIABLES.get(m.group(1), ".*"), expr)


class Prometheus:
    """A Prometheus on a free loopback port scraping `target`, its config and data in `workdir`."""

    def __init__(self, binary: str, target: str, workdir: Path) -> None:
        workdir.mkdir()
        config = workdir / "prometheus.yml"
        config.write_text(
            f"global:\n  scrape_interval: {SCRAPE_INTERVAL_S}s\n  scrape_timeout: {SCRAPE_INTERVAL_S}s\n"
            f"scrape_configs:\n  - job_name: orxaq-grpc\n    static_configs:\n"
            f"      - targets: [{json.dumps(target)}]\n"
        )
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = workdir / "prometheus.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address={self.url.removeprefix('http://')}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_for("Prometheus ready", self._ready)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.process.returncode}:\n{self.log.read_text()}")
        try:
            return "Ready" in http_get(f"{self.url}/-/ready")
        except (urllib.error.URLError, ConnectionError):
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            answer = json.loads(http_get(url))
        except urllib.error.HTTPError as exc:  # a query Prometheus cannot parse: 400 with the error
            raise AssertionError(f"{expr}: {exc.read().decode()}") from None
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def target_health(self) -> list[str]:
        targets = json.loads(http_get(f"{self.url}/api/v1/targets"))["data"]["activeTargets"]
        return [f"{t['scrapeUrl']}: {t['health']} {t['lastError']}".strip() for t in targets]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class FailsWhenArmed(CatalogKernel):  # type: ignore[misc, valid-type]
    """The kernel, failing the scores asked for while `armed`: a router error on demand."""

    armed: ClassVar[bool] = False

    def score(self, *args: object, **kwargs: object) -> int:
        if FailsWhenArmed.armed:
            raise MemoryError("simulated kernel failure")
        return int(super().score(*args, **kwargs))


@pytest.fixture
def scraped(tmp_path: Path, config_dir: Path) -> Iterator[tuple[LoopbackServer, Prometheus]]:
    """The service with a daily budget, serving /metrics on a free port, and a Prometheus scraping it."""
    assert PROMETHEUS is not None
    set_toml(config_dir / "policy.toml", "budgets", "daily_usd", "50.0")
    telemetry = configure(
        {
            "OTEL_METRICS_EXPORTER": "prometheus",
            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": "0",
        }
    )
    target = telemetry.settings.metrics.endpoint
    router = LiveRouter(Router(load_config(config_dir), kernel=FailsWhenArmed))
    server = LoopbackServer(router, tmp_path / "data", telemetry)
    try:
        prometheus = Prometheus(PROMETHEUS, target, tmp_path / "prometheus")
    except BaseException:
        server.stop()
        raise
    yield server, prometheus
    prometheus.stop()
    server.stop()


@needs_prometheus
def test_every_dashboard_query_returns_series_from_a_real_prometheus(
    scraped: tuple[LoopbackServer, Prometheus],
) -> None:
    server, prometheus = scraped
    with RoutingClient(server.address) as client:
        decisions = [client.route(ROUTE) for _ in range(3)]
        client.report(report_for(decisions[0]))
        client.report(report_for(decisions[1], outcome=pb.OUTCOME_RATE_LIMITED))
        client.report(report_for(decisions[2], outcome=pb.OUTCOME_SERVER_ERROR))
        FailsWhenArmed.armed = True
        try:  # a router error, so a disruptive fallback too
            fallen_back = client.route(ROUTE)
        finally:
            FailsWhenArmed.armed = False
        client.scale(scale_request())
    assert fallen_back.fallback_reason == pb.FALLBACK_REASON_ROUTER_ERROR

    # Every series the dashboard names, first: `or vector(0)` must not hide one that is missing.
    def series_missing() -> list[str]:
        return [name for name in sorted(referenced_series()) if not prometheus.query(f"count({name})")]

    # Then every query; a rate needs two scrapes after the traffic, so each may take a second or two.
    def queries_empty() -> list[str]:
        return [expr for expr in expressions() if not prometheus.query(promql(expr))]

    for what, missing in (("series", series_missing), ("queries", queries_empty)):
        deadline = time.monotonic() + DEADLINE_S
        while (empty := missing()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not empty, (
            f"{what} with no result after {DEADLINE_S:.0f} s: {empty}; targets: {prometheus.target_health()}"
        )

    # What the panels show is the service's own figures, labelled as the dashboard expects.
    used = prometheus.query('orxaq_budget_used{orxaq_scope="overall"}')
    assert [r["metric"]["job"] for r in used] == ["orxaq-grpc"]
    assert 0 < float(used[0]["value"][1]) < 1
    routed = prometheus.query('sum(orxaq_route_decisions_total{orxaq_lane="codex"})')
    assert float(routed[0]["value"][1]) == 4
    errors = prometheus.query("sum by (orxaq_error_stage) (orxaq_router_errors_total)")
    assert [(r["metric"], float(r["value"][1])) for r in errors] == [({"orxaq_error_stage": "scoring"}, 1)]


@pytest.mark.parametrize(
    ("env", "metrics"),
    [
        ({"OTEL_METRICS_EXPORTER": "prometheus"}, "prometheus http://localhost:9464/metrics"),
        (
            {
                "OTEL_METRICS_EXPORTER": "prometheus",
                "OTEL_EXPORTER_PROMETHEUS_HOST": "0.0.0.0",
                "OTEL_EXPORTER_PROMETHEUS_PORT": "9100",
            },
            "prometheus http://0.0.0.0:9100/metrics",
        ),
        (
            {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_HOST": "::1"},
            "prometheus http://[::1]:9464/metrics",
        ),
        (  # read only for the prometheus exporter
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_PROMETHEUS_PORT": "x"},
            "otlp http/protobuf http://c:4318",
        ),
        ({"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_SDK_DISABLED": "true"}, "none"),
    ],
)
def test_the_exporter_follows_the_standard_variables(env: dict[str, str], metrics: str) -> None:
    assert TelemetrySettings.from_env(env).metrics.describe() == metrics


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"OTEL_TRACES_EXPORTER": "prometheus"}, "OTEL_TRACES_EXPORTER"),  # metrics only
        ({"OTEL_EXPORTER_PROMETHEUS_PORT": "http"}, "OTEL_EXPORTER_PROMETHEUS_PORT"),
        ({"OTEL_EXPORTER_PROMETHEUS_PORT": "65536"}, "OTEL_EXPORTER_PROMETHEUS_PORT"),
        ({"OTEL_EXPORTER_PROMETHEUS_PORT": "-1"}, "OTEL_EXPORTER_PROMETHEUS_PORT"),
    ],
)
def test_a_variable_it_cannot_honour_is_refused_by_name(env: dict[str, str], variable: str) -> None:
    with pytest.raises(TelemetryConfigError, match=variable):
        TelemetrySettings.from_env({"OTEL_METRICS_EXPORTER": "prometheus", **env})


def test_an_address_it_cannot_bind_is_refused_by_name() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        env = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1"}
        with pytest.raises(TelemetryConfigError, match=r"OTEL_EXPORTER_PROMETHEUS_PORT.*in use"):
            configure({**env, "OTEL_EXPORTER_PROMETHEUS_PORT": port})
    with pytest.raises(TelemetryConfigError, match="OTEL_EXPORTER_PROMETHEUS_HOST"):
        configure({**env, "OTEL_EXPORTER_PROMETHEUS_HOST": "no-such-host.invalid"})


def test_stopping_releases_the_port() -> None:
    env = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1"}
    first = configure({**env, "OTEL_EXPORTER_PROMETHEUS_PORT": "0"})
    port = first.settings.metrics.endpoint.rpartition(":")[2]
    assert "process_cpu_seconds_total" in http_get(f"http://127.0.0.1:{port}/metrics")
    first.shutdown()
    again = configure({**env, "OTEL_EXPORTER_PROMETHEUS_PORT": port})
    again.shutdown()


def test_serve_says_where_it_serves_metrics(serve: type[ServerProcess]) -> None:
    env = {
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": "0",
    }
    server = serve(env=env)
    port = server.wait_for_log(SERVING_METRICS).group(1)
    server.wait_until_serving()
    with RoutingClient(server.address) as client:
        client.route(ROUTE)
    exposition = http_get(f"http://127.0.0.1:{port}/metrics")
    assert re.search(r'^orxaq_route_decisions_total\{.*orxaq_lane="codex".*\} 1\.0$', exposition, re.M)


def test_serve_refuses_a_port_it_cannot_honour(serve: type[ServerProcess]) -> None:
    server = serve(env={"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": "metrics"})
    code, log = server.finish()
    assert code == 2
    assert "OTEL_EXPORTER_PROMETHEUS_PORT" in log and "'metrics'" in log
