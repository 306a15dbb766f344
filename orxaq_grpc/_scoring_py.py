"""Pure-Python twin of the compiled scoring kernel (`_scoring.pyx`).

Both twins take the same arguments, apply the same filters in the same order and
do the same floating-point operations in the same order (the build turns off
fused multiply-add contraction), so their results agree on IEEE doubles; the
tests hold them to 1e-12. Keep them in step: a change to one is a change to both.

Status codes are `orxaq_grpc.routing.types.Filter` values; 0 means eligible.
Preconditions, which the config loader and the router guarantee: context windows,
max outputs and speeds above 0, time to first token and output tokens such that
every latency is above 0.

`KeywordIndex` finds whole-word keywords in a task's text. Here it searches keyword by
keyword; the compiled twin walks the text once. They find the same hits on every text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from math import log
from typing import Any

from orxaq_grpc.kernel import Codes, Doubles, Int64s, UInt64s
from orxaq_grpc.vocabulary import Filter

# Plain ints for the hot loop; the compiled twin mirrors them as C constants, and
# the twin-agreement tests catch any drift between the two.
ELIGIBLE = int(Filter.ELIGIBLE)
CONTEXT_WINDOW = int(Filter.CONTEXT_WINDOW)
OUTPUT_LIMIT = int(Filter.OUTPUT_LIMIT)
CAPABILITY = int(Filter.CAPABILITY)
LANE_QUALITY_FLOOR = int(Filter.LANE_QUALITY_FLOOR)
MIN_QUALITY = int(Filter.MIN_QUALITY)
MAX_COST = int(Filter.MAX_COST)
MAX_LATENCY = int(Filter.MAX_LATENCY)
CIRCUIT_OPEN = int(Filter.CIRCUIT_OPEN)
BUDGET = int(Filter.BUDGET)

KIND = "python"


class CatalogKernel:
    """The catalog as flat arrays, built once per config load.

    Arrays are indexed by catalog position; the catalog is sorted by model id, so a
    lower index is the final tie-break.
    """

    __slots__ = (
        "capabilities",
        "context_window",
        "input_price",
        "max_output",
        "output_price",
        "provider_slot",
        "providers",
        "quality",
        "quality_score",
        "size",
        "speed",
        "ttft",
    )

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
    ) -> None:
        size = len(input_price)
        for array in (
            output_price,
            speed,
            ttft,
            quality,
            quality_score,
            context_window,
            max_output,
            capabilities,
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
        self.provider_slot = provider_slot  # index into a request's provider_headroom
        self.providers = max(provider_slot) + 1 if size else 0
        if size and min(provider_slot) < 0:
            raise ValueError("provider slots must not be negative")

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
    ) -> int:
        """Filter and score every model; write the best `len(order)` eligible indices.

        `status` comes in with the lane's static codes (allow-list, enabled) and goes
        out with every filter's verdict. `unhealthy` marks models behind an open
        circuit; a model's expected cost must fit both `lane_headroom` (what the
        overall and lane budgets leave) and its provider's `provider_headroom`.
        Returns the number of eligible models; the first min(that, len(order))
        entries of `order` are filled, best first.
        """
        n = self.size
        k = len(order)
        for buffer in (status, unhealthy, bias, cost, latency, cost_score, speed_score, penalty, score):
            if len(buffer) != n:
                raise ValueError("buffers must have one entry per catalog model")
        if k == 0:
            raise ValueError("order must have room for at least one model")
        if len(provider_headroom) < self.providers:
            raise ValueError("provider_headroom must have one entry per provider slot")
        return self._row(
            status,
            unhealthy,
            bias,
            cost,
            latency,
            cost_score,
            speed_score,
            penalty,
            score,
            order,
            input_tokens,
            output_tokens,
            w_cost,
            w_speed,
            w_quality,
            log_cost_lo,
            log_cost_span,
            floor_cost,
            log_latency_lo,
            log_latency_span,
            ramp_start,
            ramp_penalty,
            required_capabilities,
            lane_floor,
            min_quality,
            max_cost,
            max_latency,
            provider_headroom,
            lane_headroom,
        )

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
    ) -> int:
        """`score` for many requests in one call: request r's arguments are row r of each array.

        With n requests (the length of `input_tokens` and of every other per-request array) and m
        catalog models, `status`, `unhealthy`, `bias` and the outputs from `cost` to `score` hold n
        rows of m, request r's at [r * m, (r + 1) * m); `order` holds n rows of k (its length / n),
        `provider_headroom` n rows of its length / n (at least one per provider slot). Each request's
        eligible count goes to `eligible[r]`; returns their sum. Row r comes out exactly as `score`
        would write it for request r alone.
        """
        n = len(input_tokens)
        m = self.size
        for row in (
            eligible,
            output_tokens,
            w_cost,
            w_speed,
            w_quality,
            log_cost_lo,
            log_cost_span,
            floor_cost,
            log_latency_lo,
            log_latency_span,
            required_capabilities,
            lane_floor,
            min_quality,
            max_cost,
            max_latency,
            lane_headroom,
        ):
            if len(row) != n:
                raise ValueError("per-request arrays must have one entry per request")
        for buffer in (status, unhealthy, bias, cost, latency, cost_score, speed_score, penalty, score):
            if len(buffer) != n * m:
                raise ValueError("buffers must have one row of one entry per catalog model per request")
        if n == 0:
            return 0
        k, rest = divmod(len(order), n)
        if k == 0 or rest:
            raise ValueError("order must have a row of room for at least one model per request")
        p, rest = divmod(len(provider_headroom), n)
        if p < self.providers or rest:
            raise ValueError("provider_headroom must have a row of one entry per provider slot per request")
        views = [
            memoryview(buffer)
            for buffer in (status, unhealthy, bias, cost, latency, cost_score, speed_score, penalty, score)
        ]
        rows = memoryview(order)
        headrooms = memoryview(provider_headroom)
        total = 0
        for r in range(n):
            at = slice(r * m, (r + 1) * m)
            found = self._row(
                views[0][at],
                views[1][at],
                views[2][at],
                views[3][at],
                views[4][at],
                views[5][at],
                views[6][at],
                views[7][at],
                views[8][at],
                rows[r * k : (r + 1) * k],
                input_tokens[r],
                output_tokens[r],
                w_cost[r],
                w_speed[r],
                w_quality[r],
                log_cost_lo[r],
                log_cost_span[r],
                floor_cost[r],
                log_latency_lo[r],
                log_latency_span[r],
                ramp_start,
                ramp_penalty,
                required_capabilities[r],
                lane_floor[r],
                min_quality[r],
                max_cost[r],
                max_latency[r],
                headrooms[r * p : (r + 1) * p],
                lane_headroom[r],
            )
            eligible[r] = found
            total += found
        return total

    def _row(
        self,
        status: Any,
        unhealthy: Any,
        bias: Any,
        cost: Any,
        latency: Any,
        cost_score: Any,
        speed_score: Any,
        penalty: Any,
        score: Any,
        order: Any,
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
        provider_headroom: Any,
        lane_headroom: float,
    ) -> int:
        """One request over the catalog, into buffers already checked (arrays, or memoryviews of
        one row of `score_many`'s)."""
        n = self.size
        k = len(order)
        need = input_tokens + output_tokens
        ramp_width = 1.0 - ramp_start
        filled = 0
        eligible = 0
        input_price = self.input_price
        output_price = self.output_price
        speed = self.speed
        ttft = self.ttft
        quality = self.quality
        quality_score = self.quality_score
        context_window = self.context_window
        max_output = self.max_output
        capabilities = self.capabilities
        provider_slot = self.provider_slot
        for i in range(n):
            if status[i] != ELIGIBLE:
                continue
            fill = need / context_window[i]
            if fill > 1.0:
                status[i] = CONTEXT_WINDOW
                continue
            if output_tokens > max_output[i]:
                status[i] = OUTPUT_LIMIT
                continue
            if capabilities[i] & required_capabilities != required_capabilities:
                status[i] = CAPABILITY
                continue
            q = quality[i]
            if q < lane_floor:
                status[i] = LANE_QUALITY_FLOOR
                continue
            if q < min_quality:
                status[i] = MIN_QUALITY
                continue
            c = (input_tokens * input_price[i] + output_tokens * output_price[i]) / 1e6
            t = ttft[i] + output_tokens / speed[i]
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
            if c > lane_headroom or c > provider_headroom[provider_slot[i]]:
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
            score[i] = w_cost * cs + w_speed * ss + w_quality * quality_score[i] + bias[i] - p
            eligible += 1

            # Keep `order` sorted best-first: insertion into the top k.
            if filled < k:
                pos = filled
                filled += 1
            elif _better(i, order[k - 1], score, quality, cost):
                pos = k - 1
            else:
                continue
            while pos > 0 and _better(i, order[pos - 1], score, quality, cost):
                order[pos] = order[pos - 1]
                pos -= 1
            order[pos] = i
        return eligible


def _clamp01(x: float) -> float:
    if x < 0.0:
        return 0.0
    if x > 1.0:
        return 1.0
    return x


def _better(i: int, j: int, score: Doubles, quality: Doubles, cost: Doubles) -> bool:
    """Deterministic ranking: score, then quality, then lower cost, then lower index."""
    if score[i] != score[j]:
        return score[i] > score[j]
    if quality[i] != quality[j]:
        return quality[i] > quality[j]
    if cost[i] != cost[j]:
        return cost[i] < cost[j]
    return i < j


class KeywordIndex:
    """Finds which keywords occur in a text as whole words, built once per config.

    A keyword is a word or a phrase (words joined by single spaces), matched exactly: callers
    lower-case keywords and text. A hit is whole when no word character (`str.isalnum`, or _)
    touches it on either side, so "format" does not match inside "information". A phrase's
    words may be separated by any run of white space (`str.isspace`, which is what re's \\s
    matches), line breaks included.

    `str.find` per keyword plus a boundary check is an order of magnitude cheaper than one
    alternation regex scanned position by position; on ASCII text a one-pass token set first
    spares the search for a keyword that is none of the text's words.
    """

    __slots__ = ("_phrases", "_words")

    def __init__(self, keywords: Sequence[str]) -> None:
        """`keywords`: distinct, each a word or words joined by single spaces."""
        self._words = tuple((w, _token(w)) for w in keywords if " " not in w)
        # A regex only for phrases, starting with a literal so re can search for it quickly
        # (a leading look-behind would make it try every position); boundaries are checked below.
        self._phrases = tuple(
            (phrase, re.compile(r"\s+".join(map(re.escape, phrase.split()))), _tokens_of(phrase))
            for phrase in keywords
            if " " in phrase
        )

    def first_hits(self, text: str) -> list[tuple[int, str]]:
        """(position, keyword) of each keyword's first whole-word hit in `text`, sorted."""
        if not text:
            return []
        tokens = _word_tokens(text)
        hits = []
        for phrase, pattern, parts in self._phrases:
            if tokens is not None and parts is not None and not parts <= tokens:
                continue
            # finditer resumes after a match that is not whole; the compiled twin leaves to this
            # twin the phrases where that skips a hit (see _scoring.pyx, _overlaps).
            for match in pattern.finditer(text):
                if _whole(text, match.start(), match.end()):
                    hits.append((match.start(), phrase))
                    break
        for word, token in self._words:
            if tokens is not None and token is not None and token not in tokens:
                continue
            at = text.find(word)
            while at != -1:
                if _whole(text, at, at + len(word)):
                    hits.append((at, word))
                    break
                at = text.find(word, at + 1)
        hits.sort()
        return hits


# ASCII letters, digits and _ kept, every other byte made a space: split() then gives the runs.
_WORD_BYTES = bytes(c if chr(c).isalnum() or c == ord("_") else ord(" ") for c in range(128)) + b" " * 128


def _word_tokens(text: str) -> frozenset[bytes] | None:
    """An ASCII text's maximal runs of word characters, from one C pass; None for other text.
    A whole-word hit of a keyword made of word characters is one of them."""
    if not text.isascii():
        return None
    return frozenset(text.encode().translate(_WORD_BYTES).split())


def _token(word: str) -> bytes | None:
    """A keyword as the one token a whole-word hit of it is; None if it has other characters."""
    if word and word.isascii() and all(_is_word_char(c) for c in word):
        return word.encode()
    return None


def _tokens_of(phrase: str) -> frozenset[bytes] | None:
    parts = [_token(part) for part in phrase.split()]
    return None if any(part is None for part in parts) else frozenset(p for p in parts if p is not None)


def _whole(text: str, start: int, end: int) -> bool:
    """No letter, digit or underscore right before `start` or at `end`."""
    return not (start > 0 and _is_word_char(text[start - 1])) and not (
        end < len(text) and _is_word_char(text[end])
    )


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"
