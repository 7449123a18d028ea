"""Migration benchmark: how long a model upgrade takes, how fast it re-embeds, what queries feel.

The stack runs as its own process (`semsearch up`: embedded broker and Redis, indexer with its
migration service, API); this process is only a client, as an operator would be.

1. seed: publish the first `--docs` SciFact documents, wait until /index counts them all;
2. held-out set: SciFact queries whose relevant documents are among them (qrels filtered to the
   subset), handed to the stack as SEMSEARCH_VALIDATION_QUERIES / _QRELS;
3. load: `--clients` HTTP clients query (hybrid, the API default) for the whole run, and
   `--updates-per-s` document updates keep flowing, so the shadow index has to catch up;
4. upgrade: publish `model-upgrade` to a MiniLM variant (`--variant`, weights symlinked, one
   config changed - a different model to semsearch, see tests/migration_models.py), follow
   GET /index until the migration ends and the API answers with the new index id.

Reported: wall time (request → pointer flipped → API serving the new id), time per migration
state, the bootstrap's re-embed rate in chunks/s (wall and embedding-only), the gate's verdict
and numbers, and client-side query latency before the upgrade, during the shadow build, in a
window around the flip, and after. Prints a table, writes bench/results/migration.json.

    python -m bench.migration                  # 1000 docs, msl128 variant (~6 min on 2 cores)
    python -m bench.migration --docs 200 --clients 1 --updates-per-s 1   # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import httpx

from bench._data import DEFAULT_DATA, RESULTS, load_events
from bench._stats import percentile
from bench.api_latency import Stack, publish, wait_for_documents
from bench.reporting import command, machine, write_json
from contracts.events import ModelUpgrade, UpsertEvent
from contracts.settings import Settings
from indexer.beir import read_qrels, read_queries
from indexer.model import bundled_model_path
from producers.publisher import Publisher

DEFAULT_OUT = RESULTS / "migration.json"
FLIP_WINDOW_S = 2.0
# name → (file, changed keys): a different fingerprint, the same weights.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "msl128": ("sentence_bert_config.json", {"max_seq_length": 128}),
    "msl512": ("sentence_bert_config.json", {"max_seq_length": 512}),
}
TERMINAL = {"flipped", "rejected", "superseded", "failed", "aborted"}


def make_variant(root: Path, name: str) -> Path:
    """Copy the bundled MiniLM with one config edited; the 90 MB weights are symlinked."""
    source, target = bundled_model_path(), root / f"minilm-l6-{name}"
    for path in source.rglob("*"):
        dest = target / path.relative_to(source)
        if path.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.stat().st_size > 1_000_000:
            dest.symlink_to(path.resolve())
        else:
            shutil.copy(path, dest)
    edited, changes = VARIANTS[name]
    config = json.loads((target / edited).read_text())
    (target / edited).write_text(json.dumps({**config, **changes}))
    return target


def held_out_set(data: Path, doc_ids: set[str], out: Path) -> tuple[Path, Path, int]:
    """SciFact queries with at least one relevant document in the subset, as BEIR files."""
    queries = read_queries(data / "queries.jsonl")
    qrels = {
        q: {d: s for d, s in docs.items() if d in doc_ids}
        for q, docs in read_qrels(data / "qrels.tsv").items()
        if q in queries
    }
    qrels = {q: docs for q, docs in qrels.items() if docs}
    out.mkdir(parents=True, exist_ok=True)
    query_path, qrels_path = out / "queries.jsonl", out / "qrels.tsv"
    query_path.write_text("".join(json.dumps({"_id": q, "text": queries[q]}) + "\n" for q in qrels))
    rows = [f"{q}\t{d}\t{s}" for q, docs in qrels.items() for d, s in docs.items()]
    qrels_path.write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return query_path, qrels_path, len(qrels)


class Clients:
    """`n` keep-alive HTTP clients querying back to back; every answer is timestamped."""

    def __init__(self, api: str, queries: list[str], n: int) -> None:
        self.api, self.queries, self.n = api, queries, n
        self.answers: list[tuple[float, float, int, str | None]] = []  # start, ms, status, id
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)
        ]

    def start(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def _run(self, slot: int) -> None:
        with httpx.Client(base_url=self.api, timeout=60) as http:
            for query in islice(cycle(self.queries), slot, None, self.n):
                if self._stop.is_set():
                    return
                started = time.time()
                t0 = time.perf_counter()
                try:
                    response = http.get("/search", params={"q": query, "k": 10})
                    status = response.status_code
                    index_id = response.json().get("index_id") if status == 200 else None
                except httpx.HTTPError:
                    status, index_id = -1, None
                with self._lock:
                    self.answers.append(
                        (started, (time.perf_counter() - t0) * 1000, status, index_id)
                    )

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def phase(self, name: str, start: float, end: float) -> dict[str, Any]:
        rows = [a for a in self.answers if start <= a[0] < end]
        ms = [a[1] for a in rows if a[2] == 200]
        return {
            "phase": name,
            "seconds": round(end - start, 2),
            "queries": len(rows),
            "errors": sum(1 for a in rows if a[2] != 200),
            "p50_ms": round(percentile(ms, 50), 2),
            "p99_ms": round(percentile(ms, 99), 2),
            "max_ms": round(max(ms), 2) if ms else float("nan"),
            "index_ids": sorted({a[3] for a in rows if a[3]}),
        }


def updater(
    bootstrap: str, topic: str, events: list[UpsertEvent], rate: float, stop: threading.Event
) -> int:
    """Re-publish documents with a higher version and a changed text at `rate` per second."""
    if rate <= 0:
        return 0
    sent = 0
    with Publisher(bootstrap) as publisher:
        for n, event in enumerate(cycle(events)):
            if stop.wait(1.0 / rate):
                break
            changed = UpsertEvent.build(
                event.doc_id, event.title, f"{event.text} (revision {n})", event.version + n + 1
            )
            publisher.publish_docs(topic, [changed])
            sent += 1
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="BEIR dir (corpus, queries, qrels)"
    )
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="msl128")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--updates-per-s", type=float, default=1.0)
    parser.add_argument(
        "--before-s", type=float, default=15.0, help="query-only window before the upgrade"
    )
    parser.add_argument("--after-s", type=float, default=10.0, help="window after the API flipped")
    parser.add_argument("--timeout-s", type=float, default=3600.0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    events = load_events(args.data / "corpus.jsonl", args.docs)
    queries = list(read_queries(args.data / "queries.jsonl").values())
    topics = Settings.from_env()
    load_start = os.getloadavg()
    timeline: dict[str, float] = {}
    states: list[tuple[float, str]] = []
    with tempfile.TemporaryDirectory(prefix="semsearch-migration-bench-") as tmp:
        root = Path(tmp)
        variant = make_variant(root / "models", args.variant)
        query_path, qrels_path, judged = held_out_set(
            args.data, {e.doc_id for e in events}, root / "heldout"
        )
        os.environ.update(
            SEMSEARCH_VALIDATION_QUERIES=str(query_path), SEMSEARCH_VALIDATION_QRELS=str(qrels_path)
        )
        stack = Stack(root / "data", root / "up.log")
        stop_updates = threading.Event()
        clients: Clients | None = None
        try:
            with httpx.Client(base_url=stack.api, timeout=30) as http:
                publish(stack.bootstrap, events)
                seed_s = wait_for_documents(http, len(events), 3600)
                live_id = http.get("/index").json()["index_id"]
                print(
                    f"seeded {len(events)} documents in {seed_s:.1f}s ({live_id})", file=sys.stderr
                )
                clients = Clients(stack.api, queries, args.clients).start()
                timeline["load_start"] = time.time()
                time.sleep(args.before_s)
                updates = threading.Thread(
                    target=updater,
                    args=(
                        stack.bootstrap,
                        topics.docs_topic,
                        events,
                        args.updates_per_s,
                        stop_updates,
                    ),
                )
                updates.start()
                timeline["requested"] = time.time()
                with Publisher(stack.bootstrap) as publisher:
                    publisher.publish_control(
                        topics.control_topic, ModelUpgrade(model=str(variant), reason="bench")
                    )
                status: dict[str, Any] = {}
                while time.time() - timeline["requested"] < args.timeout_s:
                    body = http.get("/index").json()
                    status = body.get("migration") or {}
                    if (
                        status.get("requested_at")
                        and status.get("state")
                        and (not states or states[-1][1] != status["state"])
                    ):
                        states.append((time.time(), status["state"]))
                    if body["index_id"] != live_id and "api_flipped" not in timeline:
                        timeline["api_flipped"] = time.time()
                    if status.get("state") in TERMINAL and (
                        status["state"] != "flipped" or "api_flipped" in timeline
                    ):
                        break
                    time.sleep(0.2)
                timeline["ended"] = time.time()
                time.sleep(args.after_s)
                timeline["load_end"] = time.time()
                stop_updates.set()
                updates.join(30)
                clients.stop()
                final = http.get("/index").json()
        finally:
            stop_updates.set()
            if clients is not None:
                clients.stop()
            exit_code = stack.stop()

    outcome = status.get("outcome", status.get("state", "timeout"))
    stats = status.get("stats") or {}
    first_new = min((a[0] for a in clients.answers if a[3] and a[3] != live_id), default=None)
    flip_at = first_new or timeline.get("api_flipped") or timeline["ended"]
    phases = [
        clients.phase("before upgrade", timeline["load_start"], timeline["requested"]),
        clients.phase("shadow build + gate", timeline["requested"], flip_at - FLIP_WINDOW_S),
        clients.phase(
            f"flip ±{FLIP_WINDOW_S:.0f}s", flip_at - FLIP_WINDOW_S, flip_at + FLIP_WINDOW_S
        ),
        clients.phase("after flip", flip_at + FLIP_WINDOW_S, timeline["load_end"]),
    ]
    state_rows = [
        (name, round((states[i + 1][0] if i + 1 < len(states) else timeline["ended"]) - at, 2))
        for i, (at, name) in enumerate(states)
    ]
    flipped_s = (flip_at - timeline["requested"]) if first_new else None
    print(
        f"\nModel migration all-MiniLM-L6-v2 -> {variant.name} on {len(events)} SciFact docs: {outcome}"
    )
    print(
        f"  wall: request -> API answers with the new id  {flipped_s:.1f}s"
        if flipped_s
        else "  no flip"
    )
    for name, seconds in state_rows:
        print(f"    {name:<14} {seconds:>8.1f}s")
    print(
        f"  re-embed: {stats.get('chunks', '?')} chunks in {stats.get('bootstrap_seconds', '?')}s = "
        f"{stats.get('chunks_per_s', '?')} chunks/s wall "
        f"({stats.get('chunks_embedded', 0) / max(stats.get('embed_seconds') or 1e-9, 1e-9):.1f}/s inside model.encode; "
        f"{stats.get('chunks_cached', 0)} from cache)"
    )
    print(
        f"  gate on {judged} held-out queries: shadow {stats.get('shadow_quality')} vs live {stats.get('live_quality')}"
    )
    print(f"\n  query latency, {args.clients} clients, hybrid, k=10 (client-side, ms)")
    print(f"  {'phase':<22} {'queries':>7} {'err':>4} {'p50':>8} {'p99':>8} {'max':>8}  index ids")
    for p in phases:
        print(
            f"  {p['phase']:<22} {p['queries']:>7} {p['errors']:>4} {p['p50_ms']:>8.1f} {p['p99_ms']:>8.1f} {p['max_ms']:>8.1f}  {', '.join(p['index_ids'])}"
        )
    result = {
        "bench": "migration",
        "command": command("migration", argv),
        "params": vars(args),
        "documents": len(events),
        "held_out_queries": judged,
        "from_index": live_id,
        "to_index": final.get("index_id"),
        "outcome": outcome,
        "wall_s_request_to_api_flip": flipped_s,
        "states_s": dict(state_rows),
        "reembed": {
            k: stats.get(k)
            for k in (
                "documents",
                "chunks",
                "chunks_embedded",
                "chunks_cached",
                "bootstrap_seconds",
                "embed_seconds",
                "chunks_per_s",
            )
        },
        "gate": {k: stats.get(k) for k in ("shadow_quality", "live_quality", "gate_p99_ms")},
        "message": status.get("message"),
        "query_latency": phases,
        "seed_seconds": seed_s,
        "stack_exit_code": exit_code,
        "machine": machine(load_start),
    }
    write_json(args.out, result)
    print(f"\nwrote {args.out}")
    errors = sum(p["errors"] for p in phases)
    return 0 if outcome == "flipped" and errors == 0 and exit_code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
