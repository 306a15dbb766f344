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
    k = draw(st.integers(1, n + 2))
    return {
        "catalog": catalog,
        "status": status,
        "unhealthy": unhealthy,
        "bias": bias,
        "params": params,
        "k": k,
        "n": n,
    }


def run(kernel_class: type, case: dict) -> dict:
    c = case["catalog"]
    kernel = kernel_class(
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
