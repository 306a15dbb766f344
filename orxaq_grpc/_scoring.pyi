# The compiled twin (_scoring.pyx) as type checkers see it: the same contract as _scoring_py.
from collections.abc import Sequence

from orxaq_grpc.kernel import Codes, Doubles, Int64s, UInt64s

KIND: str

class CatalogKernel:
    @property
    def size(self) -> int: ...
    @property
    def providers(self) -> int: ...
    def __init__(
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
    ) -> None: ...
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

class KeywordIndex:
    def __init__(self, keywords: Sequence[str]) -> None: ...
    def first_hits(self, text: str) -> list[tuple[int, str]]: ...
