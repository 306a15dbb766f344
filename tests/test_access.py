"""Who may call what, over TLS and mutual TLS with real certificates: every role boundary, the
answers that name what was missing, token rotation by reload, and the transport's own refusals."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.client import CallFailed, Connection, RoutingClient
from orxaq_grpc.config.model import token_digest
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.service.tls import ServerTls
from tests.certificates import Certificates, make_certificates
from tests.conftest import CLI, CONFIG_DIR, LoopbackServer, ServerProcess, set_toml
from tests.test_reports import report_for
from tests.test_scale_service import request as scale_request

CODEX_TOKEN = "codex-token-0123456789abcdef"
CLAUDE_TOKEN = "claude-token-0123456789abcdef"
OPERATOR_TOKEN = "operator-token-0123456789abcdef"
OPERATOR_ENV = "ORXAQ_TEST_OPERATOR_TOKEN"


def credentials_toml(claude_file: str = "claude.token") -> str:
    return f"""
[[access.credentials]]
name = "codex-runner"
role = "lane"
lane = "codex"
sha256 = "{token_digest(CODEX_TOKEN).hex()}"

[[access.credentials]]
name = "claude-runner"
role = "lane"
lane = "claude"
token_file = "{claude_file}"

[[access.credentials]]
name = "supervisor"
role = "operator"
token_env = "{OPERATOR_ENV}"
"""


def guarded_config(directory: Path) -> Path:
    directory.mkdir(parents=True)
    for source in CONFIG_DIR.glob("*.toml"):
        (directory / source.name).write_bytes(source.read_bytes())
    (directory / "claude.token").write_text(CLAUDE_TOKEN + "\n")
    policy = directory / "policy.toml"
    policy.write_text(policy.read_text() + credentials_toml())
    return directory


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture(scope="module", params=["tls", "mtls"])
def served(
    request: pytest.FixtureRequest, certificates: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LoopbackServer, LiveRouter, Path, bool]]:
    mutual = request.param == "mtls"
    patch = pytest.MonkeyPatch()
    patch.setenv(OPERATOR_ENV, OPERATOR_TOKEN)
    root = tmp_path_factory.mktemp(request.param)
    config = guarded_config(root / "config")
    live = LiveRouter.from_directory(config)
    tls = ServerTls(certificates.server.cert, certificates.server.key, certificates.ca if mutual else None)
    server = LoopbackServer(live, root / "data", tls=tls)
    yield server, live, config, mutual
    server.stop()
    patch.undo()


def connect(
    served: tuple[LoopbackServer, LiveRouter, Path, bool], certificates: Certificates, token: str | None
) -> RoutingClient:
    server, _, _, mutual = served
    client = certificates.client
    return RoutingClient(
        Connection(
            server.address,
            ca=certificates.ca.read_bytes(),
            cert=client.cert.read_bytes() if mutual else None,
            key=client.key.read_bytes() if mutual else None,
            token=token,
        )
    )


def refusal(call: object) -> tuple[grpc.StatusCode, error_details_pb2.ErrorInfo, str]:
    """Calls `call()` expecting a refusal; its code, ErrorInfo and message."""
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    error = caught.value
    assert isinstance(error, grpc.Call)
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return error.code(), info, error.details() or ""


def stub(served: tuple[LoopbackServer, LiveRouter, Path, bool], certificates: Certificates) -> grpc.Channel:
    server, _, _, mutual = served
    credentials = grpc.ssl_channel_credentials(
        certificates.ca.read_bytes(),
        certificates.client.key.read_bytes() if mutual else None,
        certificates.client.cert.read_bytes() if mutual else None,
    )
    return grpc.secure_channel(server.address, credentials)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def route_codex() -> pb.RouteRequest:
    return pb.RouteRequest(lane="codex", task=pb.Task(kind="fix", title="Fix the flaky test"))


def test_a_call_without_a_token_is_unauthenticated_and_says_what_it_needs(
    served: tuple[LoopbackServer, LiveRouter, Path, bool], certificates: Certificates
) -> None:
    with stub(served, certificates) as channel:
        route = channel.unary_unary(
            "/orxaq.routing.v1.RoutingService/Route",
            request_serializer=pb.RouteRequest.SerializeToString,
            response_deserializer=pb.RouteDecision.FromString,
        )
        code, info, message = refusal(lambda: route(route_codex(), timeout=10))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert info.reason == "CREDENTIALS_MISSING"
        assert info.metadata["requires"] == "a lane or operator token"
        assert "authorization: Bearer" in message
        code, info, _ = refusal(lambda: route(route_codex(), timeout=10, metadata=bearer("not-a-real-token")))
        assert (code, info.reason) == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIALS_UNKNOWN")


def test_a_lane_token_routes_and_reports_for_its_own_lane_only(
    served: tuple[LoopbackServer, LiveRouter, Path, bool], certificates: Certificates
) -> None:
    with (
        connect(served, certificates, CODEX_TOKEN) as codex,
        connect(served, certificates, CLAUDE_TOKEN) as claude,
    ):
        decision = codex.route(route_codex())
        assert decision.lane == "codex" and decision.model
        with pytest.raises(CallFailed) as other_lane:
            codex.route(pb.RouteRequest(lane="claude", task=pb.Task(title="x")))
        assert other_lane.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert "'codex-runner' speaks for lane 'codex', not 'claude'" in other_lane.value.details
        spend_before = codex.economics().windows[0].overall.spend_usd
        # claude's token, claude's lane in the report, codex's decision: refused, and nothing booked.
        with pytest.raises(CallFailed) as foreign:
            claude.report(report_for(decision, lane="claude", cost_usd=25.0))
        assert foreign.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert "was routed on lane 'codex'" in foreign.value.details
        # claude's token naming codex's lane: the lane is not its own.
        with pytest.raises(CallFailed) as posing:
            claude.report(report_for(decision))
        assert posing.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert codex.economics().windows[0].overall.spend_usd == spend_before
        ack = codex.report(report_for(decision))
        assert ack.decision_known and not ack.duplicate


def test_scale_and_stop_loss_need_an_operator_token(
    served: tuple[LoopbackServer, LiveRouter, Path, bool], certificates: Certificates
) -> None:
    with (
        connect(served, certificates, CODEX_TOKEN) as lane,
        connect(served, certificates, OPERATOR_TOKEN) as operator,
    ):
        for call in (lambda: lane.scale(scale_request()), lambda: lane.set_stop_loss(True, "lane says so")):
            with pytest.raises(CallFailed) as denied:
                call()
            assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
            assert "needs an operator token" in denied.value.details
        assert not lane.health().guardrails.stop_loss_active
        assert operator.scale(scale_request(request_id="op-1")).action
        entered = operator.set_stop_loss(True, "operator drill")
        assert entered.changed and entered.guardrails.stop_loss_active
        assert operator.set_stop_loss(False, "drill over").changed
        # An operator may route for any lane (a supervisor's dry run, say).
        assert operator.route(pb.RouteRequest(lane="claude", task=pb.Task(title="x"))).lane == "claude"


def test_reads_are_open_by_policy_and_guarded_after_a_reload(
    served: tuple[LoopbackServer, LiveRouter, Path, bool], certificates: Certificates
) -> None:
    _, live, config, _ = served
    with stub(served, certificates) as channel, connect(served, certificates, None) as anonymous:
        assert anonymous.health().config_version
        assert anonymous.economics().windows
        check = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[no-untyped-call]
        assert (
            check(health_pb2.HealthCheckRequest(), timeout=10).status
            == health_pb2.HealthCheckResponse.SERVING
        )
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo  # type: ignore[no-untyped-call]

        def services(metadata: tuple[tuple[str, str], ...] = ()) -> list[str]:
            ask = reflection_pb2.ServerReflectionRequest(list_services="")
            (answer,) = reflect(iter([ask]), timeout=10, metadata=metadata)
            return [s.name for s in answer.list_services_response.service]

        assert "orxaq.routing.v1.RoutingService" in services()
        set_toml(config / "policy.toml", "access", "reads", '"token"')
        try:
            assert live.reload()
            for call in (anonymous.health, anonymous.economics):
                with pytest.raises(CallFailed) as refused:
                    call()
                assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
            code, info, _ = refusal(lambda: check(health_pb2.HealthCheckRequest(), timeout=10))
            assert (code, info.reason, info.metadata["requires"]) == (
                grpc.StatusCode.UNAUTHENTICATED,
                "CREDENTIALS_MISSING",
                "a token",
            )
            with pytest.raises(grpc.RpcError) as unlisted:  # reflection is a read too
                services()
            assert unlisted.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
            assert "orxaq.routing.v1.RoutingService" in services(bearer(CODEX_TOKEN))
            with connect(served, certificates, CLAUDE_TOKEN) as claude:
                assert claude.health().config_version  # any valid token reads
        finally:
            set_toml(config / "policy.toml", "access", "reads", '"open"')
            assert live.reload()


def test_a_token_is_rotated_by_reload_without_a_restart(
    served: tuple[LoopbackServer, LiveRouter, Path, bool], certificates: Certificates
) -> None:
    _, live, config, _ = served
    rotated = "claude-token-rotated-0123456789"
    (config / "claude.token").write_text(rotated)
    try:
        assert live.reload()
        claude_route = pb.RouteRequest(lane="claude", task=pb.Task(title="x"))
        with (
            connect(served, certificates, CLAUDE_TOKEN) as old,
            connect(served, certificates, rotated) as new,
        ):
            with pytest.raises(CallFailed) as stale:
                old.route(claude_route)
            assert stale.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert new.route(claude_route).lane == "claude"
    finally:
        (config / "claude.token").write_text(CLAUDE_TOKEN)
        assert live.reload()


def test_a_reload_that_cannot_read_a_token_keeps_the_last_good_credentials(
    served: tuple[LoopbackServer, LiveRouter, Path, bool], certificates: Certificates
) -> None:
    _, live, config, _ = served
    (config / "claude.token").unlink()
    try:
        assert not live.reload()
        with connect(served, certificates, CLAUDE_TOKEN) as claude:
            assert claude.route(pb.RouteRequest(lane="claude", task=pb.Task(title="x"))).lane == "claude"
    finally:
        (config / "claude.token").write_text(CLAUDE_TOKEN)


def test_the_transport_refuses_clients_that_do_not_prove_themselves(
    served: tuple[LoopbackServer, LiveRouter, Path, bool], certificates: Certificates
) -> None:
    server, _, _, mutual = served
    with grpc.insecure_channel(server.address) as plaintext:  # a plaintext client to a TLS port
        with pytest.raises(grpc.RpcError) as caught:
            plaintext.unary_unary("/orxaq.routing.v1.RoutingService/Health")(b"", timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    if not mutual:
        return
    no_certificate = grpc.ssl_channel_credentials(certificates.ca.read_bytes())
    stranger = grpc.ssl_channel_credentials(
        certificates.ca.read_bytes(),
        certificates.stranger.key.read_bytes(),
        certificates.stranger.cert.read_bytes(),
    )
    for credentials in (no_certificate, stranger):
        with (
            grpc.secure_channel(server.address, credentials) as channel,
            pytest.raises(grpc.RpcError) as caught,
        ):
            channel.unary_unary("/orxaq.routing.v1.RoutingService/Health")(b"", timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_serve_will_not_listen_beyond_loopback_unprotected_unless_told(
    serve: type[ServerProcess], tmp_path: Path
) -> None:
    refused = serve("--config", str(CONFIG_DIR), "--address", "0.0.0.0:0")
    code, log = refused.finish()
    assert code == 2
    assert "0.0.0.0:0 is not a loopback address" in log
    assert "no TLS (--tls-cert, --tls-key) and no credentials" in log and "--insecure" in log
    told = serve("--config", str(CONFIG_DIR), "--address", "0.0.0.0:0", "--insecure")
    port = int(told.wait_for_log(r"serving \S+ on 0\.0\.0\.0:(\d+)").group(1))
    assert "access: plaintext, no credentials: every call is open" in "".join(told.log)
    with RoutingClient(f"127.0.0.1:{port}") as client:
        assert client.health().config_version


def test_the_cli_calls_a_mutual_tls_service_with_its_lane_token(
    serve: type[ServerProcess], certificates: Certificates, tmp_path: Path
) -> None:
    config = guarded_config(tmp_path / "config")
    server = serve(
        "--config",
        str(config),
        "--address",
        "0.0.0.0:0",  # beyond loopback: allowed, with TLS and credentials
        "--tls-cert",
        str(certificates.server.cert),
        "--tls-key",
        str(certificates.server.key),
        "--tls-client-ca",
        str(certificates.ca),
        env={OPERATOR_ENV: OPERATOR_TOKEN},
    )
    port = int(server.wait_for_log(r"serving \S+ on 0\.0\.0\.0:(\d+)").group(1))
    assert "access: mutual TLS, 3 credentials, reads open" in "".join(server.log)
    token_file = tmp_path / "codex.token"
    token_file.write_text(CODEX_TOKEN)
    flags = [
        "--address",
        f"127.0.0.1:{port}",
        "--tls-ca",
        str(certificates.ca),
        "--tls-cert",
        str(certificates.client.cert),
        "--tls-key",
        str(certificates.client.key),
    ]
    routed = cli(
        "route",
        "--lane",
        "codex",
        "--title",
        "Fix the flaky test",
        "--json",
        *flags,
        "--token-file",
        str(token_file),
    )
    assert routed.returncode == 0, routed.stderr
    assert '"lane": "codex"' in routed.stdout
    denied = cli("stop-loss", "--enter", *flags, "--token-file", str(token_file))
    assert denied.returncode == 1
    assert "PERMISSION_DENIED" in denied.stderr and "needs an operator token" in denied.stderr
    entered = cli("stop-loss", "--enter", "--note", "drill", *flags, env={"ORXAQ_TOKEN": OPERATOR_TOKEN})
    assert entered.returncode == 0, entered.stderr
    anonymous = cli("route", "--lane", "codex", "--title", "x", *flags)
    assert anonymous.returncode == 1 and "UNAUTHENTICATED" in anonymous.stderr
    missing = cli("health", *flags, "--token-file", str(tmp_path / "nowhere"))
    assert (
        missing.returncode == 2 and f"--token-file {tmp_path / 'nowhere'}: cannot be read" in missing.stderr
    )


def test_token_makes_a_token_and_the_entry_that_admits_it(tmp_path: Path) -> None:
    made = cli("token", "codex-runner", "--lane", "codex", "--write", str(tmp_path / "codex.token"))
    assert made.returncode == 0, made.stderr
    token = (tmp_path / "codex.token").read_text().strip()
    assert len(token) >= 40 and (tmp_path / "codex.token").stat().st_mode & 0o777 == 0o600
    assert made.stdout.splitlines() == [
        "[[access.credentials]]",
        'name = "codex-runner"',
        'role = "lane"',
        'lane = "codex"',
        f'sha256 = "{token_digest(token).hex()}"',
    ]
    again = cli("token", "codex-runner", "--lane", "codex", "--write", str(tmp_path / "codex.token"))
    assert again.returncode == 1 and "cannot write" in again.stderr  # never overwrites a token


@pytest.mark.parametrize(
    ("entry", "field", "problem"),
    [
        ('name = "x"\nrole = "lane"\nlane = "codex"', "access.credentials[0]", "exactly one of sha256"),
        (
            'name = "x"\nrole = "lane"\nlane = "nowhere"\nsha256 = "' + "a" * 64 + '"',
            "access.credentials[0].lane",
            "not in lanes.toml",
        ),
        (
            'name = "x"\nrole = "lane"\nsha256 = "' + "a" * 64 + '"',
            "access.credentials[0].lane",
            "names its lane",
        ),
        (
            'name = "x"\nrole = "operator"\nsha256 = "ABC"',
            "access.credentials[0].sha256",
            "64 lower-case hex",
        ),
        (
            'name = "x"\nrole = "operator"\ntoken_file = "missing.token"',
            "access.credentials[0].token_file",
            "cannot be read",
        ),
        (
            'name = "x"\nrole = "operator"\ntoken_env = "ORXAQ_TEST_UNSET_TOKEN"',
            "access.credentials[0].token_env",
            "holds 0 characters",
        ),
    ],
)
def test_a_bad_credential_is_refused_with_its_path_field_and_problem(
    config_dir: Path, entry: str, field: str, problem: str
) -> None:
    policy = config_dir / "policy.toml"
    policy.write_text(policy.read_text() + "\n[[access.credentials]]\n" + entry + "\n")
    checked = cli("check-config", str(config_dir))
    assert checked.returncode != 0
    line = next(line for line in checked.stderr.splitlines() + checked.stdout.splitlines() if field in line)
    assert str(policy) in line and problem in line


def test_clients_will_not_send_a_token_in_plaintext_beyond_loopback(tmp_path: Path) -> None:
    token_file = tmp_path / "codex.token"
    token_file.write_text(CODEX_TOKEN)
    remote = cli("health", "--address", "10.1.2.3:50051", "--token-file", str(token_file))
    assert remote.returncode == 2
    assert "the bearer token would cross the network in plaintext to 10.1.2.3:50051" in remote.stderr
    with pytest.raises(ValueError, match="plaintext"):
        Connection("routing.example.com:443", token=CODEX_TOKEN)
    assert Connection("localhost:50051", token=CODEX_TOKEN).metadata() == (
        ("authorization", f"Bearer {CODEX_TOKEN}"),
    )
    assert Connection("routing.example.com:443", tls=True, token=CODEX_TOKEN).secure


@pytest.mark.parametrize(
    ("value", "refused"), [("1", False), ("0", False), ("false", False), ("maybe", True)]
)
def test_orxaq_tls_is_a_flag_read_as_one(value: str, refused: bool) -> None:
    run = cli("health", "--address", "127.0.0.1:1", "--timeout", "0.5", env={"ORXAQ_TLS": value})
    if refused:
        assert run.returncode != 0 and "ORXAQ_TLS='maybe' is neither" in run.stderr
    else:  # nothing listens there: the call fails, the flag was read
        assert run.returncode == 1 and "UNAVAILABLE" in run.stderr


def test_token_refuses_a_name_the_config_would_refuse(tmp_path: Path) -> None:
    bad = cli("token", 'x" \nrole = "operator', "--operator", "--print")
    assert bad.returncode == 2 and "lower-case letters" in bad.stderr and not bad.stdout


def test_open_reads_are_answered_whatever_token_comes_with_them(
    served: tuple[LoopbackServer, LiveRouter, Path, bool], certificates: Certificates
) -> None:
    with connect(served, certificates, "a-stale-token-0123456789") as stale:
        assert stale.health().config_version
        with pytest.raises(CallFailed) as refused:
            stale.route(route_codex())
        assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_unusable_renewed_certificates_are_said_once_and_the_old_ones_served(
    certificates: Certificates, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(certificates.server.cert.read_bytes())
    key.write_bytes(certificates.server.key.read_bytes())
    server = LoopbackServer(
        LiveRouter.from_directory(CONFIG_DIR), tmp_path / "data", tls=ServerTls(cert, key)
    )
    try:
        key.write_text("half-written")
        with caplog.at_level(logging.WARNING, logger="orxaq_grpc.service.tls"):
            for _ in range(5):  # a new connection each: each handshake looks at the files
                connection = Connection(server.address, ca=certificates.ca.read_bytes())
                with RoutingClient(connection) as client:
                    assert client.health().config_version
        warnings = [r.getMessage() for r in caplog.records if "cannot be used yet" in r.getMessage()]
        assert len(warnings) == 1 and "is not PEM" in warnings[0]
    finally:
        server.stop()
