"""Fault harness: every failure of the reliability issue, injected into a real stack, measured.

Each row gets a fresh stack: an embedded Tansu broker and an embedded Redis run by this process,
and the indexer (`semsearch index`) and the API (`semsearch serve`) as child processes in their
own process groups, so they can be `kill -9`'d like in production. Documents are short (one
sentence and a unique token: one chunk each), so embedding is cheap on 2 cores.

A background thread queries the API throughout every row (mostly bm25, some hybrid) and counts
failures (non-2xx or connection errors). Deliberate restarts of the API by the harness pause it.

Columns of the table:
  acknowledged   events whose delivery the broker confirmed (the producer's delivery reports)
  lost           acknowledged upserts whose newest version the API does not serve at the end
                 (GET /documents/{id}); events "lost by design" (a replaced in-memory broker)
                 are reported in the notes, not here
  dup chunks     chunks in the final index beyond a clean chunking of the final documents, plus
                 chunk ids owned twice (read from the newest loadable snapshot, read-only)
  failed queries failed background queries during the row
  recover s      from the end of the fault to the moment every acknowledged event is served
  verdict        PASS / FAIL against the row's expectation (notes say why)

    python -m bench.faults                          # all rows, ~25 min on 2 shared cores under load
    python -m bench.faults --only poison_storm --quick
    python -m bench.faults --only indexer_kill,disk_full --json /tmp/faults.json
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench._data import DEFAULT_DATA, RESULTS
from bench.faults.load import Acks, Docs, QueryLoad
from bench.faults.poison import row_poison_storm
from bench.faults.process_faults import (
    row_broker_replaced,
    row_broker_sigstop,
    row_indexer_kill,
    row_redis_restart,
)
from bench.faults.report import print_rows, write_result
from bench.faults.row import Context, Row, RowFn
from bench.faults.stack import CLEANUP, Stack, mount_tmpfs
from bench.faults.storage_faults import (
    row_disk_full,
    row_second_writer,
    row_segment_bitflip,
    row_truncated_manifest,
)
from indexer.model import load_model

DEFAULT_OUT = RESULTS / "faults.json"
ROWS = (
    "indexer_kill",
    "broker_sigstop",
    "broker_replaced",
    "redis_restart",
    "truncated_manifest",
    "segment_bitflip",
    "disk_full",
    "second_writer",
    "poison_storm",
)


RUNNERS: dict[str, tuple[RowFn, dict[str, str], str]] = {
    "indexer_kill": (row_indexer_kill, {"SEMSEARCH_BATCH_MAX_EVENTS": "16"}, "indexer kill -9 x{kills}"),
    "broker_sigstop": (row_broker_sigstop, {}, "broker SIGSTOP {pause}s"),
    "broker_replaced": (row_broker_replaced, {}, "broker replaced"),
    "redis_restart": (row_redis_restart, {}, "Redis killed, restarted empty"),
    "truncated_manifest": (row_truncated_manifest, {}, "truncated newest manifest"),
    "segment_bitflip": (row_segment_bitflip, {"SEMSEARCH_SEAL_CHUNKS": "64"}, "flipped byte in sealed segment"),
    "disk_full": (row_disk_full, {}, "disk full during snapshots"),
    "second_writer": (row_second_writer, {}, "second writer on the data dir"),
    "poison_storm": (row_poison_storm, {"SEMSEARCH_MAX_DOC_BYTES": "16384"}, "poison storm {n}+{n}"),
}


def run_row(name: str, ctx: Context) -> Row:
    fn, env, label = RUNNERS[name]
    row = Row(
        label.format(kills=int(ctx.scale(10, 3)), pause=int(ctx.scale(30, 8)), n=int(ctx.scale(1000, 50)))
    )
    work = ctx.work / name
    work.mkdir(parents=True)
    data_dir = work / "data"
    if name == "disk_full":
        why = mount_tmpfs(data_dir, 48)
        if why is not None:
            row.notes.append(f"NOT RUN: cannot mount a tmpfs ({why}); disk-full untested")
            return row
    stack = Stack(work, data_dir, ctx.model, env)
    acks = Acks()
    started = time.monotonic()
    ctx.queries.reset()
    try:
        feed = stack.up(ctx.queries, acks)
        ctx.queries.reset()  # queries count from a ready stack on
        fn(ctx, stack, acks, feed, row)
    except Exception as exc:
        row.notes.append(f"harness error: {type(exc).__name__}: {exc}")
        row.passed = False
    finally:
        sent, failed, errors = ctx.queries.reset()
        row.queries, row.failed_queries = sent, failed
        if errors:
            row.details["query_errors"] = errors
        if failed and row.passed:
            row.passed = False
        stack.down(ctx.queries)
        CLEANUP.run()  # everything this row started
        row.seconds = round(time.monotonic() - started, 1)
        row.details["work_dir"] = str(work)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.faults", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_OUT, help=f"result file (default {DEFAULT_OUT})")
    parser.add_argument("--only", help=f"comma-separated rows: {', '.join(ROWS)}")
    parser.add_argument("--quick", action="store_true", help="fewer kills, shorter waits, 50+50 poison storm")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    names = list(ROWS) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNNERS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    load_start = os.getloadavg()
    model = load_model()
    docs = Docs(args.data / "corpus.jsonl")
    queries = QueryLoad(docs.words)
    queries.start()
    work = Path(tempfile.mkdtemp(prefix="semsearch-faults-"))
    ctx = Context(model, docs, queries, work, args.quick, random.Random(args.seed))
    rows: list[Row] = []
    try:
        for name in names:
            print(f"== {name} ({time.strftime('%H:%M:%S')})", flush=True)
            row = run_row(name, ctx)
            rows.append(row)
            print(f"   {' | '.join(map(str, row.cells()))}  ({row.seconds} s)", flush=True)
            for note in row.notes:
                print(f"   - {note}", flush=True)
    finally:
        queries.stop_event.set()
        CLEANUP.run()

    print_rows(rows, args.quick)
    payload = write_result(args.json, argv, args.quick, load_start, names, rows, work)
    print(f"\nwrote {args.json}; logs in {work}")
    return 0 if payload["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
