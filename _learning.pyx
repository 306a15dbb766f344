# cython: language_level=3
"""Compiled learning kernel, built as `orxaq_grpc._learning`.

The twin of `orxaq_grpc/_learning_py.py` (the contract is documented there): same
arguments, same hashes, same floating-point operations in the same order, so the
features are identical and the figures agree. Keep them in step.
Bounds checking and wraparound are set for the whole build in setup.py (off in
release, on with ORXAQ_CYTHON_DEBUG=1), so every index is checked here by hand.
"""

from libc.math cimport erfc, exp, sqrt
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc

cdef enum:
    _MAX_SUBWORD = 24

KIND = "compiled"
MAX_SUBWORD_TOKEN = _MAX_SUBWORD  # longer tokens (hashes, paths, base64) get no character trigrams

cdef uint64_t _FNV_BASIS = 0xCBF29CE484222325ULL
cdef uint64_t _FNV_PRIME = 0x100000001B3ULL
# One kind byte per feature family, hashed first (the same bytes as the twin's).
cdef enum:
    _WORD = 0x77
    _BIGRAM = 0x62
    _TRIGRAM = 0x63
    _TAG = 0x74
cdef double _SQRT_HALF = 0.7071067811865476
cdef double _INV_SQRT_2PI = 0.3989422804014327
cdef double _VARIANCE_FLOOR = 1e-9


cdef inline uint64_t _step(uint64_t h, unsigned char byte) noexcept nogil:
    # uint64_t arithmetic wraps mod 2**64, the twin's `& _MASK64`.
    return (h ^ byte) * _FNV_PRIME


cdef inline int64_t _slot(uint64_t h, uint64_t modulus) noexcept nogil:
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ULL
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBULL
    h ^= h >> 31
    return <int64_t>(1 + h % modulus)


cdef inline unsigned char _lower(unsigned char b) noexcept nogil:
    return b | 0x20 if 0x41 <= b <= 0x5A else b


cdef inline bint _is_word_byte(unsigned char b) noexcept nogil:
    return 0x61 <= b <= 0x7A or 0x30 <= b <= 0x39 or b == 0x5F or b >= 0x80


cdef enum:
    _RADIX_BITS = 11
    _RADIX = 1 << _RADIX_BITS


cdef void _radix_sort(uint64_t *keys, uint64_t *spare, Py_ssize_t n, uint64_t largest) noexcept nogil:
    """Sorts keys ascending, least significant digit first, as many passes as `largest` needs. A
    comparison sort's callbacks cost more than the hashing they follow; this is a few linear passes."""
    cdef Py_ssize_t counts[_RADIX]
    cdef Py_ssize_t i, total, count
    cdef unsigned int shift = 0
    cdef uint64_t *source = keys
    cdef uint64_t *target = spare
    cdef uint64_t *swap
    while shift == 0 or (shift < 64 and (largest >> shift) != 0):
        for i in range(_RADIX):
            counts[i] = 0
        for i in range(n):
            counts[(source[i] >> shift) & (_RADIX - 1)] += 1
        total = 0
        for i in range(_RADIX):
            count = counts[i]
            counts[i] = total
            total += count
        for i in range(n):
            target[counts[(source[i] >> shift) & (_RADIX - 1)]] = source[i]
            counts[(source[i] >> shift) & (_RADIX - 1)] += 1
        swap = source
        source = target
        target = swap
        shift += _RADIX_BITS
    if source != keys:
        for i in range(n):
            keys[i] = source[i]


def capacity(text, tags):
    """How many slots `features` may fill at most: the bias, the tags, and per text byte at most
    one word or bigram start and one trigram."""
    return 1 + len(tags) + 3 * len(text)


cdef Py_ssize_t _text_keys(const unsigned char[::1] text, uint64_t modulus, uint64_t *keys) noexcept nogil:
    """Appends a key per text feature occurrence (slot << 1, tag bit clear); returns how many."""
    cdef Py_ssize_t n = text.shape[0]
    cdef Py_ssize_t i = 0, start, k, p, length
    cdef Py_ssize_t filled = 0
    cdef uint64_t word, bigram, prefix, trigram
    cdef uint64_t previous = 0
    cdef bint has_previous = False
    cdef unsigned char b
    while i < n:
        if not _is_word_byte(_lower(text[i])):
            i += 1
            continue
        start = i
        while i < n and _is_word_byte(_lower(text[i])):
            i += 1
        # One pass over the token for its word hash, the bigram with the previous token, and its
        # own bigram prefix for the next one.
        word = _step(_FNV_BASIS, _WORD)
        bigram = _step(previous, 0x20)
        prefix = _step(_FNV_BASIS, _BIGRAM)
        for k in range(start, i):
            b = _lower(text[k])
            word = _step(word, b)
            bigram = _step(bigram, b)
            prefix = _step(prefix, b)
        keys[filled] = <uint64_t>_slot(word, modulus) << 1
        filled += 1
        if has_previous:
            keys[filled] = <uint64_t>_slot(bigram, modulus) << 1
            filled += 1
        previous = prefix
        has_previous = True
        length = i - start
        if length <= _MAX_SUBWORD:
            # The trigrams of b"<" + token + b">", one per token byte.
            for k in range(length):
                trigram = _step(_FNV_BASIS, _TRIGRAM)
                for p in range(k, k + 3):
                    if p == 0:
                        b = 0x3C  # "<"
                    elif p == length + 1:
                        b = 0x3E  # ">"
                    else:
                        b = _lower(text[start + p - 1])
                    trigram = _step(trigram, b)
                keys[filled] = <uint64_t>_slot(trigram, modulus) << 1
                filled += 1
    return filled


def features(const unsigned char[::1] text, tags, int64_t dim, int64_t[::1] indices, double[::1] values):
    """Writes the task's features into `indices` and `values` (each at least `capacity(...)` long),
    sorted by index, and returns how many it wrote. `dim` is a power of two >= 2.
    ValueError, before anything is written, if `dim` < 2 or the arrays cannot hold the output."""
    if dim < 2:
        raise ValueError(f"dim must be at least 2, not {dim}")
    tags = tuple(tags)
    cdef uint64_t modulus = <uint64_t>(dim - 1)
    cdef Py_ssize_t n_tags = len(tags)
    cdef Py_ssize_t room = n_tags + 3 * text.shape[0]
    cdef Py_ssize_t filled, j, run, unique, written, t, tag_count
    cdef uint64_t slot, h
    cdef int64_t text_count
    cdef double squares, scale, value
    cdef const unsigned char[::1] tag
    # Every occurrence as one sortable key: the slot, shifted left, and a low bit set for a tag.
    # Slots are below 2**63, so the shift loses nothing.
    # The keys and the radix sort's spare buffer, in one allocation.
    cdef uint64_t *keys = <uint64_t *>malloc(2 * (room if room > 0 else 1) * sizeof(uint64_t))
    if keys == NULL:
        raise MemoryError()
    try:
        for j in range(n_tags):
            tag = tags[j]
            h = _step(_FNV_BASIS, _TAG)
            for t in range(tag.shape[0]):
                h = _step(h, tag[t])
            keys[j] = (<uint64_t>_slot(h, modulus) << 1) | 1
        with nogil:
            filled = n_tags + _text_keys(text, modulus, keys + n_tags)
            _radix_sort(keys, keys + (room if room > 0 else 1), filled, (<uint64_t>dim << 1) | 1)
            # Text counts squared in ascending slot order, as the twin sums them.
            squares = 0.0
            unique = 0
            j = 0
            while j < filled:
                slot = keys[j] >> 1
                text_count = 0
                while j < filled and keys[j] >> 1 == slot:
                    if not keys[j] & 1:
                        text_count += 1
                    j += 1
                if text_count:
                    squares += <double>text_count * <double>text_count
                unique += 1
        if indices.shape[0] < unique + 1 or values.shape[0] < unique + 1:
            raise ValueError(
                f"features needs {unique + 1} output slots, indices has {indices.shape[0]}"
                f" and values {values.shape[0]}"
            )
        with nogil:
            scale = 1.0 / sqrt(squares) if squares > 0.0 else 0.0
            indices[0] = 0
            values[0] = 1.0
            written = 1
            j = 0
            while j < filled:
                slot = keys[j] >> 1
                text_count = 0
                tag_count = 0
                while j < filled and keys[j] >> 1 == slot:
                    if keys[j] & 1:
                        tag_count += 1
                    else:
                        text_count += 1
                    j += 1
                value = <double>text_count * scale if text_count else 0.0
                # One 1.0 per tag, added one at a time: (x + 1.0) + 1.0 may round unlike x + 2.0.
                for t in range(tag_count):
                    value = value + 1.0
                indices[written] = <int64_t>slot
                values[written] = value
                written += 1
    finally:
        free(keys)
    return written


cdef int _check(
    const float[::1] mean, const float[::1] var, const int64_t[::1] indices, const double[::1] values, Py_ssize_t n
) except -1:
    if n > indices.shape[0] or n > values.shape[0]:
        raise IndexError(f"n = {n} is more than the {min(indices.shape[0], values.shape[0])} features given")
    cdef Py_ssize_t size = min(mean.shape[0], var.shape[0])
    cdef Py_ssize_t k
    cdef int64_t i
    for k in range(n):
        i = indices[k]
        if i < 0 or i >= size:
            raise IndexError(f"feature index {i} is outside the model's {size} weights")
    return 0


cdef inline void _linear(
    const float[::1] mean,
    const float[::1] var,
    const int64_t[::1] indices,
    const double[::1] values,
    Py_ssize_t n,
    double offset,
    double *m_out,
    double *v_out,
) noexcept nogil:
    cdef double m = offset
    cdef double v = 0.0
    cdef double x
    cdef int64_t i
    cdef Py_ssize_t k
    for k in range(n):
        i = indices[k]
        x = values[k]
        m += x * mean[i]
        v += x * x * var[i]
    m_out[0] = m
    v_out[0] = v


cdef double _denominator(double s2) except -1.0:
    # Python's math.sqrt refuses a negative and float division a zero; so does this twin.
    if s2 < 0.0:
        raise ValueError("math domain error")
    if s2 == 0.0:
        raise ZeroDivisionError("float division by zero")
    return sqrt(s2)


def linear(
    const float[::1] mean,
    const float[::1] var,
    const int64_t[::1] indices,
    const double[::1] values,
    Py_ssize_t n,
    double offset,
):
    """The linear score's mean and variance for one model."""
    _check(mean, var, indices, values, n)
    cdef double m = 0.0, v = 0.0
    with nogil:
        _linear(mean, var, indices, values, n, offset, &m, &v)
    return m, v


def probability(double m, double v, double beta2):
    """Phi(m / sqrt(beta2 + v)): the chance of a pass."""
    return 0.5 * erfc(-m / _denominator(beta2 + v) * _SQRT_HALF)


def update(
    float[::1] mean,
    float[::1] var,
    const int64_t[::1] indices,
    const double[::1] values,
    Py_ssize_t n,
    double offset,
    double beta2,
    bint passed,
):
    """One outcome, folded into the model's weights in place (probit ADF update)."""
    _check(mean, var, indices, values, n)
    cdef double m = 0.0, v = 0.0
    _linear(mean, var, indices, values, n, offset, &m, &v)
    cdef double s2 = beta2 + v
    cdef double s = _denominator(s2)
    cdef double sign = 1.0 if passed else -1.0
    cdef double t = sign * m / s
    cdef double cdf, vt, wt, x, sigma2, shrunk
    cdef int64_t i
    cdef Py_ssize_t k
    with nogil:
        cdf = 0.5 * erfc(-t * _SQRT_HALF)
        # v(t) = pdf(t) / cdf(t) loses precision far in the tail, where it tends to -t.
        vt = _INV_SQRT_2PI * exp(-0.5 * t * t) / cdf if t > -30.0 else -t - 1.0 / t + 2.0 / (t * t * t)
        wt = vt * (vt + t)
        for k in range(n):
            i = indices[k]
            x = values[k]
            sigma2 = var[i]
            mean[i] = <float>(mean[i] + sign * x * sigma2 / s * vt)
            shrunk = sigma2 * (1.0 - x * x * sigma2 / s2 * wt)
            var[i] = <float>(shrunk if shrunk > _VARIANCE_FLOOR else _VARIANCE_FLOOR)
