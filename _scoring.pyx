# cython: language_level=3
"""Compiled scoring kernel, built as `orxaq_grpc._scoring`.

The twin of `orxaq_grpc/_scoring_py.py`: same arguments, same filters in the same
order, same floating-point operations in the same order. Keep them in step.
Bounds checking and wraparound are set for the whole build in setup.py (off in
release, on with ORXAQ_CYTHON_DEBUG=1).
"""

from libc.math cimport log
from libc.stdint cimport int64_t, uint64_t

# orxaq_grpc.routing.types.Filter values; the twin-agreement tests catch drift.
cdef enum:
    ELIGIBLE = 0
    CONTEXT_WINDOW = 3
    OUTPUT_LIMIT = 4
    CAPABILITY = 5
    LANE_QUALITY_FLOOR = 6
    MIN_QUALITY = 7
    MAX_COST = 8
    MAX_LATENCY = 9
    CIRCUIT_OPEN = 10
    BUDGET = 11

KIND = "compiled"


cdef inline double _clamp01(double x) noexcept nogil:
    if x < 0.0:
        return 0.0
    if x > 1.0:
        return 1.0
    return x


cdef inline bint _better(
    Py_ssize_t i,
    Py_ssize_t j,
    const double[::1] score,
    const double[::1] quality,
    const double[::1] cost,
) noexcept nogil:
    """Deterministic ranking: score, then quality, then lower cost, then lower index."""
    if score[i] != score[j]:
        return score[i] > score[j]
    if quality[i] != quality[j]:
        return quality[i] > quality[j]
    if cost[i] != cost[j]:
        return cost[i] < cost[j]
    return i < j


cdef class CatalogKernel:
    """The catalog as typed memoryviews, built once per config load."""

    cdef readonly Py_ssize_t size
    cdef const double[::1] input_price
    cdef const double[::1] output_price
    cdef const double[::1] speed
    cdef const double[::1] ttft
    cdef const double[::1] quality
    cdef const double[::1] quality_score
    cdef const double[::1] context_window
    cdef const double[::1] max_output
    cdef const uint64_t[::1] capabilities
    cdef const int64_t[::1] provider_slot
    cdef readonly Py_ssize_t providers

    def __init__(
        self,
        const double[::1] input_price,
        const double[::1] output_price,
        const double[::1] speed,
        const double[::1] ttft,
        const double[::1] quality,
        const double[::1] quality_score,
        const double[::1] context_window,
        const double[::1] max_output,
        const uint64_t[::1] capabilities,
        const int64_t[::1] provider_slot,
    ):
        cdef Py_ssize_t size = input_price.shape[0]
        for array in (
            output_price, speed, ttft, quality, quality_score, context_window, max_output, capabilities,
            provider_slot,
        ):
            if len(array) != size:
                raise ValueError("catalog arrays differ in length")
        self.size = size
        self.input_price = input_price
        self.output_price = output_price
        self.speed = speed
        self.ttft = ttft
        self.quality = quality
        self.quality_score = quality_score
        self.context_window = context_window
        self.max_output = max_output
        self.capabilities = capabilities
        self.provider_slot = provider_slot
        self.providers = max(provider_slot) + 1 if size else 0
        if size and min(provider_slot) < 0:
            raise ValueError("provider slots must not be negative")

    def score(
        self,
        unsigned char[::1] status,
        const unsigned char[::1] unhealthy,
        const double[::1] bias,
        double[::1] cost,
        double[::1] latency,
        double[::1] cost_score,
        double[::1] speed_score,
        double[::1] penalty,
        double[::1] score,
        int64_t[::1] order,
        double input_tokens,
        double output_tokens,
        double w_cost,
        double w_speed,
        double w_quality,
        double log_cost_lo,
        double log_cost_span,
        double floor_cost,
        double log_latency_lo,
        double log_latency_span,
        double ramp_start,
        double ramp_penalty,
        uint64_t required_capabilities,
        double lane_floor,
        double min_quality,
        double max_cost,
        double max_latency,
        const double[::1] provider_headroom,
        double lane_headroom,
    ):
        """Filter and score every model; write the best `len(order)` eligible indices.

        See the pure-Python twin for the contract. Returns the eligible count.
        """
        cdef Py_ssize_t n = self.size
        if (
            status.shape[0] != n or unhealthy.shape[0] != n or bias.shape[0] != n or cost.shape[0] != n
            or latency.shape[0] != n or cost_score.shape[0] != n
            or speed_score.shape[0] != n or penalty.shape[0] != n or score.shape[0] != n
        ):
            raise ValueError("buffers must have one entry per catalog model")
        cdef Py_ssize_t k = order.shape[0]
        if k == 0:
            raise ValueError("order must have room for at least one model")
        if provider_headroom.shape[0] < self.providers:
            raise ValueError("provider_headroom must have one entry per provider slot")
        cdef Py_ssize_t i, pos
        cdef Py_ssize_t filled = 0
        cdef Py_ssize_t eligible = 0
        cdef double need = input_tokens + output_tokens
        cdef double ramp_width = 1.0 - ramp_start
        cdef double fill, q, c, t, cs, ss, p
        with nogil:
            for i in range(n):
                if status[i] != ELIGIBLE:
                    continue
                fill = need / self.context_window[i]
                if fill > 1.0:
                    status[i] = CONTEXT_WINDOW
                    continue
                if output_tokens > self.max_output[i]:
                    status[i] = OUTPUT_LIMIT
                    continue
                if self.capabilities[i] & required_capabilities != required_capabilities:
                    status[i] = CAPABILITY
                    continue
                q = self.quality[i]
                if q < lane_floor:
                    status[i] = LANE_QUALITY_FLOOR
                    continue
                if q < min_quality:
                    status[i] = MIN_QUALITY
                    continue
                c = (input_tokens * self.input_price[i] + output_tokens * self.output_price[i]) / 1e6
                t = self.ttft[i] + output_tokens / self.speed[i]
                cost[i] = c
                latency[i] = t
                if c > max_cost:
                    status[i] = MAX_COST
                    continue
                if t > max_latency:
                    status[i] = MAX_LATENCY
                    continue
                if unhealthy[i]:
                    status[i] = CIRCUIT_OPEN
                    continue
                if c > lane_headroom or c > provider_headroom[self.provider_slot[i]]:
                    status[i] = BUDGET
                    continue

                if log_cost_span > 0.0:
                    cs = 1.0 - _clamp01((log(c if c > floor_cost else floor_cost) - log_cost_lo) / log_cost_span)
                else:
                    cs = 1.0
                if log_latency_span > 0.0:
                    ss = 1.0 - _clamp01((log(t) - log_latency_lo) / log_latency_span)
                else:
                    ss = 1.0
                p = 0.0
                if fill > ramp_start and ramp_width > 0.0:
                    p = ramp_penalty * (fill - ramp_start) / ramp_width
                cost_score[i] = cs
                speed_score[i] = ss
                penalty[i] = p
                score[i] = w_cost * cs + w_speed * ss + w_quality * self.quality_score[i] + bias[i] - p
                eligible += 1

                # Keep `order` sorted best-first: insertion into the top k.
                if filled < k:
                    pos = filled
                    filled += 1
                elif _better(i, order[k - 1], score, self.quality, cost):
                    pos = k - 1
                else:
                    continue
                while pos > 0 and _better(i, order[pos - 1], score, self.quality, cost):
                    order[pos] = order[pos - 1]
                    pos -= 1
                order[pos] = i
        return eligible
