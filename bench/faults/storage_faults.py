"""Fault rows on the data dir: a truncated newest manifest, a flipped byte in a sealed segment,
a full disk while events arrive, and a second indexer on the same data dir."""

from __future__ import annotations

import os
import shutil
import time

from bench._process import kill_group, stop_process, wait_until
from bench.faults.load import Acks, Feed, Stream, stream_for
from bench.faults.measure import finish_row, unserved, wait_served
from bench.faults.row import Context, Row
from bench.faults.stack import Stack
from indexer.snapshots import SnapshotStore


def row_truncated_manifest(ctx: Context, stack: Stack, acks: Acks, feed: Feed, row: Row) -> None:
    stream_for(feed, ctx.docs, "t", 15, ctx.scale(6, 4))
    wait_served(stack, acks, 60)
    stack.kill_indexer()  # a crash; then the newest manifest turns out truncated
    newest = stack.store.latest_generation()
    assert newest is not None
    path = stack.store.root / f"gen-{newest:06d}" / "manifest.json"
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(size // 2)
    row.details["truncated_generation"] = newest
    # The running API must keep serving (it sees a broken newest generation on refresh).
    time.sleep(ctx.scale(5, 3))
    ok_running = stack.api_ready()
    row.notes.append(f"running API ready after truncation: {ok_running}")
    restarted = stack.restart_api(ctx.queries, 120)
    generation = None
    if restarted:
        generation = stack.http.get(f"{stack.api_url}/index").json().get("generation")
    row.details["restarted_api_ready"] = restarted
    row.details["restarted_api_generation"] = generation
    row.notes.append(f"restarted API ready={restarted} serving gen {generation} (truncated {newest})")
    stack.start_indexer()
    fault_end = time.monotonic()
    stream_for(feed, ctx.docs, "u", 15, ctx.scale(5, 3))
    finish_row(row, stack, acks, ctx.scale(120, 60), fault_end)
    row.passed = (
        row.lost == 0 and row.duplicated_chunks == 0 and row.failed_queries == 0 and restarted
        and stack.indexer_restarts == 0 and ok_running
    )


def row_segment_bitflip(ctx: Context, stack: Stack, acks: Acks, feed: Feed, row: Row) -> None:
    for n in range(int(ctx.scale(300, 160))):
        feed.upsert("docs", ctx.docs.make(f"b-{n}", n, 1))
    feed.flush()
    wait_served(stack, acks, 180)
    has_sealed = wait_until(lambda: _latest_segments(stack.store) != [], 30, 0.2)
    rc = stop_process(stack.indexer, timeout_s=60, group=True) if stack.indexer else None
    segments = _latest_segments(stack.store)
    if not has_sealed or not segments:
        row.notes.append("no sealed segment was written; nothing to corrupt")
        finish_row(row, stack, acks, 60, None)
        return
    target = stack.store.root / segments[0]
    data = bytearray(target.read_bytes())
    position = len(data) // 2
    data[position] ^= 0xFF
    target.write_bytes(bytes(data))
    row.details["flipped"] = f"{segments[0]} byte {position} of {len(data)}"
    row.details["indexer_stop_rc"] = rc
    stack.start_indexer()
    fault_end = time.monotonic()
    for n in range(1000, 1000 + int(ctx.scale(60, 30))):
        feed.upsert("docs", ctx.docs.make(f"b-{n}", n, 1))
    feed.flush()
    alive = wait_until(lambda: not stack.indexer_alive(), ctx.scale(20, 12), 0.2) is False
    row.details["indexer_survived_restart"] = alive
    mark = stack.indexer_mark
    finish_row(row, stack, acks, ctx.scale(180, 90), fault_end)
    since_restart = stack.indexer_log.read_text(errors="replace")[mark:]
    repairs = [ln for ln in since_restart.splitlines() if "repair" in ln.lower()]
    row.details["repair_log"] = [ln[-220:] for ln in repairs[:3]]
    row.notes.append(f"restarted indexer alive={alive}; repair logged: {bool(repairs)}")
    api_ok = stack.restart_api(ctx.queries, 120)
    row.notes.append(f"restarted API ready={api_ok}")
    row.lost = len(unserved(stack, acks.expected())) if api_ok else row.lost
    row.passed = row.lost == 0 and row.duplicated_chunks == 0 and row.failed_queries == 0 and alive and api_ok


def _latest_segments(store: SnapshotStore) -> list[str]:
    for generation in reversed(store.generations()):
        try:
            return [s["file"] for s in store.read_manifest(generation).segments]
        except Exception:
            continue
    return []


def row_disk_full(ctx: Context, stack: Stack, acks: Acks, feed: Feed, row: Row) -> None:
    for n in range(int(ctx.scale(100, 50))):
        feed.upsert("docs", ctx.docs.make(f"d-{n}", n, 1))
    feed.flush()
    wait_served(stack, acks, 120)
    filler = stack.data_dir / "filler.bin"
    block = b"\0" * (1 << 20)
    handle = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 20, 1 << 14, 1 << 10, 64):
            try:
                while True:
                    os.write(handle, block[:size])
            except OSError:
                continue
    finally:
        os.close(handle)
    row.details["filler_bytes"] = filler.stat().st_size
    free = shutil.disk_usage(stack.data_dir).free
    row.details["free_bytes_when_full"] = free
    for n in range(1000, 1000 + int(ctx.scale(100, 50))):
        feed.upsert("docs", ctx.docs.make(f"d-{n}", n, 1))
    feed.flush()
    full_s = ctx.scale(15, 8)
    died = wait_until(lambda: not stack.indexer_alive(), full_s, 0.2)
    row.details["indexer_survived_full_disk"] = not died
    log_tail = stack.indexer_log.read_text(errors="replace")[-6000:]
    row.details["no_space_in_log"] = any(w in log_tail for w in ("No space left", "ENOSPC", "disk is full"))
    if died:
        row.details["indexer_death"] = stack.last_error()
    row.details["tmp_generations_while_full"] = len(list(stack.store.root.glob(".tmp-gen-*")))
    filler.unlink()
    fault_end = time.monotonic()
    row.notes.append(
        f"indexer {'survived' if not died else 'DIED'} {full_s:.0f} s of a full disk; "
        f"{row.details['tmp_generations_while_full']} .tmp-gen dirs left while full"
    )
    finish_row(row, stack, acks, ctx.scale(120, 60), fault_end)
    row.details["tmp_generations_after"] = len(list(stack.store.root.glob(".tmp-gen-*")))
    row.passed = row.lost == 0 and row.duplicated_chunks == 0 and row.failed_queries == 0 and not died


def row_second_writer(ctx: Context, stack: Stack, acks: Acks, feed: Feed, row: Row) -> None:
    stream = Stream(feed, ctx.docs, "w", rate=15)
    stream.start()
    second_log = stack.work / "indexer-2.log"
    fault_end: float | None = None
    try:
        time.sleep(ctx.scale(3, 2))
        before = stack.store.latest_generation()
        second = stack.spawn("index", second_log)
        exited = wait_until(lambda: second.poll() is not None, ctx.scale(90, 60), 0.2)
        fault_end = time.monotonic()
        text = second_log.read_text(errors="replace")
        error_lines = [ln for ln in text.splitlines() if "lock" in ln.lower() or "error" in ln.lower()]
        if exited:
            row.notes.append(f"second writer exited rc={second.returncode}: {error_lines[-1][:300] if error_lines else '(no error line)'}")
        else:
            row.notes.append("second writer NOT refused: still running after the deadline; killed by the harness")
            kill_group(second)
            second.wait(30)
        row.details["second_writer_refused"] = exited and second.returncode != 0
        row.details["second_writer_rc"] = second.returncode
        row.details["generation_before"] = before
        time.sleep(ctx.scale(3, 2))
    finally:
        stream.finish()
    feed.flush()
    row.details["first_indexer_alive"] = stack.indexer_alive()
    finish_row(row, stack, acks, ctx.scale(120, 60), fault_end)
    row.passed = (
        row.lost == 0 and row.duplicated_chunks == 0 and row.failed_queries == 0
        and bool(row.details["second_writer_refused"]) and stack.indexer_restarts == 0
    )
