"""Eight threads routing and reporting against a tight budget never overspend it."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from orxaq_grpc.config.model import Config
from orxaq_grpc.outcomes.records import Outcome, ReportInput
from orxaq_grpc.outcomes.tracker import Outcomes
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.routing.router import BudgetExhausted, Router
from orxaq_grpc.routing.types import RouteRequest, Task
from orxaq_grpc.store import SqliteStore

LIMIT_USD = 0.5


def test_eight_threads_never_exceed_the_budget_by_more_than_one_estimate(
    shipped_config: Config, kernel: type, tmp_path: Path
) -> None:
    budgets = dataclasses.replace(shipped_config.policy.budgets, daily_usd=LIMIT_USD, on_exhausted="error")
    config = dataclasses.replace(
        shipped_config, policy=dataclasses.replace(shipped_config.policy, budgets=budgets)
    )
    live = LiveRouter(Router(config, kernel=kernel))
    estimates: list[float] = []
    with SqliteStore(tmp_path, retention_days=1) as store:
        outcomes = Outcomes(live, store)

        def lane_worker(n: int) -> None:
            for i in range(400):
                task = Task(
                    title="Review the payment flow", input_tokens=2_000 + 100 * n, output_tokens=500 + i
                )
                try:
                    decision = live.current.route(RouteRequest(lane="claude", task=task), guards=outcomes)
                except BudgetExhausted:
                    return
                outcomes.record_decision(decision)
                estimates.append(decision.estimated_cost_usd)
                record = outcomes.prepare_report(
                    ReportInput(
                        decision_id=decision.decision_id,
                        lane=decision.lane,
                        provider=decision.provider,
                        model=decision.model,
                        input_tokens=decision.input_tokens,
                        output_tokens=decision.output_tokens,
                        latency_s=1.0,
                        outcome=Outcome.SUCCESS,
                        retry_after_s=0.0,
                        validation_passed=True,
                        first_time_pass=True,
                        cost_usd=decision.estimated_cost_usd,  # the provider charged what was estimated
                    )
                )
                if outcomes.write_report(record).result(timeout=30):
                    outcomes.apply_report(record)

        threads = [threading.Thread(target=lane_worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(t.is_alive() for t in threads)

    overall = next(b for b in outcomes.budgets.views() if b.scope == "overall")
    spent = outcomes.book.breakdown(0).overall.counters.spend_usd
    assert len(estimates) > 20  # the budget really was contended
    assert overall.reserved_usd == 0.0  # every reservation was settled
    assert spent == pytest.approx(overall.spent_usd)
    assert spent <= LIMIT_USD + max(estimates)
    assert spent <= LIMIT_USD + 1e-9  # reports matched estimates, so not even one over
