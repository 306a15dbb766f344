"""The run's journal: one JSON object a line, appended and fsync'd before the loop goes on, so a
stopped (or killed) run resumes from it without redoing a finished task.

Events: `run` (a run started), `task_started`, `attempt` (one model tried, as reported),
`attempt_abandoned` (stopped by a shutdown, not reported), `task_stopped` (left unfinished: the
lane cannot run its agent, or a shutdown), `task_finished` (`outcome` "done" or "failed"),
`task_reopened` (`run --retry-failed`), `cycle` (the cycle's results line) and `stopped` (a signal).
A last line cut short by a crash is passed over, and the next entry starts on a line of its own.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILE_NAME = "journal.jsonl"


class Journal:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        self._lock = threading.Lock()

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        entry = {"at": round(time.time(), 3), "event": event, **fields}
        line = (json.dumps(entry, sort_keys=False) + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # the last line was cut short: this entry starts a line
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        return entry

    def entries(self) -> Iterator[dict[str, Any]]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        for line in data.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            if isinstance(entry, dict) and isinstance(entry.get("event"), str):
                yield entry

    def replay(self, known: Iterable[str] | None = None) -> Progress:
        """The progress so far; with `known`, of those tasks alone (a task since removed from the
        queue counts for nothing)."""
        progress = Progress(known=None if known is None else frozenset(known))
        for entry in self.entries():
            progress.add(entry)
        return progress


@dataclass
class Progress:
    """What the journal says happened, task by task and in total."""

    finished: dict[str, str] = field(default_factory=dict)  # task -> "done" or "failed"
    models: dict[str, str] = field(default_factory=dict)  # done task -> the model that did it
    attempts: dict[str, int] = field(default_factory=dict)  # reported attempts since (re)opened
    lifetime: dict[str, int] = field(default_factory=dict)  # reported attempts ever, reopens included
    # Per lane, over reported attempts: [count, input, output] of those with the agent's own usage,
    # and [count, booked cost] of those with a booked cost.
    lane_tokens: dict[str, list[int]] = field(default_factory=dict)
    lane_cost: dict[str, list[float]] = field(default_factory=dict)
    reported: int = 0
    passed: int = 0
    first_time: int = 0  # tasks done on their first attempt
    spend_usd: float = 0.0
    estimated_reports: int = 0  # reports carrying the decision's estimate: the agent printed no usage
    abandoned: int = 0
    last_cycle: dict[str, Any] | None = None
    runs: int = 0
    stops: list[dict[str, Any]] = field(default_factory=list)
    known: frozenset[str] | None = None

    def add(self, entry: dict[str, Any]) -> None:
        event, task = entry["event"], str(entry.get("task", ""))
        if task and self.known is not None and task not in self.known:
            return
        if event == "run":
            self.runs += 1
        elif event == "attempt":
            if entry.get("reported"):
                self.attempts[task] = self.attempts.get(task, 0) + 1
                self.lifetime[task] = self.lifetime.get(task, 0) + 1
                lane = str(entry.get("lane", ""))
                if not entry.get("estimated") and entry.get("input_tokens") is not None:
                    tokens = self.lane_tokens.setdefault(lane, [0, 0, 0])
                    tokens[0] += 1
                    tokens[1] += int(entry.get("input_tokens") or 0)
                    tokens[2] += int(entry.get("output_tokens") or 0)
                if entry.get("cost_usd") is not None:
                    cost = self.lane_cost.setdefault(lane, [0, 0.0])
                    cost[0] += 1
                    cost[1] += float(entry["cost_usd"])
                if entry.get("validation_passed") and task not in self.finished:
                    # Done, though a kill may have come before its task_finished.
                    self.finished[task] = "done"
                    if entry.get("model"):
                        self.models[task] = str(entry["model"])
                self.reported += 1
                self.passed += bool(entry.get("validation_passed"))
                self.first_time += bool(entry.get("first_time_pass"))
                self.spend_usd += float(entry.get("cost_usd") or 0.0)
                self.estimated_reports += bool(entry.get("estimated"))
        elif event == "attempt_abandoned":
            self.abandoned += 1
        elif event == "task_finished":
            self.finished[task] = str(entry.get("outcome"))
            if entry.get("model"):
                self.models[task] = str(entry["model"])
        elif event == "task_reopened":
            self.finished.pop(task, None)
            self.attempts.pop(task, None)
        elif event == "cycle":
            self.last_cycle = entry
        elif event == "stopped":
            self.stops.append(entry)

    @property
    def done(self) -> list[str]:
        return [t for t, outcome in self.finished.items() if outcome == "done"]

    @property
    def failed(self) -> list[str]:
        return [t for t, outcome in self.finished.items() if outcome != "done"]

    def mean_tokens(self, lane: str, at_least: int) -> tuple[int, int] | None:
        """The lane's mean (input, output) tokens per reported attempt with the agent's own usage,
        once there are `at_least` of them."""
        count, inputs, outputs = self.lane_tokens.get(lane, [0, 0, 0])
        return (round(inputs / count), round(outputs / count)) if count and count >= at_least else None

    def mean_cost(self, lane: str, at_least: int) -> float | None:
        """The lane's mean booked cost per reported attempt, once there are `at_least` of them."""
        count, total = self.lane_cost.get(lane, [0, 0.0])
        return total / count if count and count >= at_least else None

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.reported if self.reported else None
