"""A small typed client for lanes, operators and tests."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry import propagate

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq.routing.v1 import routing_pb2_grpc
from orxaq_grpc.access.addresses import is_loopback

_Request = TypeVar("_Request", bound=Message)
_Response = TypeVar("_Response", bound=Message)


class CallFailed(Exception):
    """A call that did not succeed; `violations` lists (field, problem) when the service
    rejected the request and said which fields were wrong."""

    def __init__(self, error: grpc.RpcError) -> None:
        self.code: grpc.StatusCode = error.code()
        self.details: str = error.details() or ""
        self.violations = field_violations(error)
        super().__init__(f"{self.code.name}: {self.details}")


class _RoutingStub(Protocol):
    """What `routing_pb2_grpc.RoutingServiceStub` holds: the generated code has no annotations,
    so the request and response type of each method are stated here."""

    Route: grpc.UnaryUnaryMultiCallable[pb.RouteRequest, pb.RouteDecision]
    RouteBatch: grpc.UnaryUnaryMultiCallable[pb.RouteBatchRequest, pb.RouteBatchResponse]
    Report: grpc.UnaryUnaryMultiCallable[pb.ReportRequest, pb.ReportAck]
    Economics: grpc.UnaryUnaryMultiCallable[pb.EconomicsRequest, pb.EconomicsResponse]
    Health: grpc.UnaryUnaryMultiCallable[pb.HealthRequest, pb.HealthResponse]
    WatchHealth: grpc.UnaryStreamMultiCallable[pb.WatchHealthRequest, pb.HealthResponse]
    Scale: grpc.UnaryUnaryMultiCallable[pb.ScaleRequest, pb.ScaleDecision]
    SetStopLoss: grpc.UnaryUnaryMultiCallable[pb.SetStopLossRequest, pb.SetStopLossResponse]
    ReloadConfig: grpc.UnaryUnaryMultiCallable[pb.ReloadConfigRequest, pb.ReloadConfigResponse]
    CloseBreaker: grpc.UnaryUnaryMultiCallable[pb.CloseBreakerRequest, pb.CloseBreakerResponse]
    PauseLane: grpc.UnaryUnaryMultiCallable[pb.PauseLaneRequest, pb.PauseLaneResponse]


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the service is and how to reach it: plaintext, TLS (`tls`, trusting the PEM `ca`, or the
    system's roots without it) or mutual TLS (`cert` and `key`), with a bearer token or none."""

    address: str
    tls: bool = False
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        if self.token and not self.secure and not is_loopback(self.address):
            raise ValueError(
                f"the bearer token would cross the network in plaintext to {self.address}: "
                "call over TLS (--tls, or --tls-ca), or on loopback"
            )

    @property
    def secure(self) -> bool:
        return bool(self.tls or self.ca or self.cert)

    def channel(self) -> grpc.Channel:
        if not self.secure:
            return grpc.insecure_channel(self.address)
        return grpc.secure_channel(self.address, self._credentials())

    def aio_channel(self) -> grpc.aio.Channel:
        """The same channel for asyncio callers (the web companion); made inside their running loop."""
        if not self.secure:
            return grpc.aio.insecure_channel(self.address)
        return grpc.aio.secure_channel(self.address, self._credentials())

    def _credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The bearer token as call metadata (sent over plaintext too: loopback setups use it)."""
        return ((AUTHORIZATION, f"Bearer {self.token}"),) if self.token else ()


AUTHORIZATION = "authorization"


class RoutingClient:
    def __init__(self, address: str | Connection, timeout_s: float = 10.0) -> None:
        connection = address if isinstance(address, Connection) else Connection(address)
        self._channel = connection.channel()
        self._credentials = connection.metadata()
        # The generated stub is unannotated; _RoutingStub gives its methods their types.
        self._stub: _RoutingStub = routing_pb2_grpc.RoutingServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._timeout_s = timeout_s

    def route(self, request: pb.RouteRequest) -> pb.RouteDecision:
        return self._unary(self._stub.Route, request)

    def route_batch(
        self, requests: Iterable[pb.RouteRequest] | pb.RouteBatchRequest
    ) -> list[pb.RouteDecision | pb.RouteError]:
        """Many tasks in one call: per request, in order, its decision or its error (what Route would
        have failed with for it alone, `code` a google.rpc.Code number). Raises CallFailed only when
        the call itself is refused: no credentials, no requests, more than the policy allows
        (`requests` in `violations`), an answer too large to send."""
        batch = (
            requests
            if isinstance(requests, pb.RouteBatchRequest)
            else pb.RouteBatchRequest(requests=requests)
        )
        response = self._unary(self._stub.RouteBatch, batch)
        return [r.decision if r.WhichOneof("outcome") == "decision" else r.error for r in response.results]

    def report(self, request: pb.ReportRequest) -> pb.ReportAck:
        return self._unary(self._stub.Report, request)

    def economics(self) -> pb.EconomicsResponse:
        return self._unary(self._stub.Economics, pb.EconomicsRequest())

    def health(self) -> pb.HealthResponse:
        return self._unary(self._stub.Health, pb.HealthRequest())

    def scale(self, request: pb.ScaleRequest) -> pb.ScaleDecision:
        return self._unary(self._stub.Scale, request)

    def set_stop_loss(self, active: bool, note: str = "") -> pb.SetStopLossResponse:
        return self._unary(self._stub.SetStopLoss, pb.SetStopLossRequest(active=active, note=note))

    def reload_config(self, note: str = "") -> pb.ReloadConfigResponse:
        return self._unary(self._stub.ReloadConfig, pb.ReloadConfigRequest(note=note))

    def close_breaker(self, scope: str, name: str, note: str = "") -> pb.CloseBreakerResponse:
        return self._unary(self._stub.CloseBreaker, pb.CloseBreakerRequest(scope=scope, name=name, note=note))

    def pause_lane(self, lane: str, paused: bool, note: str = "") -> pb.PauseLaneResponse:
        return self._unary(self._stub.PauseLane, pb.PauseLaneRequest(lane=lane, paused=paused, note=note))

    def _unary(
        self, method: grpc.UnaryUnaryMultiCallable[_Request, _Response], request: _Request
    ) -> _Response:
        try:
            return method(request, timeout=self._timeout_s, metadata=self._metadata())
        except grpc.RpcError as error:
            raise CallFailed(error) from None

    def watch_health(self, heartbeat_s: float = 0.0) -> Iterator[pb.HealthResponse]:
        """Snapshots as the service sends them: now, on every change, and heartbeats; no deadline."""
        try:
            yield from self._stub.WatchHealth(
                pb.WatchHealthRequest(heartbeat_s=heartbeat_s), metadata=self._metadata()
            )
        except grpc.RpcError as error:
            raise CallFailed(error) from None

    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        return (self._credentials + (trace_metadata() or ())) or None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RoutingClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def trace_metadata() -> tuple[tuple[str, str], ...] | None:
    """The caller's current trace context as W3C `traceparent` metadata, so the service's span
    joins the lane's trace; None when the caller traces nothing (or has no SDK configured)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple(carrier.items()) or None


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """The (field, description) pairs of a failed call's google.rpc.BadRequest details."""
    status = rpc_status.from_call(error)
    if status is None:
        return []
    found: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found.extend((v.field, v.description) for v in bad_request.field_violations)
    return found
