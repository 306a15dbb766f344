"""`Table`: the pydantic base of every table in the config files.

Unknown fields are errors, so a typo never silently does nothing, and infinities are not numbers.
A table states the rules between its fields in `_relations`. Every problem is found at once: a
rule is checked even when another field of the same table is wrong, over the fields that are valid
or only out of bounds (a rule over an out-of-range value still holds or not), and the valid entries
of a table of named entries; it is skipped when a field it needs is missing or of the wrong type
(`_given`). Names from the other files come in the validation context as `Known`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Self, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    ModelWrapValidatorHandler,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

RULE = "config_rule"  # a field's own rule failed; its value has the right type
RELATION = "config_relation"  # a rule between fields failed
# Problems with a value of the right type: rules between fields still read it.
_VALUE_PROBLEMS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short", RULE}

Loc = tuple[str | int, ...]
Problems = Iterator[tuple[Loc, str]]  # where in the table (() for the table itself), and what


@dataclass(frozen=True, slots=True)
class Known:
    """Names defined in the other files; None where a file has no table of them to read."""

    models: Mapping[str, bool] | None = None  # catalog id -> enabled
    providers: frozenset[str] | None = None
    lanes: frozenset[str] | None = None


class Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def _relations(self, known: Known) -> Problems:
        """The rules between this table's fields that do not hold."""
        return iter(())

    def _given(self, *names: str) -> bool:
        """Whether these fields can be checked: always on a valid table."""
        return all(name in self.__dict__ for name in names)

    @model_validator(mode="wrap")
    @classmethod
    def _check_relations(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo
    ) -> Self:
        known = info.context if isinstance(info.context, Known) else Known()
        try:
            table = handler(data)
        except ValidationError as failed:
            partial = cls._partial(data, failed, info.context)
            found = list(partial._relations(known)) if partial is not None else []
            if not found:
                raise
            errors = [_again(e) for e in failed.errors()] + _errors(found, data)
            raise ValidationError.from_exception_data(cls.__name__, errors) from None
        if found := list(table._relations(known)):
            raise ValidationError.from_exception_data(cls.__name__, _errors(found, data))
        return table

    @classmethod
    def _partial(cls, data: Any, failed: ValidationError, context: Any) -> Self | None:
        """The table as given, with the fields its rules may read, for a table that failed."""
        if not isinstance(data, dict):
            return None
        problems: dict[str, list[ErrorDetails]] = {}
        for error in failed.errors():
            if not error["loc"]:
                return None
            problems.setdefault(str(error["loc"][0]), []).append(error)
        values: dict[str, Any] = {}
        for name in cls.model_fields.keys() & data.keys():
            value, errors = data[name], problems.get(name, [])
            if errors and all(len(e["loc"]) == 1 and e["type"] in _VALUE_PROBLEMS for e in errors):
                values[name] = value  # as it is
                continue
            if errors and _holds_entries(cls, name, value) and all(len(e["loc"]) > 1 for e in errors):
                value = {
                    key: entry for key, entry in value.items() if key not in {e["loc"][1] for e in errors}
                }
            elif errors:
                continue
            with contextlib.suppress(ValidationError):  # a table of entries none of which is valid
                values[name] = _adapter(cls, name).validate_python(value, context=context)
        partial = cls.model_construct(**values)
        for name in data.keys() - values.keys():
            partial.__dict__.pop(name, None)  # no default in place of the file's wrong value
        return partial


def _holds_entries(table: type[BaseModel], name: str, value: Any) -> bool:
    """A table of named entries, such as `[lanes.<id>]`, not a table of fixed fields."""
    return isinstance(value, dict) and get_origin(table.model_fields[name].annotation) is dict


@cache
def _adapter(table: type[BaseModel], name: str) -> TypeAdapter[Any]:
    return TypeAdapter(table.model_fields[name].rebuild_annotation())


def _again(error: ErrorDetails) -> InitErrorDetails:
    """A pydantic error raised again beside new ones, its type and context kept for `describe`."""
    problem = PydanticCustomError(error["type"], error["msg"], error.get("ctx"))
    return {"type": problem, "loc": error["loc"], "input": error["input"]}


def _errors(found: list[tuple[Loc, str]], data: Any) -> list[InitErrorDetails]:
    return [{"type": PydanticCustomError(RELATION, text), "loc": loc, "input": data} for loc, text in found]
