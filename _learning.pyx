# cython: language_level=3
"""Compiled learning kernel, built as `orxaq_grpc._learning`.

The twin of `orxaq_grpc/_learning_py.py` (the contract is documented there): same
arguments, same hashes, same floating-point operations in the same order, so the
features are identical and the figures agree. Keep them in step.
Bounds checking and wraparound are set for the whole build in setup.py (off in
release, on with ORXAQ_CYTHON_DEBUG=1), so every index is checked here by hand.
"""

from cpython cimport array
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
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

# Empty arrays that `vector` clones into arrays of the size it needs.
cdef array.array _INT64S = array.array("q")
cdef array.array _DOUBLES = array.array("d")


cdef inline uint64_t _step(uint64_t h, unsigned char byte) noexcept nogil:
    # uint64_t arithmetic wraps mod 2**64, the twin's `& _MASK64`.
    return (h ^ byte) * _FNV_PRIME


cdef struct _Reducer:
    # h % modulus without a division when modulus is 2**bits - 1 (dim a power of two, as shipped):
    # 2**bits = 1 (mod modulus), so adding the high bits to the low ones keeps the remainder. A 64-bit
    # division costs more than the hashing around it.
    uint64_t modulus
    unsigned int bits
    int folds  # how many folds bring any 64-bit h below 2 * modulus; -1: divide instead


cdef _Reducer _reducer(int64_t dim) noexcept:
    cdef _Reducer r
    cdef uint64_t bound = 0xFFFFFFFFFFFFFFFFULL
    r.modulus = <uint64_t>(dim - 1)
    r.bits = 0
    r.folds = -1
    if dim >= 4 and (dim & (dim - 1)) == 0:
        while (<uint64_t>1 << r.bits) < <uint64_t>dim:
            r.bits += 1
        r.folds = 0
        while bound > 2 * r.modulus - 1:
            bound = r.modulus + (bound >> r.bits)
            r.folds += 1
    return r


cdef inline int64_t _slot(uint64_t h, _Reducer r) noexcept nogil:
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ULL
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBULL
    h ^= h >> 31
    if r.folds < 0:
        return <int64_t>(1 + h % r.modulus)
    cdef int fold
    for fold in range(r.folds):
        h = (h & r.modulus) + (h >> r.bits)
    if h >= r.modulus:
        h -= r.modulus
    return <int64_t>(1 + h)


cdef inline unsigned char _lower(unsigned char b) noexcept nogil:
    return b | 0x20 if 0x41 <= b <= 0x5A else b


cdef inline bint _is_word_byte(unsigned char b) noexcept nogil:
    return 0x61 <= b <= 0x7A or 0x30 <= b <= 0x39 or b == 0x5F or b >= 0x80


# Per byte: its lower-case form if it belongs to a token, else 0 (never a token byte): one load
# instead of a lower-casing and four comparisons per text byte.
cdef unsigned char _TOKEN_BYTE[256]
for _byte in range(256):
    _TOKEN_BYTE[_byte] = _lower(_byte) if _is_word_byte(_lower(_byte)) else 0


cdef enum:
    _RADIX_BITS = 11  # at most, per pass
    _RADIX = 1 << _RADIX_BITS
    _INSERTION_SORT_MAX = 32  # fewer keys than this: a radix pass's count table costs more


cdef uint64_t *_sort(uint64_t *keys, uint64_t *spare, Py_ssize_t n, uint64_t largest) noexcept nogil:
    """Sorts keys ascending and returns where they are now: `keys` or `spare`. Least significant
    digit first, as few passes as `largest` needs, each of equal width: a comparison sort's
    callbacks cost more than the hashing they follow; this is a few linear passes."""
    cdef Py_ssize_t counts[_RADIX]
    cdef Py_ssize_t i, j, total, count, buckets
    cdef uint64_t key
    cdef unsigned int bits = 1, passes, width, shift, pass_number
    cdef uint64_t digit_mask
    cdef uint64_t *source = keys
    cdef uint64_t *target = spare
    cdef uint64_t *swap
    if n < _INSERTION_SORT_MAX:
        for i in range(1, n):
            key = keys[i]
            j = i
            while j > 0 and keys[j - 1] > key:
                keys[j] = keys[j - 1]
                j -= 1
            keys[j] = key
        return keys
    while bits < 64 and (largest >> bits) != 0:
        bits += 1
    passes = (bits + _RADIX_BITS - 1) // _RADIX_BITS
    width = (bits + passes - 1) // passes
    buckets = <Py_ssize_t>1 << width
    digit_mask = <uint64_t>buckets - 1
    for pass_number in range(passes):
        shift = pass_number * width
        for i in range(buckets):
            counts[i] = 0
        for i in range(n):
            counts[(source[i] >> shift) & digit_mask] += 1
        total = 0
        for i in range(buckets):
            count = counts[i]
            counts[i] = total
            total += count
        for i in range(n):
            target[counts[(source[i] >> shift) & digit_mask]] = source[i]
            counts[(source[i] >> shift) & digit_mask] += 1
        swap = source
        source = target
        target = swap
    return source


def capacity(text, tags):
    """How many slots `features` may fill at most: the bias, the tags, and per text byte at most
    one word or bigram start and one trigram."""
    return 1 + len(tags) + 3 * len(text)


cdef inline Py_ssize_t _most_text_keys(Py_ssize_t n) noexcept nogil:
    # T tokens of L_1..L_T bytes, at least one byte apart, give at most T words, T - 1 bigrams and
    # sum(L) trigrams: at most n + T keys, and T <= (n + 1) / 2.
    return n + (n + 1) // 2


cdef Py_ssize_t _text_keys(const unsigned char *text, Py_ssize_t n, _Reducer r, uint64_t *keys) noexcept nogil:
    """Appends a key per text feature occurrence (slot << 1, tag bit clear); returns how many."""
    # b"<" + token + b">" lower-cased, for a token short enough to get trigrams.
    cdef unsigned char padded[_MAX_SUBWORD + 2]
    cdef Py_ssize_t i = 0, start, k, length
    cdef Py_ssize_t filled = 0
    cdef uint64_t word, bigram, prefix, trigram
    cdef uint64_t trigram_basis = _step(_FNV_BASIS, _TRIGRAM)
    cdef uint64_t previous = 0
    cdef bint has_previous = False
    cdef unsigned char b
    padded[0] = 0x3C  # "<"
    while i < n:
        b = _TOKEN_BYTE[text[i]]
        if not b:
            i += 1
            continue
        start = i
        # One pass over the token for its word hash, the bigram with the previous token, its own
        # bigram prefix for the next one, and its lower-cased bytes for the trigrams.
        word = _step(_FNV_BASIS, _WORD)
        bigram = _step(previous, 0x20)
        prefix = _step(_FNV_BASIS, _BIGRAM)
        while True:
            word = _step(word, b)
            bigram = _step(bigram, b)
            prefix = _step(prefix, b)
            if i - start < _MAX_SUBWORD:
                padded[i - start + 1] = b
            i += 1
            if i == n:
                break
            b = _TOKEN_BYTE[text[i]]
            if not b:
                break
        keys[filled] = <uint64_t>_slot(word, r) << 1
        filled += 1
        if has_previous:
            keys[filled] = <uint64_t>_slot(bigram, r) << 1
            filled += 1
        previous = prefix
        has_previous = True
        length = i - start
        if length <= _MAX_SUBWORD:
            padded[length + 1] = 0x3E  # ">"
            for k in range(length):
                trigram = _step(_step(_step(trigram_basis, padded[k]), padded[k + 1]), padded[k + 2])
                keys[filled] = <uint64_t>_slot(trigram, r) << 1
                filled += 1
    return filled


cdef inline uint64_t _tag_key(const unsigned char *tag, Py_ssize_t n, _Reducer r) noexcept nogil:
    cdef uint64_t h = _step(_FNV_BASIS, _TAG)
    cdef Py_ssize_t t
    for t in range(n):
        h = _step(h, tag[t])
    return (<uint64_t>_slot(h, r) << 1) | 1


cdef uint64_t *_key_buffer(Py_ssize_t n_tags, Py_ssize_t text_bytes) except NULL:
    """Room for every key and the sort's spare copy, in one allocation (free it)."""
    cdef Py_ssize_t room = n_tags + _most_text_keys(text_bytes)
    cdef uint64_t *keys = <uint64_t *>malloc(2 * (room if room > 0 else 1) * sizeof(uint64_t))
    if keys == NULL:
        raise MemoryError()
    return keys


cdef Py_ssize_t _runs(
    const uint64_t *ordered, Py_ssize_t filled, int64_t *indices, double *values, uint64_t *tag_counts
) noexcept nogil:
    """Run-length encodes the sorted keys from position 1 on: per distinct slot, indices[w] = slot,
    values[w] = its text count, tag_counts[w - 1] = its tag count. Returns 1 + the distinct slots.
    Branch-free: which keys repeat is random, and a mispredicted branch per run cost more than this."""
    cdef Py_ssize_t j, w = 0
    cdef uint64_t key, slot, tag, same
    cdef uint64_t previous = 0xFFFFFFFFFFFFFFFFULL  # no slot: slots are below 2**63
    cdef uint64_t text_count = 0, tag_count = 0
    for j in range(filled):
        key = ordered[j]
        slot = key >> 1
        tag = key & 1
        same = slot == previous
        w += <Py_ssize_t>(1 - same)
        text_count = text_count * same + (1 - tag)
        tag_count = tag_count * same + tag
        # Rewritten until the run ends, which leaves its totals.
        indices[w] = <int64_t>slot
        values[w] = <double>text_count
        tag_counts[w - 1] = tag_count
        previous = slot
    return w + 1


cdef void _weigh(double *values, const uint64_t *tag_counts, Py_ssize_t written) noexcept nogil:
    """Turns text counts into unit-norm weights, adds the tags, and sets the bias."""
    cdef double squares = 0.0
    cdef double scale, value
    cdef Py_ssize_t w
    cdef uint64_t t
    # In ascending slot order, as the twin sums them; a slot with tags only adds 0.0, which changes
    # nothing (squares is never -0.0).
    for w in range(1, written):
        squares += values[w] * values[w]
    scale = 1.0 / sqrt(squares) if squares > 0.0 else 0.0
    for w in range(1, written):
        value = values[w] * scale  # 0.0 for a slot with tags only: scale is finite
        # One 1.0 per tag, added one at a time: (x + 1.0) + 1.0 may round unlike x + 2.0.
        for t in range(tag_counts[w - 1]):
            value = value + 1.0
        values[w] = value
    values[0] = 1.0


cdef tuple _hashed(
    uint64_t *keys, Py_ssize_t n_tags, const unsigned char *text, Py_ssize_t n_text, _Reducer r, int64_t dim
):
    """Given the tags' keys at the head of a `_key_buffer`, hashes the text after them and returns
    (indices, values, has_token): the sorted features in arrays of exactly their length.
    Holds the GIL throughout: released for so short a time, a waiting thread would take it and this
    one would wait for it back, which costs more than the hashing does."""
    cdef Py_ssize_t room = n_tags + _most_text_keys(n_text)
    cdef uint64_t *spare = keys + (room if room > 0 else 1)
    cdef Py_ssize_t text_filled = _text_keys(text, n_text, r, keys + n_tags)
    cdef Py_ssize_t filled = n_tags + text_filled
    cdef uint64_t *ordered = _sort(keys, spare, filled, (<uint64_t>dim << 1) | 1)
    # At most one entry per key and the bias: the arrays shrink to fit below.
    cdef array.array indices = array.clone(_INT64S, filled + 1, False)
    cdef array.array values = array.clone(_DOUBLES, filled + 1, False)
    cdef int64_t *index_data = <int64_t *>indices.data.as_longlongs
    cdef double *value_data = values.data.as_doubles
    # The half of the buffer that the sort did not leave the keys in holds the tag counts.
    cdef Py_ssize_t written = _runs(ordered, filled, index_data, value_data, keys if ordered == spare else spare)
    index_data[0] = 0
    _weigh(value_data, keys if ordered == spare else spare, written)
    array.resize(indices, written)
    array.resize(values, written)
    return indices, values, text_filled > 0


cdef int _check_dim(int64_t dim) except -1:
    if dim < 2:
        raise ValueError(f"dim must be at least 2, not {dim}")
    return 0


def features(const unsigned char[::1] text, tags, int64_t dim, int64_t[::1] indices, double[::1] values):
    """Writes the task's features into `indices` and `values` (each at least `capacity(...)` long),
    sorted by index, and returns how many it wrote. `dim` is a power of two >= 2.
    ValueError, before anything is written, if `dim` < 2 or the arrays cannot hold the output."""
    _check_dim(dim)
    tags = tuple(tags)
    cdef _Reducer r = _reducer(dim)
    cdef Py_ssize_t n_tags = len(tags)
    cdef Py_ssize_t n_text = text.shape[0]
    cdef Py_ssize_t j, written
    cdef const unsigned char[::1] tag
    cdef array.array found_indices, found_values
    # Every occurrence as one sortable key: the slot, shifted left, and a low bit set for a tag.
    # Slots are below 2**63, so the shift loses nothing.
    cdef uint64_t *keys = _key_buffer(n_tags, n_text)
    try:
        for j in range(n_tags):
            tag = tags[j]
            keys[j] = _tag_key(&tag[0] if tag.shape[0] else NULL, tag.shape[0], r)
        found_indices, found_values, _ = _hashed(keys, n_tags, &text[0] if n_text else NULL, n_text, r, dim)
    finally:
        free(keys)
    written = len(found_indices)
    if indices.shape[0] < written or values.shape[0] < written:
        raise ValueError(
            f"features needs {written} output slots, indices has {indices.shape[0]}"
            f" and values {values.shape[0]}"
        )
    for j in range(written):
        indices[j] = found_indices.data.as_longlongs[j]
        values[j] = found_values.data.as_doubles[j]
    return written


def vector(str text not None, tags, int64_t dim):
    """`features` of the UTF-8 of `text` and `tags` (a tuple of str), in arrays ('q' and 'd') of
    exactly the length written, and whether the text has a token (gives any text feature)."""
    _check_dim(dim)
    cdef tuple tag_tuple = tuple(tags)
    cdef _Reducer r = _reducer(dim)
    cdef Py_ssize_t n_tags = len(tag_tuple)
    cdef Py_ssize_t n_text, tag_bytes, j
    # UTF-8 without a copy for ASCII text (CPython caches it on the str otherwise, as many C APIs do).
    cdef const unsigned char *data = <const unsigned char *>PyUnicode_AsUTF8AndSize(text, &n_text)
    cdef const unsigned char *tag
    cdef uint64_t *keys = _key_buffer(n_tags, n_text)
    try:
        for j in range(n_tags):
            tag = <const unsigned char *>PyUnicode_AsUTF8AndSize(tag_tuple[j], &tag_bytes)
            keys[j] = _tag_key(tag, tag_bytes, r)
        return _hashed(keys, n_tags, data, n_text, r, dim)
    finally:
        free(keys)


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
