"""The group-committing writer every backend shares: a queue, one writer thread, futures resolved
only after the commit that made their record durable.

Callers never wait for the database: records go on a queue, and the writer thread takes everything
queued (up to `max_batch`) and hands it to the backend's `write`, which stores the whole batch in one
transaction with one commit, so under load one flush to disk covers many reports. `write` returns one
answer per record (True new, False a duplicate, or a StoreError for a record refused alone) once the
commit is done; if it raises, the batch failed whole and every future in it gets a StoreError.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from orxaq_grpc.outcomes.records import DecisionRecord, JournalEntry, ReportRecord
from orxaq_grpc.store.base import StoreError
from orxaq_grpc.store.rows import DAY_S, PRUNE_INTERVAL_S, check_retention_days

log = logging.getLogger(__name__)

Record = DecisionRecord | ReportRecord | JournalEntry
# A batch as the backend sees it: None is a flush marker, stored as nothing and answered True.
Batch = Sequence[Record | None]
Write = Callable[[Batch], Sequence[bool | StoreError]]

# A queued write and the future to resolve after its commit. A decision has no future; a flush
# marker has no record. The stop sentinel is None.
_Item = tuple[Record | None, Future[bool] | None]


def running_future() -> Future[bool]:
    """A queued write cannot be withdrawn: marking the future running makes cancel() refuse."""
    future: Future[bool] = Future()
    future.set_running_or_notify_cancel()
    return future


class GroupCommitter:
    """The queue and the writer thread. `write` runs on the writer thread alone; so do `maintain`
    (called before each batch: pruning) and `finish` (called once, when the writer stops: close the
    writer's connection).

    Future callbacks run on the writer thread and hold up the next commit: keep them short
    (`asyncio.wrap_future` is). The writer is a daemon thread: anything still queued when the process
    exits without close() is lost (none of it was acknowledged)."""

    def __init__(
        self,
        location: str,
        write: Write,
        *,
        maintain: Callable[[], None],
        finish: Callable[[], None],
        max_batch: int,
        max_queued_decisions: int,
        decision_linger_s: float,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, not {max_batch!r}")
        self.location = location
        self.commits = 0  # group commits so far: batching figures and tests
        self.dropped_decisions = 0
        # Each counter has one writer thread, so neither update can lose the other's.
        self._decisions_in = 0  # enqueued (callers' thread)
        self._decisions_out = 0  # taken off the queue (writer thread)
        self._write = write
        self._maintain = maintain
        self._finish = finish
        self._max_batch = max_batch
        self._max_queued_decisions = max_queued_decisions
        self._decision_linger_s = decision_linger_s
        # The writer is woken once per batch, not per record (a wake-up per decision cost more than
        # the insert): by the first decision queued after it took its last batch (`_awake`), and by
        # what must not linger (`_urgent`): a record somebody waits for, a full batch, the stop.
        # Callers set both under `_lock`; the writer clears them.
        self._queue: deque[_Item | None] = deque()
        self._wake = threading.Event()
        self._awake = False
        self._urgent = False
        self._lock = threading.Lock()  # orders enqueueing against stop()
        self._closed = False
        self._stopped = running_future()  # resolved when the writer has drained the queue and exited

    def start(self) -> None:
        threading.Thread(target=self._run, name="ledger-writer", daemon=True).start()

    # --- callers' side ---

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def closed(self) -> bool:
        return self._closed

    def record_decision(self, record: DecisionRecord) -> None:
        behind = self._decisions_in - self._decisions_out
        if behind >= self._max_queued_decisions:
            self.dropped_decisions += 1
            if self.dropped_decisions == 1:
                log.warning(
                    "%s: the ledger is %d decisions behind; dropping decision-log entries",
                    self.location,
                    behind,
                )
            return
        self._decisions_in += 1
        self._enqueue((record, None), urgent=False)

    def record(self, record: ReportRecord | JournalEntry) -> Future[bool]:
        future = running_future()
        self._enqueue((record, future), urgent=True)
        return future

    def flush(self, timeout_s: float | None = None) -> None:
        marker = running_future()
        try:
            self._enqueue((None, marker), urgent=True)
        except StoreError:  # closed: the writer commits everything queued before it stops
            marker = self._stopped
        marker.result(timeout_s)

    def check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.location}: the ledger store is closed")

    def stop(self) -> None:
        """Refuses later writes and tells the writer to stop once it has committed the rest."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.append(None)
                self._urgent = True
                self._wake.set()

    def wait_stopped(self) -> None:
        self._stopped.result()

    def _enqueue(self, item: _Item, *, urgent: bool) -> None:
        with self._lock:
            self.check_open()
            self._queue.append(item)
            if urgent or len(self._queue) == self._max_batch:
                self._urgent = True  # before the wake: see _take_batch
                self._wake.set()
            elif not self._awake:
                self._awake = True
                self._wake.set()

    # --- the writer thread ---

    def _run(self) -> None:
        try:
            stopping = False
            while not stopping:
                batch, stopping = self._take_batch()
                if batch:
                    self._maintain()
                    self._commit(batch)
        finally:
            try:
                self._finish()
            finally:
                self._stopped.set_result(True)

    def _take_batch(self) -> tuple[list[_Item], bool]:
        """Waits for the first item, then takes up to `max_batch` queued ones; True once the stop
        sentinel is reached (nothing is queued after it).

        A batch of decision-log entries alone lingers up to `decision_linger_s` for more: nobody
        waits for them, and one commit for many beats one for each. Anything somebody waits for
        (a report, a flush) or a full batch ends the lingering at once; decisions queued meanwhile
        wake nobody."""
        if not self._queue:
            self._wake.wait()
        # Cleared before `_urgent` is read: an urgent item queued after the read sets it again.
        self._wake.clear()
        if not self._urgent:
            self._wake.wait(self._decision_linger_s)
        self._awake = self._urgent = False  # before taking: whatever comes later wakes us again
        batch: list[_Item] = []
        while self._queue and len(batch) < self._max_batch:
            item = self._queue.popleft()
            if item is None:
                return batch, True
            batch.append(item)
        if self._queue:  # past max_batch: the rest, perhaps urgent, goes next without lingering
            self._urgent = True
        return batch, False

    def _commit(self, batch: list[_Item]) -> None:
        """One transaction for the whole batch; futures resolve only after it committed."""
        self._decisions_out += sum(1 for record, _ in batch if isinstance(record, DecisionRecord))
        try:
            results = self._write([record for record, _ in batch])
        except Exception as exc:  # a disk, database or connection error: the batch fails whole
            error = StoreError(f"{self.location}: commit of {len(batch)} queued writes failed: {exc}")
            error.__cause__ = exc
            log.error("%s", error)
            for _, future in batch:
                if future is not None:
                    future.set_exception(error)
            return
        self.commits += 1
        for (_, future), result in zip(batch, results, strict=True):
            if future is None:
                continue
            if isinstance(result, StoreError):
                future.set_exception(result)
            else:
                future.set_result(result)


class Retention:
    """When to prune: everything past retention on open, then about hourly, one chunk per batch
    until a chunk comes back short. `prune_chunk(cutoff)` deletes up to a chunk of rows older than
    `cutoff` from each table and says whether none are left."""

    def __init__(
        self,
        location: str,
        retention_days: int,
        clock: Callable[[], float],
        prune_chunk: Callable[[float], bool],
        errors: tuple[type[BaseException], ...],
    ) -> None:
        self._location = location
        self._retention_s = check_retention_days(retention_days) * DAY_S
        self._clock = clock
        self._prune_chunk = prune_chunk
        self._errors = errors  # what a failed round raises: logged, and tried again in an hour
        self._next_prune = 0.0

    def prune_all(self) -> None:
        now = self._clock()
        while not self._prune_chunk(now - self._retention_s):
            pass
        self._next_prune = now + PRUNE_INTERVAL_S

    def prune_if_due(self) -> None:
        now = self._clock()
        if now < self._next_prune:
            return
        try:
            finished = self._prune_chunk(now - self._retention_s)
        except self._errors as exc:
            log.error("%s: pruning failed (%s); retrying in an hour", self._location, exc)
            finished = True
        if finished:
            self._next_prune = now + PRUNE_INTERVAL_S
