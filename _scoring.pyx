# cython: language_level=3
"""Compiled scoring kernel, built as `orxaq_grpc._scoring`.

The twin of `orxaq_grpc/_scoring_py.py`: same arguments, same filters in the same
order, same floating-point operations in the same order. Keep them in step.
Bounds checking and wraparound are set for the whole build in setup.py (off in
release, on with ORXAQ_CYTHON_DEBUG=1).
`KeywordIndex` finds the same hits as its twin by another road: one pass over the text.
"""

cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.unicode cimport (
    Py_UNICODE_ISALNUM,
    Py_UNICODE_ISSPACE,
    PyUnicode_1BYTE_KIND,
    PyUnicode_2BYTE_KIND,
    PyUnicode_DATA,
    PyUnicode_GET_LENGTH,
    PyUnicode_KIND,
)
from libc.math cimport log
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memset

from array import array

from orxaq_grpc._scoring_py import KeywordIndex as _KeywordSearch

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
        # The GIL is kept: a row is a few microseconds, and releasing it let the ledger writer take
        # it mid-Route, so the Route waited to get it back (a hand-off per call).
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


# -- keywords ------------------------------------------------------------------------------------

cdef enum:
    _OTHER = 0
    _WORD = 1
    _SPACE = 2

# The twin's classes: word characters are str.isalnum() or _, white space str.isspace() (re's \s,
# which on ASCII is \t\n\v\f\r, 0x1c-0x1f and space). Latin-1 from a table Python itself makes.
cdef unsigned char _LATIN1_CLASS[256]
for _c in range(256):
    _LATIN1_CLASS[_c] = _WORD if chr(_c).isalnum() or _c == 0x5F else _SPACE if chr(_c).isspace() else _OTHER

# A str's characters, in one of the three widths CPython stores them in.
ctypedef fused Unit:
    uint8_t
    uint16_t
    uint32_t


cdef inline int _class(uint32_t c) noexcept:
    if c < 256:
        return _LATIN1_CLASS[c]
    if Py_UNICODE_ISALNUM(<Py_UCS4>c):
        return _WORD
    if Py_UNICODE_ISSPACE(<Py_UCS4>c):
        return _SPACE
    return _OTHER


cdef inline Py_ssize_t _slot(const Unit *word, Py_ssize_t length, Py_ssize_t mask) noexcept:
    """A hash table slot from a word's length and first, middle and last characters: a few
    multiplications per word rather than a chain of one per character."""
    cdef uint64_t h = <uint64_t>length * 0x9E3779B97F4A7C15ULL
    h = (h ^ word[0]) * 0xBF58476D1CE4E5B9ULL
    h = (h ^ word[length >> 1]) * 0x94D049BB133111EBULL
    h = (h ^ word[length - 1]) * 0x9E3779B97F4A7C15ULL
    return <Py_ssize_t>(h >> 32) & mask


cdef bint _is_word(str part):
    return bool(part) and all(c.isalnum() or c == "_" for c in part)


cdef bint _overlaps(list words):
    """Whether the twin's scan can miss a whole hit of this phrase: re's finditer resumes after a
    match that is not whole (it starts or ends inside a longer word), and a whole one can start inside
    it. That takes the phrase's later words to repeat its first ones and its last word to begin the
    word it then meets: "ab a" in "xab ab a" (the whole hit at 4 starts inside the match at 1). Such
    phrases are left to the twin, so that both find the same hits."""
    cdef Py_ssize_t n = len(words), k
    for k in range(1, n):
        if words[k:n - 1] == words[:n - 1 - k] and words[n - 1 - k].startswith(words[n - 1]):
            return True
    return False


cdef class KeywordIndex:
    """The twin of `_scoring_py.KeywordIndex` (the contract is documented there).

    One pass splits the text into runs of word characters and looks each up in a hash table of the
    keywords' words. A keyword is its words in a row: it hits at the first run that is its last word
    while the runs before it are its other words, linked only by white space (`linked` counts the runs
    so linked up to this one). Keywords with other characters ("c++", "re-run"), and the phrases
    `_overlaps` finds, are searched by the twin.
    """

    cdef tuple _keywords  # scanned here, by number
    cdef object _rest  # the twin's index of the others, or None
    cdef Py_ssize_t _ring  # the most words in a keyword: how many runs a scan remembers
    cdef Py_ssize_t _mask  # hash table size - 1
    cdef const int64_t[::1] _table  # word number per slot, -1 where empty
    cdef const int64_t[::1] _starts  # per word: its characters are _chars[start:start + length]
    cdef const int64_t[::1] _lengths
    cdef const uint32_t[::1] _chars
    cdef const int64_t[::1] _ends  # per word: the keywords it ends are _ending[_ends[w]:_ends[w + 1]]
    cdef const int64_t[::1] _ending
    cdef const int64_t[::1] _parts  # per keyword: its words are _words[_parts[k]:_parts[k + 1]]
    cdef const int64_t[::1] _words

    @cython.wraparound(True)  # plain Python, run once per config
    def __init__(self, keywords):
        cdef Py_ssize_t w
        scanned = []
        rest = []
        for keyword in keywords:
            parts = keyword.split(" ")
            if all(_is_word(part) for part in parts) and not _overlaps(parts):
                scanned.append(parts)
            else:
                rest.append(keyword)
        self._keywords = tuple(" ".join(parts) for parts in scanned)
        self._rest = _KeywordSearch(rest) if rest else None
        self._ring = max(map(len, scanned), default=1)

        numbers = {}  # word -> number
        words = []
        parts_at = [0]
        ending = {}  # word number -> the keywords it ends
        for k, parts in enumerate(scanned):
            ids = [numbers.setdefault(part, len(numbers)) for part in parts]
            words += ids
            parts_at.append(len(words))
            ending.setdefault(ids[-1], []).append(k)
        self._words = array("q", words)
        self._parts = array("q", parts_at)
        self._ending = array("q", [k for w in range(len(numbers)) for k in ending.get(w, ())])
        ends = [0]
        for w in range(len(numbers)):
            ends.append(ends[-1] + len(ending.get(w, ())))
        self._ends = array("q", ends)

        chars = array("I")
        starts = []
        for word in numbers:
            starts.append(len(chars))
            chars.extend(ord(c) for c in word)
        self._chars = chars
        self._starts = array("q", starts)
        self._lengths = array("q", map(len, numbers))
        size = 2
        while size < 2 * len(numbers):  # at most half full: a probe always ends on an empty slot
            size *= 2
        self._mask = size - 1
        table = [-1] * size
        for w in range(len(numbers)):
            slot = _slot(&self._chars[self._starts[w]], self._lengths[w], self._mask)
            while table[slot] >= 0:
                slot = (slot + 1) & self._mask
            table[slot] = w
        self._table = array("q", table)

    def first_hits(self, str text not None):
        """(position, keyword) of each keyword's first whole-word hit in `text`, sorted."""
        cdef int kind = PyUnicode_KIND(text)
        cdef void *data = PyUnicode_DATA(text)
        cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text)
        cdef list hits
        if kind == PyUnicode_1BYTE_KIND:
            hits = self._scan(<const uint8_t *>data, n)
        elif kind == PyUnicode_2BYTE_KIND:
            hits = self._scan(<const uint16_t *>data, n)
        else:
            hits = self._scan(<const uint32_t *>data, n)
        if self._rest is not None:
            hits += self._rest.first_hits(text)
        if len(hits) > 1:
            hits.sort()  # a phrase is found at its last word, after words that start later
        return hits

    cdef list _scan(self, const Unit *text, Py_ssize_t n):
        cdef Py_ssize_t count = len(self._keywords)
        cdef list hits = []
        if n == 0 or count == 0:
            return hits
        # Per call, so that threads share the index: a found flag per keyword, the last runs' words
        # and starts.
        cdef Py_ssize_t *state = <Py_ssize_t *>PyMem_Malloc((count + 2 * self._ring) * sizeof(Py_ssize_t))
        if state == NULL:
            raise MemoryError()
        cdef Py_ssize_t *found = state
        cdef Py_ssize_t *run_word = state + count
        cdef Py_ssize_t *run_start = run_word + self._ring
        cdef Py_ssize_t ring = self._ring
        cdef Py_ssize_t i = 0, start, w, e, k, first, size, j
        cdef Py_ssize_t left = count, runs = 0, linked = 0
        cdef bint spaced = False  # only white space since the last run
        cdef int cls
        memset(found, 0, count * sizeof(Py_ssize_t))
        try:
            while i < n:
                cls = _class(text[i])
                if cls != _WORD:
                    if cls == _OTHER:
                        spaced = False
                    i += 1
                    continue
                start = i
                i += 1
                while i < n and _class(text[i]) == _WORD:
                    i += 1
                linked = linked + 1 if spaced else 1
                spaced = True
                w = self._find(text + start, i - start)
                run_word[runs % ring] = w
                run_start[runs % ring] = start
                runs += 1
                if w < 0:
                    continue
                for e in range(self._ends[w], self._ends[w + 1]):
                    k = self._ending[e]
                    first = self._parts[k]
                    size = self._parts[k + 1] - first
                    if found[k] or linked < size:
                        continue
                    for j in range(size - 1):
                        if run_word[(runs - size + j) % ring] != self._words[first + j]:
                            break
                    else:
                        found[k] = 1
                        hits.append((run_start[(runs - size) % ring], self._keywords[k]))
                        left -= 1
                if left == 0:
                    break
        finally:
            PyMem_Free(state)
        return hits

    cdef Py_ssize_t _find(self, const Unit *run, Py_ssize_t length) noexcept:
        """The number of the word that is `run`, or -1."""
        cdef Py_ssize_t slot = _slot(run, length, self._mask)
        cdef Py_ssize_t w, j, at
        while True:
            w = self._table[slot]
            if w < 0:
                return -1
            if self._lengths[w] == length:
                at = self._starts[w]
                for j in range(length):
                    if self._chars[at + j] != run[j]:
                        break
                else:
                    return w
            slot = (slot + 1) & self._mask
