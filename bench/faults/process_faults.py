"""Fault rows on the processes: the indexer `kill -9`'d at random moments, the broker stopped
(SIGSTOP) or replaced by an empty one at the same address, Redis restarted empty."""

from __future__ import annotations

import os
import shutil
import signal
import time

import httpx

from bench._process import wait_for_log, wait_until
from bench.faults.load import Acks, Feed, Stream, stream_for
from bench.faults.measure import finish_row, unserved
from bench.faults.row import Context, Row
from bench.faults.stack import Stack


def row_indexer_kill(ctx: Context, stack: Stack, acks: Acks, feed: Feed, row: Row) -> None:
    kills = int(ctx.scale(10, 3))
    stream = Stream(feed, ctx.docs, "k", rate=5)
    stream.start()
    killed_after = []
    try:
        for _ in range(kills):
            if ctx.rng.random() < 0.25:
                wait = ctx.rng.uniform(0.5, 5.0)  # during start-up
            else:
                wait_for_log(stack.indexer_log, "assigned", 120, stack.indexer_mark)
                wait = ctx.rng.uniform(0.3, 6.0)
            time.sleep(wait)
            stack.kill_indexer()
            killed_after.append(round(wait, 1))
            stack.start_indexer()
    finally:
        stream.finish()
    row.details["kills"] = killed_after
    feed.flush()
    finish_row(row, stack, acks, ctx.scale(300, 180), time.monotonic())
    row.passed = row.lost == 0 and row.duplicated_chunks == 0 and row.failed_queries == 0


def row_broker_sigstop(ctx: Context, stack: Stack, acks: Acks, feed: Feed, row: Row) -> None:
    pause = ctx.scale(30, 8)
    assert stack.broker is not None and stack.broker.process is not None
    stream = Stream(feed, ctx.docs, "s", rate=10)
    stream.start()
    try:
        time.sleep(ctx.scale(5, 3))
        os.kill(stack.broker.process.pid, signal.SIGSTOP)
        time.sleep(pause)
        os.kill(stack.broker.process.pid, signal.SIGCONT)
        fault_end = time.monotonic()
        time.sleep(ctx.scale(5, 2))
    finally:
        stream.finish()
    feed.flush()
    row.details["stopped_s"] = pause
    row.details["indexer_alive_after"] = stack.indexer_alive()
    if not stack.indexer_alive():
        row.notes.append("the indexer did not survive the stopped broker")
    finish_row(row, stack, acks, ctx.scale(180, 120), fault_end)
    row.passed = row.lost == 0 and row.duplicated_chunks == 0 and row.failed_queries == 0 and stack.indexer_restarts == 0


def row_broker_replaced(ctx: Context, stack: Stack, acks: Acks, feed: Feed, row: Row) -> None:
    stream_for(feed, ctx.docs, "o", 20, ctx.scale(6, 3))
    # Whatever of the old broker's log is not yet indexed when it goes is lost by design.
    time.sleep(0.5)
    old_expected = acks.expected()
    not_indexed = set(unserved(stack, old_expected))
    assert stack.broker is not None
    port = stack.broker.port
    stack.broker.stop()
    stack.start_broker(port)  # same address, new cluster id, empty log
    fault_end = time.monotonic()
    new_acks = Acks()
    new_feed = Feed(stack.bootstrap, new_acks)
    stream_for(new_feed, ctx.docs, "n", 20, ctx.scale(8, 4))
    row.details["old_broker_acknowledged"] = acks.count
    row.details["old_not_indexed_at_swap_lost_by_design"] = len(not_indexed)
    row.notes.append(f"{len(not_indexed)} of {acks.count} old-broker events not indexed at the swap (lost by design)")
    finish_row(row, stack, new_acks, ctx.scale(120, 60), fault_end)
    # Old documents already indexed must still be served.
    indexed_old = {d: v for d, v in old_expected.items() if d not in not_indexed}
    regressed = unserved(stack, indexed_old)
    row.details["old_indexed_docs_lost_after_swap"] = len(regressed)
    if regressed:
        row.notes.append(f"{len(regressed)} already-indexed old docs no longer served")
    row.lost = (row.lost or 0) + len(regressed)
    row.passed = row.lost == 0 and row.duplicated_chunks == 0 and row.failed_queries == 0


def row_redis_restart(ctx: Context, stack: Stack, acks: Acks, feed: Feed, row: Row) -> None:
    assert stack.redis is not None
    stream = Stream(feed, ctx.docs, "r", rate=10)
    stream.start()
    try:
        time.sleep(ctx.scale(4, 2))
        directory = stack.redis.directory
        stack.redis.process.kill()
        stack.redis.process.wait(10)
        down_s = ctx.scale(10, 4)
        time.sleep(down_s)
        for entry in directory.iterdir():  # restarted EMPTY: no RDB, no AOF
            if entry.name not in ("redis.log",):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        stack.start_redis()
        fault_end = time.monotonic()
        time.sleep(ctx.scale(6, 3))
    finally:
        stream.finish()
    feed.flush()
    from contracts.pointer import Pointer

    assert stack.redis is not None
    pointer = Pointer.from_url(stack.redis.url)
    try:
        after = wait_until(lambda: pointer.get() is not None, ctx.scale(10, 4), 0.2)
        value = pointer.get()
        row.details["pointer_after_restart"] = value
        row.notes.append(f"pointer after the empty restart: {'re-set to ' + str(value) if after else 'unset (nothing re-sets it)'}")
        try:
            ready = stack.http.get(f"{stack.api_url}/readyz").json()
            row.details["readyz_after"] = {k: ready.get(k) for k in ("ready", "origin", "pointer", "index_id")}
            row.notes.append(f"API origin={ready.get('origin')} ready={ready.get('ready')}")
        except (httpx.HTTPError, ValueError) as exc:
            row.notes.append(f"/readyz failed: {exc}")
        if value is None:
            pointer.set_if_unset(stack.model.index_id, origin="bench.faults")
    finally:
        pointer.close()
    row.details["indexer_alive_after"] = stack.indexer_alive()
    finish_row(row, stack, acks, ctx.scale(120, 60), fault_end)
    row.passed = row.lost == 0 and row.duplicated_chunks == 0 and row.failed_queries == 0 and stack.indexer_restarts == 0
