"""The connection to Redis every replica keeps: who is alive, the stream of what each one counts, and
whether Redis is reachable at all.

Two threads per replica: one publishes this replica's decisions and reports (and its heartbeat) in
pipelined batches, the other reads everyone's from the stream and hands the others' to `apply`.
Neither runs on the answer path: Route and Report only append to the outbox. When Redis cannot be
reached the link says so once, keeps what it could not publish (bounded), and on reconnection
publishes it and tells its listeners (the budgets) to resynchronise.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from orxaq_grpc.outcomes.records import DecisionRecord
from orxaq_grpc.shared.events import FORMAT, Shared, decode, encode

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

__all__ = [
    "Outgoing",
    "SharedDown",
    "SharedLink",
    "SharedStatus",
    "SharedUnavailable",
    "open_link",
    "redacted",
]

SOCKET_TIMEOUT_S = 0.25  # a Redis that does not answer in this long counts as away
READ_BLOCK_MS = 100  # how long the reader waits for new entries: also how often it notices a stop
HEARTBEAT_S = 1.0
ALIVE_S = 5.0  # a replica not heard from for this long is no longer counted
RETRY_S = 0.5  # between attempts to reach Redis again
STREAM_MAX = 200_000  # entries kept in the stream (approximately): minutes of a busy fleet
MAX_OUTBOX = 100_000  # records kept for publishing while Redis is away; beyond, the oldest are dropped
BATCH = 500
# How long another replica can look a decision up by id in Redis: it only has to bridge the moments
# before the decision is in the shared ledger (and an open reservation answers too). About 200 bytes
# a decision: at 100 Routes a second, 72 MB.
DECISION_KEPT_S = 3_600
# A replica that starts while Redis is away reads the others' records from the stream id of the
# moment its ledger replay began (ids start with Redis' clock in ms), less this much for that clock
# and this host's to differ: records in the overlap are known by id and skipped.
START_SKEW_S = 60.0

Record = Shared
# A record as it waits in the outbox: its kind and body (events.encode), and the decision lookup
# (id, "lane<TAB>estimate") published beside a decision that chose a model.
Outgoing = tuple[str, str, tuple[str, str] | None]


class SharedUnavailable(Exception):
    """Shared state cannot be set up: the redis package is missing or the URL is not a Redis one."""


class SharedDown(Exception):
    """Redis did not answer; the caller falls back to local state."""


@dataclass(frozen=True, slots=True)
class SharedStatus:
    """What Health shows of the shared state."""

    location: str  # the URL without its password
    connected: bool
    replicas: int  # replicas heard from within ALIVE_S (the last count, while away)
    since: float  # unix time the current state (connected or not) began
    published: int
    applied: int  # other replicas' records counted here
    pending: int  # records waiting for Redis
    dropped: int  # records that waited too long (the outbox was full)
    error: str  # why Redis is away, while it is


def redacted(url: str) -> str:
    """The URL as logs and Health may show it: no password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    user = f"{parts.username}:***@" if parts.username else ":***@"
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{user}{host}{port}", parts.path, parts.query, parts.fragment))


def open_link(url: str, namespace: str = "orxaq", clock: Callable[[], float] = time.time) -> SharedLink:
    """A link to the Redis at `url` (redis://, rediss:// or unix://); SharedUnavailable when it cannot be."""
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise SharedUnavailable(
            f"{redacted(url)}: not a Redis URL (redis://host:port/db, rediss:// or unix://)"
        )
    try:
        import redis
    except ImportError as exc:
        raise SharedUnavailable("--shared needs the redis package: pip install 'orxaq-grpc[redis]'") from exc
    client = redis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        decode_responses=True,
    )
    return SharedLink(client, redacted(url), namespace, clock)


class SharedLink:
    def __init__(
        self,
        client: redis.Redis,
        location: str,
        namespace: str = "orxaq",
        clock: Callable[[], float] = time.time,
        replica: str | None = None,
    ) -> None:
        import redis as redis_module

        self.client = client
        self.location = location
        self.namespace = namespace
        self.replica = replica or uuid.uuid4().hex[:12]
        self._errors: tuple[type[BaseException], ...] = (redis_module.RedisError, OSError)
        self._clock = clock
        self._stream = f"{namespace}:events"
        self._replicas_key = f"{namespace}:replicas"
        self._decisions = f"{namespace}:decision:"
        self._lock = threading.Lock()
        self._outbox: deque[Outgoing] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._connected = True
        self._since = clock()
        self._error = ""
        self._replicas = 1
        self._published = self._applied = self._dropped = 0
        self._on_reconnect: list[Callable[[], None]] = []
        self._apply: Callable[[Record], None] | None = None
        self._last_id = "0-0"

    # -- for the replica ----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def replicas(self) -> int:
        return self._replicas

    def call(self, command: Callable[[], Any]) -> Any:
        """Runs a Redis command for the answer path; SharedDown (and the link marked away) when Redis
        does not answer, or at once while it is known to be away."""
        if not self._connected:
            raise SharedDown(self._error)
        try:
            return command()
        except self._errors as exc:
            self._away(exc)
            raise SharedDown(str(exc)) from exc

    def position(self) -> str:
        """The stream's newest entry id: read before a replica replays the ledger, so what it reads
        from the stream afterwards starts where the replay's view of the fleet ends."""
        entries = self.call(lambda: self.client.xrevrange(self._stream, count=1))
        return str(entries[0][0]) if entries else "0-0"

    def start_position(self) -> str:
        """Where this replica starts reading the others' records, taken just before its ledger is
        replayed: the stream's end (what the replay counts is recognised and skipped), or, with Redis
        away, the id of this moment less START_SKEW_S. Not the stream's start: a stream holds more
        records than a replica recognises by id, and it would count those of its ledger twice."""
        try:
            return self.position()
        except SharedDown:
            return f"{max(0, int((self._clock() - START_SKEW_S) * 1000))}-0"

    def find_decision(self, decision_id: str) -> tuple[str, float] | None:
        """(lane, estimate) of a decision any replica published, if Redis has it; None otherwise."""
        try:
            entry = self.call(lambda: self.client.get(f"{self._decisions}{decision_id}"))
        except SharedDown:
            return None
        if not entry:
            return None
        lane, usd = str(entry).split("\t")
        return lane, float(usd)

    def on_reconnect(self, listener: Callable[[], None]) -> None:
        self._on_reconnect.append(listener)

    def start(self, apply: Callable[[Record], None], after: str) -> None:
        """Starts publishing and reading (the other replicas' records after `after` go to `apply`)."""
        self._apply = apply
        self._last_id = after
        self._heartbeat()
        for name, target in (("publisher", self._publish_loop), ("reader", self._read_loop)):
            thread = threading.Thread(target=target, name=f"orxaq-shared-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def publish(self, record: Record) -> None:
        """Queues a record this replica counted for the others; never waits."""
        with self._lock:
            if len(self._outbox) >= MAX_OUTBOX:
                self._outbox.popleft()
                self._dropped += 1
            kind, body = encode(record)
            lookup = None
            if isinstance(record, DecisionRecord) and record.model:
                lookup = (record.decision_id, f"{record.lane}\t{record.estimated_cost_usd!r}")
            self._outbox.append((kind, body, lookup))
        self._wake.set()

    def requeue(self, entries: list[Outgoing]) -> None:
        """Records an earlier run could not publish, ahead of anything queued since; before `start`
        only (the publisher takes batches off the outbox's front), and within MAX_OUTBOX, the oldest
        dropped first as `publish` drops them."""
        if self._threads:
            raise RuntimeError("requeue after start: the publisher owns the outbox's front")
        with self._lock:
            self._outbox.extendleft(reversed(entries))
            while len(self._outbox) > MAX_OUTBOX:
                self._outbox.popleft()
                self._dropped += 1

    def status(self) -> SharedStatus:
        with self._lock:
            return SharedStatus(
                location=self.location,
                connected=self._connected,
                replicas=self._replicas,
                since=self._since,
                published=self._published,
                applied=self._applied,
                pending=len(self._outbox),
                dropped=self._dropped,
                error=self._error,
            )

    def close(self, timeout_s: float = 2.0) -> list[Outgoing]:
        """Publishes what is queued (while Redis answers, within timeout_s), leaves, and stops;
        answers what it could not publish, for the caller to keep until the next start (`requeue`)."""
        deadline = time.monotonic() + timeout_s
        while self._outbox and self._connected and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.01)
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()) + READ_BLOCK_MS / 1000 + SOCKET_TIMEOUT_S)
        if self._connected:
            with contextlib.suppress(*self._errors):
                self.client.zrem(self._replicas_key, self.replica)
        self.client.close()
        with self._lock:
            left = list(self._outbox)
            self._outbox.clear()
        return left

    # -- threads ------------------------------------------------------------------------

    def _publish_loop(self) -> None:
        next_beat = time.monotonic() + HEARTBEAT_S
        while not self._stop.is_set():
            if not self._connected:  # the reader notices Redis coming back, and wakes us
                self._wake.wait(RETRY_S)
                self._wake.clear()
                continue
            self._wake.wait(timeout=max(0.0, next_beat - time.monotonic()))
            self._wake.clear()
            if time.monotonic() >= next_beat:
                self._heartbeat()
                next_beat = time.monotonic() + HEARTBEAT_S
            self._flush()

    def _flush(self) -> None:
        while self._connected:
            with self._lock:
                batch = [self._outbox[i] for i in range(min(BATCH, len(self._outbox)))]
            if not batch:
                return
            try:
                pipe = self.client.pipeline(transaction=False)
                for kind, body, lookup in batch:
                    fields = {"r": self.replica, "v": FORMAT, "k": kind, "b": body}
                    pipe.xadd(self._stream, fields, maxlen=STREAM_MAX, approximate=True)  # type: ignore[arg-type]
                    if lookup is not None:
                        pipe.set(f"{self._decisions}{lookup[0]}", lookup[1], ex=DECISION_KEPT_S)
                pipe.execute()
            except self._errors as exc:
                self._away(exc)
                return
            with self._lock:
                for _ in batch:  # only what Redis took leaves the outbox
                    if self._outbox:
                        self._outbox.popleft()
                self._published += len(batch)

    def _heartbeat(self) -> None:
        now = self._clock()
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.zadd(self._replicas_key, {self.replica: now})
            pipe.zremrangebyscore(self._replicas_key, "-inf", now - 3600)
            pipe.zcount(self._replicas_key, now - ALIVE_S, "+inf")
            alive = pipe.execute()[-1]
        except self._errors as exc:
            self._away(exc)
            return
        self._replicas = max(1, int(alive))

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            if not self._connected:
                self._try_again()
                continue
            try:
                answer: list[tuple[str, list[tuple[str, dict[str, str]]]]] = self.client.xread(  # type: ignore[assignment]
                    {self._stream: self._last_id}, count=BATCH, block=READ_BLOCK_MS
                )
            except self._errors as exc:
                self._away(exc)
                continue
            for _, entries in answer or ():
                for entry_id, fields in entries:
                    self._last_id = entry_id
                    if fields.get("r") != self.replica:
                        self._take(fields)

    def _take(self, fields: dict[str, str]) -> None:
        if fields.get("v") != FORMAT or self._apply is None:
            return
        try:
            record = decode(fields["k"], fields["b"])
        except (KeyError, ValueError, TypeError) as exc:
            log.warning("shared state: an entry this replica cannot read was skipped: %s", exc)
            return
        try:
            self._apply(record)
        except Exception:
            log.exception("shared state: counting another replica's %s failed", type(record).__name__)
            return
        with self._lock:
            self._applied += 1

    def _try_again(self) -> None:
        """Back only when Redis takes a write: one that answers but refuses writes (out of memory, a
        read-only replica) would otherwise be rejoined and left again every RETRY_S."""
        if self._stop.wait(RETRY_S):
            return
        try:
            self.client.zadd(self._replicas_key, {self.replica: self._clock()})
        except self._errors:
            return
        with self._lock:
            self._connected, self._since, error, self._error = True, self._clock(), self._error, ""
        log.warning(
            "shared state: Redis at %s is back (it was away: %s); resynchronising", self.location, error
        )
        self._heartbeat()
        for listener in self._on_reconnect:
            try:
                listener()
            except Exception:
                log.exception("shared state: resynchronising after Redis came back failed")
        self._wake.set()  # publish what waited

    def _away(self, exc: BaseException) -> None:
        with self._lock:
            if not self._connected:
                return
            self._connected, self._since, self._error = False, self._clock(), f"{type(exc).__name__}: {exc}"
        log.warning(
            "shared state: Redis at %s is away (%s): routing on this replica's state, budgets at its share "
            "(1/%d) of what was left, until it is back",
            self.location,
            self._error,
            self._replicas,
        )
