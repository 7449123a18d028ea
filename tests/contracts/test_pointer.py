"""The active-index pointer against a real Redis: atomic CAS, history, rollback, notifications."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from contracts.errors import InvalidIndexIdError
from contracts.pointer import HISTORY_MAX, Pointer, PointerError
from semsearch.embedded.redis import EmbeddedRedis


@pytest.fixture
def pointer(redis_server: EmbeddedRedis) -> Iterator[Pointer]:
    handle = Pointer.from_url(redis_server.url)
    yield handle
    handle.close()


def test_compare_and_set_only_moves_from_the_expected_value(pointer: Pointer) -> None:
    assert pointer.get() is None
    assert pointer.set_if_unset("idx-a")
    assert not pointer.set_if_unset("idx-b"), "set_if_unset must not overwrite an active index"
    assert not pointer.compare_and_set("idx-x", "idx-b")
    assert pointer.get() == "idx-a"
    assert pointer.compare_and_set("idx-a", "idx-b")
    assert pointer.compare_and_set("idx-b", "idx-b"), "re-setting the current value is a no-op success"
    assert pointer.get() == "idx-b"
    assert pointer.history() == ["idx-a"]
    assert set(pointer.registered()) == {"idx-a", "idx-b"}


def test_two_racing_writers_exactly_one_wins(redis_server: EmbeddedRedis) -> None:
    """Two migrators CAS from the same old value at the same instant: one wins, nothing is lost."""
    writers = [Pointer.from_url(redis_server.url) for _ in range(2)]
    try:
        for round_ in range(30):
            expected = None if round_ == 0 else f"base-{round_ - 1}"
            barrier = threading.Barrier(2)
            won: list[bool] = [False, False]

            def race(slot: int, expected: str | None = expected, barrier: threading.Barrier = barrier,
                     won: list[bool] = won, round_: int = round_) -> None:
                barrier.wait()
                won[slot] = writers[slot].compare_and_set(expected, f"cand-{round_}-{slot}")

            threads = [threading.Thread(target=race, args=(slot,)) for slot in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sum(won) == 1, f"round {round_}: winners {won}"
            winner = won.index(True)
            assert writers[0].get() == f"cand-{round_}-{winner}"
            assert writers[0].compare_and_set(f"cand-{round_}-{winner}", f"base-{round_}")
    finally:
        for writer in writers:
            writer.close()


def test_read_modify_write_loops_lose_no_update(redis_server: EmbeddedRedis) -> None:
    """Four threads each try 10 times to advance the pointer from what they last read. Every
    success must appear exactly once in the history: a lost update would drop one."""
    successes: list[tuple[str | None, str]] = []
    lock = threading.Lock()

    def worker(name: int) -> None:
        handle = Pointer.from_url(redis_server.url)
        try:
            for attempt in range(10):
                current = handle.get()
                new = f"w{name}-{attempt}"
                if handle.compare_and_set(current, new):
                    with lock:
                        successes.append((current, new))
        finally:
            handle.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reader = Pointer.from_url(redis_server.url)
    try:
        history = reader.history()
        final = reader.get()
    finally:
        reader.close()
    assert 1 <= len(successes) <= 40
    # The chain of (old → new) is one unbroken line: every old value is the previous new value.
    olds = [old for old, _ in successes]
    news = [new for _, new in successes]
    assert olds.count(None) == 1
    assert len(set(olds)) == len(olds), "two writers moved the pointer away from the same value"
    assert final in news and final not in olds
    assert sorted(history) == sorted(o for o in olds if o is not None)
    assert len(history) <= HISTORY_MAX


def test_rollback_walks_back_through_registered_history(pointer: Pointer) -> None:
    assert pointer.set_if_unset("idx-a")
    assert pointer.compare_and_set("idx-a", "idx-b")
    assert pointer.compare_and_set("idx-b", "idx-c")
    assert pointer.rollback() == "idx-b"
    assert pointer.get() == "idx-b"
    assert pointer.rollback(expected_current="idx-b") == "idx-a"
    with pytest.raises(PointerError, match="no previously active"):
        pointer.rollback()
    assert pointer.get() == "idx-a"


def test_rollback_skips_unregistered_ids_and_refuses_when_the_pointer_moved(pointer: Pointer) -> None:
    assert pointer.set_if_unset("idx-a")
    assert pointer.compare_and_set("idx-a", "idx-b")
    assert pointer.compare_and_set("idx-b", "idx-c")
    pointer.unregister("idx-b")  # found broken: never roll back onto it
    with pytest.raises(PointerError, match="moved"):
        pointer.rollback(expected_current="idx-b")
    assert pointer.get() == "idx-c"
    assert pointer.rollback() == "idx-a"


def test_rollback_of_an_unset_pointer_is_refused(pointer: Pointer) -> None:
    with pytest.raises(PointerError, match="unset"):
        pointer.rollback()


@pytest.mark.parametrize(
    "bad",
    ["../x", "/etc/passwd", "a/b", "..", "idx/../../etc", "UPPER", "", " idx", "idx\n", "x" * 200],
)
def test_values_that_are_not_index_ids_are_refused(pointer: Pointer, bad: str) -> None:
    assert pointer.set_if_unset("idx-a")
    with pytest.raises(InvalidIndexIdError, match="not an index id"):
        pointer.compare_and_set("idx-a", bad)
    with pytest.raises(InvalidIndexIdError):
        pointer.register(bad)
    assert pointer.get() == "idx-a"


def test_changes_are_published(pointer: Pointer) -> None:
    subscription = pointer.subscribe()
    try:
        deadline = time.monotonic() + 5
        while subscription.get_message(timeout=0.05) is None and time.monotonic() < deadline:
            if subscription.subscribed:
                break
        assert pointer.set_if_unset("idx-a")
        assert pointer.compare_and_set("idx-a", "idx-b")
        assert pointer.rollback() == "idx-a"
        events = []
        while len(events) < 3 and time.monotonic() < deadline:
            message = subscription.get_message(timeout=0.5)
            if message is not None:
                events.append(json.loads(message["data"]))
        assert [(e["op"], e["old"], e["new"]) for e in events] == [
            ("set", "", "idx-a"),
            ("set", "idx-a", "idx-b"),
            ("rollback", "idx-b", "idx-a"),
        ]
    finally:
        subscription.close()


def test_failed_compare_and_set_changes_nothing(pointer: Pointer) -> None:
    assert pointer.set_if_unset("idx-a")
    before = (pointer.get(), pointer.history(), pointer.registered())
    assert not pointer.compare_and_set("idx-z", "idx-b")
    assert (pointer.get(), pointer.history(), pointer.registered()) == before
