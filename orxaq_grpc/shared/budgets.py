"""Daily budgets every replica reserves from and settles into at once, kept in Redis.

The same contract as `outcomes.budgets.Budgets` (which the router's guards and the rebuild call), but
the spend and the open reservations live in Redis and each change is one Lua script: the check and the
booking cannot interleave with another replica's, so N replicas never together reserve past a budget.
Limits stay local (each replica's config). Spend is kept per scope for every lane and provider, budgeted
or not, so a budget a reload adds starts from today's spend, as in one process.

When Redis is away each replica carries on alone with budgets of its share of what was left (what
remained at the last answer, over the replicas then alive), and keeps what it did; when Redis is back it
books the reservations still open and the spend it settled meanwhile, then follows Redis again.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from orxaq_grpc.config.model import BudgetSettings
from orxaq_grpc.outcomes.budgets import (
    SLACK_USD,
    Budgets,
    BudgetView,
    ScopeKey,
    budget_view,
    day_of,
    limits_of,
    log_limit_changes,
)
from orxaq_grpc.shared.link import SharedDown, SharedLink

log = logging.getLogger(__name__)

__all__ = ["SharedBudgets"]

DAY_KEY_TTL_S = 3 * 86_400  # a day's spend outlives the day, for replicas whose clocks lag a little
STATE_FRESH_S = 0.05  # headroom read from the last answer when it is this recent
REPLAY_BATCH = 500  # script calls to a round trip when a rejoin books what was done alone

# KEYS: spent (today's hash), reserved, reserved_n (open reservations per scope), reservations, ages,
# settled (today's set of decisions whose cost is in spent: a settlement counts once, retried or not).
# ARGV: op, now, ttl, then per op (see the methods below). Scopes are "overall|", "lane|<id>",
# "provider|<id>". Every op first expires reservations older than ttl, and answers the state.
_SCRIPT = """
local spent, reserved, counts, reservations, ages = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local settled = KEYS[6]
local op, now, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])

local function scopes(lane, provider)
  return {'overall|', 'lane|' .. lane, 'provider|' .. provider}
end

local function unbook(id)
  local entry = redis.call('HGET', reservations, id)
  if not entry then return nil end
  local lane, provider, usd = string.match(entry, '^([^\\t]*)\\t([^\\t]*)\\t([^\\t]*)\\t')
  for _, s in ipairs(scopes(lane, provider)) do
    if redis.call('HINCRBY', counts, s, -1) <= 0 then
      redis.call('HDEL', counts, s)
      redis.call('HDEL', reserved, s)  -- none open: no float drift can pile up
    else
      redis.call('HINCRBYFLOAT', reserved, s, -tonumber(usd))
    end
  end
  redis.call('HDEL', reservations, id)
  redis.call('ZREM', ages, id)
  return entry
end

local function book(id, lane, provider, usd, at)
  for _, s in ipairs(scopes(lane, provider)) do
    redis.call('HINCRBY', counts, s, 1)
    redis.call('HINCRBYFLOAT', reserved, s, usd)
  end
  redis.call('HSET', reservations, id, lane .. '\\t' .. provider .. '\\t' .. usd .. '\\t' .. at)
  redis.call('ZADD', ages, at, id)
end

-- a bounded step: a burst of old reservations expires over a few calls, never one long script
local expired = redis.call('ZRANGEBYSCORE', ages, '-inf', now - ttl, 'LIMIT', 0, 500)
for _, id in ipairs(expired) do unbook(id) end

local verdict = 1
if op == 'reserve' then
  -- id, lane, provider, usd, at, force, then limit per budgeted scope as scope, limit pairs
  local id, lane, provider, force = ARGV[4], ARGV[5], ARGV[6], ARGV[9]
  local usd, at = tonumber(ARGV[7]), tonumber(ARGV[8])
  local earlier = unbook(id)
  if force ~= '1' then
    for i = 10, #ARGV, 2 do
      local s, limit = ARGV[i], tonumber(ARGV[i + 1])
      local used = tonumber(redis.call('HGET', spent, s) or '0')
      used = used + tonumber(redis.call('HGET', reserved, s) or '0')
      if usd > math.max(0, limit - used) + SLACK then verdict = 0 end
    end
  end
  if verdict == 1 then
    book(id, lane, provider, usd, at)
  elseif earlier then
    local l, p, u, a = string.match(earlier, '^([^\\t]*)\\t([^\\t]*)\\t([^\\t]*)\\t(.*)$')
    book(id, l, p, tonumber(u), tonumber(a))
  end
elseif op == 'settle' then
  -- id, lane, provider, usd, counts_today
  unbook(ARGV[4])
  if ARGV[8] == '1' and redis.call('SADD', settled, ARGV[4]) == 1 then
    for _, s in ipairs(scopes(ARGV[5], ARGV[6])) do
      redis.call('HINCRBYFLOAT', spent, s, ARGV[7])
    end
    redis.call('EXPIRE', spent, ARGV[9])
    redis.call('EXPIRE', settled, ARGV[9])
  end
elseif op == 'release' then
  unbook(ARGV[4])
elseif op == 'seed' then
  -- key_ttl, then scope, USD pairs: today's spend as a replica's ledger knows it. Never lowers a
  -- figure (others may have settled more); raises one a Redis lost or never had. 1 if any was raised.
  verdict = 0
  for i = 5, #ARGV, 2 do
    local offered = tonumber(ARGV[i + 1])
    if offered > tonumber(redis.call('HGET', spent, ARGV[i]) or '0') + SLACK then
      redis.call('HSET', spent, ARGV[i], ARGV[i + 1])
      verdict = 1
    end
  end
  redis.call('EXPIRE', spent, ARGV[4])
end
return {verdict, #expired, redis.call('HGETALL', spent), redis.call('HGETALL', reserved)}
""".replace("SLACK", repr(SLACK_USD))


@dataclasses.dataclass(frozen=True, slots=True)
class _State:
    """Redis' answer: today's spend and the open reservations per scope, and when it came."""

    spent: dict[str, float]
    reserved: dict[str, float]
    at: float

    def used(self, scope: str) -> float:
        return self.spent.get(scope, 0.0) + self.reserved.get(scope, 0.0)


def _scope(key: ScopeKey) -> str:
    return f"{key[0]}|{key[1]}"


def _pairs(flat: list[str]) -> dict[str, float]:
    return {flat[i]: float(flat[i + 1]) for i in range(0, len(flat), 2)}


class SharedBudgets:
    """Budgets shared by every replica through `link`'s Redis; the same methods as `Budgets`.
    `spent_today` is today's spend as this replica's economics know it (the ledger replayed, and every
    replica's reports since): what a Redis that lost its state (or never had it) starts from."""

    shared = True

    def __init__(
        self,
        settings: BudgetSettings,
        link: SharedLink,
        spent_today: Callable[[], Mapping[ScopeKey, float]],
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._limits = limits_of(settings)
        self.any = bool(self._limits)
        self._link = link
        self._spent_today = spent_today
        self._clock = clock
        self._monotonic = monotonic
        self._script = link.client.register_script(_SCRIPT)
        prefix = link.namespace
        self._keys_static = (
            f"{prefix}:reserved",
            f"{prefix}:reserved_n",
            f"{prefix}:reservations",
            f"{prefix}:ages",
        )
        self._prefix = prefix
        self._lock = threading.RLock()  # the switch to and from life alone (Redis' calls run outside it)
        self._state = _State({}, {}, -math.inf)
        self._alone: Budgets | None = None  # while Redis is away
        self._settled_alone: list[tuple[str, str, str, float, float]] = []  # to book when it is back
        link.on_reconnect(self._rejoin)

    # -- the Budgets contract ---------------------------------------------------------------

    def update(self, settings: BudgetSettings, note: str = "") -> None:
        """Reloaded limits apply at once (the spend and reservations are Redis', untouched)."""
        before, self._settings = self._limits, settings
        self._limits = limits_of(settings)
        self.any = bool(self._limits)
        with self._lock:
            if self._alone is not None:
                self._alone.update(self._share_settings(), note)
        log_limit_changes(before, self._limits, note)

    def headroom(self, lane: str) -> tuple[float, dict[str, float]]:
        if not self.any:
            return math.inf, {}
        alone = self._alone
        if alone is not None:
            return alone.headroom(lane)
        state = self._state
        if self._monotonic() - state.at > STATE_FRESH_S:
            state = self._run("view") or state
            if (alone := self._alone) is not None:
                return alone.headroom(lane)
        left = math.inf
        providers: dict[str, float] = {}
        for key, limit in self._limits.items():
            remaining = max(0.0, limit - state.used(_scope(key)))
            if key[0] == "provider":
                providers[key[1]] = remaining
            elif key[0] == "overall" or key[1] == lane:
                left = min(left, remaining)
        return left, providers

    def try_reserve(self, decision_id: str, lane: str, provider: str, usd: float) -> bool:
        if not self.any:
            return True
        return self._reserve(decision_id, lane, provider, usd, self._clock(), force=False)

    def reserve(
        self, decision_id: str, lane: str, provider: str, usd: float, at: float | None = None
    ) -> None:
        if self.any:
            self._reserve(decision_id, lane, provider, usd, self._clock() if at is None else at, force=True)

    def settle(
        self, decision_id: str, lane: str, provider: str, actual_usd: float, at: float | None = None
    ) -> None:
        now = self._clock()
        today = day_of(now if at is None else at) >= day_of(now)
        if self._alone is None:
            args = (decision_id, lane, provider, repr(actual_usd), "1" if today else "0", DAY_KEY_TTL_S)
            if self._run("settle", *args) is not None:
                return
        with self._lock:
            if self._alone is None:  # Redis came back between the two looks: settle there
                self._run(
                    "settle",
                    decision_id,
                    lane,
                    provider,
                    repr(actual_usd),
                    "1" if today else "0",
                    DAY_KEY_TTL_S,
                )
                return
            self._alone.settle(decision_id, lane, provider, actual_usd, at)
            if today:
                settled = self._settled_alone
                if settled and day_of(settled[0][4]) < day_of(now):  # a new day: yesterday's count no more
                    settled[:] = [entry for entry in settled if day_of(entry[4]) == day_of(now)]
                settled.append((decision_id, lane, provider, actual_usd, now))

    def release(self, decision_id: str) -> None:
        if self._alone is None and self._run("release", decision_id) is not None:
            return
        with self._lock:
            if self._alone is None:  # Redis came back between the two looks: release there
                self._run("release", decision_id)
            else:
                self._alone.release(decision_id)

    def expire(self) -> int:
        alone = self._alone
        if alone is not None:
            return alone.expire()
        answer = self._call("view")
        return 0 if answer is None else int(answer[1])

    def views(self) -> list[BudgetView]:
        alone = self._alone
        if alone is not None:
            return alone.views()
        state = self._run("view") or self._state
        alone = self._alone
        if alone is not None:
            return alone.views()
        order = {"overall": 0, "lane": 1, "provider": 2}
        keys = sorted(self._limits, key=lambda key: (order[key[0]], key[1]))
        return [
            budget_view(
                key,
                self._limits[key],
                state.spent.get(_scope(key), 0.0),
                state.reserved.get(_scope(key), 0.0),
                self._settings.warn_at,
            )
            for key in keys
        ]

    def reserved_for(self, decision_id: str) -> tuple[str, float] | None:
        """(lane, estimate) of a decision with an open reservation here, whichever replica made it:
        a report reaching this replica before the decision's record does is still known."""
        if self._alone is not None:
            return None
        try:
            entry = self._link.call(lambda: self._link.client.hget(self._keys_static[2], decision_id))
        except SharedDown:
            return None
        if not entry:
            return None
        lane, _, usd, _ = str(entry).split("\t")
        return lane, float(usd)

    def seed(self, spent_today: Mapping[ScopeKey, float]) -> bool:
        """Offers Redis today's spend as this replica's ledger knows it (on start, and whenever Redis
        is back): a figure Redis lacks or has lower (it lost its state) is raised, none is lowered.
        True when one was raised."""
        answer = self._call("seed", DAY_KEY_TTL_S, *_seed_args(spent_today))
        raised = answer is not None and bool(answer[0])
        if raised:
            log.warning("budgets: Redis knew less of today's spend than this replica's ledger; raised it")
        return raised

    # -- Redis, and life without it ----------------------------------------------------------

    def _reserve(
        self, decision_id: str, lane: str, provider: str, usd: float, at: float, force: bool
    ) -> bool:
        if self._alone is None:
            limits: list[Any] = []
            for key in (("overall", ""), ("lane", lane), ("provider", provider)):
                if key in self._limits:
                    limits += [_scope(key), repr(self._limits[key])]
            answer = self._call(
                "reserve", decision_id, lane, provider, repr(usd), repr(at), "1" if force else "0", *limits
            )
            if answer is not None:
                return bool(answer[0])
        with self._lock:
            alone = self._alone
            if alone is None:  # Redis came back between the two looks: it has the reservation's fate
                return self._reserve(decision_id, lane, provider, usd, at, force)
            if force:
                alone.reserve(decision_id, lane, provider, usd, at)
                return True
            return alone.try_reserve(decision_id, lane, provider, usd)

    def _run(self, op: str, *args: Any) -> _State | None:
        answer = self._call(op, *args)
        return None if answer is None else self._state

    def _call(self, op: str, *args: Any) -> list[Any] | None:
        """Runs the script; None (and life alone from now on) when Redis does not answer."""
        answers = self._call_all([(op, *args)])
        return None if answers is None else answers[0]

    def _call_all(self, calls: Sequence[tuple[Any, ...]]) -> list[list[Any]] | None:
        """Runs the script once per (op, *args), in order, REPLAY_BATCH to a round trip (a rejoin
        books thousands); None (and life alone from now on) when Redis does not answer."""
        now = self._clock()
        day = day_of(now)
        keys = (f"{self._prefix}:spent:{day}", *self._keys_static, f"{self._prefix}:settled:{day}")
        head = [repr(now), repr(self._settings.reservation_ttl_s)]

        def run(chunk: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
            if len(chunk) == 1:
                return [self._script(keys=keys, args=[chunk[0][0], *head, *chunk[0][1:]])]
            pipe = self._link.client.pipeline(transaction=False)
            for op, *args in chunk:
                self._script(keys=keys, args=[op, *head, *args], client=pipe)
            answers: list[list[Any]] = pipe.execute()
            return answers

        answers: list[list[Any]] = []
        try:
            for start in range(0, len(calls), REPLAY_BATCH):
                chunk = calls[start : start + REPLAY_BATCH]
                answers += self._link.call(functools.partial(run, chunk))
        except SharedDown:
            self._go_alone()
            return None
        if answers:
            self._state = _State(_pairs(answers[-1][2]), _pairs(answers[-1][3]), self._monotonic())
        return answers

    def _share_settings(self) -> BudgetSettings:
        """Each budget at this replica's share of what was left at Redis' last answer."""
        replicas = max(1, self._link.replicas)
        state = self._state
        if state.at == -math.inf:  # Redis never answered: what this replica's ledger says was spent
            state = _State({_scope(k): usd for k, usd in self._spent_today().items()}, {}, -math.inf)
        left = {
            key: max(0.0, limit - state.used(_scope(key))) / replicas for key, limit in self._limits.items()
        }
        tiny = 1e-12  # 0 means "no budget": an exhausted share must still refuse
        return dataclasses.replace(
            self._settings,
            daily_usd=max(tiny, left[("overall", "")]) if ("overall", "") in left else 0.0,
            lane_daily_usd={k[1]: max(tiny, v) for k, v in left.items() if k[0] == "lane"},
            provider_daily_usd={k[1]: max(tiny, v) for k, v in left.items() if k[0] == "provider"},
        )

    def _go_alone(self) -> None:
        with self._lock:
            if self._alone is not None:
                return
            settings = self._share_settings()
            self._alone = Budgets(settings, self._clock)
            self._settled_alone = []
        log.warning(
            "budgets: Redis is away; this replica now has %s of what was left (1/%d), until it is back",
            ", ".join(
                f"{key[0]} {key[1]} ${usd:.4f}".replace("  ", " ") for key, usd in limits_of(settings).items()
            )
            or "no budget",
            max(1, self._link.replicas),
        )

    def _rejoin(self) -> None:
        """Redis is back. It may have lost its state: offer it today's spend as this replica knew it
        before going alone (never lowering a figure), then book what it settled alone (once each:
        Redis keeps today's settled decisions) and the reservations it still holds; only then follow
        Redis again, so no call reads Redis without them. Held under the lock: a call that wants the
        local share meanwhile waits the few milliseconds, then goes to Redis. A failure on the way
        leaves this replica alone until Redis is back again."""
        with self._lock:
            today = day_of(self._clock())  # what was settled alone on an earlier day counts no more
            alone, settled = self._alone, [e for e in self._settled_alone if day_of(e[4]) == today]
            before = dict(self._spent_today())
            for _, lane, provider, usd, _ in settled:  # what Redis never saw is booked below, once
                for key in (("overall", ""), ("lane", lane), ("provider", provider)):
                    before[key] = before.get(key, 0.0) - usd
            if self._call("seed", DAY_KEY_TTL_S, *_seed_args(before)) is None or alone is None:
                return
            opened = alone.open_reservations()
            books = [
                ("settle", decision_id, lane, provider, repr(usd), "1", DAY_KEY_TTL_S)
                for decision_id, lane, provider, usd, _ in settled
            ] + [
                ("reserve", decision_id, lane, provider, repr(usd), repr(at), "1")
                for decision_id, (lane, provider, usd, at) in opened.items()
            ]
            if self._call_all(books) is None:
                return
            self._alone, self._settled_alone = None, []
        log.info(
            "budgets: back on Redis with %d settlements and %d open reservations made alone",
            len(settled),
            len(opened),
        )


def _seed_args(spent_today: Mapping[ScopeKey, float]) -> list[str]:
    pairs: list[str] = []
    for key, usd in spent_today.items():
        pairs += [_scope(key), repr(usd)]
    return pairs
