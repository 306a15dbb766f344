"""Benchmark of the scoring kernel: the compiled twin, the pure-Python twin and a NumPy baseline.

Measures the cost of one `CatalogKernel.score` call, the call `Router._score` makes for every
Route, on synthetic catalogs of 1, 10, 100, 1,000 and 10,000 models (fixed seed; each catalog is
the first n models of one 10,000-model draw). The timed request is a typical one: 12,000 input and
2,000 output tokens, balanced weights, a 0.9/0.25 context ramp, no constraints, every model allowed
and healthy, no budget (infinite lane and provider headroom) and order length 5 (max_alternatives
+ 2), so every model is a scored candidate.

Before timing, the three implementations must agree at every size, on the timed request and on a
constrained one that trips every filter: same status codes, same top-5 order, outputs within
1e-12. A disagreement exits with status 1.

Reported per implementation: microseconds per call, nanoseconds per candidate
((t(n) - t(1)) / (n - 1)), the per-call overhead t(1), and the compiled twin's speed-up over the
other two. t(1) is timed with reference ranges spanning the first 10 models: a lone model's own
ranges are empty, and the kernels would then skip the log scaling every real catalog pays for.

Last, the module's other kernel, the keyword index: one `ObjectiveResolver.estimate` (the keyword
scan of title and prompt, which every Route runs) on the server benchmarks' Route task, a 2,048-
character prompt, with the shipped policy, on each twin's index; both must report the same estimate.

Run from the repository root:

    .venv/bin/python benchmarks/kernel.py           # full run, well under 2 minutes
    .venv/bin/python benchmarks/kernel.py --quick   # smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orxaq_grpc._scoring import CatalogKernel as CompiledKernel
from orxaq_grpc._scoring import KeywordIndex as CompiledKeywords
from orxaq_grpc._scoring_py import CatalogKernel as PythonKernel
from orxaq_grpc._scoring_py import KeywordIndex as PythonKeywords
from orxaq_grpc.config.load import load_config
from orxaq_grpc.routing.objective import ObjectiveResolver
from orxaq_grpc.routing.types import Filter, Task

from cells import ROUTE_REQUEST

SEED = 20_240_611
SIZES = (1, 10, 100, 1_000, 10_000)  # 1 model: the per-call overhead
OVERHEAD_RANGES = 10  # models the 1-model catalog's reference ranges span when timed
ORDER_LENGTH = 5  # what Route asks for: max_alternatives (3) + 2
PRICE_FLOOR = 0.01  # policy.toml price_floor_usd_per_mtok
WEIGHTS = (0.30, 0.30, 0.40)  # policy.toml balanced: cost, speed, quality
RAMP_START, RAMP_PENALTY = 0.90, 0.25  # policy.toml [context]
TOLERANCE = 1e-12  # what tests/test_kernel_twins.py holds the twins to
BAR_SIZE, BAR_RATIO = 1_000, 30.0
PROVIDERS = 5  # provider slots the synthetic models are spread over
UNLIMITED = (math.inf,) * PROVIDERS  # no provider budget

# One bit per capability name, as CompiledCatalog assigns them.
TOOLS, VISION, JSON, REASONING = 1, 2, 4, 8

Buffer = array | np.ndarray


@dataclass(frozen=True, slots=True)
class Request:
    input_tokens: float
    output_tokens: float
    required_capabilities: int = 0
    lane_floor: float = 0.0
    min_quality: float = 0.0
    max_cost: float = math.inf
    max_latency: float = math.inf
    open_circuits: bool = False  # some models behind open circuits (Catalog.unhealthy)
    provider_headroom: tuple[float, ...] = UNLIMITED  # one entry per provider slot
    lane_headroom: float = math.inf


TIMED = Request(12_000.0, 2_000.0)
# Long enough to overflow small windows, ramp 128k ones and exceed 8k max outputs, with every
# constraint and guard set so that each filter code shows up in the check: some models behind
# open circuits, one provider nearly out of budget and a lane headroom below max_cost.
CONSTRAINED = Request(
    120_000.0,
    9_000.0,
    required_capabilities=TOOLS | JSON,
    lane_floor=50.0,
    min_quality=60.0,
    max_cost=0.5,
    max_latency=120.0,
    open_circuits=True,
    provider_headroom=(0.05, *UNLIMITED[1:]),
    lane_headroom=0.3,
)


@dataclass(frozen=True, slots=True)
class Catalog:
    size: int
    columns: tuple[array, ...]  # the CatalogKernel constructor's arguments, in order
    basis: tuple[array, ...]  # input price, output price, speed, ttft the reference ranges span
    bias: array  # the lane's per-model bias
    open_lane: bytes  # status template: every model allowed and enabled
    restricted_lane: bytes  # status template with some models not allowed or disabled
    healthy: bytes  # circuit mask: no model behind an open circuit
    unhealthy: bytes  # circuit mask with some models behind open circuits


def synthetic_columns(size: int) -> dict[str, np.ndarray]:
    """Raw model attributes, drawn once; smaller catalogs take a prefix."""
    rng = np.random.default_rng(SEED)

    def log_uniform(lo: float, hi: float) -> np.ndarray:
        return np.exp(rng.uniform(math.log(lo), math.log(hi), size))

    local = rng.random(size) < 0.1  # local models cost nothing
    input_price = np.where(local, 0.0, np.round(log_uniform(0.03, 15.0), 2))
    output_price = np.where(
        local, 0.0, np.minimum(75.0, np.round(input_price * rng.uniform(1.5, 5.0, size), 2))
    )
    context_window = rng.choice(
        [32_768, 65_536, 131_072, 200_000, 262_144, 400_000, 1_048_576, 2_097_152], size
    )
    max_output = np.minimum(context_window, rng.choice([8_192, 16_384, 32_768, 65_536, 128_000], size))
    capabilities = np.zeros(size, dtype=np.uint64)
    for bit, share in ((TOOLS, 0.85), (VISION, 0.4), (JSON, 0.8), (REASONING, 0.3)):
        capabilities |= np.where(rng.random(size) < share, np.uint64(bit), np.uint64(0))
    return {
        "input_price": input_price,
        "output_price": output_price,
        "speed": np.round(log_uniform(20.0, 400.0), 1),
        "ttft": np.round(log_uniform(0.1, 15.0), 2),
        "quality": np.round(rng.uniform(40.0, 95.0, size), 1),
        "context_window": context_window.astype(np.float64),
        "max_output": max_output.astype(np.float64),
        "capabilities": capabilities,
        "bias": np.where(local, 0.05, 0.0),  # an origin bias a lane might give local models
        "restricted_lane": rng.choice(
            [Filter.UNSPECIFIED, Filter.NOT_ALLOWED, Filter.DISABLED], size, p=[0.85, 0.1, 0.05]
        ).astype(np.uint8),
        # Drawn last, so the columns above are the same draws as before provider slots existed.
        "provider_slot": rng.integers(0, PROVIDERS, size, dtype=np.int64),
        "unhealthy": (rng.random(size) < 0.05).astype(np.uint8),
    }


def build_catalog(columns: dict[str, np.ndarray], n: int, ranges_over: int | None = None) -> Catalog:
    """The first n models as the flat arrays CompiledCatalog builds.

    Reference ranges span the first `ranges_over` models, by default the catalog itself as in
    CompiledCatalog.
    """
    quality = columns["quality"][:n]
    quality_lo = quality.min()
    quality_span = quality.max() - quality_lo
    # Linear over the catalog-wide range, as CompiledCatalog computes it.
    quality_score = (quality - quality_lo) / quality_span if quality_span > 0 else np.ones(n)
    doubles = [columns[name][:n] for name in ("input_price", "output_price", "speed", "ttft", "quality")]
    doubles += [quality_score, columns["context_window"][:n], columns["max_output"][:n]]
    basis_n = ranges_over or n
    return Catalog(
        size=n,
        basis=tuple(
            array("d", columns[name][:basis_n].tolist())
            for name in ("input_price", "output_price", "speed", "ttft")
        ),
        columns=(
            *(array("d", c.tolist()) for c in doubles),
            array("Q", columns["capabilities"][:n].tolist()),
            array("q", columns["provider_slot"][:n].tolist()),
        ),
        bias=array("d", columns["bias"][:n].tolist()),
        open_lane=bytes(n),
        restricted_lane=columns["restricted_lane"][:n].tobytes(),
        healthy=bytes(n),
        unhealthy=columns["unhealthy"][:n].tobytes(),
    )


def reference(catalog: Catalog, input_tokens: float, output_tokens: float) -> tuple[float, ...]:
    """Log-scale reference ranges, computed as CompiledCatalog.reference does."""
    input_price, output_price, speed, ttft = catalog.basis
    cost_lo = (
        input_tokens * max(PRICE_FLOOR, min(input_price))
        + output_tokens * max(PRICE_FLOOR, min(output_price))
    ) / 1e6
    cost_hi = (
        input_tokens * max(PRICE_FLOOR, *input_price) + output_tokens * max(PRICE_FLOOR, *output_price)
    ) / 1e6
    latency_lo = min(ttft) + output_tokens / max(speed)
    latency_hi = max(ttft) + output_tokens / min(speed)
    log_cost_lo = math.log(cost_lo)
    log_latency_lo = math.log(latency_lo)
    return (
        log_cost_lo,
        math.log(cost_hi) - log_cost_lo,
        (input_tokens + output_tokens) * PRICE_FLOOR / 1e6,
        log_latency_lo,
        math.log(latency_hi) - log_latency_lo,
    )


class NumpyKernel:
    """A vectorised baseline with the twins' constructor, call and results.

    Every model goes through the whole pipeline and its status keeps the first filter that
    fails, in the twins' order. Cost, latency, sub-scores, penalty and score are written for
    every model, where the twins skip filtered ones; callers read them only where the twins write.
    """

    def __init__(self, *columns: array) -> None:
        # Zero-copy views, built once per catalog like the compiled twin's memoryviews.
        (
            self.input_price,
            self.output_price,
            self.speed,
            self.ttft,
            self.quality,
            self.quality_score,
            self.context_window,
            self.max_output,
            self.capabilities,
            self.provider_slot,
        ) = (np.frombuffer(column, dtype=column.typecode) for column in columns)

    def score(
        self,
        status: bytearray,
        unhealthy: np.ndarray,
        bias: np.ndarray,
        cost: np.ndarray,
        latency: np.ndarray,
        cost_score: np.ndarray,
        speed_score: np.ndarray,
        penalty: np.ndarray,
        score: np.ndarray,
        order: np.ndarray,
        input_tokens: float,
        output_tokens: float,
        w_cost: float,
        w_speed: float,
        w_quality: float,
        log_cost_lo: float,
        log_cost_span: float,
        floor_cost: float,
        log_latency_lo: float,
        log_latency_span: float,
        ramp_start: float,
        ramp_penalty: float,
        required_capabilities: int,
        lane_floor: float,
        min_quality: float,
        max_cost: float,
        max_latency: float,
        provider_headroom: np.ndarray,
        lane_headroom: float,
    ) -> int:
        codes = np.frombuffer(status, dtype=np.uint8)  # writes go through to `status`
        quality = self.quality
        fill = (input_tokens + output_tokens) / self.context_window
        cost[:] = (input_tokens * self.input_price + output_tokens * self.output_price) / 1e6
        latency[:] = self.ttft + output_tokens / self.speed
        # np.select takes the first true condition, which is the twins' filter order.
        verdict = np.select(
            [
                fill > 1.0,
                output_tokens > self.max_output,
                self.capabilities & np.uint64(required_capabilities) != required_capabilities,
                quality < lane_floor,
                quality < min_quality,
                cost > max_cost,
                latency > max_latency,
                unhealthy != 0,
                (cost > lane_headroom) | (cost > provider_headroom[self.provider_slot]),
            ],
            [
                Filter.CONTEXT_WINDOW,
                Filter.OUTPUT_LIMIT,
                Filter.CAPABILITY,
                Filter.LANE_QUALITY_FLOOR,
                Filter.MIN_QUALITY,
                Filter.MAX_COST,
                Filter.MAX_LATENCY,
                Filter.CIRCUIT_OPEN,
                Filter.BUDGET,
            ],
            Filter.UNSPECIFIED,
        )
        pending = codes == Filter.UNSPECIFIED  # the lane's static codes stand
        codes[pending] = verdict[pending]
        eligible = np.flatnonzero(codes == Filter.UNSPECIFIED)

        if log_cost_span > 0.0:
            scaled = (np.log(np.maximum(cost, floor_cost)) - log_cost_lo) / log_cost_span
            cost_score[:] = 1.0 - np.clip(scaled, 0.0, 1.0)
        else:
            cost_score[:] = 1.0
        if log_latency_span > 0.0:
            speed_score[:] = 1.0 - np.clip((np.log(latency) - log_latency_lo) / log_latency_span, 0.0, 1.0)
        else:
            speed_score[:] = 1.0
        ramp_width = 1.0 - ramp_start
        if ramp_width > 0.0:
            penalty[:] = np.where(fill > ramp_start, ramp_penalty * (fill - ramp_start) / ramp_width, 0.0)
        else:
            penalty[:] = 0.0
        # The twins' operation order, so only NumPy's own log can move a result, by an ulp or so.
        score[:] = (
            w_cost * cost_score + w_speed * speed_score + w_quality * self.quality_score + bias - penalty
        )

        top = eligible
        k = len(order)
        if len(eligible) > k:
            # Every model in the top k scores at least the k-th best score; keeping all ties
            # at that score lets the full ranking below break them.
            eligible_score = score[eligible]
            kth = np.partition(eligible_score, len(eligible) - k)[len(eligible) - k]
            top = eligible[eligible_score >= kth]
        # Score desc, quality desc, cost asc; lexsort is stable and `top` ascending, so index asc last.
        ranked = top[np.lexsort((cost[top], -quality[top], -score[top]))][:k]
        order[: len(ranked)] = ranked
        return len(eligible)


Kernel = CompiledKernel | PythonKernel | NumpyKernel
IMPLEMENTATIONS: dict[str, type[Kernel]] = {
    "compiled": CompiledKernel,
    "python": PythonKernel,
    "numpy": NumpyKernel,
}
LABELS = {"compiled": "compiled (Cython)", "python": "pure Python", "numpy": "NumPy"}
# Positions in the tuple `prepare` returns (`score`'s arguments after the status): the circuit
# mask, the bias, the six outputs (cost, latency, sub-scores, penalty, score) and the order.
OUTPUTS = slice(2, 8)
ORDER = 8


def prepare(kernel_class: type[Kernel], catalog: Catalog, request: Request) -> tuple[Kernel, tuple]:
    """A kernel and fresh buffers: everything `score` takes after the status."""
    n = catalog.size
    unhealthy: bytes | np.ndarray = catalog.unhealthy if request.open_circuits else catalog.healthy
    provider_headroom: Buffer = array("d", request.provider_headroom)
    buffers: list[Buffer] = [array("d", catalog.bias), *(array("d", bytes(8 * n)) for _ in range(6))]
    buffers.append(array("q", bytes(8 * min(n, ORDER_LENGTH))))
    if kernel_class is NumpyKernel:
        # Views share the arrays' memory, so results read back the same way for all three.
        buffers = [np.frombuffer(buffer, dtype=buffer.typecode) for buffer in buffers]
        unhealthy = np.frombuffer(unhealthy, dtype=np.uint8)
        provider_headroom = np.frombuffer(provider_headroom, dtype=provider_headroom.typecode)
    scalars = (
        request.input_tokens,
        request.output_tokens,
        *WEIGHTS,
        *reference(catalog, request.input_tokens, request.output_tokens),
        RAMP_START,
        RAMP_PENALTY,
        request.required_capabilities,
        request.lane_floor,
        request.min_quality,
        request.max_cost,
        request.max_latency,
    )
    guards = (provider_headroom, request.lane_headroom)
    return kernel_class(*catalog.columns), (unhealthy, *buffers, *scalars, *guards)


@dataclass(frozen=True, slots=True)
class Result:
    eligible: int
    status: bytes
    order: list[int]
    outputs: list[list[float]]  # cost, latency, sub-scores, penalty, score at eligible models


def run_once(kernel: Kernel, rest: tuple, template: bytes) -> Result:
    status = bytearray(template)
    eligible = kernel.score(status, *rest)
    order = rest[ORDER]
    good = [i for i, code in enumerate(status) if code == Filter.UNSPECIFIED]
    return Result(
        eligible=eligible,
        status=bytes(status),
        order=[int(i) for i in order[: min(eligible, len(order))]],
        outputs=[[float(values[i]) for i in good] for values in rest[OUTPUTS]],
    )


def disagreements(catalog: Catalog, request: Request, template: bytes) -> list[str]:
    results = {
        name: run_once(*prepare(kernel_class, catalog, request), template)
        for name, kernel_class in IMPLEMENTATIONS.items()
    }
    expected = results.pop("compiled")
    problems = []
    for name, got in results.items():
        where = f"{catalog.size:,} models, {name} vs compiled"
        if got.status != expected.status or got.eligible != expected.eligible:
            problems.append(f"{where}: status codes or eligible count differ")
        elif got.order != expected.order:
            problems.append(f"{where}: top-{ORDER_LENGTH} order {got.order} != {expected.order}")
        else:
            worst = max(
                (
                    abs(a - b)
                    for ours, theirs in zip(got.outputs, expected.outputs, strict=True)
                    for a, b in zip(ours, theirs, strict=True)
                ),
                default=0.0,
            )
            if worst > TOLERANCE:
                problems.append(f"{where}: outputs differ by up to {worst:.3g}")
    return problems


def batch_timer(kernel: Kernel, rest: tuple, template: bytes) -> Callable[[int], int]:
    """A function that makes `iterations` calls and returns the nanoseconds they took."""
    score = kernel.score

    def batch(iterations: int) -> int:
        start = time.perf_counter_ns()
        for _ in range(iterations):
            # A fresh status per call, as Route copies its lane's template; all three pay for it.
            score(bytearray(template), *rest)
        return time.perf_counter_ns() - start

    return batch


def per_call_ns(
    batches: dict[tuple[str, int], Callable[[int], int]], budget_ns: int, repeats: int
) -> dict[tuple[str, int], float]:
    """Best per-call time of each cell over `repeats` batches of about `budget_ns` each."""
    iterations = {}
    for cell, batch in batches.items():
        # Double until a batch is long enough to scale from; this also warms caches and branches.
        count = 1
        while (elapsed := batch(count)) < budget_ns // 10:
            count *= 2
        iterations[cell] = max(1, round(count * budget_ns / elapsed))
    best = dict.fromkeys(batches, math.inf)
    # Rounds visit every cell in turn, so load from elsewhere spoils one sample of several cells
    # rather than every sample of one; the minimum is the least disturbed sample.
    for _ in range(repeats):
        for cell, batch in batches.items():
            best[cell] = min(best[cell], batch(iterations[cell]) / iterations[cell])
    return best


def print_table(title: str, rows: dict[str, list[float]], sizes: tuple[int, ...], fmt: str) -> None:
    print(f"\n{title}")
    print(f"{'':<20}" + "".join(f"{n:>12,}" for n in sizes))
    for label, values in rows.items():
        print(f"{label:<20}" + "".join(f"{v:>12{fmt}}" for v in values))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short batches, for smoke-testing")
    args = parser.parse_args(argv)
    budget_ns, repeats = (10_000_000, 2) if args.quick else (300_000_000, 5)

    columns = synthetic_columns(max(SIZES))
    catalogs = {n: build_catalog(columns, n) for n in SIZES}
    # A lone model makes every catalog-wide range empty, and then the kernels skip the log scaling
    # (NumPy saves tens of µs). Borrowing wider ranges times the path every real catalog takes.
    catalogs[1] = build_catalog(columns, 1, ranges_over=OVERHEAD_RANGES)
    lone = build_catalog(columns, 1)  # checked only: the empty-range branches

    problems = [
        problem
        for catalog in (lone, *catalogs.values())
        for request, template in ((TIMED, catalog.open_lane), (CONSTRAINED, catalog.restricted_lane))
        for problem in disagreements(catalog, request, template)
    ]
    if problems:
        print("correctness check FAILED:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    largest = catalogs[max(SIZES)]
    seen = sorted(
        set(run_once(*prepare(CompiledKernel, largest, CONSTRAINED), largest.restricted_lane).status)
    )
    print(
        f"check: compiled, pure Python and NumPy agree at {', '.join(f'{n:,}' for n in SIZES)} models"
        f" (status codes, top-{ORDER_LENGTH} order, outputs within {TOLERANCE:g}),\n"
        f"       on the timed request and a constrained one (status codes seen at {max(SIZES):,}: {seen});\n"
        f"       1 model checked with its own (empty) reference ranges and with the first"
        f" {OVERHEAD_RANGES} models' ranges it is timed with"
    )

    print(
        f"\ntimed request: {TIMED.input_tokens:,.0f} input + {TIMED.output_tokens:,.0f} output tokens,"
        f" weights {WEIGHTS}, ramp {RAMP_START}/{RAMP_PENALTY}, no constraints, top {ORDER_LENGTH};"
        f"\n{'quick' if args.quick else 'full'} run: best of {repeats} interleaved batches"
        f" of ~{budget_ns / 1e9:g} s per cell"
    )
    batches = {
        (name, n): batch_timer(*prepare(kernel_class, catalog, TIMED), catalog.open_lane)
        for name, kernel_class in IMPLEMENTATIONS.items()
        for n, catalog in catalogs.items()
    }
    best = per_call_ns(batches, budget_ns, repeats)
    ns = {name: [best[name, n] for n in SIZES] for name in IMPLEMENTATIONS}

    grown = SIZES[1:]
    print_table(
        "µs per call", {LABELS[name]: [t / 1e3 for t in times] for name, times in ns.items()}, SIZES, ",.2f"
    )
    print_table(
        "ns per candidate, (t(n) - t(1)) / (n - 1)",
        {
            LABELS[name]: [(t - times[0]) / (n - 1) for n, t in zip(grown, times[1:], strict=True)]
            for name, times in ns.items()
        },
        grown,
        ",.1f",
    )
    print(
        "\nper-call overhead, t(1): "
        + ", ".join(f"{LABELS[name]} {times[0] / 1e3:.2f} µs" for name, times in ns.items())
    )
    print_table(
        "speed-up of the compiled twin (x)",
        {
            f"vs {LABELS[name]}": [t / c for t, c in zip(ns[name], ns["compiled"], strict=True)]
            for name in ("python", "numpy")
        },
        SIZES,
        ",.1f",
    )

    ratio = best["python", BAR_SIZE] / best["compiled", BAR_SIZE]
    verdict = "PASS" if ratio >= BAR_RATIO else "FAIL"
    bar = f"compiled >= {BAR_RATIO:g}x the pure-Python twin at {BAR_SIZE:,} candidates"
    print(f"\nbar: {bar}: {ratio:.1f}x {verdict}")
    return keyword_scan(budget_ns, repeats)


def keyword_scan(budget_ns: int, repeats: int) -> int:
    """Times `ObjectiveResolver.estimate` on the Route benchmark's task with each twin's keyword index."""
    policy = load_config(Path(__file__).resolve().parent.parent / "config").policy
    given = ROUTE_REQUEST.task
    task = Task(id=given.id, title=given.title, prompt=given.prompt)
    resolvers = {
        "compiled": ObjectiveResolver(policy, CompiledKeywords),
        "python": ObjectiveResolver(policy, PythonKeywords),
    }
    estimates = {name: resolver.estimate(task) for name, resolver in resolvers.items()}
    if estimates["compiled"] != estimates["python"]:
        print("keyword scan check FAILED:", *estimates.values(), sep="\n  ", file=sys.stderr)
        return 1

    def timer(resolver: ObjectiveResolver) -> Callable[[int], int]:
        def batch(iterations: int) -> int:
            start = time.perf_counter_ns()
            for _ in range(iterations):
                resolver.estimate(task)
            return time.perf_counter_ns() - start

        return batch

    best = per_call_ns(
        {(name, 0): timer(resolver) for name, resolver in resolvers.items()}, budget_ns, repeats
    )
    compiled, python = best["compiled", 0], best["python", 0]
    print(
        f"\nkeyword scan: ObjectiveResolver.estimate, {len(task.title)}-character title and"
        f" {len(task.prompt):,}-character prompt, shipped policy (the twins agree)\n"
        f"{LABELS['compiled']} index {compiled / 1e3:.2f} µs, {LABELS['python']} index"
        f" {python / 1e3:.2f} µs per call: {python / compiled:.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
