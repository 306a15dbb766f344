"""The task queue file: lanes (each an agent command) and tasks (what to ask, what it is worth,
what it waits for, what validates it), read and checked as a whole before anything runs.

A bad file is refused with every problem at once, each naming the file, the task (its index in
`[[tasks]]`, from 0, and its id) and the field: `queue.toml: tasks[2] (fix-flaky).depends_on:
'nope' is not a task`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PLACEHOLDERS = ("{model}", "{provider}", "{prompt}", "{title}", "{workdir}", "{task}")
DEFAULT_STATE_DIR = ".orxaq-autonomy"
MAX_TOKENS = 100_000_000  # per count, as the service takes at most (policy max_tokens)
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # a directory and a git branch name


class QueueError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class LaneEntry(_Strict):
    command: list[str] = Field(min_length=1)
    max_agents: int = Field(default=0, ge=0, le=64)  # 0: as many as Scale allows
    timeout_s: float = Field(default=0.0, ge=0)  # per attempt; 0: none
    rate_limited_exit_codes: list[int] = Field(default_factory=list)
    # What one attempt (an agent session) takes, for Route's estimate until the journal has the
    # lane's own mean; 0: Route estimates from the prompt (one model call, far below a session).
    expected_input_tokens: int = Field(default=0, ge=0, le=MAX_TOKENS)
    expected_output_tokens: int = Field(default=0, ge=0, le=MAX_TOKENS)

    @field_validator("command")
    @classmethod
    def _model_placeholder(cls, command: list[str]) -> list[str]:
        if not command[0].strip():
            raise ValueError("the program (the first item) is empty")
        if not any("{model}" in part for part in command):
            raise ValueError("has no {model}: the agent would not run the routed model")
        return command


class TaskEntry(_Strict):
    id: str = Field(pattern=TASK_ID_PATTERN)
    lane: str
    kind: str = ""
    title: str = Field(min_length=1)
    prompt: str = ""
    prompt_file: str | None = None
    value_usd: float | None = Field(default=None, ge=0)
    depends_on: list[str] = Field(default_factory=list)
    gates: list[str] = Field(default_factory=list)
    max_attempts: int = Field(default=3, ge=1, le=50)
    repo: str | None = None
    base: str = "HEAD"
    input_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)  # per attempt, its own estimate
    output_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)

    @model_validator(mode="after")
    def _one_prompt(self) -> TaskEntry:
        if self.prompt and self.prompt_file:
            raise ValueError("give prompt or prompt_file, not both")
        if not self.prompt and not self.prompt_file:
            raise ValueError("give prompt or prompt_file")
        return self

    @field_validator("gates")
    @classmethod
    def _gates(cls, gates: list[str]) -> list[str]:
        if any(not gate.strip() for gate in gates):
            raise ValueError("a gate is an empty command")
        return gates


class QueueEntry(_Strict):
    state_dir: str = DEFAULT_STATE_DIR
    backoff_s: float = Field(default=2.0, ge=0, le=3600)
    max_backoff_s: float = Field(default=300.0, ge=0, le=86400)
    gate_timeout_s: float = Field(default=0.0, ge=0)
    lanes: dict[str, LaneEntry] = Field(min_length=1)
    tasks: list[TaskEntry] = Field(min_length=1)


@dataclass(frozen=True)
class Task:
    index: int
    id: str
    lane: str
    kind: str
    title: str
    prompt: str
    value_usd: float | None
    depends_on: tuple[str, ...]
    gates: tuple[str, ...]
    max_attempts: int
    repo: Path | None
    base: str
    input_tokens: int | None = None  # the task's own estimate per attempt, if it gives one
    output_tokens: int | None = None


@dataclass(frozen=True)
class Queue:
    path: Path
    lanes: Mapping[str, LaneEntry]
    tasks: tuple[Task, ...]
    state_dir: Path
    backoff_s: float
    max_backoff_s: float
    gate_timeout_s: float

    def task(self, task_id: str) -> Task:
        return next(t for t in self.tasks if t.id == task_id)

    def ready(self, done: Iterable[str], finished: Iterable[str]) -> list[Task]:
        """Tasks not finished whose dependencies are all done (finished with success), in file order."""
        done_set, finished_set = set(done), set(finished)
        return [
            t for t in self.tasks if t.id not in finished_set and all(d in done_set for d in t.depends_on)
        ]

    def blocked(self, failed: Iterable[str]) -> list[Task]:
        """Tasks that can never run: a dependency, or one of its own, failed."""
        failed_set, found = set(failed), set[str]()
        changed = True
        while changed:
            changed = False
            for t in self.tasks:
                if (
                    t.id not in found
                    and t.id not in failed_set
                    and any(d in failed_set or d in found for d in t.depends_on)
                ):
                    found.add(t.id)
                    changed = True
        return [t for t in self.tasks if t.id in found]


def load_queue(path: Path, state_dir: Path | None = None) -> Queue:
    """The queue at `path`, every problem refused at once (QueueError); relative paths in it
    (prompt_file, repo, state_dir) are from the file's directory."""
    name = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise QueueError([f"{name}: cannot be read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise QueueError([f"{name}: not UTF-8 text: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise QueueError([f"{name}: not valid TOML: {exc}"]) from None
    try:
        entry = QueueEntry.model_validate(data)
    except ValidationError as exc:
        raise QueueError([_problem(name, data, error) for error in exc.errors()]) from None

    base = path.parent
    problems: list[str] = []

    def where(i: int, task: TaskEntry) -> str:
        return f"{name}: tasks[{i}] ({task.id})"

    seen: dict[str, int] = {}
    for i, task in enumerate(entry.tasks):
        if task.id in seen:
            problems.append(f"{where(i, task)}.id: {task.id!r} is also tasks[{seen[task.id]}]'s id")
        seen.setdefault(task.id, i)
        if task.lane not in entry.lanes:
            known = ", ".join(sorted(entry.lanes))
            problems.append(f"{where(i, task)}.lane: {task.lane!r} is not a lane of the file ({known})")
        for dep in task.depends_on:
            if dep == task.id:
                problems.append(f"{where(i, task)}.depends_on: a task cannot depend on itself")
            elif dep not in {t.id for t in entry.tasks}:
                problems.append(f"{where(i, task)}.depends_on: {dep!r} is not a task")
    if not problems:
        problems += _cycles(name, entry.tasks)

    tasks: list[Task] = []
    for i, task in enumerate(entry.tasks):
        prompt = task.prompt
        if task.prompt_file:
            try:
                prompt = (base / task.prompt_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                problems.append(f"{where(i, task)}.prompt_file: {task.prompt_file}: cannot be read: {why}")
        repo = (base / task.repo).resolve() if task.repo else None
        if repo is not None and not repo.is_dir():
            problems.append(f"{where(i, task)}.repo: {task.repo}: not a directory")
        tasks.append(
            Task(
                index=i,
                id=task.id,
                lane=task.lane,
                kind=task.kind,
                title=task.title,
                prompt=prompt,
                value_usd=task.value_usd,
                depends_on=tuple(task.depends_on),
                gates=tuple(task.gates),
                max_attempts=task.max_attempts,
                repo=repo,
                base=task.base,
                input_tokens=task.input_tokens,
                output_tokens=task.output_tokens,
            )
        )
    if problems:
        raise QueueError(problems)
    return Queue(
        path=path,
        lanes=entry.lanes,
        tasks=tuple(tasks),
        state_dir=state_dir if state_dir is not None else base / entry.state_dir,
        backoff_s=entry.backoff_s,
        max_backoff_s=entry.max_backoff_s,
        gate_timeout_s=entry.gate_timeout_s,
    )


def _cycles(name: str, tasks: list[TaskEntry]) -> list[str]:
    index = {t.id: i for i, t in enumerate(tasks)}
    deps = {t.id: t.depends_on for t in tasks}
    state: dict[str, int] = {}  # 1: on the path, 2: done
    found: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in deps[node]:
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                first = cycle[0]
                found.append(
                    f"{name}: tasks[{index[first]}] ({first}).depends_on: a cycle: {' -> '.join(cycle)}"
                )
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for t in tasks:
        if t.id not in state:
            visit(t.id, [t.id])
    return found


def _problem(name: str, data: Any, error: Any) -> str:
    loc = list(error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    text = ""
    if len(loc) >= 2 and loc[0] == "tasks" and isinstance(loc[1], int):
        raw = data.get("tasks") if isinstance(data, dict) else None
        task_id = None
        if isinstance(raw, list) and loc[1] < len(raw) and isinstance(raw[loc[1]], dict):
            task_id = raw[loc[1]].get("id")
        text = f"tasks[{loc[1]}]" + (f" ({task_id})" if isinstance(task_id, str) else "")
        loc = loc[2:]
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return f"{name}: {text}: {message}" if text else f"{name}: {message}"
