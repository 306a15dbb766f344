"""What the scoring kernel is to its callers: the protocol both twins satisfy, and the arrays it takes.

The compiled twin (`_scoring.pyx`, typed by `_scoring.pyi`) and the pure-Python one (`_scoring_py.py`)
are built from the same catalog arrays and score in place into caller-owned ones; `scoring.py` picks
which one runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeAlias

if TYPE_CHECKING:
    from array import array

Doubles: TypeAlias = "array[float]"  # typecode 'd', one per catalog model
Floats: TypeAlias = "array[float]"  # typecode 'f' (the success model's weights: half the memory)
Int64s: TypeAlias = "array[int]"  # typecode 'q' (order, provider slots)
UInt64s: TypeAlias = "array[int]"  # typecode 'Q' (capability masks)
Codes: TypeAlias = bytes | bytearray  # one byte per model (status codes, health flags)


class Kernel(Protocol):
    """A built catalog: `score` filters and scores every model for one request, `score_many` for many
    requests in one call (row r of its arrays is what `score` takes for request r)."""

    @property
    def size(self) -> int: ...

    @property
    def providers(self) -> int: ...

    def score(
        self,
        status: bytearray,
        unhealthy: Codes,
        bias: Doubles,
        cost: Doubles,
        latency: Doubles,
        cost_score: Doubles,
        speed_score: Doubles,
        penalty: Doubles,
        score: Doubles,
        order: Int64s,
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
        provider_headroom: Doubles,
        lane_headroom: float,
    ) -> int: ...

    def score_many(
        self,
        status: bytearray,
        unhealthy: Codes,
        bias: Doubles,
        cost: Doubles,
        latency: Doubles,
        cost_score: Doubles,
        speed_score: Doubles,
        penalty: Doubles,
        score: Doubles,
        order: Int64s,
        eligible: Int64s,
        input_tokens: Doubles,
        output_tokens: Doubles,
        w_cost: Doubles,
        w_speed: Doubles,
        w_quality: Doubles,
        log_cost_lo: Doubles,
        log_cost_span: Doubles,
        floor_cost: Doubles,
        log_latency_lo: Doubles,
        log_latency_span: Doubles,
        ramp_start: float,
        ramp_penalty: float,
        required_capabilities: UInt64s,
        lane_floor: Doubles,
        min_quality: Doubles,
        max_cost: Doubles,
        max_latency: Doubles,
        provider_headroom: Doubles,
        lane_headroom: Doubles,
    ) -> int: ...


class KernelFactory(Protocol):
    """Either twin's class: builds a Kernel from the catalog's arrays."""

    def __call__(
        self,
        input_price: Doubles,
        output_price: Doubles,
        speed: Doubles,
        ttft: Doubles,
        quality: Doubles,
        quality_score: Doubles,
        context_window: Doubles,
        max_output: Doubles,
        capabilities: UInt64s,
        provider_slot: Int64s,
    ) -> Kernel: ...
