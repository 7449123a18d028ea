"""The poison-storm row: bad events of every kind the schema must refuse, interleaved with good
ones; every bad one must reach the DLQ, none be indexed, and good throughput must hold."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench.faults.load import Acks, Feed
from bench.faults.measure import finish_row, served_version, wait_served
from bench.faults.row import Context, Row
from bench.faults.stack import Stack


def poison_events(count: int, max_doc_bytes: int) -> list[tuple[bytes | None, bytes | None, str]]:
    """(key, value, kind) of events the schema must refuse, every kind in turn."""
    def doc(doc_id: str, **overrides: Any) -> dict[str, Any]:
        return {"op": "upsert", "doc_id": doc_id, "version": 1, "title": "t", "text": "bad", "metadata": {}, **overrides}

    kinds: list[tuple[str, Callable[[str], tuple[bytes | None, bytes | None]]]] = [
        ("lone_surrogate", lambda i: (i.encode(), json.dumps(doc(i, text="bad \ud800 text")).encode())),
        ("invalid_utf8", lambda i: (i.encode(), b'{"op": "upsert", "doc_id": "' + i.encode() + b'", "text": "\xff\xfe"}')),
        ("bad_json", lambda i: (i.encode(), b'{"op": "upsert", "doc_id": ' + i.encode())),
        ("nan_version", lambda i: (i.encode(), json.dumps(doc(i, version=math.nan)).encode())),
        ("nan_metadata", lambda i: (i.encode(), json.dumps(doc(i, metadata={"x": math.inf})).encode())),
        ("key_not_doc_id", lambda i: (b"other-" + i.encode(), json.dumps(doc(i)).encode())),
        ("huge_doc", lambda i: (i.encode(), json.dumps(doc(i, text="x " * max_doc_bytes)).encode())),
        ("not_an_object", lambda i: (i.encode(), b"[1, 2, 3]")),
        ("unknown_op", lambda i: (i.encode(), json.dumps(doc(i, op="merge")).encode())),
        ("negative_version", lambda i: (i.encode(), json.dumps(doc(i, version=-5)).encode())),
        ("title_not_string", lambda i: (i.encode(), json.dumps(doc(i, title=42)).encode())),
        ("empty_value", lambda i: (i.encode(), b"")),
        ("no_key", lambda i: (None, json.dumps(doc(i)).encode())),
    ]
    out = []
    for n in range(count):
        kind, build = kinds[n % len(kinds)]
        key, value = build(f"bad-{n}")
        out.append((key, value, kind))
    return out


def count_dlq(bootstrap: str, topic: str, want: int, timeout_s: float) -> int:
    """Records in the (single-partition) DLQ topic, read from the start without a group join."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-faults-dlq-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    seen = 0
    deadline = time.monotonic() + timeout_s
    try:
        while seen < want and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                if message.error() is None:
                    seen += 1
    finally:
        consumer.close()
    return seen


def row_poison_storm(ctx: Context, stack: Stack, acks: Acks, feed: Feed, row: Row) -> None:
    good = int(ctx.scale(1000, 50))
    max_doc_bytes = int(stack.extra_env.get("SEMSEARCH_MAX_DOC_BYTES", "16384"))

    def timed_batch(prefix: str, bad: list[tuple[bytes | None, bytes | None, str]]) -> tuple[float | None, float | None]:
        """(produced -> all good served, produce finished -> all good served) seconds."""
        started = time.monotonic()
        events = [ctx.docs.make(f"{prefix}-{n}", n, 1) for n in range(good)]
        stride = max(1, len(bad) // max(1, good))
        b = 0
        for event in events:
            feed.upsert("docs", event)
            for key, value, _kind in bad[b : b + stride]:
                feed.raw("docs", key, value, "bad", None)
            b += stride
        for key, value, _kind in bad[b:]:
            feed.raw("docs", key, value, "bad", None)
        feed.flush()
        waited, _ = wait_served(stack, acks, ctx.scale(300, 120), row.notes)
        return (None, None) if waited is None else (time.monotonic() - started, waited)

    clean_s, _ = timed_batch("g", [])
    bad = poison_events(good, max_doc_bytes)
    storm_s, row.recover_s = timed_batch("p", bad)
    if row.recover_s is not None:
        row.recover_s = round(row.recover_s, 1)
    row.details["good_events_per_batch"] = good
    row.details["good_per_s_without_storm"] = round(good / clean_s, 1) if clean_s else None
    row.details["good_per_s_with_storm"] = round(good / storm_s, 1) if storm_s else None
    in_dlq = count_dlq(stack.bootstrap, "docs.dlq", len(bad), ctx.scale(60, 15))
    row.details["bad_events"] = len(bad)
    row.details["bad_kinds"] = sorted({k for _, _, k in bad})
    row.details["in_dlq"] = in_dlq
    indexed_kinds = [bad[n][2] for n in range(len(bad)) if served_version(stack, f"bad-{n}") is not None]
    bad_served = len(indexed_kinds)
    row.details["bad_docs_indexed"] = bad_served
    row.details["bad_kinds_indexed"] = sorted(set(indexed_kinds))
    row.notes.append(
        f"good/s {row.details['good_per_s_without_storm']} clean vs {row.details['good_per_s_with_storm']} in storm; "
        f"DLQ {in_dlq}/{len(bad)}; bad docs indexed {bad_served} {sorted(set(indexed_kinds))}"
    )
    row.details["indexer_alive_after"] = stack.indexer_alive()
    finish_row(row, stack, acks, ctx.scale(120, 60), None)
    slow = storm_s is None or clean_s is None or storm_s > 2.0 * clean_s + 5
    if slow:
        row.notes.append("good events slowed by the storm (more than 2x + 5 s)")
    row.passed = (
        row.lost == 0 and row.duplicated_chunks == 0 and row.failed_queries == 0
        and in_dlq == len(bad) and bad_served == 0 and stack.indexer_restarts == 0 and not slow
    )
