"""Decisions, reports and abandoned decisions as they travel between replicas: compact JSON, one
field list per record type in dataclass order (every replica runs the same code; a version mark
refuses any other; a kind a replica does not know is skipped by it)."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from orxaq_grpc.outcomes.records import AbandonedRecord, DecisionRecord, Outcome, ReportRecord

__all__ = ["FORMAT", "Shared", "decode", "encode"]

FORMAT = "1"
DECISION, REPORT, ABANDONED = "d", "r", "a"
# A decision's task features stay out: only the ledger's reader (the success model) needs them.
_DECISION_FIELDS = tuple(f.name for f in fields(DecisionRecord) if f.name != "task")
_REPORT_FIELDS = tuple(f.name for f in fields(ReportRecord))
_ABANDONED_FIELDS = tuple(f.name for f in fields(AbandonedRecord))


Shared = DecisionRecord | ReportRecord | AbandonedRecord


def encode(record: Shared) -> tuple[str, str]:
    """(kind, body) for a stream entry."""
    if isinstance(record, DecisionRecord):
        return DECISION, json.dumps([getattr(record, name) for name in _DECISION_FIELDS])
    if isinstance(record, ReportRecord):
        return REPORT, json.dumps([getattr(record, name) for name in _REPORT_FIELDS])
    return ABANDONED, json.dumps([getattr(record, name) for name in _ABANDONED_FIELDS])


def decode(kind: str, body: str) -> Shared:
    """The record an entry carries; ValueError for one this code cannot read."""
    values: list[Any] = json.loads(body)
    if kind == DECISION and len(values) == len(_DECISION_FIELDS):
        return DecisionRecord(**dict(zip(_DECISION_FIELDS, values, strict=True)))
    if kind == REPORT and len(values) == len(_REPORT_FIELDS):
        named = dict(zip(_REPORT_FIELDS, values, strict=True))
        named["outcome"] = Outcome(named["outcome"])
        return ReportRecord(**named)
    if kind == ABANDONED and len(values) == len(_ABANDONED_FIELDS):
        return AbandonedRecord(**dict(zip(_ABANDONED_FIELDS, values, strict=True)))
    raise ValueError(f"not a shared record: kind {kind!r} with {len(values)} fields")
