"""The shipped Grafana dashboard reads only metrics and labels the service exports, named the way
Prometheus shows them whichever way they reach it (scraped from the service's own /metrics, or
through an OTLP collector's Prometheus exporter), and covers every metric family.
tests/test_prometheus.py runs every query against a real Prometheus."""

from __future__ import annotations

import json
import re

import pytest

from orxaq_grpc.telemetry import attributes, metrics
from orxaq_grpc.telemetry.metrics import COUNTERS, GAUGES, HISTOGRAMS, Instrument
from tests.conftest import CONFIG_DIR

DASHBOARD = CONFIG_DIR / "dashboards" / "grafana-routing.json"
# Labels every Prometheus series has or that PromQL itself makes.
PROMQL_LABELS = {"le", "job", "instance"}
# The two translations of OpenTelemetry names: the Python exporter behind OTEL_METRICS_EXPORTER=
# prometheus (opentelemetry-exporter-prometheus) and a collector's (its Prometheus exporter, or
# Prometheus's own OTLP receiver).
TRANSLATIONS = ("python exporter", "collector")


def prometheus_name(instrument: Instrument, kind: str, translation: str) -> str:
    """Dots to underscores; a braced unit adds nothing, `s` adds `_seconds`, and `1` on a gauge adds
    `_ratio` through a collector but nothing through the Python exporter; counters end in `_total`."""
    name = instrument.name.replace(".", "_")
    unit = re.sub(r"\{[^}]*\}", "", instrument.unit)
    if unit == "s":
        name += "_seconds"
    elif unit == "1":
        name += "_ratio" if kind == "gauge" and translation == "collector" else ""
    elif unit:
        raise AssertionError(f"{instrument.name}: no rule here for the unit {instrument.unit!r}")
    return name + ("_total" if kind == "counter" else "")


def exported_series(translation: str) -> set[str]:
    names = {prometheus_name(i, "counter", translation) for i in COUNTERS}
    names |= {prometheus_name(i, "gauge", translation) for i in GAUGES}
    for histogram in HISTOGRAMS:
        base = prometheus_name(histogram, "histogram", translation)
        names |= {base + suffix for suffix in ("_bucket", "_sum", "_count")}
    return names


def exported_labels() -> set[str]:
    keys = [v for k, v in vars(attributes).items() if k.isupper() and isinstance(v, str)]
    keys += [metrics.SCOPE, metrics.NAME, metrics.STATE, metrics.STAGE, metrics.DISRUPTIVE]
    keys += ["rpc.method", "rpc.response.status_code", "rpc.system.name"]
    return {k.replace(".", "_") for k in keys} | PROMQL_LABELS


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"] if "expr" in t]


def referenced_series() -> set[str]:
    """The series names the dashboard's queries read (label lists and matchers out first)."""
    bare = [re.sub(r"\b(?:by|ignoring)\s*\([^)]*\)|\{[^}]*\}", " ", e) for e in expressions()]
    return {m for e in bare for m in re.findall(r"\b((?:orxaq|rpc)_[a-z_]+)\b", e)}


def test_both_translations_name_every_series_alike() -> None:
    """So one dashboard suits a Prometheus that scrapes the service and one fed by a collector."""
    python_exporter, collector = (exported_series(t) for t in TRANSLATIONS)
    assert python_exporter == collector, python_exporter ^ collector


@pytest.mark.parametrize("translation", TRANSLATIONS)
def test_every_series_the_dashboard_reads_is_exported(translation: str) -> None:
    referenced = referenced_series()
    assert referenced, "the dashboard reads no metrics"
    assert referenced <= exported_series(translation), referenced - exported_series(translation)


def test_every_label_the_dashboard_groups_or_filters_by_is_exported() -> None:
    labels = set()
    for expr in expressions():
        for group in re.findall(r"\b(?:by|ignoring)\s*\(([^)]*)\)", expr):
            labels |= {label.strip() for label in group.split(",") if label.strip()}
        labels |= set(re.findall(r"[{,]\s*([a-z_]+)\s*(?:=~|!=|=)", expr))
    assert labels <= exported_labels(), labels - exported_labels()


def test_every_metric_family_has_a_panel() -> None:
    text = " ".join(expressions())
    missing = [i.name for i in (*COUNTERS, *GAUGES, *HISTOGRAMS) if i.name.replace(".", "_") not in text]
    assert missing == []


def test_the_traces_panel_queries_the_service() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t.get("query", "") for p in dashboard["panels"] for t in p["targets"]]
    assert any('resource.service.name = "orxaq-grpc"' in q and "/Route" in q for q in queries)
