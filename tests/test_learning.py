"""The success model: what it learns, that it is deterministic and durable, and how decisions use it."""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.application.learning import FILE_NAME, SETTLE_S, Learner
from orxaq_grpc.client import RoutingClient
from orxaq_grpc.config.load import load_config
from orxaq_grpc.config.model import Config, LearningSettings
from orxaq_grpc.evaluate.curve import curve, oracle, random_routing
from orxaq_grpc.evaluate.outcomes_file import PromptOutcomes
from orxaq_grpc.evaluate.run import evaluate
from orxaq_grpc.learning import ModelShape, SuccessModel, TaskFeatures, Vector, task_features
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.routing.router import Router
from orxaq_grpc.routing.types import RouteRequest, Task
from orxaq_grpc.routing.validation import router_problem
from tests.conftest import CLI, CONFIG_DIR, REPO, LoopbackServer, config_with, lane, model, set_toml
from tests.test_router import FixedGuards

SHAPE = ModelShape(feature_bits=14, prior_sd=1.0, noise_sd=1.0)
# The planted structure: the weak model passes easy kinds and fails hard ones; the strong one passes both.
EASY, HARD = ("docs", "tests", "rename"), ("architecture", "concurrency", "security")
WORDS = {
    "docs": "readme docstring typo changelog",
    "tests": "fixture assert mock coverage",
    "rename": "rename identifier alias symbol",
    "architecture": "boundary layering interface schema",
    "concurrency": "deadlock mutex thread atomic",
    "security": "injection sanitize token certificate",
}


def features(kind: str, rng: random.Random, lane_id: str = "test") -> TaskFeatures:
    words = " ".join(rng.sample(WORDS[kind].split(), 2))
    return task_features(
        title=f"{words} change",
        prompt=f"please make the {words} change in the module",
        kind=kind,
        labels=(),
        lane=lane_id,
        objective="balanced",
        input_tokens=10_000,
        output_tokens=2_000,
        max_text_chars=2000,
    )


def planted(n: int, seed: int) -> list[tuple[str, TaskFeatures, bool, bool]]:
    """(kind, features, strong passed, weak passed), mostly as planted, with some noise."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        kind = rng.choice(EASY + HARD)
        weak = rng.random() < (0.95 if kind in EASY else 0.05)
        strong = rng.random() < 0.95
        out.append((kind, features(kind, rng), strong, weak))
    return out


def trained(n: int = 600, seed: int = 1, priors: dict[str, float] | None = None) -> SuccessModel:
    success = SuccessModel(SHAPE, priors or {"strong": 0.9, "weak": 0.6})
    for _, task, strong, weak in planted(n, seed):
        vector = Vector.of(task, success.dim)
        success.learn("strong", vector, strong)
        success.learn("weak", vector, weak)
    return success


def test_an_untrained_model_predicts_exactly_its_prior() -> None:
    success = SuccessModel(SHAPE, {"strong": 0.9, "weak": 0.6})
    vector = Vector.of(features("docs", random.Random(0)), success.dim)
    assert success.predict("strong", vector).p == pytest.approx(0.9, abs=1e-12)
    assert success.predict("weak", vector).p == pytest.approx(0.6, abs=1e-12)
    assert success.predict("unknown", vector).p == pytest.approx(0.5, abs=1e-12)
    assert success.predict("weak", vector).certainty == 0.0


def test_the_learner_recovers_the_planted_structure() -> None:
    success = trained()
    rng = random.Random(99)  # prompts it has not seen
    for kind in EASY:
        said = success.predict("weak", Vector.of(features(kind, rng), success.dim))
        assert said.p > 0.8, kind
        assert said.certainty > 0.5
    for kind in HARD:
        said = success.predict("weak", Vector.of(features(kind, rng), success.dim))
        assert said.p < 0.2, kind
    assert success.outcomes() == {
        "strong": (pytest.approx(570, abs=30), 600),
        "weak": success.outcomes()["weak"],
    }


def test_held_out_routing_beats_random_and_nears_the_oracle() -> None:
    """The same figures `evaluate` prints, from a model that learned half of a planted set."""
    success = trained(800, seed=2)
    test = planted(800, seed=3)
    wins = []
    for _, task, _, _ in test:
        vector = Vector.of(task, success.dim)
        wins.append(success.predict("strong", vector).p - success.predict("weak", vector).p)
    strong = [s for _, _, s, _ in test]
    weak = [w for _, _, _, w in test]
    learned = curve("learned", sorted(range(len(wins)), key=lambda i: -wins[i]), strong, weak)
    assert random_routing(strong, weak).apgr == pytest.approx(0.5)
    assert learned.apgr > 0.7
    assert learned.apgr > oracle(strong, weak).apgr - 0.15
    assert learned.cpt(0.5) < 0.3


def test_the_same_outcomes_in_the_same_order_give_the_same_model(tmp_path: Path) -> None:
    one, two = trained(300, seed=5), trained(300, seed=5)
    one.save(tmp_path / "one.zip")
    two.save(tmp_path / "two.zip")
    a, b = (
        SuccessModel.load(tmp_path / "one.zip", SHAPE, {}),
        SuccessModel.load(tmp_path / "two.zip", SHAPE, {}),
    )
    assert a is not None and b is not None
    assert a._weights["weak"][0] == b._weights["weak"][0]
    assert a._weights["weak"][1] == b._weights["weak"][1]
    other = trained(300, seed=6)
    assert other._weights["weak"][0] != one._weights["weak"][0]


def test_a_saved_model_with_another_shape_is_not_loaded(tmp_path: Path) -> None:
    trained(50).save(tmp_path / "m.zip")
    assert SuccessModel.load(tmp_path / "m.zip", dataclasses.replace(SHAPE, feature_bits=15), {}) is None
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"junk\.zip"):
        SuccessModel.load(tmp_path / "junk.zip", SHAPE, {})


def test_task_features_survive_the_ledger_encoding() -> None:
    task = features("security", random.Random(4))
    assert task.encode()[:1] == b"\x03" and TaskFeatures.decode(task.encode()) == task  # short: plain
    assert task.encode()[1:] == "\x00".join((task.text, *task.tags)).encode()
    long = TaskFeatures("é ✓ " + "flaky upload retry " * 120, task.tags)
    assert long.encode()[:1] == b"\x02" and TaskFeatures.decode(long.encode()) == long  # compressed
    assert len(long.encode()) < len(long.text.encode()) // 2
    for odd in (TaskFeatures("", ()), TaskFeatures("é ✓", ("", "x"))):
        assert odd.encode()[:1] == b"\x03" and TaskFeatures.decode(odd.encode()) == odd  # empty fields too
    long_with_nul = TaskFeatures(long.text + "\x00", ("kind=bugfix",))
    for with_nul in (TaskFeatures("a\x00b", ("c",)), TaskFeatures("é ✓", ("x\x00",)), long_with_nul):
        assert with_nul.encode()[:1] == b"\x01"  # a NUL, however short or long, keeps the JSON encoding
        assert TaskFeatures.decode(with_nul.encode()) == with_nul
    old = b"\x01" + zlib.compress(json.dumps([task.text, list(task.tags)]).encode(), 1)
    assert TaskFeatures.decode(old) == task  # as ledgers written before encoding 2 hold it
    joined = b"\x02" + zlib.compress("\x00".join((task.text, *task.tags)).encode(), 1)
    assert TaskFeatures.decode(joined) == task  # as ledgers written before encoding 3 hold short ones
    for junk in (b"\x09junk", b"", b"\x03\xff"):
        with pytest.raises(ValueError):
            TaskFeatures.decode(junk)


# -- decisions ---------------------------------------------------------------------


@pytest.fixture
def config(shipped_config: Config) -> Config:
    models = [
        model("strong", quality=90.0, input_usd_per_mtok=10.0, output_usd_per_mtok=50.0),
        model("weak", quality=60.0, input_usd_per_mtok=0.1, output_usd_per_mtok=0.4),
    ]
    base = config_with(shipped_config, models, [lane("test", ("strong", "weak"), static_fallback="weak")])
    return with_learning(base, mode="apply", explore_share=0.0)


def with_learning(config: Config, **fields: object) -> Config:
    learning = dataclasses.replace(config.policy.learning, **fields)  # type: ignore[arg-type]
    return dataclasses.replace(config, policy=dataclasses.replace(config.policy, learning=learning))


def request(kind: str, value_usd: float | None = 1.0, router: str = "", seed: int = 7) -> RouteRequest:
    task = features(kind, random.Random(seed))
    title, _, prompt = task.text.partition("\n")
    return RouteRequest(
        lane="test",
        task=Task(
            title=title,
            prompt=prompt,
            kind=kind,
            input_tokens=10_000,
            output_tokens=2_000,
            value_usd=value_usd,
        ),
        router=router,
    )


MakeRouter = Callable[[Config], Router]


def test_apply_sends_hard_kinds_strong_and_easy_kinds_weak(config: Config, make_router: MakeRouter) -> None:
    """With catalog quality alone, a $1 task goes the same way whatever its kind; learned, by kind."""
    guards = FixedGuards(success=trained())
    untrained = FixedGuards(success=SuccessModel(SHAPE, {"strong": 0.9, "weak": 0.6}))
    router = make_router(config)
    static = {router.route(request(kind), untrained).model for kind in EASY + HARD}
    assert len(static) == 1
    for kind in EASY:
        decision = router.route(request(kind), guards)
        assert decision.model == "weak", decision.rationale
        assert decision.strong_or_weak is not None and decision.strong_or_weak.learned
    for kind in HARD:
        decision = router.route(request(kind), guards)
        assert decision.model == "strong", decision.rationale
    assert "success model, 600 outcomes" in decision.rationale
    assert decision.learning == "apply" and "Success model: apply." in decision.rationale


def test_shadow_changes_no_decision_and_says_what_it_would_do(
    config: Config, make_router: MakeRouter
) -> None:
    guards = FixedGuards(success=trained())
    off = make_router(with_learning(config, mode="off"))
    shadow = make_router(with_learning(config, mode="shadow"))
    apply = make_router(config)
    differ = 0
    for kind in EASY + HARD:
        for seed in range(3):
            expected = off.route(request(kind, seed=seed), guards)
            shadowed = shadow.route(request(kind, seed=seed), guards)
            assert shadowed.model == expected.model
            assert shadowed.strong_or_weak is not None and not shadowed.strong_or_weak.learned
            assert "Shadow: the success model would choose" in shadowed.rationale
            assert "Success model: shadow." in shadowed.rationale
            differ += apply.route(request(kind, seed=seed), guards).model != expected.model
    assert differ > 0  # shadow held back decisions that apply would have changed


def test_a_named_router_decides_by_win_probability(config: Config, make_router: MakeRouter) -> None:
    guards = FixedGuards(success=trained())
    router = make_router(config)
    always = router.route(request("docs", value_usd=None, router="router-learned-0"), guards)
    never = router.route(request("architecture", value_usd=None, router="router-learned-1"), guards)
    assert always.model == "strong" and always.strong_or_weak is not None
    assert always.strong_or_weak.router == "router-learned-0"
    assert never.model == "weak"
    hard = router.route(request("architecture", value_usd=None, router="router-learned-0.6"), guards)
    easy = router.route(request("docs", value_usd=None, router="router-learned-0.6"), guards)
    assert (hard.model, easy.model) == ("strong", "weak")
    assert hard.strong_or_weak is not None and hard.strong_or_weak.win_probability >= 0.6
    assert "router-learned-0.6" in hard.rationale and "win probability" in hard.rationale
    off = make_router(with_learning(config, mode="off"))
    ignored = off.route(request("docs", value_usd=None, router="router-learned-0"), guards)
    assert ignored.strong_or_weak is None and "router-learned-0 not used" in ignored.rationale


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("router-learned-0.55", None),
        ("router-mf-0.1", "unknown router 'mf'"),
        ("router-learned-x", "threshold 'x' is not a number"),
        ("router-learned-1.5", "must be at most 1"),
        ("learned-0.5", "is not router-<name>-<threshold>"),
        ("router-learned-", "is not router-<name>-<threshold>"),
    ],
)
def test_router_names_are_validated(name: str, problem: str | None) -> None:
    found = router_problem(name)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_exploration_is_bounded_by_share_cost_and_critical_lanes(
    config: Config, make_router: MakeRouter
) -> None:
    guards = FixedGuards(success=trained())
    everything = make_router(with_learning(config, explore_share=0.5, explore_max_usd=10.0))
    explored = [everything.route(request(kind, seed=s), guards) for kind in EASY + HARD for s in range(20)]
    share = sum(d.strong_or_weak is not None and d.strong_or_weak.exploring for d in explored) / len(explored)
    assert 0.3 < share < 0.7
    assert all(
        "Exploring: took" in d.rationale for d in explored if d.strong_or_weak and d.strong_or_weak.exploring
    )
    capped = make_router(with_learning(config, explore_share=0.5, explore_max_usd=0.0))
    for kind in EASY:  # the rule says weak; exploring to strong would cost more than the cap
        for s in range(20):
            assert capped.route(request(kind, seed=s), guards).model == "weak"
    critical = dataclasses.replace(config.lanes["test"], critical=True)
    guarded = make_router(
        dataclasses.replace(
            with_learning(config, explore_share=0.5, explore_max_usd=10.0), lanes={"test": critical}
        )
    )
    for kind in HARD:  # the rule says strong; a critical lane never explores downwards
        for s in range(20):
            assert guarded.route(request(kind, seed=s), guards).model == "strong"


def test_quality_from_the_model_reorders_the_scored_path(config: Config, make_router: MakeRouter) -> None:
    guards = FixedGuards(success=trained())
    catalog_quality = make_router(with_learning(config, quality_from_model=False))
    predicted = make_router(with_learning(config, quality_from_model=True))
    plain = request("docs", value_usd=None)
    before = catalog_quality.route(plain, guards)
    after = predicted.route(plain, guards)
    assert "predicted pass chance as the quality sub-score" in after.rationale
    assert after.score != before.score


# -- the ledger path, restarts, Health, calibrate and evaluate --------------------------


def _report(client: RoutingClient, decision: pb.RouteDecision, model_id: str, passed: bool) -> None:
    client.report(
        pb.ReportRequest(
            decision_id=decision.decision_id,
            lane=decision.lane,
            provider=next(m.provider for m in load_config(CONFIG_DIR).models if m.id == model_id),
            model=model_id,
            outcome=pb.OUTCOME_SUCCESS if passed else pb.OUTCOME_BAD_OUTPUT,
            validation_passed=passed,
        )
    )


def _traffic(client: RoutingClient, n: int) -> None:
    """Codex tasks: the cheap model passes docs and fails architecture."""
    rng = random.Random(3)
    for i in range(n):
        kind = EASY[i % 3] if i % 2 else HARD[i % 3]
        words = " ".join(rng.sample(WORDS[kind].split(), 2))
        decision = client.route(
            pb.RouteRequest(lane="codex", task=pb.Task(title=words, kind=kind, value_usd=1.0))
        )
        _report(client, decision, decision.model, kind in EASY or decision.model != "gpt-6-luna-mini")


def test_the_service_learns_from_reports_and_keeps_it_over_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = LoopbackServer(LiveRouter.from_directory(CONFIG_DIR), data)
    try:
        with RoutingClient(server.address) as client:
            _traffic(client, 40)
            server.outcomes.store.flush()
            time.sleep(SETTLE_S + 0.1)
            server.outcomes.check()  # the server's own tick
            health = client.health()
        shown = subprocess.run(
            [*CLI, "health", "--address", server.address], capture_output=True, text=True, check=True
        ).stdout
        assert "success model apply: 40 outcomes learned (" in shown
    finally:
        server.stop()
    assert health.learning.mode == "apply"
    assert sum(m.outcomes for m in health.learning.models) == 40
    assert health.learning.ledger_position >= 40
    assert (data / FILE_NAME).exists()
    saved = (data / FILE_NAME).read_bytes()

    config = load_config(CONFIG_DIR)
    from orxaq_grpc.store import SqliteStore

    with SqliteStore(data, 30) as store:
        reloaded = Learner(store, config, data / FILE_NAME)
        assert reloaded.model.position == health.learning.ledger_position
        assert reloaded.catch_up() == 0  # nothing new: the file held all of it
        (data / FILE_NAME).unlink()
        rebuilt = Learner(store, config, data / FILE_NAME)
        assert rebuilt.model.position == 0
        assert rebuilt.catch_up() == 40  # lost file: rebuilt from the ledger
        rebuilt.save()
    assert (data / FILE_NAME).read_bytes() == saved or rebuilt.model.outcomes() == reloaded.model.outcomes()
    for name, (mean, var) in rebuilt.model._weights.items():
        assert reloaded.model._weights[name][0] == mean
        assert reloaded.model._weights[name][1] == var


def test_a_report_for_an_unknown_decision_teaches_nothing(tmp_path: Path) -> None:
    server = LoopbackServer(LiveRouter.from_directory(CONFIG_DIR), tmp_path / "data")
    try:
        with RoutingClient(server.address) as client:
            client.report(
                pb.ReportRequest(
                    decision_id="never-made",
                    lane="codex",
                    provider="openai",
                    model="gpt-6-luna",
                    outcome=pb.OUTCOME_BAD_OUTPUT,
                )
            )
            server.outcomes.store.flush()
            time.sleep(SETTLE_S + 0.1)
            assert server.outcomes.learner.catch_up() == 0
    finally:
        server.stop()


def test_calibrate_finds_the_threshold_for_a_strong_share(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = LoopbackServer(LiveRouter.from_directory(CONFIG_DIR), data)
    try:
        with RoutingClient(server.address) as client:
            _traffic(client, 40)
    finally:
        server.stop()
    time.sleep(SETTLE_S)
    out = subprocess.run(
        [*CLI, "calibrate", "--strong-share", "0.5", "--config", str(CONFIG_DIR), "--data-dir", str(data)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    name, _, rest = out.partition(":")
    assert name.startswith("router-learned-") and router_problem(name) is None
    assert "of the last 40 tasks" in rest and "40 outcomes learned" in rest
    share = float(rest.split("sends ")[1].split("%")[0])
    assert 25.0 <= share <= 75.0  # the closest a threshold can get: tasks alike are sent alike
    for asked, sent in (("0", "0.0%"), ("1", "100.0%")):
        extreme = subprocess.run(
            [
                *CLI,
                "calibrate",
                "--strong-share",
                asked,
                "--config",
                str(CONFIG_DIR),
                "--data-dir",
                str(data),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        ).stdout
        assert f"sends {sent} of the last 40 tasks" in extreme
    empty = subprocess.run(
        [*CLI, "calibrate", "--strong-share", "0.5", "--data-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert empty.returncode == 2 and "is not a directory" in empty.stderr


def _outcomes_file(path: Path, n: int, seed: int) -> Path:
    lines = []
    for i, (kind, task, strong, weak) in enumerate(planted(n, seed)):
        title, _, prompt = task.text.partition("\n")
        lines.append(
            json.dumps(
                {
                    "id": str(i),
                    "title": title,
                    "prompt": prompt,
                    "kind": kind,
                    "outcomes": {"big": strong, "small": weak},
                }
            )
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def test_evaluate_learns_through_the_ledger_and_beats_random(tmp_path: Path) -> None:
    prompts_file = _outcomes_file(tmp_path / "outcomes.jsonl", 600, seed=8)
    result = subprocess.run(
        [
            *CLI,
            "evaluate",
            str(prompts_file),
            "--json",
            str(tmp_path / "e.json"),
            "--plot",
            str(tmp_path / "e.svg"),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    figures = json.loads((tmp_path / "e.json").read_text())
    assert (figures["strong"], figures["weak"], figures["train"], figures["test"]) == (
        "big",
        "small",
        300,
        300,
    )
    routers = figures["routers"]
    assert routers["random"]["apgr"] == pytest.approx(0.5)
    assert routers["learned"]["apgr"] > 0.7 > routers["prompt length"]["apgr"]
    assert routers["learned"]["cpt50"] <= 0.3
    assert "learned" in result.stdout and "CPT(50%)" in result.stdout
    assert "evaluate: learning 300 of 300 prompts" in result.stderr
    assert (tmp_path / "e.svg").read_text().startswith("<?xml")


def test_the_evaluation_is_the_same_for_the_same_seed() -> None:
    rng = random.Random(1)
    prompts = [
        PromptOutcomes(
            i, str(i), kind, WORDS[kind], kind, (), {"big": True, "small": kind in EASY or rng.random() < 0.1}
        )
        for i, kind in enumerate(rng.choice(EASY + HARD) for _ in range(200))
    ]
    config = load_config(CONFIG_DIR)
    one, two = evaluate(prompts, config, seed=4), evaluate(prompts, config, seed=4)
    assert one == two
    assert evaluate(prompts, config, seed=5).curves[0] != one.curves[0]


def test_a_malformed_outcomes_file_is_refused_with_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"prompt": "ok", "outcomes": {"a": true, "b": false}}\n'
        "\n"
        '{"prompt": "x", "outcomes": {"a": "yes", "b": true}}\n'
        '{"prompt": "y", "outcomes": {"a": true, "c": true}}\n'
        '{"outcomes": {"a": true, "b": false}, "colour": 1}\n'
        "{not json\n"
    )
    result = subprocess.run(
        [*CLI, "evaluate", str(bad)], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert result.returncode == 2
    assert f"{bad}:3: outcomes.a: must be true or false" in result.stderr
    assert f"{bad}:4: outcomes: has models ['a', 'c'], not ['a', 'b']" in result.stderr
    assert f"{bad}:5: prompt:" in result.stderr and f"{bad}:5: colour:" in result.stderr
    assert f"{bad}:6: is not JSON" in result.stderr
    assert result.stdout == ""


def test_learning_mode_is_config_and_a_bad_one_is_refused(config_dir: Path) -> None:
    set_toml(config_dir / "policy.toml", "learning", "mode", '"sometimes"')
    result = subprocess.run(
        [*CLI, "check-config", str(config_dir)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "policy.toml: learning.mode:" in result.stdout + result.stderr
    assert isinstance(load_config(CONFIG_DIR).policy.learning, LearningSettings)


def test_a_confident_model_proved_wrong_still_narrows_its_uncertainty() -> None:
    """Far in the probit's tail (a margin of 40 against the outcome) the update must still shrink
    the variance of the weights involved, not freeze them."""
    from array import array

    from orxaq_grpc import learning_kernel

    dim = 1 << 10
    mean, var = array("f", bytes(4 * dim)), array("f", [1.0]) * dim
    vector = Vector.of(features("docs", random.Random(1)), dim)
    learning_kernel.update(mean, var, vector.indices, vector.values, vector.size, 40.0, 1.0, False)
    assert var[0] < 0.9
    assert mean[0] < 0.0


@pytest.mark.parametrize(
    ("text", "tags", "norm2"),
    [
        ("fix the flaky retry test", ("kind=bugfix", "lane=dev"), 4.0),  # bias + unit text + two tags
        ("!? -- ..", ("kind=bugfix",), 2.0),  # no token: no text part
        ("", (), 1.0),
        ("日本語", (), 2.0),  # any non-ASCII byte is a token byte
    ],
)
def test_a_vector_holds_exactly_its_features(text: str, tags: tuple[str, ...], norm2: float) -> None:
    from array import array

    from orxaq_grpc import learning_kernel

    dim = 1 << 10
    vector = Vector.of(TaskFeatures(text=text, tags=tags), dim)
    raw, encoded_tags = text.encode(), tuple(tag.encode() for tag in tags)
    room = learning_kernel.capacity(raw, encoded_tags)
    indices, values = array("q", bytes(8 * room)), array("d", bytes(8 * room))
    size = learning_kernel.features(raw, encoded_tags, dim, indices, values)
    assert (vector.indices, vector.values) == (indices[:size], values[:size])
    assert vector.size == size == len(vector.indices)
    assert (vector.dim, vector.norm2) == (dim, norm2)


def test_workers_sharing_a_ledger_hold_the_same_model(tmp_path: Path) -> None:
    """Two followers of one ledger, catching up at different moments, end with identical weights."""
    from orxaq_grpc.evaluate.run import decision_record, report_record

    config = load_config(CONFIG_DIR)
    from orxaq_grpc.store import SqliteStore

    with SqliteStore(tmp_path, 30) as store:
        early, late = Learner(store, config, None), Learner(store, config, None)
        at = time.time() - 60
        for i, (_, task, strong, weak) in enumerate(planted(200, seed=11)):
            for name, passed in (("gpt-6-luna", strong), ("gpt-6-luna-mini", weak)):
                store.record_decision(decision_record(f"{i}-{name}", at, name, task))
                store.record_report(report_record(f"{i}-{name}", at, name, passed))
            if i % 37 == 0:
                store.flush()
                early.catch_up()
        store.flush()
        early.catch_up()
        assert late.catch_up() == 400
    assert early.model.position == late.model.position
    assert early.model.outcomes() == late.model.outcomes()
    for name, (mean, var) in late.model._weights.items():
        assert early.model._weights[name] == (mean, var)
