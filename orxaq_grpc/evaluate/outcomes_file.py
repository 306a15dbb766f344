"""The outcomes file `orxaq-grpc evaluate` reads: JSON Lines, one prompt per line.

    {"prompt": "...", "outcomes": {"strong-model": true, "weak-model": false},
     "id": "q17", "title": "...", "kind": "math", "labels": ["algebra"]}

`prompt` and `outcomes` are required: `outcomes` maps each model to whether its answer was right (it
passed validation), at least two models per line, the same models on every line. Blank lines are
skipped. A bad line is refused with its line number and field, and nothing is evaluated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from orxaq_grpc.config.problems import ConfigError, ConfigProblem, problems_of

MAX_PROBLEMS = 20  # a file wrong on every line says so in a screenful


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    prompt: Annotated[StrictStr, Field(min_length=1)]
    outcomes: Annotated[dict[StrictStr, StrictBool], Field(min_length=2)]
    id: StrictStr = ""
    title: StrictStr = ""
    kind: StrictStr = ""
    labels: list[StrictStr] = []


@dataclass(frozen=True, slots=True)
class PromptOutcomes:
    line: int
    id: str
    title: str
    prompt: str
    kind: str
    labels: tuple[str, ...]
    outcomes: dict[str, bool]


def read_outcomes(path: Path) -> list[PromptOutcomes]:
    """Every prompt of the file; raises ConfigError naming `path:line`, the field and the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(str(path), "", f"cannot be read: {exc}")]) from exc
    prompts: list[PromptOutcomes] = []
    problems: list[ConfigProblem] = []
    models: tuple[str, ...] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or len(problems) >= MAX_PROBLEMS:
            continue
        where = f"{path}:{number}"
        try:
            line = _Line.model_validate(json.loads(raw))
        except json.JSONDecodeError as exc:
            problems.append(ConfigProblem(where, "", f"is not JSON: {exc.msg} at column {exc.colno}"))
            continue
        except ValidationError as exc:
            problems += problems_of(where, exc)
            continue
        names = tuple(sorted(line.outcomes))
        if models is None:
            models = names
        elif names != models:
            problems.append(ConfigProblem(where, "outcomes", f"has models {list(names)}, not {list(models)}"))
            continue
        prompts.append(
            PromptOutcomes(
                number,
                line.id or str(number),
                line.title,
                line.prompt,
                line.kind,
                tuple(line.labels),
                line.outcomes,
            )
        )
    if not problems and len(prompts) < 2:
        problems.append(ConfigProblem(str(path), "", f"has {len(prompts)} prompts; at least 2 are needed"))
    if problems:
        raise ConfigError(problems)
    return prompts
