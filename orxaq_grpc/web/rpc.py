"""The routing service as the web companion calls it: a typed grpc.aio stub, bearer metadata, and
messages in the JSON form the page reads.

grpc.aio runs on aiohttp's own event loop, rather than the blocking client in threads: the one
WatchHealth stream is a task that cancellation ends cleanly at shutdown, each operator action carries
its own credential as call metadata, and no thread sits blocked in a stream's iterator.
"""

from __future__ import annotations

from typing import Any, Protocol

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq.routing.v1 import routing_pb2_grpc
from orxaq_grpc.client import AUTHORIZATION

Metadata = tuple[tuple[str, str], ...]


class ServiceStub(Protocol):
    """What `routing_pb2_grpc.RoutingServiceStub` holds on an aio channel, with the types the
    generated code does not state."""

    Economics: grpc.aio.UnaryUnaryMultiCallable[pb.EconomicsRequest, pb.EconomicsResponse]
    Health: grpc.aio.UnaryUnaryMultiCallable[pb.HealthRequest, pb.HealthResponse]
    WatchHealth: grpc.aio.UnaryStreamMultiCallable[pb.WatchHealthRequest, pb.HealthResponse]
    SetStopLoss: grpc.aio.UnaryUnaryMultiCallable[pb.SetStopLossRequest, pb.SetStopLossResponse]
    ReloadConfig: grpc.aio.UnaryUnaryMultiCallable[pb.ReloadConfigRequest, pb.ReloadConfigResponse]
    CloseBreaker: grpc.aio.UnaryUnaryMultiCallable[pb.CloseBreakerRequest, pb.CloseBreakerResponse]
    PauseLane: grpc.aio.UnaryUnaryMultiCallable[pb.PauseLaneRequest, pb.PauseLaneResponse]


def stub(channel: grpc.aio.Channel) -> ServiceStub:
    # The generated stub is unannotated; ServiceStub gives its methods their types.
    return routing_pb2_grpc.RoutingServiceStub(channel)  # type: ignore[no-untyped-call]


def bearer(token: str | None) -> Metadata:
    return ((AUTHORIZATION, f"Bearer {token}"),) if token else ()


def as_json(message: Message) -> dict[str, Any]:
    """Every field, zeros included, under its proto name; 64-bit counts as JSON numbers, not the
    strings proto3 JSON uses by default, so the page does arithmetic on them as they come."""
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )


def failure(error: grpc.aio.AioRpcError) -> str:
    return f"{error.code().name}: {error.details() or ''}"
