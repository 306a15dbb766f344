"""Rich error statuses: google.rpc.Status with details, carried in trailing metadata."""

from __future__ import annotations

import time
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from orxaq_grpc.routing.validation import Violation

# Keeps the plain-text message readable; the details carry up to _DETAIL_VIOLATIONS. The trailers hold
# the message twice (grpc-message percent-encodes a non-ASCII byte as 3) and the details in base64, and
# a description may quote what the caller sent, emoji and all: budgets in bytes keep them well under
# gRPC's default 8 KiB metadata limit however bad the request (past it, the client's own transport
# answers RESOURCE_EXHAUSTED instead of the violations).
_MESSAGE_VIOLATIONS = 5
_MESSAGE_BYTES = 512
_DETAIL_VIOLATIONS = 50
_DETAIL_BYTES = 3072
_DESCRIPTION_BYTES = 512
ERROR_DOMAIN = "orxaq.routing.v1"  # google.rpc.ErrorInfo's domain for this service's own reasons


def invalid_argument(what: str, violations: list[Violation]) -> grpc.Status:
    """INVALID_ARGUMENT with a google.rpc.BadRequest naming every offending field."""
    bad_request = error_details_pb2.BadRequest()
    for v in violations_within(violations):
        bad_request.field_violations.add(field=v.field, description=v.description)
    detail = any_pb2.Any()
    detail.Pack(bad_request)
    summary = invalid_summary(violations)
    return _to_status(
        status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT, message=f"invalid {what}: {summary}", details=[detail]
        )
    )


def violations_within(violations: list[Violation]) -> list[Violation]:
    """The violations a BadRequest carries: the first _DETAIL_VIOLATIONS, each description clipped,
    within _DETAIL_BYTES in all (at least one). A RouteBatch item's error carries the same."""
    kept: list[Violation] = []
    size = 0
    for v in violations[:_DETAIL_VIOLATIONS]:
        one = Violation(v.field, _clip(v.description, _DESCRIPTION_BYTES))
        wire = error_details_pb2.BadRequest.FieldViolation(field=one.field, description=one.description)
        size += wire.ByteSize() + 3  # with its tag and length
        if kept and size > _DETAIL_BYTES:
            break
        kept.append(one)
    return kept


def invalid_summary(violations: list[Violation]) -> str:
    """The status message's list of what is wrong: the first few, clipped."""
    summary = _clip(
        "; ".join(f"{v.field}: {v.description}" for v in violations[:_MESSAGE_VIOLATIONS]), _MESSAGE_BYTES
    )
    if len(violations) > _MESSAGE_VIOLATIONS:
        summary += f"; and {len(violations) - _MESSAGE_VIOLATIONS} more"
    return summary


def _clip(text: str, limit: int) -> str:
    """At most `limit` bytes of `text` in UTF-8, cut at a character boundary."""
    return text.encode()[:limit].decode(errors="ignore")


def budget_exhausted(message: str) -> grpc.Status:
    """RESOURCE_EXHAUSTED with the quota that ran out and when to retry: the next UTC day."""
    return resource_exhausted("daily budget", message, budget_retry_after_s())


def budget_retry_after_s() -> float:
    """When a budget refusal may be tried again: just past the next UTC midnight."""
    return 86_400 - time.time() % 86_400 + 1


def resource_exhausted(subject: str, message: str, retry_after_s: float) -> grpc.Status:
    """RESOURCE_EXHAUSTED with a google.rpc.QuotaFailure naming `subject` and a RetryInfo."""
    whole = int(retry_after_s)
    retry = duration_pb2.Duration(seconds=whole, nanos=int((retry_after_s - whole) * 1e9))
    quota = error_details_pb2.QuotaFailure(
        violations=[error_details_pb2.QuotaFailure.Violation(subject=subject, description=message)]
    )
    return _with_details(
        code_pb2.RESOURCE_EXHAUSTED, message, quota, error_details_pb2.RetryInfo(retry_delay=retry)
    )


def refused(unauthenticated: bool, reason: str, message: str, metadata: dict[str, str]) -> grpc.Status:
    """UNAUTHENTICATED or PERMISSION_DENIED with a google.rpc.ErrorInfo: `reason` and what was missing."""
    code = code_pb2.UNAUTHENTICATED if unauthenticated else code_pb2.PERMISSION_DENIED
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata)
    return _with_details(code, message, info)


def plain(code: grpc.StatusCode, message: str) -> grpc.Status:
    """A status with no details."""
    number: int = code.value[0]
    return _to_status(status_pb2.Status(code=number, message=message))


def _with_details(code: int, message: str, *details: Message) -> grpc.Status:
    packed = []
    for detail in details:
        one = any_pb2.Any()
        one.Pack(detail)
        packed.append(one)
    return _to_status(status_pb2.Status(code=code, message=message, details=packed))


def end_with(context: grpc.aio.ServicerContext[Any, Any], status: grpc.Status) -> None:
    """Sets the status the call ends with once its handler returns (a unary one returns None).
    Unlike abort(), no exception: grpc keeps an aborted call's traceback in a reference cycle, and
    with it the request, until the garbage collector runs; a flood of refused large requests would
    hold gigabytes that long."""
    context.set_code(status.code)
    context.set_details(status.details)
    context.set_trailing_metadata(status.trailing_metadata)


def _to_status(status: status_pb2.Status) -> grpc.Status:
    """rpc_status.to_status, typed: grpc_status and google.rpc ship no type information."""
    converted: grpc.Status = rpc_status.to_status(status)
    return converted
