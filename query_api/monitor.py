"""The recall monitor: a labelled hold-out set asked of the live API, on a schedule.

The API's own metrics say how fast it answers and how similar the top hits look; only
judged queries say whether the answers are still *right*. So every period the monitor sends
each judged hold-out query to the API through its HTTP client (the path users take, not an
index opened on the side), scores the rankings with indexer.evaluation (the code the migration
gate uses) and exports recall@5, nDCG@10 and the top-hit cosine distribution, labelled with the
index id the API says it served.

The first successful run on an index id is that index's baseline (kept in MonitorState, so a
restart keeps it): a flip to a new index starts a new baseline, a rollback finds the old one.
A run whose answers came from two indexes (a flip mid-run) measured neither and is an error; so
is a run on an index that answers nothing at all (`semsearch up` points at the first, empty
snapshot: a baseline of 0 would make the alert useless), and any failure of the API. Failed runs are counted, logged and retried after
SEMSEARCH_MONITOR_RETRY_S; nothing a run does stops the loop.

Cost per run: one search per judged query, whatever the size of the index.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from contracts.errors import SemsearchError
from indexer.beir import read_qrels, read_queries
from indexer.evaluation import judged_queries, ndcg_at, recall_at
from query_api.client import search_via_api
from query_api.metrics import SIMILARITY_BUCKETS
from query_api.monitor_state import Baseline, MonitorState

log = logging.getLogger(__name__)

# nDCG@10 needs the top 10; recall@5 reads the first 5 of them.
SEARCH_K = 10
OUTCOMES = ("ok", "error")
_READY_POLL_S = 1.0


@dataclass(frozen=True)
class HoldOut:
    """The judged queries of a BEIR queries.jsonl + qrels.tsv pair (unjudged ones are dropped)."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    fingerprint: str

    @classmethod
    def load(cls, queries_path: Path, qrels_path: Path) -> HoldOut:
        """SemsearchError naming the file and the problem; checked before the loop starts."""
        try:
            queries = read_queries(queries_path)
            qrels = read_qrels(qrels_path)
            judged = judged_queries(queries, qrels)
        except UnicodeDecodeError as exc:
            raise SemsearchError(f"{qrels_path} is not UTF-8 text ({exc.reason})") from None
        except ValueError as exc:
            raise SemsearchError(
                f"no query of {queries_path} has a relevant document in {qrels_path} ({exc})"
            ) from None
        digest = hashlib.sha256()
        for qid in judged:
            digest.update(f"{qid}\t{queries[qid]}\n".encode())
            for doc_id, grade in sorted(qrels[qid].items()):
                digest.update(f"\t{doc_id}\t{grade}\n".encode())
        return cls(
            {qid: queries[qid] for qid in judged},
            {qid: qrels[qid] for qid in judged},
            digest.hexdigest()[:16],
        )


@dataclass(frozen=True)
class RunResult:
    index_id: str
    recall_at_5: float
    ndcg_at_10: float
    queries: int
    top_similarities: tuple[float, ...]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "index_id": self.index_id,
            "recall@5": round(self.recall_at_5, 5),
            "ndcg@10": round(self.ndcg_at_10, 5),
            "queries": self.queries,
            "seconds": round(self.seconds, 3),
        }


Search = Callable[[str], dict[str, Any]]


def measure(search: Search, holdout: HoldOut) -> RunResult:
    """One pass over the hold-out set; SemsearchError if the answers came from two indexes."""
    started = time.monotonic()
    served: set[str] = set()
    recall = ndcg = 0.0
    similarities: list[float] = []
    any_results = False
    for qid, text in holdout.queries.items():
        answer = search(text)
        served.add(str(answer["index_id"]))
        results = answer["results"]
        any_results = any_results or bool(results)
        ranked = [str(hit["doc_id"]) for hit in results]
        recall += recall_at(ranked, holdout.qrels[qid], 5)
        ndcg += ndcg_at(ranked, holdout.qrels[qid], 10)
        if results and results[0].get("similarity") is not None:
            similarities.append(float(results[0]["similarity"]))
    if len(served) > 1:
        raise SemsearchError(
            f"the API flipped during the run (answers from {', '.join(sorted(served))}); "
            "the next run measures the new index"
        )
    n = len(holdout.queries)
    if not any_results:
        raise SemsearchError(
            f"index {served.pop()} returned no result for any of the {n} hold-out queries: it is "
            "empty (still being built?), which is not measured and never becomes a baseline"
        )
    return RunResult(
        served.pop(), recall / n, ndcg / n, n, tuple(similarities), time.monotonic() - started
    )


class MonitorMetrics:
    """The monitor's own registry: `semsearch up` runs it beside the indexer's default one."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.recall = Gauge(
            "semsearch_monitor_recall_at_5",
            "Mean recall@5 of the hold-out queries in the last run, by index the API served",
            ["index_id"],
            registry=r,
        )
        self.ndcg = Gauge(
            "semsearch_monitor_ndcg_at_10",
            "Mean nDCG@10 of the hold-out queries in the last run, by index the API served",
            ["index_id"],
            registry=r,
        )
        self.recall_baseline = Gauge(
            "semsearch_monitor_recall_at_5_baseline",
            "recall@5 of the first run on this index (its baseline)",
            ["index_id"],
            registry=r,
        )
        self.ndcg_baseline = Gauge(
            "semsearch_monitor_ndcg_at_10_baseline",
            "nDCG@10 of the first run on this index (its baseline)",
            ["index_id"],
            registry=r,
        )
        self.queries = Gauge(
            "semsearch_monitor_queries",
            "Judged hold-out queries the last run asked",
            ["index_id"],
            registry=r,
        )
        self.top_similarity = Histogram(
            "semsearch_monitor_top_similarity",
            "Cosine similarity of the top hit of each hold-out query (vector and hybrid modes)",
            ["index_id"],
            buckets=SIMILARITY_BUCKETS,
            registry=r,
        )
        self.runs = Counter(
            "semsearch_monitor_runs", "Monitor runs, by outcome (ok | error)", ["outcome"], registry=r
        )
        for outcome in OUTCOMES:
            self.runs.labels(outcome)
        self.run_seconds = Gauge(
            "semsearch_monitor_run_seconds", "Duration of the last successful run", registry=r
        )
        self.last_success = Gauge(
            "semsearch_monitor_last_success_timestamp_seconds",
            "Unix time of the last successful run (kept across restarts; 0 = never)",
            registry=r,
        )
        self.started = Gauge(
            "semsearch_monitor_started_timestamp_seconds",
            "Unix time the monitor started: the staleness clock of a monitor that never succeeded",
            registry=r,
        )
        self.period = Gauge(
            "semsearch_monitor_period_seconds", "Seconds between two scheduled runs", registry=r
        )


class Monitor:
    def __init__(
        self,
        holdout: HoldOut,
        api_url: str,
        state: MonitorState,
        *,
        period_s: float,
        retry_s: float,
        mode: str = "hybrid",
        timeout_s: float = 30.0,
    ) -> None:
        self.holdout = holdout
        self.api_url = api_url
        self.state = state
        self.period_s = period_s
        self.retry_s = min(retry_s, period_s)
        self.mode = mode
        self.timeout_s = timeout_s
        self.metrics = MonitorMetrics()
        self.last_error: str | None = None
        self._current: str | None = None
        self.metrics.period.set(period_s)
        self.metrics.started.set(time.time())
        if state.last_success is not None:
            self.metrics.last_success.set(state.last_success)

    @property
    def registry(self) -> CollectorRegistry:
        return self.metrics.registry

    def _search(self, text: str) -> dict[str, Any]:
        return search_via_api(self.api_url, text, SEARCH_K, self.mode, timeout_s=self.timeout_s)

    def run_once(self) -> RunResult | None:
        """One run; its outcome is counted and exported. None (and `last_error`) if it failed."""
        try:
            result = measure(self._search, self.holdout)
        except Exception as exc:  # a failed run must never stop the loop
            self.last_error = str(exc) if isinstance(exc, SemsearchError) else repr(exc)
            self.metrics.runs.labels("error").inc()
            log.warning("monitor run against %s failed: %s", self.api_url, self.last_error)
            return None
        self.last_error = None
        baseline = self.state.baseline(result.index_id)
        if baseline is None:
            baseline = Baseline(
                recall_at_5=result.recall_at_5,
                ndcg_at_10=result.ndcg_at_10,
                queries=result.queries,
                measured_at=time.time(),
            )
            self.state.set_baseline(result.index_id, baseline)
            log.info("first run on index %s: it is the baseline", result.index_id)
        now = time.time()
        self.state.record_success(now)
        self._export(result, baseline, now)
        log.info(
            "monitor: index %s recall@5=%.4f (baseline %.4f) nDCG@10=%.4f (baseline %.4f), %d queries in %.1fs",
            result.index_id,
            result.recall_at_5,
            baseline.recall_at_5,
            result.ndcg_at_10,
            baseline.ndcg_at_10,
            result.queries,
            result.seconds,
        )
        return result

    def _export(self, result: RunResult, baseline: Baseline, now: float) -> None:
        m = self.metrics
        index_id = result.index_id
        if self._current is not None and self._current != index_id:
            # Only the served index has current values; the old one's histogram stays (counts).
            for gauge in (m.recall, m.ndcg, m.recall_baseline, m.ndcg_baseline, m.queries):
                gauge.remove(self._current)
        self._current = index_id
        m.recall.labels(index_id).set(result.recall_at_5)
        m.ndcg.labels(index_id).set(result.ndcg_at_10)
        m.recall_baseline.labels(index_id).set(baseline.recall_at_5)
        m.ndcg_baseline.labels(index_id).set(baseline.ndcg_at_10)
        m.queries.labels(index_id).set(result.queries)
        histogram = m.top_similarity.labels(index_id)
        for similarity in result.top_similarities:
            histogram.observe(similarity)
        m.run_seconds.set(result.seconds)
        m.runs.labels("ok").inc()
        m.last_success.set(now)

    def run_forever(self, stop: threading.Event, *, wait_ready: bool = False) -> None:
        """Run now, then every period (after a failure: after the retry interval) until `stop`.

        `wait_ready`: first wait for the API's /readyz (`semsearch up` starts the monitor with
        the API, before any index exists; a run then would only be a failure to retry later).
        """
        if wait_ready:
            self._wait_ready(stop)
        while not stop.is_set():
            ok = self.run_once() is not None
            stop.wait(self.period_s if ok else self.retry_s)

    def _wait_ready(self, stop: threading.Event) -> None:
        url = self.api_url.rstrip("/") + "/readyz"
        while not stop.is_set():
            try:
                if httpx.get(url, timeout=self.timeout_s).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            stop.wait(_READY_POLL_S)

    def serve_metrics(self, port: int, host: str) -> Any:
        """Start /metrics on `port` (0 = any free one); returns the server (shutdown() stops it)."""
        try:
            server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise SemsearchError(
                f"cannot serve the monitor's metrics on {host}:{port} ({exc.strerror}); "
                "choose another with --port or SEMSEARCH_MONITOR_PORT (0 = none)"
            ) from None
        log.info("monitor metrics on http://%s:%d/metrics", host, server.server_port)
        return server
