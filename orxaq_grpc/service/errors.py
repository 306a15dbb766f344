"""Rich error statuses: google.rpc.Status with details, carried in trailing metadata."""

from __future__ import annotations

import time

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from orxaq_grpc.routing.validation import Violation

# Keeps the plain-text message readable; the details carry up to _DETAIL_VIOLATIONS,
# which keeps the trailers well under gRPC's metadata limit however bad the request.
_MESSAGE_VIOLATIONS = 5
_DETAIL_VIOLATIONS = 50


def invalid_argument(what: str, violations: list[Violation]) -> grpc.Status:
    """INVALID_ARGUMENT with a google.rpc.BadRequest naming every offending field."""
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description[:512])
            for v in violations[:_DETAIL_VIOLATIONS]
        ]
    )
    detail = any_pb2.Any()
    detail.Pack(bad_request)
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations[:_MESSAGE_VIOLATIONS])
    if len(violations) > _MESSAGE_VIOLATIONS:
        summary += f"; and {len(violations) - _MESSAGE_VIOLATIONS} more"
    return _to_status(
        status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT, message=f"invalid {what}: {summary}", details=[detail]
        )
    )


def budget_exhausted(message: str) -> grpc.Status:
    """RESOURCE_EXHAUSTED with the quota that ran out and when to retry: the next UTC day."""
    now = time.time()
    retry = duration_pb2.Duration(seconds=int(86_400 - now % 86_400) + 1)
    quota = error_details_pb2.QuotaFailure(
        violations=[error_details_pb2.QuotaFailure.Violation(subject="daily budget", description=message)]
    )
    details = []
    for detail in (quota, error_details_pb2.RetryInfo(retry_delay=retry)):
        packed = any_pb2.Any()
        packed.Pack(detail)
        details.append(packed)
    return _to_status(status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message, details=details))


def _to_status(status: status_pb2.Status) -> grpc.Status:
    """rpc_status.to_status, typed: grpc_status and google.rpc ship no type information."""
    converted: grpc.Status = rpc_status.to_status(status)
    return converted
