"""Tracer and meter providers from the standard OTEL_* variables, exporting over OTLP, or metrics
for a Prometheus to scrape.

Off unless configured: a signal exports when its exporter is named (`OTEL_TRACES_EXPORTER`,
`OTEL_METRICS_EXPORTER`) or an OTLP endpoint is given (`OTEL_EXPORTER_OTLP_ENDPOINT` or the
per-signal one). `OTEL_SDK_DISABLED=true` turns everything off. `OTEL_METRICS_EXPORTER=prometheus`
serves `/metrics` on `OTEL_EXPORTER_PROMETHEUS_HOST`:`OTEL_EXPORTER_PROMETHEUS_PORT` (localhost:9464;
port 0 picks a free one, and the settings then name the port bound); a scrape collects, so no
interval applies. One process binds the port, so it suits a single worker. The protocol is
`OTEL_EXPORTER_OTLP[_<SIGNAL>]_PROTOCOL`: `http/protobuf` (the specification's default) or
`grpc`. Endpoint, headers, timeout, compression and certificates are read by the OTLP
exporters themselves; the sampler (`OTEL_TRACES_SAMPLER[_ARG]`), the span queue
(`OTEL_BSP_*`) and the metric interval (`OTEL_METRIC_EXPORT_INTERVAL`) by the SDK;
`OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` name the resource.

A collector that is down or slow costs routing nothing: spans wait in the batch processor's
bounded queue and are dropped when it is full, export runs on the SDK's own threads, and the
SDK's self-metrics count what was dropped (`otel.sdk.processor.span.processed` with
`error.type`, `otel.sdk.exporter.*.exported`). `ExportWatch` replaces the exporters' per-batch
retry warnings with one warning when an export first fails and one line when it recovers.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Tracer

from orxaq_grpc import __version__

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "orxaq-grpc"
INSTRUMENTATION_SCOPE = "orxaq_grpc"
PROTOCOLS = ("http/protobuf", "grpc")
EXPORTERS = {"traces": ("otlp", "console", "none"), "metrics": ("otlp", "prometheus", "console", "none")}
PROMETHEUS_HOST = "OTEL_EXPORTER_PROMETHEUS_HOST"
PROMETHEUS_PORT = "OTEL_EXPORTER_PROMETHEUS_PORT"
DEFAULT_PROMETHEUS_HOST = "localhost"  # the specification's defaults
DEFAULT_PROMETHEUS_PORT = 9464
# Stopping waits this long for the last batch; a collector that is down must not hold a shutdown.
SHUTDOWN_TIMEOUT_S = 3.0
_INTERNAL_METRICS = "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED"
_WATCHED_LOGGERS = ("opentelemetry.exporter", "opentelemetry.sdk._shared_internal")


class TelemetryConfigError(ValueError):
    """An OTEL_* variable this service cannot honour; names the variable and the problem."""


@dataclass(frozen=True, slots=True)
class SignalSettings:
    signal: str  # "traces" or "metrics"
    exporter: str  # one of EXPORTERS[signal]
    protocol: str  # one of PROTOCOLS, for "otlp"
    # For "otlp" as configured, for the log ("" means the exporter's default); for "prometheus"
    # host:port to serve /metrics on (an IPv6 host in brackets), the bound port once it serves.
    endpoint: str

    @property
    def enabled(self) -> bool:
        return self.exporter != "none"

    def describe(self) -> str:
        if self.exporter == "prometheus":
            return f"prometheus http://{self.endpoint}/metrics"
        if self.exporter != "otlp":
            return self.exporter
        return f"otlp {self.protocol} {self.endpoint or '(default endpoint)'}"


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    traces: SignalSettings
    metrics: SignalSettings

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TelemetrySettings:
        disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
        return cls(
            traces=_signal_settings("traces", env, disabled),
            metrics=_signal_settings("metrics", env, disabled),
        )

    def describe(self) -> str:
        return f"traces: {self.traces.describe()}; metrics: {self.metrics.describe()}"


def _signal_settings(signal: str, env: Mapping[str, str], disabled: bool) -> SignalSettings:
    upper = signal.upper()
    endpoint = env.get(f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    named = env.get(f"OTEL_{upper}_EXPORTER", "").strip().lower()
    # The specification defaults the exporter to otlp; here it is off until something is configured.
    exporter = "none" if disabled else named or ("otlp" if endpoint else "none")
    if exporter not in EXPORTERS[signal]:
        raise TelemetryConfigError(
            f"OTEL_{upper}_EXPORTER: {named!r} is not supported; use one of {', '.join(EXPORTERS[signal])}"
        )
    if exporter == "prometheus":
        return SignalSettings(signal, exporter, "", _prometheus_address(env))
    protocol_variable = f"OTEL_EXPORTER_OTLP_{upper}_PROTOCOL"
    if protocol_variable not in env:
        protocol_variable = "OTEL_EXPORTER_OTLP_PROTOCOL"
    protocol = env.get(protocol_variable, PROTOCOLS[0]).strip().lower()
    if exporter == "otlp" and protocol not in PROTOCOLS:
        raise TelemetryConfigError(
            f"{protocol_variable}: {protocol!r} is not supported; use one of {', '.join(PROTOCOLS)}"
        )
    return SignalSettings(signal, exporter, protocol, endpoint)


def _prometheus_address(env: Mapping[str, str]) -> str:
    """host:port from OTEL_EXPORTER_PROMETHEUS_HOST and _PORT (unset or empty: the defaults)."""
    host = env.get(PROMETHEUS_HOST, "").strip().removeprefix("[").removesuffix("]") or DEFAULT_PROMETHEUS_HOST
    given = env.get(PROMETHEUS_PORT, "").strip()
    if given and not (given.isascii() and given.isdecimal() and int(given) <= 65535):
        raise TelemetryConfigError(
            f"{PROMETHEUS_PORT}: {given!r} is not a port; use a number from 0 to 65535 (0 picks a free one)"
        )
    return _host_port(host, int(given) if given else DEFAULT_PROMETHEUS_PORT)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ExportWatch(logging.Filter):
    """Knows whether each signal's export works, and says so once per outage.

    Installed as a filter on the OTLP exporters' loggers, it keeps their per-batch retry and
    failure messages (one or more per batch while a collector is down) as the cause to quote,
    and the batch processor's queue-full warnings while an outage is already reported."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._failing: set[str] = set()
        self._cause = ""
        self.failures: dict[str, int] = {}  # failed export calls per signal since start

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        if record.name.startswith("opentelemetry.exporter"):
            self._cause = record.getMessage()
            return False
        return not self._failing  # the batch processor's "queue full" during a reported outage

    def exported(self, signal: str, target: str, ok: bool) -> None:
        with self._lock:
            if ok:
                if signal in self._failing:
                    self._failing.discard(signal)
                    log.info("telemetry: %s export to %s works again", signal, target)
                return
            self.failures[signal] = self.failures.get(signal, 0) + 1
            if signal in self._failing:
                return
            self._failing.add(signal)
        log.warning(
            "telemetry: %s export to %s failed (%s); routing is unaffected, what cannot be sent is "
            "dropped and counted; logged once until it recovers",
            signal,
            target,
            self._cause or "no detail",
        )

    def install(self) -> None:
        """Filters every OTLP exporter and SDK processor logger that exists once they are imported."""
        for name in list(logging.root.manager.loggerDict):
            if name.startswith(_WATCHED_LOGGERS):
                logging.getLogger(name).addFilter(self)

    def uninstall(self) -> None:
        for name in list(logging.root.manager.loggerDict):
            if name.startswith(_WATCHED_LOGGERS):
                logging.getLogger(name).removeFilter(self)


class _WatchedSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, watch: ExportWatch, target: str) -> None:
        self._inner, self._watch, self._target = inner, watch, target

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._inner.export(spans)
        self._watch.exported("traces", self._target, result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _WatchedMetricExporter(MetricExporter):
    def __init__(self, inner: MetricExporter, watch: ExportWatch, target: str) -> None:
        # The reader asks the exporter for temporality and aggregation: pass the inner one's on.
        super().__init__(inner._preferred_temporality, inner._preferred_aggregation)
        self._inner, self._watch, self._target = inner, watch, target

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object
    ) -> MetricExportResult:
        result = self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        self._watch.exported("metrics", self._target, result is MetricExportResult.SUCCESS)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def _span_exporter(settings: SignalSettings, meters: MeterProvider | None) -> SpanExporter:
    if settings.exporter == "console":
        return ConsoleSpanExporter()
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as OverGrpc

        return OverGrpc(meter_provider=meters)  # its own counts of spans exported and failed
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as OverHttp

    return OverHttp(meter_provider=meters)  # its own counts of spans exported and failed


def _metric_exporter(settings: SignalSettings) -> MetricExporter:
    if settings.exporter == "console":
        return ConsoleMetricExporter()
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as OverGrpc

        return OverGrpc()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as OverHttp

    return OverHttp()


@dataclass(frozen=True, slots=True)
class _MetricsEndpoint:
    """The running /metrics server: where it listens, and how to stop it."""

    address: str  # host:port, the port as bound
    stop: Callable[[], None]


def _prometheus_reader(address: str) -> tuple[MetricReader, _MetricsEndpoint]:
    """A reader that collects when Prometheus scrapes, and the /metrics server it answers on.

    The registry is the reader's own (no other Telemetry's series, in a process that builds two)
    with the Python client's process and runtime series beside ours."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import (
        GC_COLLECTOR,
        PLATFORM_COLLECTOR,
        PROCESS_COLLECTOR,
        CollectorRegistry,
        start_http_server,
    )

    host, _, port = address.rpartition(":")
    bare_host = host.removeprefix("[").removesuffix("]")
    registry = CollectorRegistry(auto_describe=True)
    for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(standard)
    reader = PrometheusMetricReader(registry=registry)
    try:
        server, thread = start_http_server(int(port), bare_host, registry)
    except OSError as exc:
        reader.shutdown()
        detail = exc.strerror or str(exc)
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            raise TelemetryConfigError(
                f"{PROMETHEUS_HOST}: cannot serve /metrics on {address}: {detail}"
            ) from None
        raise TelemetryConfigError(
            f"{PROMETHEUS_PORT}: cannot serve /metrics on {address}: {detail} (one process per port: "
            "`serve --workers N` with more than one worker cannot export to Prometheus)"
        ) from None

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return reader, _MetricsEndpoint(_host_port(bare_host, server.server_port), stop)


def service_resource() -> Resource:
    """The SDK's resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) over our defaults."""
    detected = Resource.create()
    ours = {
        SERVICE_NAME: DEFAULT_SERVICE_NAME,
        "service.version": __version__,
        "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
    }
    named = str(detected.attributes.get(SERVICE_NAME, ""))
    attributes = {k: v for k, v in detected.attributes.items() if k != SERVICE_NAME}
    if named and not named.startswith("unknown_service"):
        attributes[SERVICE_NAME] = named
    return Resource(ours).merge(Resource(attributes))


@dataclass
class Telemetry:
    """The process's providers; `tracer` and `meter_provider` are None for a signal that is off."""

    settings: TelemetrySettings
    tracer: Tracer | None = None
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    watch: ExportWatch = field(default_factory=ExportWatch)
    metrics_endpoint: _MetricsEndpoint | None = None  # the /metrics server, for "prometheus"

    def meter(self) -> Meter | None:
        if self.meter_provider is None:
            return None
        return self.meter_provider.get_meter(INSTRUMENTATION_SCOPE, __version__)

    def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Flushes what is queued, waiting at most `timeout_s` before giving up on it."""
        providers = [p for p in (self.tracer_provider, self.meter_provider) if p is not None]
        if not providers:
            return

        def flush_and_stop() -> None:
            if self.metrics_endpoint is not None:
                self.metrics_endpoint.stop()  # no scrape of a provider that is shutting down
            for provider in providers:
                provider.shutdown()

        done = threading.Thread(target=flush_and_stop, name="telemetry-shutdown", daemon=True)
        done.start()
        done.join(timeout_s)
        if done.is_alive():
            log.warning("telemetry: the collector did not take the last batch within %.0f s", timeout_s)
        self.watch.uninstall()


def configure(env: Mapping[str, str] | None = None) -> Telemetry:
    """Builds the providers the environment asks for (and, for "prometheus", starts serving
    /metrics); raises TelemetryConfigError on a bad variable or a /metrics address it cannot bind."""
    env = os.environ if env is None else env
    settings = TelemetrySettings.from_env(env)
    telemetry = Telemetry(settings)
    if not (settings.traces.enabled or settings.metrics.enabled):
        return telemetry
    # The SDK's own counts of spans queued, dropped and exported: on unless the operator says no.
    os.environ.setdefault(_INTERNAL_METRICS, "true")
    resource = service_resource()
    if settings.metrics.exporter == "prometheus":
        reader, telemetry.metrics_endpoint = _prometheus_reader(settings.metrics.endpoint)
        # The port as bound (port 0 picked one): the start-up log says where to scrape.
        metrics = replace(settings.metrics, endpoint=telemetry.metrics_endpoint.address)
        telemetry.settings = settings = replace(settings, metrics=metrics)
    elif settings.metrics.enabled:
        exporter = _WatchedMetricExporter(
            _metric_exporter(settings.metrics), telemetry.watch, settings.metrics.describe()
        )
        reader = PeriodicExportingMetricReader(exporter)
    if settings.metrics.enabled:
        telemetry.meter_provider = MeterProvider(
            metric_readers=[reader],
            resource=resource,
            shutdown_on_exit=False,  # shutdown() bounds the wait; an exit hook would not
        )
    if settings.traces.enabled:
        provider = TracerProvider(resource=resource, shutdown_on_exit=False)  # sampler from the env
        inner = _span_exporter(settings.traces, telemetry.meter_provider)
        span_exporter = _WatchedSpanExporter(inner, telemetry.watch, settings.traces.describe())
        provider.add_span_processor(
            BatchSpanProcessor(span_exporter, meter_provider=telemetry.meter_provider)
        )
        telemetry.tracer_provider = provider
        telemetry.tracer = provider.get_tracer(INSTRUMENTATION_SCOPE, __version__)
    telemetry.watch.install()
    return telemetry
