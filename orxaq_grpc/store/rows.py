"""Records <-> table rows, the same for every backend: column lists (equal to the records' field
names), the values a record is stored as, the records a row reads back as, and retention settings."""

from __future__ import annotations

import logging
import zlib
from dataclasses import fields
from operator import attrgetter
from typing import Any

from orxaq_grpc.learning import TaskFeatures
from orxaq_grpc.outcomes.records import DecisionRecord, JournalEntry, Outcome, ReportRecord

log = logging.getLogger(__name__)

DAY_S = 86_400.0
PRUNE_INTERVAL_S = 3600.0
PRUNE_CHUNK = 10_000  # rows per table per transaction, so pruning never holds up acknowledgements long

# A decision's task features are stored encoded (`task`, last), and read back only by the success
# model's reader.
DECISION_COLUMNS = tuple(field.name for field in fields(DecisionRecord) if field.name != "task")
DECISION_INSERT_COLUMNS = (*DECISION_COLUMNS, "task")
REPORT_COLUMNS = tuple(field.name for field in fields(ReportRecord))
JOURNAL_COLUMNS = tuple(field.name for field in fields(JournalEntry))
_REPORT_FLAGS = ("validation_passed", "first_time_pass", "cost_exact", "decision_known", "cost_bounded")

_decision_fields = attrgetter(*DECISION_COLUMNS)
report_values = attrgetter(*REPORT_COLUMNS)
journal_values = attrgetter(*JOURNAL_COLUMNS)


def decision_values(record: DecisionRecord) -> tuple[Any, ...]:
    """In DECISION_INSERT_COLUMNS order."""
    return (*_decision_fields(record), None if record.task is None else record.task.encode())


def decision_from_row(row: tuple[Any, ...]) -> DecisionRecord:
    """From a row in DECISION_COLUMNS order."""
    values = dict(zip(DECISION_COLUMNS, row, strict=True))
    values["disruptive"] = bool(values["disruptive"])
    values["router_error"] = bool(values["router_error"])
    return DecisionRecord(**values)


def report_from_row(row: tuple[Any, ...]) -> ReportRecord:
    """From a row in REPORT_COLUMNS order."""
    values = dict(zip(REPORT_COLUMNS, row, strict=True))
    values["outcome"] = Outcome(values["outcome"])
    for name in _REPORT_FLAGS:
        values[name] = bool(values[name])
    return ReportRecord(**values)


def task_from_blob(blob: bytes | None) -> TaskFeatures | None:
    if blob is None:
        return None
    try:
        return TaskFeatures.decode(bytes(blob))
    except (ValueError, zlib.error) as exc:
        log.warning("a decision's task features cannot be read (%s); its outcome teaches nothing", exc)
        return None


def check_retention_days(retention_days: object) -> int:
    if isinstance(retention_days, bool) or not isinstance(retention_days, int) or retention_days < 1:
        raise ValueError(f"retention_days must be a whole number of days >= 1, not {retention_days!r}")
    return retention_days


def record_key(record: object) -> str:
    """What names a record in an error message: its decision id, or a journal entry's kind."""
    return str(getattr(record, "decision_id", None) or getattr(record, "kind", ""))
