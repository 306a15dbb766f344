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
    Py_ssize_t row,
    const double[::1] score,
    const double[::1] quality,
    const double[::1] cost,
) noexcept nogil:
    """Deterministic ranking: score, then quality, then lower cost, then lower index. `score` and
    `cost` hold the request's row from `row`; `quality` is the catalog's."""
    if score[row + i] != score[row + j]:
        return score[row + i] > score[row + j]
    if quality[i] != quality[j]:
        return quality[i] > quality[j]
    if cost[row + i] != cost[row + j]:
        return cost[row + i] < cost[row + j]
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
        return self._row(
            status, unhealthy, bias, cost, latency, cost_score, speed_score, penalty, score, order,
            0, 0, k, 0,
            input_tokens, output_tokens, w_cost, w_speed, w_quality, log_cost_lo, log_cost_span,
            floor_cost, log_latency_lo, log_latency_span, ramp_start, ramp_penalty,
            required_capabilities, lane_floor, min_quality, max_cost, max_latency,
            provider_headroom, lane_headroom,
        )

    def score_many(
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
        int64_t[::1] eligible,
        const double[::1] input_tokens,
        const double[::1] output_tokens,
        const double[::1] w_cost,
        const double[::1] w_speed,
        const double[::1] w_quality,
        const double[::1] log_cost_lo,
        const double[::1] log_cost_span,
        const double[::1] floor_cost,
        const double[::1] log_latency_lo,
        const double[::1] log_latency_span,
        double ramp_start,
        double ramp_penalty,
        const uint64_t[::1] required_capabilities,
        const double[::1] lane_floor,
        const double[::1] min_quality,
        const double[::1] max_cost,
        const double[::1] max_latency,
        const double[::1] provider_headroom,
        const double[::1] lane_headroom,
    ):
        """`score` for many requests in one call: request r's arguments are row r of each array.

        See the pure-Python twin for the layout. Returns the sum of the eligible counts.
        """
        cdef Py_ssize_t n = input_tokens.shape[0]
        cdef Py_ssize_t m = self.size
        for row in (
            eligible, output_tokens, w_cost, w_speed, w_quality, log_cost_lo, log_cost_span, floor_cost,
            log_latency_lo, log_latency_span, required_capabilities, lane_floor, min_quality, max_cost,
            max_latency, lane_headroom,
        ):
            if len(row) != n:
                raise ValueError("per-request arrays must have one entry per request")
        if (
            status.shape[0] != n * m or unhealthy.shape[0] != n * m or bias.shape[0] != n * m
            or cost.shape[0] != n * m or latency.shape[0] != n * m or cost_score.shape[0] != n * m
            or speed_score.shape[0] != n * m or penalty.shape[0] != n * m or score.shape[0] != n * m
        ):
            raise ValueError("buffers must have one row of one entry per catalog model per request")
        if n == 0:
            return 0
        cdef Py_ssize_t k = order.shape[0] // n
        if k == 0 or order.shape[0] % n:
            raise ValueError("order must have a row of room for at least one model per request")
        cdef Py_ssize_t p = provider_headroom.shape[0] // n
        if p < self.providers or provider_headroom.shape[0] % n:
            raise ValueError("provider_headroom must have a row of one entry per provider slot per request")
        cdef Py_ssize_t r, found
        cdef Py_ssize_t total = 0
        for r in range(n):
            found = self._row(
                status, unhealthy, bias, cost, latency, cost_score, speed_score, penalty, score, order,
                r * m, r * k, k, r * p,
                input_tokens[r], output_tokens[r], w_cost[r], w_speed[r], w_quality[r], log_cost_lo[r],
                log_cost_span[r], floor_cost[r], log_latency_lo[r], log_latency_span[r], ramp_start,
                ramp_penalty, required_capabilities[r], lane_floor[r], min_quality[r], max_cost[r],
                max_latency[r], provider_headroom, lane_headroom[r],
            )
            eligible[r] = found
            total += found
        return total

    cdef Py_ssize_t _row(
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
        Py_ssize_t row,
        Py_ssize_t order_at,
        Py_ssize_t k,
        Py_ssize_t headroom_at,
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
    ) noexcept:
        """One request over the catalog, into buffers already checked: its row of m from `row`, its
        k places of `order` from `order_at`, its provider headroom from `headroom_at`."""
        cdef Py_ssize_t n = self.size
        cdef Py_ssize_t i, j, pos
        cdef Py_ssize_t filled = 0
        cdef Py_ssize_t eligible = 0
        cdef double need = input_tokens + output_tokens
        cdef double ramp_width = 1.0 - ramp_start
        cdef double fill, q, c, t, cs, ss, p
        with nogil:
            for i in range(n):
                j = row + i
                if status[j] != ELIGIBLE:
                    continue
                fill = need / self.context_window[i]
                if fill > 1.0:
                    status[j] = CONTEXT_WINDOW
                    continue
                if output_tokens > self.max_output[i]:
                    status[j] = OUTPUT_LIMIT
                    continue
                if self.capabilities[i] & required_capabilities != required_capabilities:
                    status[j] = CAPABILITY
                    continue
                q = self.quality[i]
                if q < lane_floor:
                    status[j] = LANE_QUALITY_FLOOR
                    continue
                if q < min_quality:
                    status[j] = MIN_QUALITY
                    continue
                c = (input_tokens * self.input_price[i] + output_tokens * self.output_price[i]) / 1e6
                t = self.ttft[i] + output_tokens / self.speed[i]
                cost[j] = c
                latency[j] = t
                if c > max_cost:
                    status[j] = MAX_COST
                    continue
                if t > max_latency:
                    status[j] = MAX_LATENCY
                    continue
                if unhealthy[j]:
                    status[j] = CIRCUIT_OPEN
                    continue
                if c > lane_headroom or c > provider_headroom[headroom_at + self.provider_slot[i]]:
                    status[j] = BUDGET
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
                cost_score[j] = cs
                speed_score[j] = ss
                penalty[j] = p
                score[j] = w_cost * cs + w_speed * ss + w_quality * self.quality_score[i] + bias[j] - p
                eligible += 1

                # Keep this request's `order` sorted best-first: insertion into the top k.
                if filled < k:
                    pos = filled
                    filled += 1
                elif _better(i, order[order_at + k - 1], row, score, self.quality, cost):
                    pos = k - 1
                else:
                    continue
                while pos > 0 and _better(i, order[order_at + pos - 1], row, score, self.quality, cost):
                    order[order_at + pos] = order[order_at + pos - 1]
                    pos -= 1
                order[order_at + pos] = i
        return eligible
