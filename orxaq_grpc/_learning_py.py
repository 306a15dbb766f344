"""Pure-Python twin of the compiled learning kernel (`_learning.pyx`): hashed task features and the
success model's per-model arithmetic (Bayesian probit regression with a diagonal Gaussian posterior,
updated one outcome at a time by assumed-density filtering).

Both twins take the same arguments and do the same operations in the same order, so their features
are identical and their figures agree to 1e-12; a change to one is a change to both.

Features. `features` reads lower-cased UTF-8 text and a few tags (kind, labels, lane, ...):
- a token is a run of bytes in [a-z0-9_] or >= 0x80 (any non-ASCII character, punctuation included:
  the kernel reads bytes, not Unicode classes); ASCII A-Z fold to a-z, and callers lower-case the
  text first so that non-ASCII capitals fold too;
- each token gives a word feature, each pair of neighbours a bigram feature, and each token of at
  most `MAX_SUBWORD_TOKEN` bytes the character trigrams of `<token>`;
- a tag gives one feature, value 1;
- text features count repeats and are scaled to unit L2 norm together, so a long prompt weighs no more
  than a short one; index 0 is the bias, value 1, always first.
Hashes are 64-bit FNV-1a over a kind byte and the bytes, finished by the splitmix64 mixer, reduced to
[1, dim - 1]: stable across processes, machines and restarts (Python's `hash` is salted per process).
The output is sorted by index with no repeats. `vector` gives the same features of a str text and
str tags in arrays of their own length, and whether the text has a token (so a text part).

Model. Per model, a weight mean and variance per feature index. The linear score is
`m = offset + sum(x * mean)`, its variance `v = sum(x^2 * var)`, and the pass probability
`Phi(m / sqrt(beta2 + v))`. `offset` carries the catalog's prior for the model, so a model that has
seen nothing predicts exactly its prior.
"""

from __future__ import annotations

from array import array
from math import erfc, exp, sqrt

from orxaq_grpc.kernel import Doubles, Floats, Int64s

KIND = "python"

MAX_SUBWORD_TOKEN = 24  # longer tokens (hashes, paths, base64) get no character trigrams
_MASK64 = (1 << 64) - 1
_FNV_BASIS = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
# One kind byte per feature family, hashed first, so a word never collides with the same bytes as a tag.
_WORD, _BIGRAM, _TRIGRAM, _TAG = 0x77, 0x62, 0x63, 0x74  # "w", "b", "c", "t"
_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327
_VARIANCE_FLOOR = 1e-9  # keeps a weight learnable however many outcomes it has seen


def _fnv(h: int, data: bytes | bytearray, start: int, stop: int) -> int:
    for i in range(start, stop):
        h = ((h ^ data[i]) * _FNV_PRIME) & _MASK64
    return h


def _step(h: int, byte: int) -> int:
    return ((h ^ byte) * _FNV_PRIME) & _MASK64


def _slot(h: int, dim: int) -> int:
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
    h ^= h >> 31
    return 1 + h % (dim - 1)


def _is_word_byte(b: int) -> bool:
    return 0x61 <= b <= 0x7A or 0x30 <= b <= 0x39 or b == 0x5F or b >= 0x80


def _lower(text: bytes) -> bytes:
    return bytes(b | 0x20 if 0x41 <= b <= 0x5A else b for b in text)


def capacity(text: bytes, tags: tuple[bytes, ...]) -> int:
    """How many slots `features` may fill at most: the bias, the tags, and per text byte at most
    one word or bigram start and one trigram."""
    return 1 + len(tags) + 3 * len(text)


def features(text: bytes, tags: tuple[bytes, ...], dim: int, indices: Int64s, values: Doubles) -> int:
    """Writes the task's features into `indices` and `values` (each at least `capacity(...)` long),
    sorted by index, and returns how many it wrote. `dim` is a power of two >= 2."""
    slots, weights, _ = _hashed(text, tags, dim)
    for k, (slot, weight) in enumerate(zip(slots, weights, strict=True)):
        indices[k] = slot
        values[k] = weight
    return len(slots)


def vector(text: str, tags: tuple[str, ...], dim: int) -> tuple[Int64s, Doubles, bool]:
    """`features` of the UTF-8 of `text` and `tags`, in arrays of exactly the length written, and
    whether the text has a token (gives any text feature)."""
    slots, weights, has_token = _hashed(text.encode(), tuple(tag.encode() for tag in tags), dim)
    return array("q", slots), array("d", weights), has_token


def _hashed(text: bytes, tags: tuple[bytes, ...], dim: int) -> tuple[list[int], list[float], bool]:
    """The features' indices and values, sorted by index, and whether the text gave any.
    ValueError if `dim` < 2, as the compiled twin."""
    if dim < 2:
        raise ValueError(f"dim must be at least 2, not {dim}")
    text = _lower(text)
    counts: dict[int, float] = {}
    n = len(text)
    i = 0
    previous = -1  # the previous token's bigram prefix hash, or -1 at the start
    while i < n:
        if not _is_word_byte(text[i]):
            i += 1
            continue
        start = i
        while i < n and _is_word_byte(text[i]):
            i += 1
        word = _fnv(_step(_FNV_BASIS, _WORD), text, start, i)
        slot = _slot(word, dim)
        counts[slot] = counts.get(slot, 0.0) + 1.0
        if previous >= 0:
            bigram = _fnv(_step(previous, 0x20), text, start, i)
            slot = _slot(bigram, dim)
            counts[slot] = counts.get(slot, 0.0) + 1.0
        previous = _fnv(_step(_FNV_BASIS, _BIGRAM), text, start, i)
        if i - start <= MAX_SUBWORD_TOKEN:
            padded = b"<" + text[start:i] + b">"
            for k in range(len(padded) - 2):
                trigram = _fnv(_step(_FNV_BASIS, _TRIGRAM), padded, k, k + 3)
                slot = _slot(trigram, dim)
                counts[slot] = counts.get(slot, 0.0) + 1.0
    squares = 0.0
    for slot in sorted(counts):
        squares += counts[slot] * counts[slot]
    scale = 1.0 / sqrt(squares) if squares > 0.0 else 0.0
    merged = {slot: count * scale for slot, count in counts.items()}
    for tag in tags:
        slot = _slot(_fnv(_step(_FNV_BASIS, _TAG), tag, 0, len(tag)), dim)
        merged[slot] = merged.get(slot, 0.0) + 1.0
    slots = [0, *sorted(merged)]
    return slots, [1.0, *(merged[slot] for slot in slots[1:])], bool(counts)


def linear(
    mean: Floats, var: Floats, indices: Int64s, values: Doubles, n: int, offset: float
) -> tuple[float, float]:
    """The linear score's mean and variance for one model."""
    m = offset
    v = 0.0
    for k in range(n):
        i = indices[k]
        x = values[k]
        m += x * mean[i]
        v += x * x * var[i]
    return m, v


def probability(m: float, v: float, beta2: float) -> float:
    """Phi(m / sqrt(beta2 + v)): the chance of a pass."""
    return 0.5 * erfc(-m / sqrt(beta2 + v) * _SQRT_HALF)


def update(
    mean: Floats,
    var: Floats,
    indices: Int64s,
    values: Doubles,
    n: int,
    offset: float,
    beta2: float,
    passed: bool,
) -> None:
    """One outcome, folded into the model's weights in place (probit ADF update)."""
    m, v = linear(mean, var, indices, values, n, offset)
    s2 = beta2 + v
    s = sqrt(s2)
    sign = 1.0 if passed else -1.0
    t = sign * m / s
    cdf = 0.5 * erfc(-t * _SQRT_HALF)
    # v(t) = pdf(t) / cdf(t) loses precision far in the tail: there its asymptotic series, whose
    # first term alone (-t) would make w(t) = 0 and stop the variance from shrinking.
    vt = _INV_SQRT_2PI * exp(-0.5 * t * t) / cdf if t > -30.0 else -t - 1.0 / t + 2.0 / (t * t * t)
    wt = vt * (vt + t)
    for k in range(n):
        i = indices[k]
        x = values[k]
        sigma2 = var[i]
        mean[i] = mean[i] + sign * x * sigma2 / s * vt
        shrunk = sigma2 * (1.0 - x * x * sigma2 / s2 * wt)
        var[i] = shrunk if shrunk > _VARIANCE_FLOOR else _VARIANCE_FLOOR
