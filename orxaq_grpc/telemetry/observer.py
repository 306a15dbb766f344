"""What the RPC edge tells telemetry: attributes on the current server span, and metrics.

With tracing off or a call not sampled, the current span does not record and no attributes
are built; with metrics off, `metrics` is None. Either way the edge calls the same methods.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace

from orxaq_grpc.outcomes.records import ReportRecord
from orxaq_grpc.routing.router import BudgetExhausted
from orxaq_grpc.routing.types import Decision
from orxaq_grpc.scale.types import ScaleDecision
from orxaq_grpc.telemetry.attributes import (
    LANE,
    batch_attributes,
    report_attributes,
    route_attributes,
    scale_attributes,
)
from orxaq_grpc.telemetry.metrics import RoutingMetrics


class Observer:
    def __init__(self, metrics: RoutingMetrics | None = None, traced: bool = True) -> None:
        """`traced=False`: no call is ever traced, so Route does not even look for its span."""
        self.metrics = metrics
        self._traced = traced

    def routed(self, decision: Decision) -> None:
        if self._traced and (span := trace.get_current_span()).is_recording():
            span.set_attributes(route_attributes(decision))
        if self.metrics is not None:
            self.metrics.decided(decision)

    def routed_batch(self, decisions: Sequence[Decision], requests: int) -> None:
        """Every decision counted as a Route's is; the call's span says what the batch held."""
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(batch_attributes(decisions, requests))
        if self.metrics is not None:
            for decision in decisions:
                self.metrics.decided(decision)

    def refused(self, refusal: BudgetExhausted) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute(LANE, refusal.lane)
        if self.metrics is not None:
            self.metrics.refused(refusal)

    def route_failed(self, lane: str) -> None:
        if self.metrics is not None:
            self.metrics.route_failed(lane)

    def answered_report(self, record: ReportRecord, new: bool) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(report_attributes(record, new))

    def counted_report(self, record: ReportRecord) -> None:
        """A durable, new report: counted once, whether or not its call is still there."""
        if self.metrics is not None:
            self.metrics.reported(record)

    def scaled(self, decision: ScaleDecision) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(scale_attributes(decision))
        if self.metrics is not None:
            self.metrics.scaled(decision)
