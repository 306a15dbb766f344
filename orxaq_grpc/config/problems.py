"""What is wrong with a config directory: each problem names its file, the dotted field and the
problem, in the words `check-config` prints (the same words as request validation's)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from orxaq_grpc.vocabulary import range_problem


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    path: str
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.field}: {self.problem}" if self.field else f"{self.path}: {self.problem}"


class ConfigError(Exception):
    """A config directory that cannot be used; `problems` lists every reason."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def problems_of(path: str, error: ValidationError) -> list[ConfigProblem]:
    """One problem per pydantic error, in file order."""
    return [ConfigProblem(path, dotted(e["loc"]), describe(e)) for e in error.errors()]


def dotted(loc: tuple[str | int, ...]) -> str:
    """`("models", 0, "id")` as `models[0].id`; pydantic's marker for a bad dict key is left out."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part != "[key]":
            text += f".{part}" if text else part
    return text


_TYPES = {
    "float_type": "must be a number",
    "int_type": "must be a whole number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "tuple_type": "must be an array",
    "list_type": "must be an array",
    "dict_type": "must be a table",
    "model_type": "must be a table",
}
# error type: (its ctx key, range_problem's keyword, the words for a whole number)
_BOUNDS = {
    "greater_than_equal": ("ge", "lo", "is below the minimum"),
    "less_than_equal": ("le", "hi", "is above the maximum"),
    "greater_than": ("gt", "above", "is not above"),
}


def describe(error: ErrorDetails) -> str:
    """The problem in the project's words; errors our own rules raise already use them."""
    kind, given, ctx = error["type"], error["input"], error.get("ctx") or {}
    if kind in _TYPES:
        return f"{_TYPES[kind]}, not {type(given).__name__}"
    if kind in _BOUNDS:
        key, keyword, words = _BOUNDS[kind]
        if isinstance(bound := ctx[key], int):  # a whole number: a number field's bounds are floats
            return f"{given} {words} {bound}"
        return range_problem(float(given), **{keyword: bound}) or error["msg"]
    match kind:
        case "missing":
            return "is required"
        case "extra_forbidden":
            return "is not a known field"
        case "date_type":
            return "must be a date such as 2026-11-01"
        case "finite_number":
            return f"must be a finite number, got {given}"
        case "literal_error":  # expected: "'a', 'b' or 'c'"
            choices = str(ctx["expected"]).replace("'", "").replace(" or ", ", ")
            if not isinstance(given, str):
                return f"must be one of {choices}, not {type(given).__name__}"
            return f"{given!r} is not one of {choices}"
        case "too_short":
            return "must not be empty" if ctx["min_length"] == 1 else f"needs {ctx['min_length']} entries"
    return error["msg"]
