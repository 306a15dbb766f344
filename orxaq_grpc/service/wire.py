"""Registering services so that a request whose bytes do not parse is INVALID_ARGUMENT, not UNKNOWN.

grpc's own path for a message that fails to deserialize answers UNKNOWN (or INTERNAL) and logs a
traceback per request: a flood of garbage is a flood of log. Here every method's deserializer keeps a
parse failure as a `Malformed` request instead, and a thin wrapper answers it INVALID_ARGUMENT with a
google.rpc.BadRequest naming `request`, before the servicer sees it. Refusals are logged once per
period with a count, never once each.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from orxaq_grpc.service.errors import end_with, invalid_argument
from orxaq_grpc.vocabulary import Violation

log = logging.getLogger(__name__)

LOG_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class Malformed:
    """A request that did not parse as its method's message."""

    message: str  # the expected message's full name
    problem: str


class RefusalLog:
    """Counts refused calls of one kind and says so at most once per `every_s`: the first one at once,
    then a line with the count of the period, whatever arrives."""

    def __init__(
        self,
        what: str = "malformed request(s)",
        every_s: float = LOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._what = what
        self._every_s = every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._count = 0
        self._next = -1.0
        self._latest = ("", "")
        self.total = 0

    def refused(self, method: str, detail: str) -> None:
        with self._lock:
            self.total += 1
            self._count += 1
            self._latest = (method, detail)
            now = self._clock()
            if now < self._next:
                return
            count, self._count, self._next = self._count, 0, now + self._every_s
        self._say(count, method, detail)

    def flush(self, force: bool = False) -> None:
        """Says what the period counted once it is over (or now, `force`, on shutdown): a flood that
        stops is still told whole, not only its first refusal."""
        with self._lock:
            now = self._clock()
            if not self._count or (now < self._next and not force):
                return
            count, self._count, self._next = self._count, 0, now + self._every_s
            method, detail = self._latest
        self._say(count, method, detail)

    def _say(self, count: int, method: str, detail: str) -> None:
        log.warning(
            "refused %d %s in the last %g s; the latest, to %s: %s",
            count,
            self._what,
            self._every_s,
            method,
            detail,
        )


def _parser(message_class: type[Message]) -> Callable[[bytes], Message | Malformed]:
    name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> Message | Malformed:
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            return Malformed(name, str(exc) or "cannot be parsed")

    return parse


def _serializer(message_class: type[Message]) -> Callable[[Message | bytes], bytes]:
    """A response's bytes; a handler that sends one message on many streams encodes it once and
    hands over the bytes (WatchHealth)."""
    encode = message_class.SerializeToString

    def serialize(response: Message | bytes) -> bytes:
        return response if isinstance(response, bytes) else encode(response)

    return serialize


def _refusal(request: Malformed) -> grpc.Status:
    problem = f"is not a valid {request.message}: {request.problem}"
    return invalid_argument(request.message.rpartition(".")[2], [Violation("request", problem)])


def _guarded(method: str, handler: Callable[..., Any], refusals: RefusalLog) -> Callable[..., Any]:
    """The servicer's method, answering a malformed request itself (same kind of callable)."""
    if inspect.isasyncgenfunction(handler):

        async def streamed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            if isinstance(request, Malformed):
                refusals.refused(method, f"not a {request.message} ({request.problem})")
                end_with(context, _refusal(request))
                return
            async for item in handler(request, context):
                yield item

        return streamed

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if isinstance(request, Malformed):
            refusals.refused(method, f"not a {request.message} ({request.problem})")
            end_with(context, _refusal(request))
            return None
        return await handler(request, context)

    return unary


def register(
    server: grpc.aio.Server, service: ServiceDescriptor, servicer: object, refusals: RefusalLog
) -> None:
    """Adds every method of `service` (unary or server-streaming) as implemented by `servicer`."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request_class = GetMessageClass(method.input_type)
        response_class = GetMessageClass(method.output_type)
        handler = _guarded(f"{service.full_name}/{method.name}", getattr(servicer, method.name), refusals)
        if method.client_streaming:
            raise ValueError(f"{service.full_name}/{method.name}: client streaming is not served here")
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            handler,
            request_deserializer=_parser(request_class),
            response_serializer=_serializer(response_class),
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
