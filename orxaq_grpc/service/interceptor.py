"""A server span and a duration point for every RPC, following the OpenTelemetry RPC conventions.

Written here rather than taken from opentelemetry-instrumentation-grpc: its asyncio interceptor
records no status for `abort_with_status`, wraps each call's context in a proxy object and
re-wraps the handler on every call. This one reads the real status from the context once the
handler is done (however it was set: refusals here set it, see `errors.end_with`), wraps each
method's handler once (`WrappingInterceptor`, which the gate shares), and starts nothing when
its signal is off.

The span is current while the handler runs, so the servicer adds the routing attributes to
it; a caller's W3C trace context (`traceparent` metadata) becomes its parent.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import Token
from typing import Any, TypeAlias, TypeVar

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.metrics import Histogram
from opentelemetry.trace import SpanKind, Status, StatusCode

RPC_SYSTEM_NAME = "rpc.system.name"
RPC_METHOD = "rpc.method"
RPC_STATUS_CODE = "rpc.response.status_code"
ERROR_TYPE = "error.type"
# The gRPC codes that are server errors; the rest (a bad request, a missing entity) are the caller's.
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

# How a call ends without anything to record: an abort carries its status, the others are the caller's.
_EXPECTED_ENDINGS = (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit)

# One interceptor serves every method, so requests, responses and their handlers are of any type.
# Quoted: the stubs make grpc's classes generic, but at runtime they take no type arguments.
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Behavior: TypeAlias = Callable[[Any, Context], Any]
Req = TypeVar("Req")
Resp = TypeVar("Resp")


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """An interceptor that wraps each handler's behavior once, when it is first handed over, and
    hands out the wrapped handler from then on. Keyed by the handler itself (held, so its id stays
    its own): grpc hands over the same one for every call of a method, and an inner interceptor
    may hand over a few of its own (the gate's refusals)."""

    def __init__(self) -> None:
        self._wrapped: dict[int, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Req, Resp] | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED
            return handler
        cached = self._wrapped.get(id(handler))
        if cached is None:
            cached = self._wrapped[id(handler)] = (handler, self._wrap(handler, handler_call_details.method))
        return cached[1]

    def _wrap(self, handler: Handler, method: str) -> Handler:
        kind = ("stream_" if handler.request_streaming else "unary_") + (
            "stream" if handler.response_streaming else "unary"
        )
        wrap = self._streaming if handler.response_streaming else self._unary
        # grpc's handlers are namedtuples (grpc._utilities.RpcMethodHandler); the stubs know only the ABC.
        wrapped: Handler = handler._replace(  # type: ignore[attr-defined]
            **{kind: wrap(getattr(handler, kind), method)}
        )
        return wrapped

    def _unary(self, behavior: Behavior, method: str) -> Behavior:
        """`behavior` of a method with one response (`method` is its path, /service/Method), wrapped."""
        raise NotImplementedError

    def _streaming(self, behavior: Behavior, method: str) -> Behavior:
        """`behavior` of a method that streams responses, wrapped: an async generator of them."""
        raise NotImplementedError


async def answer(behavior: Behavior, request: Any, context: Context) -> Any:
    """The response of a behavior with one, whether it is a coroutine function or a plain one."""
    result = behavior(request, context)
    return await result if inspect.isawaitable(result) else result


async def responses(behavior: Behavior, request: Any, context: Context) -> AsyncIterator[Any]:
    """The responses of a streaming behavior, whether it yields them or writes them with context.write()."""
    result = behavior(request, context)
    if inspect.isawaitable(result):
        await result
        return
    async for response in result:
        yield response


class TelemetryInterceptor(WrappingInterceptor):
    def __init__(self, tracer: trace.Tracer | None, duration: Histogram | None) -> None:
        super().__init__()
        self._tracer = tracer
        self._duration = duration
        self._point_attributes: dict[tuple[str, grpc.StatusCode], dict[str, str]] = {}

    def _unary(self, behavior: Behavior, path: str) -> Behavior:
        method = path.lstrip("/")

        async def observed(request: Any, context: Context) -> Any:
            started = time.perf_counter()
            span, token = self._start(method, context)
            failure: BaseException | None = None
            try:
                return await answer(behavior, request, context)
            except BaseException as exc:
                failure = exc
                raise
            finally:
                self._finish(method, context, span, token, started, failure)

        return observed

    def _streaming(self, behavior: Behavior, path: str) -> Behavior:
        method = path.lstrip("/")

        async def observed(request: Any, context: Context) -> AsyncIterator[Any]:
            started = time.perf_counter()
            span, token = self._start(method, context)
            failure: BaseException | None = None
            try:
                async for response in responses(behavior, request, context):
                    yield response
            except BaseException as exc:
                failure = exc
                raise
            finally:
                self._finish(method, context, span, token, started, failure)

        return observed

    def _start(
        self, method: str, context: Context
    ) -> tuple[trace.Span | None, Token[otel_context.Context] | None]:
        """The span and the token that makes it current, or neither when tracing is off."""
        if self._tracer is None:
            return None, None
        metadata = context.invocation_metadata()
        # The stubs iterate aio.Metadata as plain pairs; grpc.aio hands over _Metadatum namedtuples.
        parent = propagate.extract({m.key: m.value for m in metadata}) if metadata else None  # type: ignore[attr-defined]
        span = self._tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={RPC_SYSTEM_NAME: "grpc", RPC_METHOD: method},
            record_exception=False,
            set_status_on_exception=False,
        )
        return span, otel_context.attach(trace.set_span_in_context(span))

    def _finish(
        self,
        method: str,
        context: Context,
        span: trace.Span | None,
        token: Token[otel_context.Context] | None,
        started: float,
        failure: BaseException | None,
    ) -> None:
        code = _status_code(context, failure)
        if self._duration is not None:
            key = (method, code)
            point = self._point_attributes.get(key)
            if point is None:
                point = {RPC_SYSTEM_NAME: "grpc", RPC_METHOD: method, RPC_STATUS_CODE: code.name}
                self._point_attributes[key] = point
            self._duration.record(time.perf_counter() - started, point)
        if span is None or token is None:  # tracing is off: _start gave neither
            return
        otel_context.detach(token)
        if span.is_recording():
            span.set_attribute(RPC_STATUS_CODE, code.name)
            if code in SERVER_ERRORS:
                span.set_attribute(ERROR_TYPE, code.name)
                span.set_status(Status(StatusCode.ERROR, context.details() or code.name))
            if failure is not None and not isinstance(failure, _EXPECTED_ENDINGS):
                span.record_exception(failure)  # escaped the servicer's own error mapping
        span.end()


def _status_code(context: Context, failure: BaseException | None) -> grpc.StatusCode:
    """The code the caller sees: what abort() or set_code() left on the context, else what gRPC
    makes of how the handler ended (an escaped exception is UNKNOWN, a cancelled call CANCELLED)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if failure is None or isinstance(failure, GeneratorExit):  # a stream the caller stopped reading
        return grpc.StatusCode.OK
    if isinstance(failure, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN
