"""The operator actions the page offers, each forwarded to its RPC with the page's own credential.

The companion decides nothing: it checks the body's shape, then makes the call with the bearer token
the page sent (never the companion's own, which only reads) and answers what the service said, its
gRPC status as the nearest HTTP one. The service's gate admits operators, refuses lane tokens and
missing ones, and lets everyone through where it has no credentials configured.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.client import field_violations
from orxaq_grpc.web.rpc import Metadata, ServiceStub, as_json

CALL_TIMEOUT_S = 10.0

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
}
OTHER_FAILURE = 502  # the service failed the call some other way (UNIMPLEMENTED by an older one, say)

Call = Callable[[ServiceStub, dict[str, Any], Metadata], Awaitable[Message]]


@dataclass(frozen=True, slots=True)
class Control:
    """An action's body (each field and its JSON type; `note` may be left out) and its RPC."""

    fields: Mapping[str, type]
    call: Call


def _set_stop_loss(stub: ServiceStub, body: dict[str, Any], metadata: Metadata) -> Awaitable[Message]:
    return stub.SetStopLoss(pb.SetStopLossRequest(**body), timeout=CALL_TIMEOUT_S, metadata=metadata)


def _reload_config(stub: ServiceStub, body: dict[str, Any], metadata: Metadata) -> Awaitable[Message]:
    return stub.ReloadConfig(pb.ReloadConfigRequest(**body), timeout=CALL_TIMEOUT_S, metadata=metadata)


def _close_breaker(stub: ServiceStub, body: dict[str, Any], metadata: Metadata) -> Awaitable[Message]:
    return stub.CloseBreaker(pb.CloseBreakerRequest(**body), timeout=CALL_TIMEOUT_S, metadata=metadata)


def _pause_lane(stub: ServiceStub, body: dict[str, Any], metadata: Metadata) -> Awaitable[Message]:
    return stub.PauseLane(pb.PauseLaneRequest(**body), timeout=CALL_TIMEOUT_S, metadata=metadata)


# By the path under /api/ that takes them.
CONTROLS = {
    "stop-loss": Control({"active": bool, "note": str}, _set_stop_loss),
    "reload": Control({"note": str}, _reload_config),
    "breakers/close": Control({"scope": str, "name": str, "note": str}, _close_breaker),
    "lanes/pause": Control({"lane": str, "paused": bool, "note": str}, _pause_lane),
}
OPTIONAL = frozenset({"note"})  # the RPCs take an empty note; the page asks for one all the same
_JSON_TYPE = {bool: "true or false", str: "a string"}


@dataclass(frozen=True, slots=True)
class Answer:
    """What the page is told: the HTTP status and the JSON body."""

    status: int
    body: dict[str, Any]


def refused(status: int, code: str, message: str, violations: list[tuple[str, str]] | None = None) -> Answer:
    return Answer(
        status,
        {"ok": False, "code": code, "message": message, "violations": [list(v) for v in violations or []]},
    )


def parse_body(raw: bytes, fields: Mapping[str, type]) -> dict[str, Any] | Answer:
    """The RPC's fields from a JSON object of exactly these fields, or a 400 naming the one at fault."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _bad("body", f"is not JSON: {exc}")
    if not isinstance(body, dict):
        return _bad("body", "must be a JSON object")
    for name in body:
        if name not in fields:
            return _bad(name, f"is not a field of this action (its fields: {', '.join(fields)})")
    for name, kind in fields.items():
        if name not in body:
            if name in OPTIONAL:
                continue
            return _bad(name, "is missing")
        if type(body[name]) is not kind:  # `is`, not isinstance: true is no number, 1 no boolean
            return _bad(name, f"must be {_JSON_TYPE[kind]}")
    return body


def _bad(field: str, problem: str) -> Answer:
    return refused(400, "INVALID_ARGUMENT", f"{field} {problem}", [(field, problem)])


async def forward(control: Control, stub: ServiceStub, body: dict[str, Any], metadata: Metadata) -> Answer:
    """Makes the action's call; its response, or the service's refusal with its fields at fault."""
    try:
        response = await control.call(stub, body, metadata)
    except grpc.aio.AioRpcError as error:
        code = error.code()
        return refused(
            HTTP_STATUS.get(code, OTHER_FAILURE), code.name, error.details() or "", field_violations(error)
        )
    return Answer(200, {"ok": True, "result": as_json(response)})
