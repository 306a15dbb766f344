"""The compiled kernel and its pure-Python twin give the same answers."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orxaq_grpc import _scoring_py
from tests.conftest import KERNELS, needs_compiled

finite = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def scoring_case(draw: st.DrawFn) -> dict:
    n = draw(st.integers(min_value=1, max_value=40))

    def column(lo: float, hi: float) -> list[float]:
        return draw(st.lists(st.floats(lo, hi), min_size=n, max_size=n))

    # Few distinct values make exact ties (and so every tie-break) likely.
    quality = draw(st.lists(st.sampled_from([40.0, 60.0, 60.0, 80.0, 95.0]), min_size=n, max_size=n))
    catalog = {
        "input_price": column(0.0, 80.0),
        "output_price": column(0.0, 200.0),
        "speed": column(1.0, 500.0),
        "ttft": column(0.0, 20.0),
        "quality": quality,
        "quality_score": [q / 100.0 for q in quality],
        "context_window": draw(st.lists(st.sampled_from([8e3, 32e3, 128e3, 1e6]), min_size=n, max_size=n)),
        "max_output": draw(st.lists(st.sampled_from([4e3, 32e3, 128e3]), min_size=n, max_size=n)),
        "capabilities": draw(st.lists(st.integers(0, 7), min_size=n, max_size=n)),
        "provider_slot": draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)),
    }
    return {**_request_part(draw, catalog, n), "catalog": catalog, "k": draw(st.integers(1, n + 2)), "n": n}


def _request_part(draw: st.DrawFn, catalog: dict, n: int) -> dict:
    """What one request brings to a catalog of n models: its lane's codes, health, bias and numbers."""
    unhealthy = bytes(draw(st.lists(st.sampled_from([0, 0, 0, 1]), min_size=n, max_size=n)))
    provider_headroom = draw(st.lists(st.sampled_from([math.inf, 0.0, 0.2, 3.0]), min_size=3, max_size=3))
    status = bytes(draw(st.lists(st.sampled_from([0, 0, 0, 1, 2]), min_size=n, max_size=n)))
    bias = draw(st.lists(st.sampled_from([0.0, 0.0, 0.02, -0.1]), min_size=n, max_size=n))
    input_tokens = float(draw(st.integers(1, 400_000)))
    output_tokens = float(draw(st.integers(1, 64_000)))
    weights = draw(st.tuples(st.floats(0.01, 1.0), st.floats(0.01, 1.0), st.floats(0.01, 1.0)))
    total = sum(weights)
    # Reference ranges as CompiledCatalog.reference computes them.
    floor = 0.01
    cost_lo = (input_tokens * max(floor, min(catalog["input_price"]))) + output_tokens * max(
        floor, min(catalog["output_price"])
    )
    cost_hi = (input_tokens * max(floor, *catalog["input_price"])) + output_tokens * max(
        floor, *catalog["output_price"]
    )
    lat_lo = min(catalog["ttft"]) + output_tokens / max(catalog["speed"])
    lat_hi = max(catalog["ttft"]) + output_tokens / min(catalog["speed"])
    params = (
        input_tokens,
        output_tokens,
        weights[0] / total,
        weights[1] / total,
        weights[2] / total,
        math.log(cost_lo / 1e6),
        math.log(cost_hi / 1e6) - math.log(cost_lo / 1e6),
        (input_tokens + output_tokens) * floor / 1e6,
        math.log(lat_lo),
        math.log(lat_hi) - math.log(lat_lo),
        draw(st.sampled_from([0.9, 0.5, 1.0])),
        draw(st.sampled_from([0.25, 0.0])),
        draw(st.integers(0, 7)),
        draw(st.sampled_from([0.0, 50.0])),
        draw(st.sampled_from([0.0, 65.0])),
        draw(st.sampled_from([math.inf, 0.5, 5.0])),
        draw(st.sampled_from([math.inf, 30.0, 300.0])),
        array("d", provider_headroom),
        draw(st.sampled_from([math.inf, 0.1, 2.0])),
    )
    return {"status": status, "unhealthy": unhealthy, "bias": bias, "params": params}


def build(kernel_class: type, c: dict) -> object:
    return kernel_class(
        array("d", c["input_price"]),
        array("d", c["output_price"]),
        array("d", c["speed"]),
        array("d", c["ttft"]),
        array("d", c["quality"]),
        array("d", c["quality_score"]),
        array("d", c["context_window"]),
        array("d", c["max_output"]),
        array("Q", c["capabilities"]),
        array("q", c["provider_slot"]),
    )


def run(kernel_class: type, case: dict) -> dict:
    kernel = build(kernel_class, case["catalog"])
    n = case["n"]
    out = {name: array("d", bytes(8 * n)) for name in ("cost", "latency", "cs", "ss", "penalty", "score")}
    status = bytearray(case["status"])
    order = array("q", bytes(8 * case["k"]))
    eligible = kernel.score(
        status,
        case["unhealthy"],
        array("d", case["bias"]),
        out["cost"],
        out["latency"],
        out["cs"],
        out["ss"],
        out["penalty"],
        out["score"],
        order,
        *case["params"],
    )
    return {
        "eligible": eligible,
        "status": bytes(status),
        "order": list(order[: min(eligible, case["k"])]),
        **{name: list(values) for name, values in out.items()},
    }


@needs_compiled
@settings(max_examples=400, deadline=None)
@given(scoring_case())
def test_twins_agree_on_random_inputs(case: dict) -> None:
    compiled = run(KERNELS["compiled"], case)
    python = run(_scoring_py.CatalogKernel, case)
    assert compiled["eligible"] == python["eligible"]
    assert compiled["status"] == python["status"]
    assert compiled["order"] == python["order"]
    for name in ("cost", "latency", "cs", "ss", "penalty", "score"):
        for a, b in zip(compiled[name], python[name], strict=True):
            assert abs(a - b) <= 1e-12, name


@settings(max_examples=200, deadline=None)
@given(scoring_case())
def test_order_is_the_best_eligible_by_the_documented_ranking(case: dict) -> None:
    result = run(_scoring_py.CatalogKernel, case)
    eligible = [i for i, code in enumerate(result["status"]) if code == 0]
    assert len(eligible) == result["eligible"]
    quality = case["catalog"]["quality"]
    ranked = sorted(eligible, key=lambda i: (-result["score"][i], -quality[i], result["cost"][i], i))
    assert result["order"] == ranked[: case["k"]]


@needs_compiled
def test_compiled_kernel_is_built() -> None:
    # CI must fail when the extension did not compile: the import in conftest would have
    # raised, and this names what is being relied on.
    from orxaq_grpc import _scoring

    assert _scoring.KIND == "compiled"
    assert _scoring.__file__.endswith((".so", ".pyd"))


@needs_compiled
@pytest.mark.parametrize("dispatcher", ["orxaq_grpc.scoring", "orxaq_grpc.learning_kernel"])
def test_dispatcher_prefers_compiled_and_env_forces_the_twin(dispatcher: str) -> None:
    code = f"from {dispatcher} import KIND; print(KIND)"
    env = {k: v for k, v in os.environ.items() if k != "ORXAQ_NO_EXTENSIONS"}
    default = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    forced = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "ORXAQ_NO_EXTENSIONS": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert default.stdout.strip() == "compiled"
    assert forced.stdout.strip() == "python"


@st.composite
def batch_case(draw: st.DrawFn) -> dict:
    """One catalog and several requests over it, as RouteBatch scores them."""
    case = draw(scoring_case())
    rows = [case] + [
        {**_request_part(draw, case["catalog"], case["n"]), "catalog": case["catalog"], "n": case["n"]}
        for _ in range(draw(st.integers(0, 5)))
    ]
    return {"catalog": case["catalog"], "n": case["n"], "k": case["k"], "rows": rows}


# score_many's per-request arguments, in the order score's positional params list them (ramp_start
# and ramp_penalty, one for the whole call, are taken from the first request).
_PER_REQUEST = (
    "input_tokens",
    "output_tokens",
    "w_cost",
    "w_speed",
    "w_quality",
    "log_cost_lo",
    "log_cost_span",
    "floor_cost",
    "log_latency_lo",
    "log_latency_span",
    "ramp_start",
    "ramp_penalty",
    "required_capabilities",
    "lane_floor",
    "min_quality",
    "max_cost",
    "max_latency",
    "provider_headroom",
    "lane_headroom",
)


def run_many(kernel_class: type, case: dict) -> list[dict]:
    """score_many over every row of `case`; each row's result as `run` gives one."""
    kernel = build(kernel_class, case["catalog"])
    n, k, rows = case["n"], case["k"], case["rows"]
    ramp = dict(zip(_PER_REQUEST, rows[0]["params"], strict=True))
    rows = [
        {
            **row,
            "params": (*row["params"][:10], ramp["ramp_start"], ramp["ramp_penalty"], *row["params"][12:]),
        }
        for row in rows
    ]
    columns = {
        name: [dict(zip(_PER_REQUEST, row["params"], strict=True))[name] for row in rows]
        for name in _PER_REQUEST
    }
    out = {
        name: array("d", bytes(8 * n * len(rows)))
        for name in ("cost", "latency", "cs", "ss", "penalty", "score")
    }
    status = bytearray(b"".join(row["status"] for row in rows))
    order = array("q", bytes(8 * k * len(rows)))
    eligible = array("q", bytes(8 * len(rows)))
    total = kernel.score_many(
        status,
        b"".join(row["unhealthy"] for row in rows),
        array("d", [b for row in rows for b in row["bias"]]),
        out["cost"],
        out["latency"],
        out["cs"],
        out["ss"],
        out["penalty"],
        out["score"],
        order,
        eligible,
        *(array("d", columns[name]) for name in _PER_REQUEST[:10]),
        ramp["ramp_start"],
        ramp["ramp_penalty"],
        array("Q", columns["required_capabilities"]),
        *(array("d", columns[name]) for name in ("lane_floor", "min_quality", "max_cost", "max_latency")),
        array("d", [usd for headroom in columns["provider_headroom"] for usd in headroom]),
        array("d", columns["lane_headroom"]),
    )
    assert total == sum(eligible)
    results = []
    for r in range(len(rows)):
        at = slice(r * n, (r + 1) * n)
        results.append(
            {
                "eligible": eligible[r],
                "status": bytes(status[at]),
                "order": list(order[r * k : r * k + min(eligible[r], k)]),
                **{name: list(values[at]) for name, values in out.items()},
            }
        )
    return results, rows


@settings(max_examples=100, deadline=None)
@given(batch_case())
@pytest.mark.parametrize("twin", sorted(KERNELS))
def test_score_many_is_score_row_by_row(twin: str, case: dict) -> None:
    """Each row of one score_many call comes out exactly as score writes it for that request alone."""
    batched, rows = run_many(KERNELS[twin], case)
    for row, result in zip(rows, batched, strict=True):
        alone = run(KERNELS[twin], {**row, "k": case["k"]})
        assert result == alone


@needs_compiled
@settings(max_examples=100, deadline=None)
@given(batch_case())
def test_twins_agree_on_score_many(case: dict) -> None:
    compiled, _ = run_many(KERNELS["compiled"], case)
    python, _ = run_many(_scoring_py.CatalogKernel, case)
    for a, b in zip(compiled, python, strict=True):
        assert (a["eligible"], a["status"], a["order"]) == (b["eligible"], b["status"], b["order"])
        for name in ("cost", "latency", "cs", "ss", "penalty", "score"):
            for x, y in zip(a[name], b[name], strict=True):
                assert abs(x - y) <= 1e-12, name


@pytest.mark.parametrize("twin", sorted(KERNELS))
def test_score_many_refuses_buffers_of_the_wrong_shape(twin: str) -> None:
    case = {
        "catalog": {
            "input_price": [1.0, 2.0],
            "output_price": [4.0, 8.0],
            "speed": [100.0, 50.0],
            "ttft": [1.0, 1.0],
            "quality": [60.0, 80.0],
            "quality_score": [0.0, 1.0],
            "context_window": [1e6, 1e6],
            "max_output": [32e3, 32e3],
            "capabilities": [0, 0],
            "provider_slot": [0, 1],
        }
    }
    kernel = build(KERNELS[twin], case["catalog"])

    def call(rows: int, status_rows: int, order_len: int, headroom_len: int) -> int:
        doubles = [array("d", [1.0] * rows) for _ in range(10)]
        return kernel.score_many(
            bytearray(2 * status_rows),
            bytes(2 * rows),
            array("d", [0.0] * 2 * rows),
            *(array("d", [0.0] * 2 * rows) for _ in range(6)),
            array("q", [0] * order_len),
            array("q", [0] * rows),
            *doubles,
            0.9,
            0.25,
            array("Q", [0] * rows),
            *(array("d", [0.0, 0.0, math.inf, math.inf][i % 4 : i % 4 + 1] * rows) for i in range(4)),
            array("d", [math.inf] * headroom_len),
            array("d", [math.inf] * rows),
        )

    assert call(2, 2, 2, 4) == 4
    assert call(0, 0, 0, 0) == 0
    for bad in ((2, 1, 2, 4), (2, 2, 3, 4), (2, 2, 0, 4), (2, 2, 2, 2), (2, 2, 2, 3)):
        with pytest.raises(ValueError):
            call(*bad)
