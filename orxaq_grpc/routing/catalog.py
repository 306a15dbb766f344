"""The catalog compiled for the kernel: flat arrays built once per config load.

A Route then does only per-request work: copy its lane's status template, work
out this request's reference ranges, and make one kernel call.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from orxaq_grpc.config.model import Config, LaneSpec, ModelSpec, Weights
from orxaq_grpc.kernel import Doubles, Kernel, KernelFactory
from orxaq_grpc.routing.types import Filter
from orxaq_grpc.scoring import CatalogKernel


@dataclass(frozen=True, slots=True)
class LaneArrays:
    spec: LaneSpec
    status_template: bytes  # per model: 0, or the static filter (not allowed, disabled)
    bias: Doubles  # per model
    allowed: tuple[int, ...]  # catalog indices of the lane's allowed models


class ReferenceRanges(NamedTuple):
    """Catalog-wide ranges for one request's token counts, on a log scale.

    They depend on the whole catalog and the request, never on which candidates
    survive the filters, so filtering one model cannot move another's sub-scores.
    A tuple, so a batch's row takes them as they come (`*ranges`).
    """

    log_cost_lo: float
    log_cost_span: float
    floor_cost: float
    log_latency_lo: float
    log_latency_span: float


@dataclass(frozen=True, slots=True)
class PricedKernel:
    """The kernel with input priced for one cache share (cache reads at the cached price), and the
    catalog-wide input price range at that share."""

    kernel: Kernel
    input_price_lo: float
    input_price_hi: float


# Cache shares are priced in steps of this much, so a catalog holds at most 101 priced kernels.
CACHE_SHARE_STEPS = 100


class CompiledCatalog:
    def __init__(self, config: Config, kernel: KernelFactory = CatalogKernel) -> None:
        """`kernel` is the compiled twin unless the dispatcher picked the pure one;
        tests pass either explicitly."""
        models = config.models
        policy = config.policy
        self.models: tuple[ModelSpec, ...] = models
        self.size = len(models)
        self.index = {m.id: i for i, m in enumerate(models)}
        self.capability_bits = {name: 1 << bit for bit, name in enumerate(config.capabilities)}
        self.providers = tuple(sorted({m.provider for m in models}))
        self.provider_slot = {name: slot for slot, name in enumerate(self.providers)}
        self.slot_of = tuple(self.provider_slot[m.provider] for m in models)  # per catalog position
        self.provider_models = {
            name: tuple(i for i, m in enumerate(models) if m.provider == name) for name in self.providers
        }
        self._quality_lo = min(m.quality for m in models)
        self._quality_span = max(m.quality for m in models) - self._quality_lo
        # Quality is linear, cost and speed are logarithmic; all three use catalog-wide ranges.
        self.quality_score = array("d", (self.quality_on_scale(m.quality) for m in models))
        self._kernel_factory = kernel
        self._kernel_arrays = (
            array("d", (m.input_usd_per_mtok for m in models)),
            array("d", (m.output_usd_per_mtok for m in models)),
            array("d", (m.output_tokens_per_s for m in models)),
            array("d", (m.ttft_s for m in models)),
            array("d", (m.quality for m in models)),
            self.quality_score,
            array("d", (float(m.context_window) for m in models)),
            array("d", (float(m.max_output_tokens) for m in models)),
            array("Q", (self.capability_mask(m.capabilities) for m in models)),
            array("q", (self.provider_slot[m.provider] for m in models)),
        )
        self.kernel = kernel(*self._kernel_arrays)
        floor = policy.price_floor_usd_per_mtok
        self._price_floor = floor
        self._input_price_lo = max(floor, min(m.input_usd_per_mtok for m in models))
        self._input_price_hi = max(floor, *(m.input_usd_per_mtok for m in models))
        self._list_priced = PricedKernel(self.kernel, self._input_price_lo, self._input_price_hi)
        self._priced: dict[int, PricedKernel] = {0: self._list_priced}
        self._output_price_lo = max(floor, min(m.output_usd_per_mtok for m in models))
        self._output_price_hi = max(floor, *(m.output_usd_per_mtok for m in models))
        self._ttft_lo = min(m.ttft_s for m in models)
        self._ttft_hi = max(m.ttft_s for m in models)
        self._speed_lo = min(m.output_tokens_per_s for m in models)
        self._speed_hi = max(m.output_tokens_per_s for m in models)

        self.lanes = {lane.id: self._lane_arrays(lane) for lane in config.lanes.values()}
        self.weights = {
            (objective, profile): combine_weights(
                policy.weights[objective], policy.profile_multipliers[profile]
            )
            for objective in policy.weights
            for profile in policy.profile_multipliers
        }
        self.zeros = array("d", bytes(8 * self.size))
        self.healthy = bytes(self.size)
        self.unlimited = array("d", [math.inf] * len(self.providers))

    def quality_on_scale(self, quality: float) -> float:
        """A 0-100 quality as the kernel's 0-1 sub-score (catalog-wide range, clamped)."""
        if self._quality_span <= 0:
            return 1.0
        return min(max((quality - self._quality_lo) / self._quality_span, 0.0), 1.0)

    def capability_mask(self, names: Iterable[str]) -> int:
        mask = 0
        for name in names:
            mask |= self.capability_bits[name]
        return mask

    def priced(self, cache_share: float) -> PricedKernel:
        """The kernel pricing expected input with `cache_share` of it read from a prompt cache (to
        the nearest 1%); built once per step and kept, so a Route with a share costs one lookup."""
        step = round(min(max(cache_share, 0.0), 1.0) * CACHE_SHARE_STEPS)
        found = self._priced.get(step)
        if found is not None:
            return found
        share = step / CACHE_SHARE_STEPS
        prices = array(
            "d", (m.input_usd_per_mtok * (1.0 - share) + m.cached_input_price * share for m in self.models)
        )
        # The other arrays are the list-priced kernel's: only input prices move with the share.
        priced = PricedKernel(
            self._kernel_factory(prices, *self._kernel_arrays[1:]),
            max(self._price_floor, min(prices)),
            max(self._price_floor, *prices),
        )
        self._priced[step] = priced  # a race builds the same kernel twice: harmless
        return priced

    def reference(
        self, input_tokens: float, output_tokens: float, priced: PricedKernel | None = None
    ) -> ReferenceRanges:
        priced = priced or self._list_priced
        cost_lo = (input_tokens * priced.input_price_lo + output_tokens * self._output_price_lo) / 1e6
        cost_hi = (input_tokens * priced.input_price_hi + output_tokens * self._output_price_hi) / 1e6
        log_cost_lo = math.log(cost_lo)
        log_latency_lo = math.log(self._ttft_lo + output_tokens / self._speed_hi)
        return ReferenceRanges(
            log_cost_lo,
            math.log(cost_hi) - log_cost_lo,
            (input_tokens + output_tokens) * self._price_floor / 1e6,
            log_latency_lo,
            math.log(self._ttft_hi + output_tokens / self._speed_lo) - log_latency_lo,
        )

    def _lane_arrays(self, lane: LaneSpec) -> LaneArrays:
        allowed = set(lane.allowed_models)
        status = bytearray(self.size)
        bias = array("d", bytes(8 * self.size))
        for i, model in enumerate(self.models):
            if model.id not in allowed:
                status[i] = Filter.NOT_ALLOWED
            elif not model.enabled:
                status[i] = Filter.DISABLED
            bias[i] = lane.model_bias.get(model.id, 0.0) + lane.origin_bias.get(model.origin, 0.0)
        allowed_indices = tuple(i for i, m in enumerate(self.models) if m.id in allowed)
        return LaneArrays(spec=lane, status_template=bytes(status), bias=bias, allowed=allowed_indices)


def combine_weights(base: Weights, multipliers: Weights) -> Weights:
    """Objective weights scaled by a profile and renormalised to sum 1 (the loader
    refuses a profile that would leave an objective with no weight)."""
    cost = base.cost * multipliers.cost
    speed = base.speed * multipliers.speed
    quality = base.quality * multipliers.quality
    total = cost + speed + quality
    return Weights(cost / total, speed / total, quality / total)


def floor_quality(tuned: Weights, configured: Weights) -> Weights:
    """A critical lane's objective weights: tuned, but never less quality than configured (the
    difference taken from cost and speed in proportion)."""
    if tuned.quality >= configured.quality:
        return tuned
    rest = tuned.cost + tuned.speed
    keep = (1.0 - configured.quality) / rest if rest else 0.0
    return Weights(cost=tuned.cost * keep, speed=tuned.speed * keep, quality=configured.quality)
