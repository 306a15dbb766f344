"""A small typed client for lanes, operators and tests."""

from __future__ import annotations

from types import TracebackType

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq.routing.v1 import routing_pb2_grpc


class CallFailed(Exception):
    """A call that did not succeed; `violations` lists (field, problem) when the service
    rejected the request and said which fields were wrong."""

    def __init__(self, error: grpc.RpcError) -> None:
        self.code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
        self.details: str = error.details() or ""  # type: ignore[attr-defined]
        self.violations = field_violations(error)
        super().__init__(f"{self.code.name}: {self.details}")


class RoutingClient:
    def __init__(self, address: str, timeout_s: float = 10.0) -> None:
        self._channel = grpc.insecure_channel(address)
        self._stub = routing_pb2_grpc.RoutingServiceStub(self._channel)
        self._timeout_s = timeout_s

    def route(self, request: pb.RouteRequest) -> pb.RouteDecision:
        try:
            return self._stub.Route(request, timeout=self._timeout_s)
        except grpc.RpcError as error:
            raise CallFailed(error) from None

    def health(self) -> pb.HealthResponse:
        try:
            return self._stub.Health(pb.HealthRequest(), timeout=self._timeout_s)
        except grpc.RpcError as error:
            raise CallFailed(error) from None

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


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """The (field, description) pairs of a failed call's google.rpc.BadRequest details."""
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
