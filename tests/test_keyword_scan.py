"""The keyword index's twins find exactly the whole-word hits the per-keyword search found before the
compiled scan, on any text: ASCII or not, phrases across any white space, repeats and overlaps."""

from __future__ import annotations

import dataclasses
import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orxaq_grpc import _scoring_py
from orxaq_grpc.config.model import Config
from orxaq_grpc.routing.objective import ObjectiveResolver, WholeWords
from orxaq_grpc.routing.types import Task
from orxaq_grpc.scoring import KeywordsFactory
from tests.conftest import WITHOUT_EXTENSIONS

# As conftest's KERNELS: without ORXAQ_NO_EXTENSIONS the build must have made the compiled twin.
TWINS: dict[str, KeywordsFactory] = {"python": _scoring_py.KeywordIndex}
if not WITHOUT_EXTENSIONS:
    from orxaq_grpc import _scoring

    TWINS["compiled"] = _scoring.KeywordIndex


@pytest.fixture(params=sorted(TWINS))
def twin(request: pytest.FixtureRequest) -> KeywordsFactory:
    return TWINS[request.param]


# -- the oracle: objective.py's search as it was before the index, token pre-filter left out ------


def oracle_first_matches(words: tuple[str, ...], text: str) -> list[tuple[int, str]]:
    keywords = tuple(dict.fromkeys(" ".join(w.lower().split()) for w in words))
    if not text:
        return []
    hits = []
    for phrase in (k for k in keywords if " " in k):
        pattern = re.compile(r"\s+".join(map(re.escape, phrase.split())))
        for match in pattern.finditer(text):
            if _whole(text, match.start(), match.end()):
                hits.append((match.start(), phrase))
                break
    for word in (k for k in keywords if " " not in k):
        at = text.find(word)
        while at != -1:
            if _whole(text, at, at + len(word)):
                hits.append((at, word))
                break
            at = text.find(word, at + 1)
    return hits


def oracle_matches(
    words: tuple[str, ...], fields: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, ...], str]:
    found: dict[str, None] = {}
    first_field = ""
    for name, text in fields:
        hits = oracle_first_matches(words, text)
        for _, word in sorted(hits):
            found.setdefault(word, None)
        if hits and not first_field:
            first_field = name
    return tuple(found), first_field


def _whole(text: str, start: int, end: int) -> bool:
    return not (start > 0 and _is_word_char(text[start - 1])) and not (
        end < len(text) and _is_word_char(text[end])
    )


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


# -- random keyword lists and texts -----------------------------------------------------------------

# Few letters, so that words repeat, overlap and start one another.
_SHORT_WORD = st.sampled_from(["a", "b", "ab", "ba", "aa", "a_b", "a1", "é", "ab\u00e9"])
_PHRASE = st.lists(_SHORT_WORD, min_size=1, max_size=4).map(" ".join)
_NAMED = st.sampled_from(
    [
        "design",
        "Race Condition",
        " race  condition ",
        "format",
        "formatting",
        "c++",
        "re-run",
        "naïve",
        "déjà vu",
        "x_y",
        "2fa",
        "K",
        "\u212a",  # KELVIN SIGN: lower-cases to ASCII "k"
        "İstanbul",  # lower-cases to "i̇stanbul", with a combining dot that is not a word character
        "straße",
        "日本",
        "a.b",
        "ab a",  # its regex scan can miss a hit: left to the twin
        "tests test",
        "la la land",
    ]
)
KEYWORDS = st.lists(st.one_of(_NAMED, _PHRASE), max_size=8).map(tuple)

_WHITE = [" ", "  ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u2003", "\u3000"]
_PIECE = st.one_of(
    _NAMED,
    _SHORT_WORD,
    st.sampled_from(
        [
            *_WHITE,
            *_WHITE,
            "x",
            "_",
            "9",
            "race",
            "condition",
            "information",
            "la",
            "land",
            ",",
            ".",
            "-",
            "+",
            "—",
            "😀",
            "\u0307",  # COMBINING DOT ABOVE: neither a word character nor white space
            "Σ",
            "ß",
            "²",  # a digit to isalnum, not to isdecimal
        ]
    ),
)
TEXT = st.lists(_PIECE, max_size=30).map("".join)


@st.composite
def keywords_and_text(draw: st.DrawFn) -> tuple[tuple[str, ...], str]:
    """Keywords and a text made mostly of them, their words and what can separate or join them."""
    words = draw(KEYWORDS)
    own = [piece for word in words for piece in (word, *word.split())]
    pieces = st.one_of(st.sampled_from(own), _PIECE) if own else _PIECE
    # Mostly one white space character after each piece, so that they make words and phrases.
    gap = st.sampled_from(["", " ", " ", " ", "\n", ",", "x"])
    return words, "".join(draw(st.lists(st.tuples(pieces, gap).map("".join), max_size=30)))


@settings(max_examples=1000, deadline=None)
@given(keywords_and_text())
def test_each_twin_finds_what_the_old_search_found(case: tuple[tuple[str, ...], str]) -> None:
    words, text = case
    text = text.lower()
    expected = sorted(oracle_first_matches(words, text))
    for name, index in TWINS.items():
        assert WholeWords(words, index).first_matches(text) == expected, name


@settings(max_examples=300, deadline=None)
@given(keywords_and_text(), keywords_and_text(), TEXT)
def test_the_estimate_reports_what_two_separate_searches_did(
    shipped_config: Config,
    quality_case: tuple[tuple[str, ...], str],
    cost_speed_case: tuple[tuple[str, ...], str],
    title: str,
) -> None:
    (quality, quality_text), (cost_speed, cost_speed_text) = quality_case, cost_speed_case
    prompt = quality_text + title + cost_speed_text
    policy = dataclasses.replace(
        shipped_config.policy, quality_keywords=quality, cost_speed_keywords=cost_speed
    )
    fields = (("title", title.lower()), ("prompt", prompt.lower()))
    quality_hits, quality_field = oracle_matches(quality, fields)
    cost_hits, cost_field = oracle_matches(cost_speed, fields)
    for name, index in TWINS.items():
        estimate = ObjectiveResolver(policy, index).estimate(Task(title=title, prompt=prompt))
        assert estimate.quality_keywords == quality_hits, name
        assert estimate.cost_speed_keywords == cost_hits, name
        assert estimate.keyword_field == (quality_field or cost_field), name


# -- explicit cases ---------------------------------------------------------------------------------

SHIPPED = ("race condition", "format", "formatting", "design", "security", "lint")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("format", [(0, "format")]),  # the whole text
        ("then format", [(5, "format")]),  # at the end
        ("information, formats, reformat, format_x, format2", []),
        ("(format) design.", [(1, "format"), (9, "design")]),
        ("format format", [(0, "format")]),  # the first hit only
        ("formatting format", [(0, "formatting"), (11, "format")]),
        ("race condition", [(0, "race condition")]),
        ("a race\r\n\t condition!", [(2, "race condition")]),
        ("race\x1ccondition", [(0, "race condition")]),  # re's \s: 0x1c-0x1f are white space too
        ("race\xa0condition race\u2003condition", [(0, "race condition")]),
        ("race-condition, races condition, race conditions, race, condition", []),
        ("race race condition", [(5, "race condition")]),
        ("lint—design 😀 security", [(0, "lint"), (5, "design"), (14, "security")]),
        ("désign linté déjà lint", [(18, "lint")]),  # non-ASCII letters are word characters
        ("lint\u0307 design", [(0, "lint"), (6, "design")]),  # a combining mark is not
        ("x_lint lint_ 2lint lint2 lint", [(25, "lint")]),
    ],
)
def test_whole_word_hits(twin: KeywordsFactory, text: str, expected: list[tuple[int, str]]) -> None:
    assert WholeWords(SHIPPED, twin).first_matches(text) == expected
    assert sorted(oracle_first_matches(SHIPPED, text)) == expected


@pytest.mark.parametrize(
    ("words", "text", "expected"),
    [
        # A phrase and its first word at the same place: ordered by keyword.
        (("race condition", "race"), "race condition", [(0, "race"), (0, "race condition")]),
        (("race condition", "condition"), "race condition", [(0, "race condition"), (5, "condition")]),
        (("a b c d e f",), "a b c d e a b c d e f", [(10, "a b c d e f")]),  # longer than any before
        (("a a b",), "a a a b", [(2, "a a b")]),
        (("c++", "c"), "c++ c", [(0, "c"), (0, "c++")]),  # left to the twin, merged in order
        (("re-run", "run"), "re-run run", [(0, "re-run"), (3, "run")]),
        # The regex scan resumes after "ab a" at 1, which "xab" makes not whole, and so misses the
        # whole one at 4: kept as it was (the compiled twin leaves such phrases to the Python one).
        (("ab a",), "xab ab a", []),
        (("ab a",), "x ab a", [(2, "ab a")]),
        (("a a",), "ba a a", []),
        ((), "anything", []),
        (("K",), "\u212a".lower(), [(0, "k")]),
    ],
)
def test_keyword_lists(
    twin: KeywordsFactory, words: tuple[str, ...], text: str, expected: list[tuple[int, str]]
) -> None:
    assert WholeWords(words, twin).first_matches(text) == expected
    assert sorted(oracle_first_matches(words, text)) == expected


def test_every_short_text_of_a_few_words(twin: KeywordsFactory) -> None:
    """Every phrase of up to three of four tiny words against every text of up to four of them: all
    the ways phrases repeat, overlap and start one another, exhaustively."""
    tiny = ("a", "b", "ab", "aa")
    words = tuple(" ".join(w) for n in (1, 2, 3) for w in itertools.product(tiny, repeat=n))
    index = WholeWords(words, twin)
    for n in (1, 2, 3, 4):
        for chosen in itertools.product(tiny, repeat=n):
            for gaps in itertools.product(("", " ", ","), repeat=n - 1):
                text = "".join(itertools.chain.from_iterable(zip(chosen, (*gaps, ""), strict=True)))
                assert index.first_matches(text) == sorted(oracle_first_matches(words, text)), text


def test_many_keywords(twin: KeywordsFactory) -> None:
    words = tuple(f"w{i}" for i in range(300)) + tuple(f"p{i} q{i}" for i in range(100))
    text = " ".join(f"w{i} p{i} q{i}" for i in reversed(range(0, 300, 7)))
    assert WholeWords(words, twin).first_matches(text) == sorted(oracle_first_matches(words, text))


def test_every_width_of_str(twin: KeywordsFactory) -> None:
    """CPython stores a str in 1, 2 or 4 bytes a character, by its widest: the same hits in each."""
    base = "fix the race  condition, then lint"
    for widest in ("", "é", "—", "😀"):
        text = widest + base
        offset = len(widest)
        assert WholeWords(SHIPPED, twin).first_matches(text) == [
            (offset + 8, "race condition"),
            (offset + 30, "lint"),
        ]


def test_the_shipped_keywords_on_a_long_prompt(shipped_config: Config) -> None:
    paragraph = (
        "The upload worker retries failed chunk uploads, but when the storage backend answers 503 the "
        "retry loop re-reads the chunk from the spool file; keep the bytes in memory and add a test. "
    )
    task = Task(title="Security: fix the chunk retry", prompt=(paragraph * 20)[:2048] + "\nthen Lint.")
    policy = shipped_config.policy
    fields = (("title", task.title.lower()), ("prompt", task.prompt.lower()))
    for name, index in TWINS.items():
        estimate = ObjectiveResolver(policy, index).estimate(task)
        assert estimate.quality_keywords == ("security",), name
        assert estimate.cost_speed_keywords == ("lint",), name
        assert estimate.keyword_field == "title", name
        assert oracle_matches(policy.cost_speed_keywords, fields) == (("lint",), "prompt")
