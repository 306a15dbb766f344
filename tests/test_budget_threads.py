"""Eight threads routing and reporting against a tight budget never overspend it."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from orxaq_grpc.application.outcomes import Outcomes
from orxaq_grpc.config.model import Config
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.routing.router import BudgetExhausted, Router
from orxaq_grpc.routing.types import RouteRequest, Task
from orxaq_grpc.store import SqliteStore
from tests.conftest import report_success

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
                # the provider charged what was estimated
                report_success(outcomes, decision, decision.estimated_cost_usd)

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
