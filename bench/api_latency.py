"""API benchmark: query latency per mode through HTTP while the indexer ingests, and freshness.

What a user of `semsearch up` gets, measured from outside: the stack runs as its own process
(`semsearch up`, embedded broker + Redis, default settings) and this process is only the client.

1. seed: publish `--seed-docs` SciFact documents and wait until /index counts all of them;
2. idle: for each mode, `--clients` concurrent HTTP clients send SciFact queries for
   `--seconds` (or `--max-queries` in all) → client-side p50/p90/p99, throughput, errors;
3. ingesting: publish `--ingest-docs` more documents, then repeat step 2 while the indexer works
   through that backlog (embedding competes with queries for the same cores: the point);
   each row records how many documents were indexed during its window;
4. freshness: publish one document at a time with a unique token, and poll /search (bm25)
   until it is returned: time from the broker's acknowledgement to visible through the API.

Localhost only, bounded in count and time. Prints a table, writes bench/results/api_latency.json.

    python -m bench.api_latency                     # defaults (~3-4 min on 2 cores)
    python -m bench.api_latency --seed-docs 50 --ingest-docs 100 --seconds 4 --freshness 5
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench._data import DEFAULT_DATA, RESULTS, load_events
from bench._process import stop_process
from bench._stats import percentile
from bench.reporting import command, machine, write_json
from contracts.events import UpsertEvent
from indexer.beir import read_queries
from indexer.fusion import MODES
from producers.publisher import Publisher

DEFAULT_OUT = RESULTS / "api_latency.json"


class Stack:
    """`semsearch up` in a child process; the banner tells where everything listens."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}
        env.update(
            SEMSEARCH_DATA_DIR=str(data_dir),
            SEMSEARCH_API_PORT="0",
            SEMSEARCH_INDEXER_METRICS_PORT="0",
            HF_HUB_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
        )
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "semsearch.cli", "up"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        banner = ""
        deadline = time.monotonic() + 180
        assert self.process.stdout is not None
        while "Ctrl-C stops everything" not in banner:
            line = self.process.stdout.readline()
            if not line or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"semsearch up did not start; see {log_path}")
            banner += line
        self.api = self._find(r"API\s+(http://\S+)", banner)
        self.bootstrap = self._find(r"export KAFKA_BOOTSTRAP_SERVERS=(\S+)", banner)

    @staticmethod
    def _find(pattern: str, text: str) -> str:
        match = re.search(pattern, text)
        if match is None:
            raise RuntimeError(f"no {pattern!r} in the banner of semsearch up:\n{text}")
        return match.group(1)

    def stop(self) -> int:
        code = stop_process(self.process, signal.SIGINT, 180)
        self._log.close()
        return code


def documents(http: httpx.Client) -> int:
    response = http.get("/index")
    return int(response.json()["documents"]) if response.status_code == 200 else 0


def wait_for_documents(http: httpx.Client, count: int, timeout_s: float) -> float:
    started = time.monotonic()
    while documents(http) < count:
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"only {documents(http)} of {count} documents indexed after {timeout_s:.0f}s")
        time.sleep(0.25)
    return time.monotonic() - started


def load_run(api: str, queries: list[str], mode: str, clients: int, seconds: float, max_queries: int) -> dict[str, Any]:
    """`clients` threads, each with its own keep-alive connection, querying until time/count."""
    latencies: list[float] = []
    server_ms: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    issued = iter(range(max_queries))
    deadline = time.monotonic() + seconds

    def client(slot: int) -> None:
        with httpx.Client(base_url=api, timeout=60) as http:
            while time.monotonic() < deadline:
                with lock:
                    n = next(issued, None)
                if n is None:
                    return
                params: dict[str, str | int] = {"q": queries[(n * 7 + slot) % len(queries)], "mode": mode, "k": 10}
                started = time.perf_counter()
                inside = None
                try:
                    response = http.get("/search", params=params)
                    ok = response.status_code == 200
                    problem = "" if ok else f"HTTP {response.status_code}"
                    inside = float(response.json()["took_ms"]) if ok else None
                except httpx.HTTPError as exc:
                    ok, problem = False, type(exc).__name__
                took = time.perf_counter() - started
                with lock:
                    if ok:
                        latencies.append(took)
                        server_ms.append(inside or 0.0)
                    else:
                        errors.append(problem)

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(slot,)) for slot in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    return {
        "mode": mode,
        "queries": len(latencies),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "qps": len(latencies) / wall if wall else 0.0,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p90_ms": percentile(latencies, 90) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else float("nan"),
        "server_p50_ms": percentile(server_ms, 50),
        "server_p99_ms": percentile(server_ms, 99),
        "wall_s": wall,
    }


def publish(bootstrap: str, events: list[UpsertEvent]) -> None:
    """Publish and wait for every ack; the producer is released on return (no stray logs later)."""
    with Publisher(bootstrap) as publisher:
        report = publisher.publish_docs("docs", events)
    if report.failed:
        raise RuntimeError(f"publishing failed: {report.summary()}")


def freshness(api: str, bootstrap: str, trials: int, timeout_s: float = 30.0) -> list[float]:
    """Seconds from the broker's ack of a new document to the API returning it."""
    results = []
    with Publisher(bootstrap) as publisher, httpx.Client(base_url=api, timeout=30) as http:
        for trial in range(trials):
            token = f"fresh{uuid.uuid4().hex[:10]}"
            doc_id = f"fresh-{trial}-{token}"
            event = UpsertEvent.build(
                doc_id=doc_id, title=f"Freshness probe {trial}", text=f"Probe document carrying token {token}.", version=1
            )
            publisher.publish_doc("docs", event)
            publisher.flush()
            acked = time.monotonic()
            while True:
                hits = http.get("/search", params={"q": token, "mode": "bm25", "k": 1}).json().get("results", [])
                if hits and hits[0]["doc_id"] == doc_id:
                    results.append(time.monotonic() - acked)
                    break
                if time.monotonic() - acked > timeout_s:
                    results.append(float("inf"))
                    break
                time.sleep(0.02)
            time.sleep(0.3)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BEIR directory (corpus.jsonl, queries.jsonl)")
    parser.add_argument("--seed-docs", type=int, default=150)
    parser.add_argument("--ingest-docs", type=int, default=400)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0, help="per mode and phase")
    parser.add_argument("--max-queries", type=int, default=2000, help="per mode and phase")
    parser.add_argument("--freshness", type=int, default=10, help="freshness probes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    queries = list(read_queries(args.data / "queries.jsonl").values())
    events = load_events(args.data / "corpus.jsonl", args.seed_docs + args.ingest_docs)
    seed, backlog = events[: args.seed_docs], events[args.seed_docs :]
    load_start = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="semsearch-api-bench-") as tmp:
        stack = Stack(Path(tmp) / "data", Path(tmp) / "up.log")
        try:
            with httpx.Client(base_url=stack.api, timeout=30) as http:
                publish(stack.bootstrap, seed)
                seed_s = wait_for_documents(http, len(seed), 900)
                print(f"seeded {len(seed)} documents in {seed_s:.1f}s", file=sys.stderr)
                for mode in MODES:
                    rows.append({"phase": "idle", **load_run(stack.api, queries, mode, args.clients, args.seconds, args.max_queries)})
                publish(stack.bootstrap, backlog)
                for mode in MODES:
                    before = len(events) - documents(http)
                    row = load_run(stack.api, queries, mode, args.clients, args.seconds, args.max_queries)
                    # Snapshots land per batch, so the backlog drops in steps; a backlog left at the
                    # end of a row means the indexer was busy for all of it.
                    rows.append({"phase": "ingesting", **row, "backlog_start": before, "backlog_end": len(events) - documents(http)})
                drain_s = wait_for_documents(http, len(events), 1800)
                print(f"backlog drained {drain_s:.1f}s after the ingesting phase", file=sys.stderr)
                fresh = freshness(stack.api, stack.bootstrap, args.freshness)
        finally:
            exit_code = stack.stop()

    print(f"HTTP latency with {args.clients} concurrent clients (server = took_ms inside the API)")
    print(
        f"{'phase':<10} {'mode':<7} {'queries':>7} {'err':>4} {'qps':>6} {'p50 ms':>8} {'p90 ms':>8} "
        f"{'p99 ms':>8} {'srv p50':>8} {'srv p99':>8} {'backlog':>11}"
    )
    for row in rows:
        left = f"{row['backlog_start']}->{row['backlog_end']}" if "backlog_start" in row else ""
        print(
            f"{row['phase']:<10} {row['mode']:<7} {row['queries']:>7} {row['errors']:>4} {row['qps']:>6.1f} "
            f"{row['p50_ms']:>8.1f} {row['p90_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['server_p50_ms']:>8.1f} "
            f"{row['server_p99_ms']:>8.1f} {left:>11}"
        )
    finite = [f for f in fresh if f != float("inf")]
    print(
        f"freshness (ack → visible via /search, {len(fresh)} probes): p50 {percentile(finite, 50):.3f}s  "
        f"max {max(fresh):.3f}s  timeouts {len(fresh) - len(finite)}"
    )
    result = {
        "bench": "api_latency",
        "command": command("api_latency", argv),
        "params": vars(args),
        "rows": rows,
        "freshness_s": {"probes": fresh, "p50": percentile(finite, 50), "max": max(fresh), "timeouts": len(fresh) - len(finite)},
        "seed_seconds": seed_s,
        "drain_seconds_after_ingesting_phase": drain_s,
        "stack_exit_code": exit_code,
        "machine": machine(load_start),
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0 if all(r["errors"] == 0 for r in rows) and exit_code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
