"""The shipped Grafana dashboard reads only metrics and labels the service exports, named the
way an OTLP collector's Prometheus exporter names them, and covers every metric family."""

from __future__ import annotations

import json
import re

from orxaq_grpc.telemetry import attributes, metrics
from orxaq_grpc.telemetry.metrics import COUNTERS, GAUGES, HISTOGRAMS, Instrument
from tests.conftest import CONFIG_DIR

DASHBOARD = CONFIG_DIR / "dashboards" / "grafana-routing.json"
# Labels every Prometheus series has or that PromQL itself makes.
PROMQL_LABELS = {"le", "job", "instance"}


def prometheus_name(instrument: Instrument, kind: str) -> str:
    """The collector's translation: dots to underscores; `s` adds `_seconds`, a braced unit
    nothing; counters end in `_total`."""
    name = instrument.name.replace(".", "_")
    if instrument.unit == "s":
        name += "_seconds"
    return name + ("_total" if kind == "counter" else "")


def exported_series() -> set[str]:
    names = {prometheus_name(i, "counter") for i in COUNTERS}
    names |= {prometheus_name(i, "gauge") for i in GAUGES}
    for histogram in HISTOGRAMS:
        names |= {
            prometheus_name(histogram, "histogram") + suffix for suffix in ("_bucket", "_sum", "_count")
        }
    return names


def exported_labels() -> set[str]:
    keys = [v for k, v in vars(attributes).items() if k.isupper() and isinstance(v, str)]
    keys += [metrics.SCOPE, metrics.NAME, metrics.STATE, metrics.STAGE, metrics.DISRUPTIVE]
    keys += ["rpc.method", "rpc.response.status_code", "rpc.system.name"]
    return {k.replace(".", "_") for k in keys} | PROMQL_LABELS


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"] if "expr" in t]


def test_every_series_the_dashboard_reads_is_exported() -> None:
    # Label lists and matchers out first: what is left names series.
    bare = [re.sub(r"\b(?:by|ignoring)\s*\([^)]*\)|\{[^}]*\}", " ", e) for e in expressions()]
    referenced = {m for e in bare for m in re.findall(r"\b((?:orxaq|rpc)_[a-z_]+)\b", e)}
    assert referenced, "the dashboard reads no metrics"
    assert referenced <= exported_series(), referenced - exported_series()


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
