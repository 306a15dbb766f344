"""Rich error statuses: google.rpc.Status with details, carried in trailing metadata."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from orxaq_grpc.routing.validation import Violation

# Keeps the plain-text message readable; the full list is always in the details.
_MESSAGE_VIOLATIONS = 5


def invalid_argument(what: str, violations: list[Violation]) -> grpc.Status:
    """INVALID_ARGUMENT with a google.rpc.BadRequest naming every offending field."""
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in violations
        ]
    )
    detail = any_pb2.Any()
    detail.Pack(bad_request)
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations[:_MESSAGE_VIOLATIONS])
    if len(violations) > _MESSAGE_VIOLATIONS:
        summary += f"; and {len(violations) - _MESSAGE_VIOLATIONS} more"
    return rpc_status.to_status(
        status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT, message=f"invalid {what}: {summary}", details=[detail]
        )
    )


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """The (field, description) pairs of a failed call's BadRequest details, if any."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return []
    found = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found.extend((v.field, v.description) for v in bad_request.field_violations)
    return found
