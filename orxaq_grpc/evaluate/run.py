"""`orxaq-grpc evaluate`: the success model on held-out per-prompt outcomes.

A seeded split; each training prompt becomes, per model, a logged decision (with the task features
Route would capture) and a report of that model's outcome, written to a ledger in a temporary
directory; the ledger follower learns them exactly as it learns the service's reports. Each test
prompt is then scored as Route scores a strong-or-weak choice: the strong model's win probability
0.5 + (p_strong - p_weak) / 2, ranked into RouteLLM's curve.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from orxaq_grpc.application.learning import Learner
from orxaq_grpc.config.model import Config
from orxaq_grpc.evaluate.curve import Curve, oracle, random_routing, ranked
from orxaq_grpc.evaluate.outcomes_file import PromptOutcomes
from orxaq_grpc.learning import TaskFeatures, Vector, task_features
from orxaq_grpc.outcomes.records import DecisionRecord, Outcome, ReportRecord
from orxaq_grpc.routing.types import Strategy
from orxaq_grpc.store import SqliteStore

LANE = "evaluate"
OBJECTIVE = "balanced"
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True, slots=True)
class Evaluation:
    strong: str
    weak: str
    train: int
    test: int
    strong_accuracy: float  # on the test part
    weak_accuracy: float
    curves: tuple[Curve, ...]  # the learned router, then the references


def features_of(prompt: PromptOutcomes, config: Config) -> TaskFeatures:
    """What Route captures for this prompt as a task on the evaluation lane."""
    policy = config.policy
    chars = len(prompt.title) + len(prompt.prompt)
    return task_features(
        title=prompt.title,
        prompt=prompt.prompt,
        kind=prompt.kind,
        labels=prompt.labels,
        lane=LANE,
        objective=OBJECTIVE,
        input_tokens=max(1, round(chars / policy.chars_per_token)),
        output_tokens=policy.default_output_tokens,
        max_text_chars=policy.learning.max_text_chars,
    )


def split(
    prompts: Sequence[PromptOutcomes], train_share: float, seed: int
) -> tuple[list[PromptOutcomes], ...]:
    shuffled = list(prompts)
    random.Random(seed).shuffle(shuffled)
    cut = max(1, min(len(shuffled) - 1, round(len(shuffled) * train_share)))
    return shuffled[:cut], shuffled[cut:]


def pick_pair(train: Sequence[PromptOutcomes]) -> tuple[str, str]:
    """The most and the least accurate model on the training part (names break ties)."""
    models = sorted(train[0].outcomes)
    accuracy = {m: sum(p.outcomes[m] for p in train) / len(train) for m in models}
    ordered = sorted(models, key=lambda m: (-accuracy[m], m))
    return ordered[0], ordered[-1]


def learn(
    learner: Learner, store: SqliteStore, train: Sequence[PromptOutcomes], config: Config, progress: Progress
) -> None:
    """Logs a decision and a report per training prompt and model, then lets the learner read them."""
    at = time.time() - 3600.0  # settled: the follower learns only reports a little in the past
    total = len(train)
    for done, prompt in enumerate(train, start=1):
        task = features_of(prompt, config)
        for model, passed in sorted(prompt.outcomes.items()):
            decision_id = f"{prompt.line}:{model}"
            store.record_decision(decision_record(decision_id, at, model, task))
            store.record_report(report_record(decision_id, at, model, passed))
        if done % 500 == 0 or done == total:
            store.flush()
            learner.catch_up()
            progress("learning", done, total)


def evaluate(
    prompts: Sequence[PromptOutcomes],
    config: Config,
    *,
    train_share: float = 0.5,
    seed: int = 0,
    pair: tuple[str, str] | None = None,
    progress: Progress = lambda stage, done, total: None,
) -> Evaluation:
    train, test = split(prompts, train_share, seed)
    strong, weak = pair or pick_pair(train)
    with (
        tempfile.TemporaryDirectory(prefix="orxaq-evaluate-") as directory,
        SqliteStore(Path(directory), retention_days=1) as store,
    ):
        learner = Learner(store, config, path=None)
        learn(learner, store, train, config, progress)
    model = learner.model
    wins: list[float] = []
    for done, prompt in enumerate(test, start=1):
        vector = Vector.of(features_of(prompt, config), model.dim)
        gain = model.predict(strong, vector).p - model.predict(weak, vector).p
        wins.append(0.5 + gain / 2)
        if done % 500 == 0 or done == len(test):
            progress("routing", done, len(test))
    strong_outcomes = [p.outcomes[strong] for p in test]
    weak_outcomes = [p.outcomes[weak] for p in test]
    length = [float(len(p.title) + len(p.prompt)) for p in test]
    return Evaluation(
        strong=strong,
        weak=weak,
        train=len(train),
        test=len(test),
        strong_accuracy=sum(strong_outcomes) / len(test),
        weak_accuracy=sum(weak_outcomes) / len(test),
        curves=(
            ranked("learned", wins, strong_outcomes, weak_outcomes, seed),
            random_routing(strong_outcomes, weak_outcomes),
            ranked("prompt length", length, strong_outcomes, weak_outcomes, seed),
            oracle(strong_outcomes, weak_outcomes),
        ),
    )


def decision_record(decision_id: str, at: float, model: str, task: TaskFeatures) -> DecisionRecord:
    return DecisionRecord(
        decision_id=decision_id,
        at=at,
        lane=LANE,
        provider="",
        model=model,
        strategy=int(Strategy.STRONG_OR_WEAK),
        fallback_reason=0,
        disruptive=False,
        router_error=False,
        estimated_input_tokens=0,
        estimated_output_tokens=0,
        estimated_cost_usd=0.0,
        task=task,
    )


def report_record(decision_id: str, at: float, model: str, passed: bool) -> ReportRecord:
    return ReportRecord(
        decision_id=decision_id,
        at=at,
        lane=LANE,
        provider="",
        model=model,
        input_tokens=0,
        output_tokens=0,
        latency_s=0.0,
        outcome=Outcome.SUCCESS if passed else Outcome.BAD_OUTPUT,
        retry_after_s=0.0,
        validation_passed=passed,
        first_time_pass=passed,
        cost_usd=0.0,
        cost_exact=False,
        decision_known=True,
    )
