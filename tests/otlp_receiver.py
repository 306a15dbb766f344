"""A real OTLP receiver for the tests: the collector's trace and metrics services over gRPC
(`opentelemetry-proto`), and the same two over HTTP (`/v1/traces`, `/v1/metrics`).

It keeps every export request it is sent and flattens them for assertions: spans with their
resource, and metric data points by metric name. `hold()` makes it a slow collector: exports
wait until `release()`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

WAIT_S = 20.0


def value_of(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return tuple(value_of(v) for v in any_value.array_value.values)
    return getattr(any_value, kind) if kind else None


def attributes_of(pairs: Iterator[KeyValue] | Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in pairs}


@dataclass(frozen=True)
class ReceivedSpan:
    span: Span
    resource: dict[str, Any]

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes_of(self.span.attributes)


@dataclass(frozen=True)
class ReceivedPoint:
    metric: str
    kind: str  # "sum", "gauge" or "histogram"
    attributes: dict[str, Any]
    value: float  # sum or gauge value; a histogram's count
    point: Any


class Received:
    """What arrived, guarded by one condition that waiters sleep on."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.trace_requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metric_requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self._held = threading.Event()
        self._held.set()
        self.waiting = threading.Event()  # set while an export is being held

    def add(self, request: Any) -> None:
        if not self._held.is_set():
            self.waiting.set()
            self._held.wait(WAIT_S)
        with self._changed:
            if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
                self.trace_requests.append(request)
            else:
                self.metric_requests.append(request)
            self._changed.notify_all()

    def hold(self) -> None:
        self._held.clear()

    def release(self) -> None:
        self._held.set()

    def spans(self) -> list[ReceivedSpan]:
        with self._changed:
            requests = list(self.trace_requests)
        return [
            ReceivedSpan(span, attributes_of(rs.resource.attributes))
            for request in requests
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    def points(self, metric: str | None = None) -> list[ReceivedPoint]:
        with self._changed:
            requests = list(self.metric_requests)
        found = []
        for request in requests:
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if metric is None or m.name == metric:
                            found.extend(_points(m))
        return found

    def latest(self, metric: str) -> dict[frozenset, float]:
        """Each attribute set's value in the newest export that carried `metric` (cumulative
        sums and gauges: the newest point is the current figure)."""
        newest: dict[frozenset, float] = {}
        for point in self.points(metric):
            newest[frozenset(point.attributes.items())] = point.value
        return newest

    def wait_for(self, predicate: Callable[[], Any], what: str) -> Any:
        """Waits until `predicate()` is truthy and returns it; fails naming `what`."""
        with self._changed:
            result = self._changed.wait_for(predicate, WAIT_S)
        assert result, f"the receiver never got {what}"
        return result

    def span_named(self, name: str, where: Callable[[ReceivedSpan], bool] = lambda s: True) -> ReceivedSpan:
        return self.wait_for(
            lambda: next((s for s in self.spans() if s.name == name and where(s)), None), f"a span {name!r}"
        )


def _points(metric: Any) -> list[ReceivedPoint]:
    kind = metric.WhichOneof("data")
    data = getattr(metric, kind)
    points = []
    for p in data.data_points:
        if kind == "histogram":
            value = float(p.count)
        else:
            value = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
        points.append(ReceivedPoint(metric.name, kind, attributes_of(p.attributes), value, p))
    return points


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, received: Received) -> None:
        self._received = received

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._received.add(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, received: Received) -> None:
        self._received = received

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._received.add(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class GrpcReceiver(Received):
    """The collector's OTLP/gRPC services on a loopback port."""

    def __init__(self, port: int = 0) -> None:
        super().__init__()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp"))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsService(self), self._server)
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")
        self._server.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.release()
        self._server.stop(grace=None).wait(5)


class HttpReceiver(Received):
    """The collector's OTLP/HTTP endpoints (binary protobuf) on a loopback port."""

    def __init__(self) -> None:
        super().__init__()
        received = self
        paths = {
            "/v1/traces": (
                trace_service_pb2.ExportTraceServiceRequest,
                trace_service_pb2.ExportTraceServiceResponse,
            ),
            "/v1/metrics": (
                metrics_service_pb2.ExportMetricsServiceRequest,
                metrics_service_pb2.ExportMetricsServiceResponse,
            ),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path not in paths:
                    self.send_error(404)
                    return
                request_type, response_type = paths[self.path]
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.add(request_type.FromString(body))
                answer = response_type().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-http", daemon=True)
        self._thread.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()


def otlp_env(endpoint: str, protocol: str, **extra: str) -> dict[str, str]:
    """The OTEL_* variables that point a service at a receiver, exporting without delay."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        **extra,
    }
