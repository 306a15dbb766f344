"""Three `orxaq-grpc serve` replicas behind gRPC's own round_robin, sharing a ledger and a real Redis,
behave as one service: one budget, reports known wherever they land, a rate limit blocking its model
everywhere, and the same Economics and Health on every replica."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq.routing.v1 import routing_pb2_grpc
from orxaq_grpc.client import RoutingClient
from tests.conftest import ServerProcess, set_toml
from tests.redis_server import RedisServer, eventually

LIMIT_USD = 0.75


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def replicas(
    serve: type[ServerProcess], config_dir: Path, redis_server: RedisServer, tmp_path: Path
) -> list[ServerProcess]:
    set_toml(config_dir / "policy.toml", "budgets", "daily_usd", str(LIMIT_USD))
    set_toml(config_dir / "policy.toml", "budgets", "on_exhausted", '"error"')
    started = [
        serve(
            "--config",
            str(config_dir),
            "--data-dir",
            str(tmp_path / "shared-ledger"),
            "--shared",
            redis_server.url,
        )
        for _ in range(3)
    ]
    for replica in started:
        replica.wait_until_serving()
    return started


def stub(address: str, round_robin: bool = False) -> routing_pb2_grpc.RoutingServiceStub:
    options = [("grpc.lb_policy_name", "round_robin")] if round_robin else []
    channel = grpc.insecure_channel(address, options=options)
    return routing_pb2_grpc.RoutingServiceStub(channel)  # type: ignore[no-untyped-call]


def report_for(decision: pb.RouteDecision, **fields: object) -> pb.ReportRequest:
    values: dict[str, object] = {
        "decision_id": decision.decision_id,
        "lane": decision.lane,
        "provider": decision.provider,
        "model": decision.model,
        "input_tokens": 2_000,
        "output_tokens": 600,
        "latency_s": 8.0,
        "outcome": pb.OUTCOME_SUCCESS,
        "validation_passed": True,
        "first_time_pass": True,
        "cost_usd": decision.estimated_cost_usd,
    }
    values.update(fields)
    return pb.ReportRequest(**values)  # type: ignore[arg-type]


def today(replica: routing_pb2_grpc.RoutingServiceStub) -> pb.Figures:
    windows = replica.Economics(pb.EconomicsRequest(), timeout=10).windows
    return next(w for w in windows if w.window == "today").overall


def test_three_replicas_behind_round_robin_behave_as_one(replicas: list[ServerProcess]) -> None:
    targets = [stub(r.address) for r in replicas]
    pids = {t.Health(pb.HealthRequest(), timeout=10).pid for t in targets}
    assert len(pids) == 3
    for health in (t.Health(pb.HealthRequest(), timeout=10) for t in targets):
        assert health.shared.connected and health.shared.location.startswith("redis://127.0.0.1:")
    eventually(lambda: all(t.Health(pb.HealthRequest(), timeout=10).shared.replicas == 3 for t in targets))

    balanced = stub("ipv4:" + ",".join(r.address for r in replicas), round_robin=True)
    answered_by = {balanced.Health(pb.HealthRequest(), timeout=10).pid for _ in range(9)}
    assert answered_by == pids  # round_robin reaches every replica

    # A budget race through the balancer: reports land on whichever replica comes next.
    estimates: list[float] = []
    refused = threading.Event()

    def lane(n: int) -> None:
        for i in range(200):
            task = pb.Task(
                title="Review the payment flow", input_tokens=2_000, output_tokens=500 + 13 * i + n
            )
            try:
                decision = balanced.Route(pb.RouteRequest(lane="claude", task=task), timeout=10)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                refused.set()
                return
            estimates.append(decision.estimated_cost_usd)
            ack = balanced.Report(report_for(decision), timeout=10)
            assert ack.decision_known  # whichever replica it reached knew the decision

    threads = [threading.Thread(target=lane, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert refused.is_set() and len(estimates) > 10

    def agreed() -> bool:
        figures = [today(t) for t in targets]
        return all(
            (f.decisions, f.reports, round(f.spend_usd, 9))
            == (figures[0].decisions, figures[0].reports, round(figures[0].spend_usd, 9))
            for f in figures
        )

    eventually(agreed)
    figures = today(targets[0])
    assert figures.reports == len(estimates)
    assert figures.spend_usd == pytest.approx(sum(estimates))
    assert figures.spend_usd <= LIMIT_USD + 1e-9  # the provider charged the estimates: no overspend at all
    budgets = [
        next(b for b in t.Health(pb.HealthRequest(), timeout=10).budgets if b.scope == "overall")
        for t in targets
    ]
    assert {round(b.spent_usd, 9) for b in budgets} == {round(figures.spend_usd, 9)}
    assert all(b.reserved_usd == pytest.approx(0.0, abs=1e-9) for b in budgets)

    # A rate limit reported to the first replica blocks its model on the others.
    decision = targets[1].Route(
        pb.RouteRequest(lane="codex", task=pb.Task(title="Port the scheduler")), timeout=10
    )
    targets[0].Report(
        report_for(
            decision,
            outcome=pb.OUTCOME_RATE_LIMITED,
            retry_after_s=300.0,
            validation_passed=False,
            cost_usd=0.0,
        ),
        timeout=10,
    )

    def blocked_on(target: routing_pb2_grpc.RoutingServiceStub) -> bool:
        breakers = target.Health(pb.HealthRequest(), timeout=10).breakers
        return any(b.name == decision.model and b.state == "open" for b in breakers)

    delay = eventually(lambda: blocked_on(targets[2]))
    print(
        f"a rate limit reported to one replica blocked {decision.model} on another "
        f"after {delay * 1000:.0f} ms"
    )
    assert blocked_on(targets[1])


def test_workers_with_a_budget_share_it_through_redis(
    serve: type[ServerProcess], config_dir: Path, redis_server: RedisServer
) -> None:
    set_toml(config_dir / "policy.toml", "budgets", "daily_usd", "5.0")
    alone = serve("--config", str(config_dir), "--workers", "2")
    code, log = alone.finish()
    assert code == 1 and "budgets need a single worker, or --shared" in log

    server = serve("--config", str(config_dir), "--workers", "2", "--shared", redis_server.url)
    server.wait_until_serving()
    server.wait_for_log(rf"RoutingService on 127\.0\.0\.1:{server.port}")  # the second worker, too
    with RoutingClient(server.address) as client:
        decision = client.route(pb.RouteRequest(lane="claude", task=pb.Task(title="Port the scheduler")))
    seen: dict[int, float] = {}
    for _ in range(50):  # the kernel spreads new connections over the workers; each answers one budget
        with RoutingClient(server.address) as client:
            health = client.health()
        seen[health.pid] = next(b for b in health.budgets if b.scope == "overall").reserved_usd
        if len(seen) == 2:
            break
    assert len(seen) == 2
    assert all(reserved == pytest.approx(decision.estimated_cost_usd) for reserved in seen.values())
