"""Decision ids: UUIDv7s, time first (the ledger's index grows at one edge), unguessable after."""

from __future__ import annotations

import threading
import time
import uuid

from orxaq_grpc.routing.ids import new_decision_id, new_decision_ids


def test_ids_are_uuid7s_led_by_the_time_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_decision_id() for _ in range(600)] + new_decision_ids(600)  # past a pool refill
    after = time.time_ns() // 1_000_000
    for decision_id in ids:
        parsed = uuid.UUID(decision_id)
        assert (parsed.version, parsed.variant, parsed.hex) == (7, uuid.RFC_4122, decision_id)
        assert before <= int(decision_id[:12], 16) <= after
    assert len(set(ids)) == len(ids)
    time.sleep(0.002)
    assert new_decision_id()[:12] > ids[-1][:12]  # a later millisecond sorts after


def test_threads_drawing_from_the_pool_never_share_an_id() -> None:
    drawn: list[list[str]] = [[] for _ in range(4)]

    def draw(into: list[str]) -> None:
        into.extend(new_decision_id() for _ in range(5_000))

    threads = [threading.Thread(target=draw, args=(into,)) for into in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({decision_id for ids in drawn for decision_id in ids}) == 20_000
