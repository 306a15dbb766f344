"""The compiled learning kernel and its pure-Python twin give the same features and figures, and both
do what `_learning_py`'s docstring promises."""

from __future__ import annotations

import math
import random
from array import array
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orxaq_grpc import _learning_py
from tests.conftest import WITHOUT_EXTENSIONS, needs_compiled

# As conftest's KERNELS: without ORXAQ_NO_EXTENSIONS the build must have made the kernel.
TWINS: dict[str, ModuleType] = {"python": _learning_py}
if not WITHOUT_EXTENSIONS:
    from orxaq_grpc import _learning

    TWINS["compiled"] = _learning

DIM = 1 << 18
SMALL_DIM = 1 << 10


@pytest.fixture(params=sorted(TWINS))
def twin(request: pytest.FixtureRequest) -> ModuleType:
    return TWINS[request.param]


def featurize(
    twin: ModuleType, text: bytes, tags: tuple[bytes, ...] = (), dim: int = DIM
) -> tuple[list[int], list[float]]:
    size = twin.capacity(text, tags)
    indices = array("q", bytes(8 * size))
    values = array("d", bytes(8 * size))
    written = twin.features(text, tags, dim, indices, values)
    assert 1 <= written <= size
    return list(indices[:written]), list(values[:written])


LONG = b"x" * 25  # one byte over MAX_SUBWORD_TOKEN: no trigrams
PROMPT = (
    b"Refactor the retry loop in the gRPC client so that it honours Retry-After, add a test for the "
    b"backoff ceiling, and update the README's section on deadlines. Keep the public API unchanged; "
    b"the lane runs on Python 3.11 and the CI fails on any ruff or mypy warning. "
)
TEXTS = [
    b"",
    b" ",
    b"...!!! ??? --- ///",
    b"\t\n\r",
    "naïve café 日本語".encode(),
    "NAÏVE Café — «quoted» 日本語テキスト".encode(),
    b"a",
    b"A",
    b"Hello, World!",
    b"HELLO hello HeLLo",
    b"the the the the the",
    b"Foo-bar foo_bar foo.bar",
    b"snake_case CamelCase kebab-case 1234 v2.0",
    LONG,
    LONG + b" " + LONG[:-1] + b" " + LONG,
    b"sha256:" + b"0123456789abcdef" * 4,
    b"path/to/some/deeply/nested/module_name_that_is_long.py",
    bytes(range(256)),
    PROMPT,
    PROMPT * 8,
]
TAGS: list[tuple[bytes, ...]] = [
    (),
    (b"kind:code",),
    (b"kind:code", b"lane:dev", b"label:refactor"),
    (b"", b""),  # empty tags hash too, and the same tag twice counts twice
    (b"kind:code", b"kind:code", b"kind:code"),
]


@needs_compiled
@pytest.mark.parametrize("tags", TAGS)
@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("dim", [2, 4, SMALL_DIM, DIM, 1 << 62])
def test_features_are_identical(text: bytes, tags: tuple[bytes, ...], dim: int) -> None:
    # dim 2 and 4 put most features, tags included, on the same few slots.
    compiled = featurize(TWINS["compiled"], text, tags, dim)
    python = featurize(_learning_py, text, tags, dim)
    assert compiled == python


@needs_compiled
@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=300) | st.text(max_size=120).map(str.encode),
    st.lists(st.binary(max_size=12), max_size=4).map(tuple),
    st.sampled_from([2, 8, 64, SMALL_DIM, DIM]),
)
def test_features_are_identical_on_random_inputs(text: bytes, tags: tuple[bytes, ...], dim: int) -> None:
    assert featurize(TWINS["compiled"], text, tags, dim) == featurize(_learning_py, text, tags, dim)


def test_constants_agree(twin: ModuleType) -> None:
    assert twin.MAX_SUBWORD_TOKEN == 24
    assert ("compiled" if twin is not _learning_py else "python") == twin.KIND


def test_features_are_stable_across_processes_and_releases(twin: ModuleType) -> None:
    # Literal slots: a changed hash would silently orphan every weight learned so far.
    # "Fix" -> the word "fix" and the trigrams "<fi", "fix", "ix>", each 1/2 after scaling.
    assert featurize(twin, b"Fix") == ([0, 13807, 40353, 159236, 246471], [1.0, 0.5, 0.5, 0.5, 0.5])
    assert featurize(twin, b"", (b"lane:dev",)) == ([0, 101406], [1.0, 1.0])
    indices, _ = featurize(twin, b"fix bug")
    assert 10406 in indices  # the bigram "fix bug"


@pytest.mark.parametrize(
    ("text", "same_as"),
    [
        (b"Foo-bar", b"foo bar"),
        (b"FOO...BAR!", b"foo bar"),
        (b"  foo\tbar\n", b"foo bar"),
        (b"Snake_Case", b"snake_case"),
    ],
)
def test_tokens_split_as_documented(twin: ModuleType, text: bytes, same_as: bytes) -> None:
    assert featurize(twin, text) == featurize(twin, same_as)


def test_underscore_and_digits_stay_in_the_token(twin: ModuleType) -> None:
    assert featurize(twin, b"foo_bar") != featurize(twin, b"foo bar")
    assert featurize(twin, b"v2") != featurize(twin, b"v 2")


def test_output_is_sorted_with_the_bias_first(twin: ModuleType) -> None:
    indices, values = featurize(twin, PROMPT, (b"kind:code", b"lane:dev"))
    assert indices[0] == 0
    assert values[0] == 1.0
    assert indices == sorted(set(indices))
    assert all(0 < i < DIM for i in indices[1:])


@pytest.mark.parametrize("text", [t for t in TEXTS if any(b >= 0x80 or chr(b).isalnum() for b in t)])
def test_text_features_have_unit_norm(twin: ModuleType, text: bytes) -> None:
    _, values = featurize(twin, text)
    assert math.fsum(x * x for x in values[1:]) == pytest.approx(1.0, abs=1e-12)


def test_a_long_prompt_weighs_no_more_than_a_short_one(twin: ModuleType) -> None:
    for text in (b"fix", PROMPT, PROMPT * 20):
        _, values = featurize(twin, text)
        assert math.fsum(x * x for x in values[1:]) == pytest.approx(1.0, abs=1e-12)


def test_text_without_tokens_gives_the_bias_and_tags_only(twin: ModuleType) -> None:
    assert featurize(twin, b"!? -- ..") == ([0], [1.0])
    indices, values = featurize(twin, b"!? -- ..", (b"kind:code",))
    assert len(indices) == 2
    assert values == [1.0, 1.0]


def test_long_tokens_get_no_trigrams(twin: ModuleType) -> None:
    letters = b"abcdefghijklmnopqrstuvwxyz"
    assert len(featurize(twin, letters[:24])[0]) == 1 + 1 + 24  # bias, word, a trigram per byte
    assert len(featurize(twin, letters[:25])[0]) == 1 + 1  # bias and word
    assert len(featurize(twin, LONG)[0]) == 1 + 1


def test_a_colliding_tag_adds_one_to_the_text_value(twin: ModuleType) -> None:
    # dim 2 has one slot besides the bias: every feature lands on it.
    assert featurize(twin, b"fix the bug", dim=2) == ([0, 1], [1.0, 1.0])
    assert featurize(twin, b"fix the bug", (b"a", b"b"), dim=2) == ([0, 1], [1.0, 3.0])
    text_only = dict(zip(*featurize(twin, b"fix", dim=4), strict=True))
    tag_slot = featurize(twin, b"", (b"kind:code",), dim=4)[0][1]
    both = dict(zip(*featurize(twin, b"fix", (b"kind:code",), dim=4), strict=True))
    assert both[tag_slot] == text_only.get(tag_slot, 0.0) + 1.0


@needs_compiled
@pytest.mark.parametrize("short", ["indices", "values"])
def test_short_output_arrays_are_refused(short: str) -> None:
    compiled = TWINS["compiled"]
    _, expected = featurize(_learning_py, PROMPT, (b"kind:code",))
    needed = len(expected)
    size = {"indices": needed, "values": needed, short: needed - 1}
    indices = array("q", bytes(8 * size["indices"]))
    values = array("d", bytes(8 * size["values"]))
    with pytest.raises(ValueError, match="output slots"):
        compiled.features(PROMPT, (b"kind:code",), DIM, indices, values)
    # Exactly the needed length is enough, though less than capacity().
    assert needed < compiled.capacity(PROMPT, (b"kind:code",))
    indices = array("q", bytes(8 * needed))
    values = array("d", bytes(8 * needed))
    assert compiled.features(PROMPT, (b"kind:code",), DIM, indices, values) == needed
    assert list(values) == expected


@needs_compiled
@pytest.mark.parametrize("dim", [1, 0, -8])
def test_compiled_refuses_a_dimension_without_slots(dim: int) -> None:
    compiled = TWINS["compiled"]
    with pytest.raises(ValueError, match="dim"):
        compiled.features(b"fix", (), dim, array("q", bytes(8 * 16)), array("d", bytes(8 * 16)))


def _model(dim: int, variance: float = 1.0) -> tuple[array, array]:
    return array("f", bytes(4 * dim)), array("f", [variance]) * dim


def _packed(twin: ModuleType, text: bytes, tags: tuple[bytes, ...], dim: int) -> tuple[array, array, int]:
    indices, values = featurize(twin, text, tags, dim)
    return array("q", indices), array("d", values), len(indices)


def assert_same_weights(a: tuple[array, array], b: tuple[array, array]) -> None:
    for x, y in zip(a[0] + a[1], b[0] + b[1], strict=True):
        assert abs(x - y) <= 1e-12


WORDS = [
    b"fix", b"bug", b"refactor", b"test", b"docs", b"deploy", b"migrate", b"schema", b"flaky", b"retry",
    b"grpc", b"latency", b"budget", b"parser", b"Rust", b"python", b"typo", b"README", b"lint", b"cache",
]  # fmt: skip


@needs_compiled
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_figures_agree_over_a_sequence_of_updates(seed: int) -> None:
    rng = random.Random(seed)
    compiled = TWINS["compiled"]
    models = {name: _model(SMALL_DIM) for name in ("compiled", "python")}
    beta2 = 1.0
    passes = 0
    for _ in range(200):
        text = b" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))
        tags = tuple(rng.sample([b"kind:code", b"kind:docs", b"lane:dev", b"lane:ops"], rng.randint(0, 2)))
        offset = rng.uniform(-2.0, 2.0)
        passed = rng.random() < 0.6
        passes += passed
        indices, values, n = _packed(_learning_py, text, tags, SMALL_DIM)
        figures = {}
        for name, module in (("compiled", compiled), ("python", _learning_py)):
            mean, var = models[name]
            m, v = module.linear(mean, var, indices, values, n, offset)
            p = module.probability(m, v, beta2)
            module.update(mean, var, indices, values, n, offset, beta2, passed)
            figures[name] = (m, v, p)
        for a, b in zip(figures["compiled"], figures["python"], strict=True):
            assert math.isfinite(a)
            assert abs(a - b) <= 1e-12
    assert 0 < passes < 200  # both outcomes were folded in
    assert_same_weights(models["compiled"], models["python"])
    assert any(models["python"][0])  # the weights moved


@pytest.mark.parametrize("offset", [40.0, -40.0, 29.5, -29.5, 30.5, -30.5])
@pytest.mark.parametrize("passed", [True, False])
def test_extreme_margins_stay_finite(twin: ModuleType, offset: float, passed: bool) -> None:
    mean, var = _model(SMALL_DIM, variance=1e-3)
    indices, values, n = _packed(twin, PROMPT, (b"kind:code",), SMALL_DIM)
    for _ in range(20):
        twin.update(mean, var, indices, values, n, offset, 1.0, passed)
        m, v = twin.linear(mean, var, indices, values, n, offset)
        p = twin.probability(m, v, 1.0)
        assert math.isfinite(m)
        assert math.isfinite(v)
        assert 0.0 <= p <= 1.0
    assert all(math.isfinite(x) for x in mean)
    assert all(math.isfinite(x) and x > 0.0 for x in var)


@needs_compiled
@pytest.mark.parametrize("offset", [40.0, -40.0, 30.0, -30.0, 29.99])
@pytest.mark.parametrize("passed", [True, False])
def test_extreme_margins_agree(offset: float, passed: bool) -> None:
    models = {name: _model(SMALL_DIM, variance=1e-3) for name in TWINS}
    indices, values, n = _packed(_learning_py, PROMPT, (), SMALL_DIM)
    for name, module in TWINS.items():
        module.update(*models[name], indices, values, n, offset, 1.0, passed)
    assert_same_weights(models["compiled"], models["python"])


def test_an_untrained_model_predicts_its_prior(twin: ModuleType) -> None:
    mean, var = _model(SMALL_DIM)
    indices, values, n = _packed(twin, PROMPT, (b"kind:code",), SMALL_DIM)
    m, v = twin.linear(mean, var, indices, values, n, 0.7)
    assert m == 0.7
    assert v == pytest.approx(math.fsum(x * x for x in values[:n]))
    assert twin.probability(0.0, 0.0, 1.0) == 0.5
    assert twin.probability(1.0, 0.0, 1.0) == pytest.approx(0.8413447460685429, abs=1e-15)


@pytest.mark.parametrize("passed", [True, False])
def test_an_outcome_moves_the_prediction_its_way_and_narrows_it(twin: ModuleType, passed: bool) -> None:
    mean, var = _model(SMALL_DIM)
    indices, values, n = _packed(twin, b"fix the flaky retry test", (b"kind:code",), SMALL_DIM)
    before = twin.linear(mean, var, indices, values, n, 0.0)
    twin.update(mean, var, indices, values, n, 0.0, 1.0, passed)
    after = twin.linear(mean, var, indices, values, n, 0.0)
    p_before = twin.probability(*before, 1.0)
    p_after = twin.probability(*after, 1.0)
    assert (p_after > p_before) if passed else (p_after < p_before)
    assert after[1] < before[1]
    untouched = set(range(SMALL_DIM)) - set(indices[:n])
    assert all(mean[i] == 0.0 and var[i] == 1.0 for i in untouched)


def test_variance_stays_above_the_floor(twin: ModuleType) -> None:
    mean, var = _model(8, variance=2e-9)
    indices, values = array("q", [0, 3]), array("d", [1.0, 50.0])
    for passed in (True, False) * 20:
        twin.update(mean, var, indices, values, 2, 0.0, 1e-6, passed)
    assert min(var) >= array("f", [1e-9])[0]


def test_bad_indices_raise_before_any_weight_changes(twin: ModuleType) -> None:
    mean, var = _model(8)
    indices, values = array("q", [0, 3, 8]), array("d", [1.0, 0.5, 0.5])
    with pytest.raises(IndexError):
        twin.linear(mean, var, indices, values, 3, 0.0)
    with pytest.raises(IndexError):
        twin.update(mean, var, indices, values, 3, 0.0, 1.0, True)
    with pytest.raises(IndexError):
        twin.linear(mean, var, indices, values, 4, 0.0)  # n beyond the features given
    assert mean == _model(8)[0]
    assert var == _model(8)[1]
    assert twin.linear(mean, var, indices, values, 2, 0.25) == (0.25, 1.25)


def test_a_zero_or_negative_spread_is_refused(twin: ModuleType) -> None:
    with pytest.raises(ZeroDivisionError):
        twin.probability(1.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        twin.probability(1.0, -2.0, 1.0)


@needs_compiled
def test_compiled_learning_kernel_is_built() -> None:
    compiled = TWINS["compiled"]
    assert compiled.__file__ is not None
    assert compiled.__file__.endswith((".so", ".pyd"))


# --- vector: the features in arrays of their own length, and whether the text has a token ---

STR_TEXTS = [text.decode("utf-8", "replace") for text in TEXTS] + [
    "",
    "naïve — «café» 日本語",
    "ÀÉÎ ÕÜ ß",  # non-ASCII capitals: callers lower-case them first; the kernel folds A-Z only
    "a" * 24 + " " + "b" * 25 + " " + "c" * 300,
    "the the the\tthe\nTHE",
    "a " * 300 + "a",  # one-byte tokens one byte apart: the most keys a text of its length gives
]
STR_TAGS: list[tuple[str, ...]] = [
    *(tuple(tag.decode() for tag in tags) for tags in TAGS),
    ("kind=bugfix", "label=ünïcode", "in=10", "out=8"),
    tuple(f"label=l{i % 7}" for i in range(40)),  # many tags, some colliding with each other
]


def has_token(text: str) -> bool:
    """The documented definition: a byte in [A-Za-z0-9_] or any non-ASCII one."""
    return any(not c.isascii() or c.isalnum() or c == "_" for c in text)


def vectorized(
    twin: ModuleType, text: str, tags: tuple[str, ...], dim: int
) -> tuple[list[int], list[float], bool]:
    indices, values, token = twin.vector(text, tags, dim)
    assert indices.typecode == "q"
    assert values.typecode == "d"
    assert isinstance(token, bool)
    return list(indices), list(values), token


@pytest.mark.parametrize("tags", STR_TAGS)
@pytest.mark.parametrize("text", STR_TEXTS)
@pytest.mark.parametrize("dim", [2, 4, SMALL_DIM, DIM])
def test_vector_is_features_cut_to_length(
    twin: ModuleType, text: str, tags: tuple[str, ...], dim: int
) -> None:
    expected = featurize(twin, text.encode(), tuple(tag.encode() for tag in tags), dim)
    assert vectorized(twin, text, tags, dim) == (*expected, has_token(text))


@needs_compiled
@pytest.mark.parametrize("tags", STR_TAGS)
@pytest.mark.parametrize("text", STR_TEXTS)
# Powers of two take the compiled kernel's division-free remainder, other sizes a division.
@pytest.mark.parametrize("dim", [2, 3, 4, 5, 1000, SMALL_DIM, DIM, DIM + 1, 1 << 22, 1 << 62, (1 << 63) - 1])
def test_vector_is_identical_in_both_twins(text: str, tags: tuple[str, ...], dim: int) -> None:
    assert vectorized(TWINS["compiled"], text, tags, dim) == vectorized(_learning_py, text, tags, dim)


@needs_compiled
@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=200),
    st.lists(st.text(max_size=12), max_size=6).map(tuple),
    st.sampled_from([2, 3, 8, 100, SMALL_DIM, DIM, 1 << 40]),
)
def test_vector_is_identical_on_random_inputs(text: str, tags: tuple[str, ...], dim: int) -> None:
    text = text.encode("utf-8", "replace").decode()  # no lone surrogates: tasks are valid UTF-8
    tags = tuple(tag.encode("utf-8", "replace").decode() for tag in tags)
    compiled = vectorized(TWINS["compiled"], text, tags, dim)
    assert compiled == vectorized(_learning_py, text, tags, dim)
    assert compiled[2] == has_token(text)


def test_vector_of_a_long_prompt_matches_features(twin: ModuleType) -> None:
    # Many keys: the compiled kernel's radix sort, not its small-input insertion sort.
    text = (PROMPT * 8).decode().lower()
    expected = featurize(twin, text.encode(), (b"kind=code",))
    assert vectorized(twin, text, ("kind=code",), DIM) == (*expected, True)


@pytest.mark.parametrize("dim", [1, 0, -8])
def test_vector_refuses_a_dimension_without_slots(twin: ModuleType, dim: int) -> None:
    with pytest.raises(ValueError, match="dim"):
        twin.vector("fix", (), dim)
