"""Crash loop: `kill -9` the indexer at random moments during ingestion, restart, repeat; then
check that the final index equals a clean build of the same final documents.

What this exercises: snapshots written atomically (kills land mid-embedding, mid-snapshot — a
third of the kills wait for a `.tmp-gen-*` directory to appear — and during start-up), offsets
resumed from the manifest (no lost and no doubly-applied events), and version rules that make
replays harmless. Each life publishes a new wave of updates, deletes, tombstones, duplicates and
out-of-order events, so there is always work in flight when the kill comes.

The expected final documents come from a plain reference replay of the published events (per
document, in publish order: newer version wins; a delete records its version; a tombstone
deletes whatever is held). The clean build embeds them afresh (no cache); the streamed index must
match it in doc ids, versions, texts, metadata, chunk counts, vectors and search results (each
leg's scored list equal; top-10 lists may differ only in the order of exactly tied scores, since
internal chunk ids differ after updates and deletes).

    python -m bench.crash_loop                   # 150 SciFact docs, 12 kills; ~5 min
    python -m bench.crash_loop --docs 60 --kills 10 --seed 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench._data import DEFAULT_DATA, RESULTS, load_events
from bench._process import consumed, start_cli, wait_for_log, wait_until
from bench.reporting import print_table, write_json
from contracts.documents import Document
from contracts.events import DeleteEvent, DocEvent, UpsertEvent
from contracts.settings import Settings
from contracts.topics import ensure_topics
from indexer.beir import read_queries
from indexer.index import Index
from indexer.model import load_model
from indexer.snapshots import SnapshotStore, index_dir
from producers.publisher import Publisher
from semsearch.embedded.broker import EmbeddedBroker

DEFAULT_OUT = RESULTS / "crash_loop.json"
TOPICS = {"docs": 3, "control": 1, "docs.dlq": 1}


# -- the event plan -----------------------------------------------------------------------------
def plan_events(docs: list[UpsertEvent], waves: int, per_wave: int, rng: random.Random) -> list[list[DocEvent]]:
    """Wave 0 upserts every document at version 1; later waves mutate them in every legal way."""
    plan: list[list[DocEvent]] = [[UpsertEvent(d.doc_id, 1, d.title, d.text, {"wave": 0}) for d in docs]]
    base = {d.doc_id: d for d in docs}
    top = dict.fromkeys(base, 1)  # highest version used per doc
    published: list[DocEvent] = list(plan[0])
    for wave in range(1, waves + 1):
        events: list[DocEvent] = []
        for _ in range(per_wave):
            doc_id = rng.choice(list(base))
            kind = rng.choice(["update", "update", "update", "delete", "tombstone", "duplicate", "out_of_order"])
            v = top[doc_id] + 1
            if kind == "update":
                events.append(_revision(base[doc_id], v, wave))
            elif kind == "delete":
                events.append(DeleteEvent(doc_id, v))
            elif kind == "tombstone":
                events.append(DeleteEvent(doc_id))
                v -= 1
            elif kind == "duplicate":
                events.append(rng.choice(published))
                v -= 1
            else:  # newer first, then the older one arrives late
                events += [_revision(base[doc_id], v + 1, wave), _revision(base[doc_id], v, wave)]
                v += 1
            top[doc_id] = v
        published += events
        plan.append(events)
    return plan


def _revision(doc: UpsertEvent, version: int, wave: int) -> UpsertEvent:
    # Only the end of the text changes: unchanged leading chunks come from the embedding cache,
    # exactly as with real edits.
    return UpsertEvent(doc.doc_id, version, doc.title, f"{doc.text} Revision {version}.", {"wave": wave})


def reference_state(plan: list[list[DocEvent]]) -> list[Document]:
    held: dict[str, tuple[int, UpsertEvent | None]] = {}
    for event in (e for wave in plan for e in wave):
        current = held.get(event.doc_id)
        if isinstance(event, UpsertEvent):
            if current is None or event.version > current[0]:
                held[event.doc_id] = (event.version, event)
        elif event.version is None:  # tombstone
            held[event.doc_id] = (current[0] if current else 0, None)
        elif current is None or event.version > current[0]:
            held[event.doc_id] = (event.version, None)
    return [e.to_change() for _, e in held.values() if e is not None]


# -- the indexer process ------------------------------------------------------------------------
@dataclass
class Kill:
    life: int
    mode: str
    seconds_alive: float
    behind_at_kill: int
    generation_after: int | None
    tmp_dirs_left: int


def wait_for_tmp_generation(root: Path, timeout_s: float) -> bool:
    return wait_until(
        lambda: root.is_dir() and any(p.name.startswith(".tmp-gen-") for p in root.iterdir()),
        timeout_s,
        0.002,
    )


def run_lives(
    plan: list[list[DocEvent]],
    lives: int,
    env: dict[str, str],
    log_path: Path,
    store: SnapshotStore,
    publisher: Publisher,
    rng: random.Random,
    kills: list[Kill],
) -> bool:
    """`lives` indexer processes killed with SIGKILL, then one run to completion and SIGTERM."""
    total_events = sum(map(len, plan))
    published = 0
    modes = ["random", "snapshot", "random", "startup"]
    process: subprocess.Popen[bytes] | None = None
    try:
        for life in range(lives + 1):
            mark = log_path.stat().st_size if log_path.exists() else 0
            process = start_cli("index", env, log_path)
            born = time.monotonic()
            report = publisher.publish_docs("docs", plan[life])
            if report.failed:
                raise SystemExit(f"publishing failed: {report.summary()}")
            published += len(plan[life])
            if life == lives:
                break
            mode = modes[life % len(modes)]
            if mode == "startup":
                time.sleep(rng.uniform(0.5, 6.0))  # model load, snapshot load or group join
            else:
                if not wait_for_log(log_path, "assigned", 120, mark):
                    raise SystemExit(f"the indexer did not join the group; see {log_path}")
                if mode != "snapshot" or not wait_for_tmp_generation(store.root, 30):
                    mode = "random"
                    time.sleep(rng.uniform(0.5, 8.0))
            process.send_signal(signal.SIGKILL)
            process.wait()
            alive = time.monotonic() - born
            generation = store.latest_generation()
            behind = published - consumed(store)
            tmp_left = len(list(store.root.glob(".tmp-gen-*")))
            kills.append(Kill(life + 1, mode, round(alive, 2), behind, generation, tmp_left))
            print(
                f"kill {life + 1:2d}/{lives} ({mode:8s}) after {alive:5.1f}s: {behind:4d} of {published} "
                f"events not yet in a snapshot, generation {generation}",
                flush=True,
            )

        assert process is not None
        deadline = time.monotonic() + 900
        while consumed(store) < total_events:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"the indexer did not catch up ({consumed(store)}/{total_events}); see {log_path}")
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        return process.wait(120) == 0
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


# -- comparison ---------------------------------------------------------------------------------
def compare(streamed: Index, clean: Index, queries: list[str]) -> dict[str, Any]:
    def table(index: Index) -> dict[str, tuple[int, str, str, str, int]]:
        return {
            r.doc_id: (r.version, r.title, r.text, json.dumps(r.metadata, sort_keys=True), len(r.chunks))
            for r in index.documents
        }

    mine, theirs = table(streamed), table(clean)
    max_diff = 0.0
    for doc_id in set(mine) & set(theirs):
        a, b = streamed.get(doc_id), clean.get(doc_id)
        assert a is not None and b is not None
        va = streamed.vectors.vectors_of([c.chunk_id for c in a.chunks])
        vb = clean.vectors.vectors_of([c.chunk_id for c in b.chunks])
        if len(va) == len(a.chunks) and len(vb) == len(b.chunks) and len(a.chunks) == len(b.chunks):
            diff = np.abs(np.vstack([va[c.chunk_id] for c in a.chunks]) - np.vstack([vb[c.chunk_id] for c in b.chunks]))
            max_diff = max(max_diff, float(diff.max()))
        else:
            max_diff = float("inf")
    live_chunks = [c.chunk_id for r in streamed.documents for c in r.chunks]
    search_mismatches = 0
    legs_differ = 0
    for query in queries:
        for mode in ("hybrid", "vector", "bm25"):
            if [h.doc_id for h in streamed.search(query, k=10, mode=mode)] != [
                h.doc_id for h in clean.search(query, k=10, mode=mode)
            ]:
                search_mismatches += 1
        for mode in ("vector", "bm25"):
            mine_leg, their_leg = _leg(streamed, query, mode), _leg(clean, query, mode)
            legs_differ += mine_leg.keys() != their_leg.keys() or any(
                abs(score - their_leg[doc_id]) > 1e-4 for doc_id, score in mine_leg.items()
            )
    return {
        "documents": [len(mine), len(theirs)],
        "chunks": [streamed.count().chunks, clean.count().chunks],
        "doc_ids_equal": set(mine) == set(theirs),
        "versions_equal": {d: v[0] for d, v in mine.items()} == {d: v[0] for d, v in theirs.items()},
        "texts_and_metadata_equal": {d: v[1:4] for d, v in mine.items()} == {d: v[1:4] for d, v in theirs.items()},
        "chunk_counts_equal": {d: v[4] for d, v in mine.items()} == {d: v[4] for d, v in theirs.items()},
        "duplicate_chunk_ids": len(live_chunks) - len(set(live_chunks)),
        "vectors_searchable": len(streamed.vectors) == len(live_chunks) == len(streamed.lexical),
        "max_vector_abs_diff": max_diff,
        "queries": len(queries) * 3,
        "search_mismatches": search_mismatches,
        # Each leg at depth 100 as doc id -> score: the same documents with the same scores
        # (to 1e-4; vectors of different batchings differ by ~1e-7) means any top-10 difference
        # above is the order of tied scores (internal ids differ after updates and deletes).
        "legs_differ_beyond_ties": legs_differ,
    }


def _leg(index: Index, query: str, mode: str) -> dict[str, float]:
    return {h.doc_id: h.score for h in index.search(query, k=100, mode=mode)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=150)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--per-wave", type=int, default=20, help="events published per life after the first")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.kills < 1:
        parser.error("--kills must be at least 1")
    rng = random.Random(args.seed)
    started = time.monotonic()

    docs = load_events(args.data / "corpus.jsonl", args.docs)
    plan = plan_events(docs, args.kills, args.per_wave, rng)
    expected = reference_state(plan)
    total_events = sum(map(len, plan))

    work = Path(tempfile.mkdtemp(prefix="semsearch-crash-"))
    log_path = work / "indexer.log"
    settings = Settings(data_dir=work / "data")
    model = load_model()  # for the index id now, the clean build and the final load later
    store = SnapshotStore(index_dir(settings, model.index_id))
    kills: list[Kill] = []
    with EmbeddedBroker(log_path=work / "tansu.log") as broker:
        ensure_topics(broker.bootstrap, TOPICS)
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "SEMSEARCH_DATA_DIR": str(settings.data_dir),
            "SEMSEARCH_INDEXER_METRICS_PORT": "0",
            "SEMSEARCH_BATCH_MAX_EVENTS": "16",  # many snapshots per life: kills hit every phase
            "SEMSEARCH_SNAPSHOT_INTERVAL_MS": "100",
            "SEMSEARCH_KAFKA_SESSION_TIMEOUT_MS": "3000",  # a killed member leaves the group sooner
            "SEMSEARCH_KAFKA_HEARTBEAT_MS": "1000",
            "HF_HUB_OFFLINE": "1",
        }
        with Publisher(broker.bootstrap) as publisher:
            clean_exit = run_lives(plan, args.kills, env, log_path, store, publisher, rng, kills)

    generations_ok = 0
    for generation in store.generations():
        store.verify(store.read_manifest(generation))
        generations_ok += 1
    streamed, manifest = store.load(model, settings)
    clean_started = time.monotonic()
    clean = Index.create(model, settings)
    clean.apply(expected)
    clean_seconds = time.monotonic() - clean_started
    queries = list(read_queries(args.data / "queries.jsonl").values())[: args.queries]
    result = compare(streamed, clean, queries)
    passed = (
        result["doc_ids_equal"]
        and result["versions_equal"]
        and result["texts_and_metadata_equal"]
        and result["chunk_counts_equal"]
        and result["duplicate_chunk_ids"] == 0
        and result["vectors_searchable"]
        and result["max_vector_abs_diff"] < 1e-4
        and result["legs_differ_beyond_ties"] == 0
        and clean_exit
    )

    print_table(
        "kills",
        ["life", "mode", "alive s", "events not in snapshot", "generation after", "tmp dirs left"],
        [[k.life, k.mode, k.seconds_alive, k.behind_at_kill, k.generation_after, k.tmp_dirs_left] for k in kills],
    )
    print_table(
        f"final index vs clean build ({'PASS' if passed else 'FAIL'})",
        ["check", "value"],
        [[k, v] for k, v in result.items()]
        + [["events published", total_events], ["final generation", manifest.generation],
           ["generations verified", generations_ok], ["clean SIGTERM exit", clean_exit]],
    )
    payload = {
        "passed": passed,
        "config": vars(args),
        "events_published": total_events,
        "kills": [asdict(k) for k in kills],
        "kills_during_ingestion": sum(1 for k in kills if k.behind_at_kill > 0),
        "kill_modes": {m: sum(1 for k in kills if k.mode == m) for m in {k.mode for k in kills}},
        "final_generation": manifest.generation,
        "generations_verified": generations_ok,
        "clean_sigterm_exit": clean_exit,
        "comparison": result,
        "clean_build_seconds": round(clean_seconds, 1),
        "total_seconds": round(time.monotonic() - started, 1),
        "work_dir": str(work),
    }
    write_json(args.out, payload)
    print(f"\nwrote {args.out} ({payload['total_seconds']} s); logs in {work}")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
