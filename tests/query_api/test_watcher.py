"""PointerWatcher against a real embedded Redis: reads, outages and notifications."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
from tests_support import wait_until

from contracts.pointer import Pointer
from contracts.settings import Settings
from query_api.metrics import ApiMetrics
from query_api.watcher import PointerRead, PointerWatcher
from semsearch.embedded.redis import EmbeddedRedis, start_embedded_redis


@pytest.fixture
def watcher(settings: Settings) -> Iterator[PointerWatcher]:
    watching = PointerWatcher(settings.redis_url, settings.pointer_key, ApiMetrics())
    yield watching
    watching.close()


def redis_errors(watcher: PointerWatcher) -> float:
    return watcher.metrics.registry.get_sample_value("semsearch_redis_errors_total") or 0.0


def test_reads_the_raw_value_unset_then_set(watcher: PointerWatcher, pointer: Pointer) -> None:
    assert watcher.read(None) == PointerRead(None, True)
    assert watcher.redis_up and watcher.redis_error is None and watcher.pointer is not None
    assert pointer.set_if_unset("idx-a")
    assert watcher.read(None) == PointerRead("idx-a", True) and watcher.value == "idx-a"
    pointer.client.set(pointer.key, "../escape")  # untrusted: passed on as read, validated later
    assert watcher.read("idx-a").value == "../escape"


def test_without_redis_there_is_no_pointer(settings: Settings) -> None:
    watcher = PointerWatcher("", settings.pointer_key, ApiMetrics())
    assert watcher.read(None) == PointerRead(None, False)
    assert not watcher.redis_up and watcher.redis_error is None and redis_errors(watcher) == 0


def test_an_outage_is_reported_logged_once_and_its_end_seen(
    watcher: PointerWatcher, pointer: Pointer, redis_server: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    pointer.set_if_unset("idx-a")
    assert watcher.read(None).value == "idx-a"
    redis_server.stop()
    with caplog.at_level(logging.INFO, logger="query_api.watcher"):
        for _ in range(3):
            assert watcher.read("idx-a") == PointerRead(None, False)
        assert not watcher.redis_up and watcher.redis_error and watcher.pointer is None
        assert watcher.value == "idx-a", "the last value read is kept for /readyz"
        assert redis_errors(watcher) == 3
        unreachable = [r.message for r in caplog.records if "unreachable" in r.message]
        assert len(unreachable) == 1 and "still serving idx-a" in unreachable[0]
        with start_embedded_redis(redis_server.directory) as revived:  # same socket, same data
            assert revived.url == redis_server.url
            assert watcher.read("idx-a") == PointerRead("idx-a", True)
            assert watcher.redis_up and watcher.redis_error is None
            assert any("reachable again" in r.message for r in caplog.records)
            watcher.close()


def test_a_notification_ends_the_wait_early(watcher: PointerWatcher, pointer: Pointer) -> None:
    pointer.set_if_unset("idx-a")
    watcher.read(None)
    stop = threading.Event()
    waited: list[float] = []

    def wait() -> None:
        started = time.monotonic()
        watcher.wait(20.0, stop)
        waited.append(time.monotonic() - started)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    # Subscribed (and so inside its 20 s wait) once Redis counts a subscriber.
    wait_until(
        lambda: any(count > 0 for _, count in pointer.client.pubsub_numsub(pointer.channel)),
        30,
        "the watcher to subscribe to pointer notifications",
    )
    assert pointer.compare_and_set("idx-a", "idx-b")
    thread.join(10)
    assert waited and waited[0] < 5.0
    assert watcher.read(None).value == "idx-b"


def test_stop_ends_the_wait_early(watcher: PointerWatcher, pointer: Pointer) -> None:
    watcher.read(None)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    watcher.wait(20.0, stop)
    assert time.monotonic() - started < 5.0
