"""Per-lane request rates: a token bucket per lane, refilled continuously."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class LaneRates:
    """Admits a lane's calls at `per_s` sustained and `burst` at once. Not thread-safe: one event
    loop calls it. Only lanes the config names get a bucket, so the table stays small."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def wait_s(self, lane: str, per_s: float, burst: int) -> float:
        """0 when the call may go ahead now (and takes its token), else the seconds until it could."""
        now = self._clock()
        bucket = self._buckets.get(lane)
        if bucket is None:
            bucket = self._buckets[lane] = _Bucket(tokens=float(burst), at=now)
        else:
            bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.at) * per_s)
            bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / per_s

    def forget(self, keep: Collection[str]) -> None:
        """Drops the buckets of lanes no longer configured."""
        for lane in self._buckets.keys() - set(keep):
            del self._buckets[lane]
