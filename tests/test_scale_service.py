"""Scale over gRPC: invalid economics are INVALID_ARGUMENT with the field named and leave nothing
behind; every decision is durable in the log before it is answered; the CLI speaks it too."""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.client import CallFailed, RoutingClient
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.scale.journal import from_payload
from orxaq_grpc.scale.types import ScaleAction, ScaleDecision
from tests.conftest import CLI, CONFIG_DIR, LoopbackServer, ServerProcess, set_toml


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackServer]:
    running = LoopbackServer(LiveRouter.from_directory(CONFIG_DIR), tmp_path_factory.mktemp("data"))
    yield running
    running.stop()


@pytest.fixture
def client(server: LoopbackServer) -> Iterator[RoutingClient]:
    with RoutingClient(server.address) as c:
        yield c


def daily(usd: float, days: int = 7) -> pb.Flows:
    return pb.Flows(daily=pb.DailyFlow(usd_per_day=usd, horizon_days=days))


def request(**fields: object) -> pb.ScaleRequest:
    values: dict[str, object] = {
        "lane": "codex",
        "current_parallel_agents": 2,
        "requested_parallel_agents": 3,
        "current_subagents_per_agent": 1,
        "requested_subagents_per_agent": 1,
        "value": daily(100.0),
        "cost": daily(40.0),
    }
    values.update(fields)
    return pb.ScaleRequest(**values)


def test_a_scale_decision_is_answered_once_it_is_in_the_log(
    client: RoutingClient, server: LoopbackServer
) -> None:
    decision = client.scale(request(request_id="sup-42"))
    assert decision.action == pb.SCALE_ACTION_SCALE_UP
    assert decision.marginal_npv_usd == pytest.approx(419.5615982892242, rel=1e-12)  # r = 0.10, 7 days
    assert decision.discount_rate == pytest.approx(0.10)
    assert decision.min_npv_threshold_usd == 5.0
    assert decision.config_version
    logged = server.outcomes.store.journal("scale", 1)[0]  # read back from the file
    stored = from_payload(ScaleDecision, logged.payload)
    assert stored.decision_id == decision.decision_id and stored.request_id == "sup-42"
    assert stored.action == ScaleAction.SCALE_UP and stored.rationale == decision.rationale
    assert client.health().guardrails.scale_decisions[0].decision_id == decision.decision_id


def test_a_request_rate_overrides_the_policy_rate(client: RoutingClient) -> None:
    once = pb.Flows(once=pb.CashFlow(usd=1100.0, day=365.0))
    decision = client.scale(request(value=once, cost=pb.Flows(once=pb.CashFlow(usd=0.0)), discount_rate=0.0))
    assert decision.discounted_value_usd == 1100.0
    decision = client.scale(request(value=once, cost=pb.Flows(once=pb.CashFlow(usd=0.0)), discount_rate=0.10))
    assert decision.discounted_value_usd == pytest.approx(1000.0)


def test_a_group_takes_its_lanes(client: RoutingClient) -> None:
    decision = client.scale(request(lane="", group="hosted"))
    assert list(decision.lanes) == ["codex", "gemini", "claude"]
    assert decision.action == pb.SCALE_ACTION_SCALE_UP


def test_route_explains_the_strong_or_weak_choice(client: RoutingClient) -> None:
    task = pb.Task(title="fix the parser", input_tokens=5000, output_tokens=1000, value_usd=200.0)
    decision = client.route(pb.RouteRequest(lane="codex", task=task))
    assert decision.strategy == pb.STRATEGY_STRONG_OR_WEAK
    c = decision.strong_or_weak
    assert c.value_usd == 200.0 and c.strong_model and c.weak_model
    assert decision.model == (c.strong_model if c.chose_strong else c.weak_model)
    assert "Task value $200.00" in decision.rationale


NAN = math.nan


@pytest.mark.parametrize(
    ("fields", "violation"),
    [
        ({"value": daily(NAN)}, "value.daily.usd_per_day"),
        ({"cost": pb.Flows(once=pb.CashFlow(usd=math.inf))}, "cost.once.usd"),
        ({"value": daily(10.0, days=-7)}, "value.daily.horizon_days"),
        ({"value": daily(10.0, days=0)}, "value.daily.horizon_days"),
        ({"value": daily(10.0, days=3651)}, "value.daily.horizon_days"),
        ({"value": pb.Flows(once=pb.CashFlow(usd=5.0, day=-1.0))}, "value.once.day"),
        ({"value": pb.Flows(once=pb.CashFlow(usd=5.0, day=3650.5))}, "value.once.day"),
        ({"value": pb.Flows(schedule=pb.CashFlowSchedule())}, "value.schedule.flows"),
        (
            {
                "cost": pb.Flows(
                    schedule=pb.CashFlowSchedule(flows=[pb.CashFlow(day=1), pb.CashFlow(day=NAN)])
                )
            },
            "cost.schedule.flows[1].day",
        ),
        ({"discount_rate": -1.0}, "discount_rate"),
        ({"discount_rate": -2.5}, "discount_rate"),
        ({"discount_rate": NAN}, "discount_rate"),
        ({"uncertainty": pb.Uncertainty(penalty_usd=-1.0)}, "uncertainty.penalty_usd"),
        (
            {
                "uncertainty": pb.Uncertainty(
                    confidence=pb.ConfidenceForm(uncertainty_ratio=0.5, confidence=1.5)
                )
            },
            "uncertainty.confidence.confidence",
        ),
        ({"value": None}, "value"),
        ({"lane": "", "group": ""}, "lane"),
        ({"group": "hosted"}, "lane"),
        ({"lane": "nope"}, "lane"),
        ({"lane": "", "group": "nope"}, "group"),
        ({"requested_parallel_agents": -1}, "requested_parallel_agents"),
        # finite inputs, but (1 + r)^(day / 365) with r near -1 over ten years explodes the NPV
        (
            {"value": pb.Flows(once=pb.CashFlow(usd=1.0, day=3650.0)), "discount_rate": -0.99},
            "discount_rate",
        ),
    ],
)
def test_invalid_economics_are_refused_and_log_nothing(
    client: RoutingClient, server: LoopbackServer, fields: dict[str, object], violation: str
) -> None:
    before = len(server.outcomes.store.journal("scale", 1000))
    with pytest.raises(CallFailed) as caught:
        client.scale(request(**fields))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert violation in [field for field, _ in caught.value.violations]
    server.outcomes.store.flush()
    assert len(server.outcomes.store.journal("scale", 1000)) == before


def test_stop_loss_notes_are_bounded(client: RoutingClient) -> None:
    with pytest.raises(CallFailed) as caught:
        client.set_stop_loss(True, "x" * 5000)
    assert caught.value.violations[0][0] == "note"
    assert not client.health().guardrails.stop_loss_active


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, check=check)


def test_cli_scale_and_stop_loss(serve: type[ServerProcess]) -> None:
    server = serve()
    server.wait_until_serving()
    address = ["--address", server.address]
    text = run(
        "scale",
        *address,
        "--lane",
        "codex",
        "--agents",
        "2",
        "--to",
        "3",
        "--value-daily",
        "100",
        "--cost-daily",
        "40",
        "--horizon",
        "7",
    ).stdout
    assert re.match(r"decision\s+scale_up codex \(codex\)$", text, re.MULTILINE)
    assert re.search(r"^marginal NPV\s+\$419\.56 = value \$699\.27 - cost \$279\.71", text, re.MULTILINE)

    held = json.loads(
        run(
            "scale",
            *address,
            "--group",
            "hosted",
            "--agents",
            "2",
            "--to",
            "3",
            "--value-flow",
            "0:10",
            "--value-flow",
            "30:4.99",
            "--cost-once",
            "10@0",
            "--json",
        ).stdout
    )
    assert held["action"] == "SCALE_ACTION_HOLD"
    assert {b["block"] for b in held["blocking"]} >= {"SCALE_BLOCK_NPV_BELOW_THRESHOLD"}

    bad = run(
        "scale",
        *address,
        "--lane",
        "codex",
        "--agents",
        "1",
        "--to",
        "2",
        "--value-daily",
        "5",
        "--horizon",
        "-3",
        "--cost-once",
        "1",
        check=False,
    )
    assert bad.returncode == 2 and "value.daily.horizon_days" in bad.stderr

    entered = run("stop-loss", *address, "--enter", "--note", "drill").stdout
    assert entered.startswith("STOP-LOSS since") and "drill" in entered
    routed = run("route", *address, "--lane", "codex", "--title", "x").stdout
    assert "stop_loss_static" in routed
    assert run("stop-loss", *address, "--exit").stdout.startswith("stop-loss off")


def test_calibration_is_summed_only_once_a_valued_route_asks(tmp_path: Path, config_dir: Path) -> None:
    set_toml(config_dir / "policy.toml", "learning", "mode", '"off"')  # acceptance decides only without it
    server = LoopbackServer(LiveRouter.from_directory(config_dir), tmp_path / "data")
    try:
        guardrails = server.outcomes.guardrails
        with RoutingClient(server.address) as client:
            plain = client.route(pb.RouteRequest(lane="codex", task=pb.Task(title="fix it")))
            client.report(
                pb.ReportRequest(
                    decision_id=plain.decision_id,
                    lane="codex",
                    provider=plain.provider,
                    model=plain.model,
                    outcome=pb.OUTCOME_SUCCESS,
                    validation_passed=True,
                )
            )
            guardrails.check()
            assert guardrails._calibration == {}  # nobody asked: nothing summed
            client.route(pb.RouteRequest(lane="codex", task=pb.Task(title="fix it", value_usd=10.0)))
            guardrails.check()
            assert guardrails.pass_rates()[plain.model] == (1, 1)
    finally:
        server.stop()
