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

    python -m bench.faults                          # all rows, ~10-15 min on 2 cores
    python -m bench.faults --only poison_storm --quick
    python -m bench.faults --only indexer_kill,disk_full --json /tmp/faults.json
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from bench.core import print_table
from bench.crash_loop import wait_for_log
from bench.ingest import chunk_texts
from indexer.model import EmbeddingModel, load_model
from indexer.snapshots import SnapshotStore, index_dir
from producers.corpus import SkippedLines, read_events
from semsearch.embedded.broker import EmbeddedBroker, ensure_topics, free_port
from semsearch.embedded.redis import EmbeddedRedis, start_embedded_redis
from semsearch.events import UpsertEvent, encode_doc_event
from semsearch.settings import Settings
from semsearch.stack import set_pointer_when_indexed

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "scifact"
DEFAULT_OUT = REPO / "bench" / "results" / "faults.json"
SEMSEARCH = REPO / ".venv" / "bin" / "semsearch"
TOPICS = {"docs": 3, "control": 1, "docs.dlq": 1}
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


# -- cleanup: every process, broker, Redis and mount this run made ------------------------------
class Cleanup:
    """Undo everything on any exit (atexit covers an uncaught exception and SIGTERM via main)."""

    def __init__(self) -> None:
        self.actions: list[Callable[[], None]] = []

    def add(self, action: Callable[[], None]) -> Callable[[], None]:
        self.actions.append(action)
        return action

    def discard(self, action: Callable[[], None]) -> None:
        if action in self.actions:
            self.actions.remove(action)

    def run(self) -> None:
        while self.actions:
            action = self.actions.pop()
            try:
                action()
            except Exception as exc:  # cleanup goes on with the rest
                print(f"cleanup: {exc}", file=sys.stderr)


CLEANUP = Cleanup()
atexit.register(CLEANUP.run)


def kill_group(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Signal the child's whole process group (it was started in its own session)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return


def stop_group(process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> int | None:
    """SIGTERM, then SIGKILL after `timeout_s`; returns the exit status."""
    kill_group(process, signal.SIGTERM)
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(process)
        return process.wait(30)


def wait_until(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


# -- documents ----------------------------------------------------------------------------------
class Docs:
    """Short documents (a sentence + a unique token) built from SciFact titles and abstracts."""

    def __init__(self, corpus: Path, count: int = 3000) -> None:
        self.sentences: list[tuple[str, str]] = []
        for event in read_events(corpus, SkippedLines()):
            first = event.text.split(". ")[0][:200]
            self.sentences.append((event.title[:150], first))
            if len(self.sentences) == count:
                break
        self.words = sorted({w.lower() for t, _ in self.sentences for w in t.split() if w.isalpha() and len(w) > 5})

    def make(self, doc_id: str, n: int, version: int) -> UpsertEvent:
        title, sentence = self.sentences[n % len(self.sentences)]
        token = "zq" + doc_id.replace("-", "").replace("_", "")
        return UpsertEvent(doc_id, version, title, f"{sentence}. Version {version} {token}.", {"v": version})


# -- producing with per-event acknowledgement ---------------------------------------------------
class Acks:
    """What the broker confirmed: the newest acknowledged version of every doc id."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.failed = 0
        self.newest: dict[str, int] = {}
        self.errors: list[str] = []

    def record(self, doc_id: str, version: int | None, error: KafkaError | None) -> None:
        with self.lock:
            if error is not None:
                self.failed += 1
                if len(self.errors) < 5:
                    self.errors.append(f"{doc_id}: {error.str()}")
                return
            self.count += 1
            if version is not None and version > self.newest.get(doc_id, -1):
                self.newest[doc_id] = version

    def expected(self) -> dict[str, int]:
        with self.lock:
            return dict(self.newest)


class Feed:
    """An idempotent producer like producers.publisher.Publisher, but recording which event
    (doc id, version) each delivery report confirms: 'acknowledged' is counted per event."""

    def __init__(self, bootstrap: str, acks: Acks, delivery_timeout_ms: int = 120_000) -> None:
        self.acks = acks
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "delivery.timeout.ms": delivery_timeout_ms,
                "message.max.bytes": 4_000_000,
            }
        )

    def upsert(self, topic: str, event: UpsertEvent) -> None:
        key, value = encode_doc_event(event)
        self.raw(topic, key, value, event.doc_id, event.version)

    def raw(self, topic: str, key: bytes | None, value: bytes | None, doc_id: str, version: int | None) -> None:
        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            self.acks.record(doc_id, version, error)

        while True:
            try:
                self.producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                self.producer.poll(0.1)
        self.producer.poll(0)

    def flush(self, timeout_s: float = 150.0) -> int:
        """Returns how many events are still unconfirmed after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        pending = self.producer.flush(0)
        while pending and time.monotonic() < deadline:
            pending = self.producer.flush(min(1.0, deadline - time.monotonic()))
        return int(pending)


class Stream(threading.Thread):
    """Produces new documents and updates of earlier ones at a steady rate until stopped."""

    def __init__(self, feed: Feed, docs: Docs, prefix: str, rate: float, max_docs: int = 300) -> None:
        super().__init__(daemon=True, name=f"stream-{prefix}")
        self.feed, self.docs, self.prefix, self.rate = feed, docs, prefix, rate
        self.max_docs = max_docs  # then only updates: a few hundred documents per row
        self.n = 0
        self.versions: dict[str, int] = {}
        self.stop_event = threading.Event()
        self.rng = random.Random(prefix)

    def run(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            if self.versions and (self.n >= self.max_docs or self.rng.random() < 0.3):
                # an update: replaces the document's chunks
                doc_id = self.rng.choice(list(self.versions))
                self.versions[doc_id] += 1
            else:
                doc_id = f"{self.prefix}-{self.n}"
                self.n += 1
                self.versions[doc_id] = 1
            number = int(doc_id.rsplit("-", 1)[1])
            self.feed.upsert("docs", self.docs.make(doc_id, number, self.versions[doc_id]))
            next_at += interval
            self.stop_event.wait(max(0.0, next_at - time.monotonic()))

    def finish(self) -> None:
        self.stop_event.set()
        self.join(30)


# -- queries throughout -------------------------------------------------------------------------
class QueryLoad(threading.Thread):
    """Background searches against whichever API is current; failures are counted per row."""

    def __init__(self, words: list[str], rate: float = 4.0) -> None:
        super().__init__(daemon=True, name="queries")
        self.words = words
        self.rate = rate
        self.url: str | None = None
        self.paused = threading.Event()
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        self.last_errors: list[str] = []
        self.rng = random.Random(11)

    def reset(self) -> tuple[int, int, list[str]]:
        with self.lock:
            out = (self.sent, self.failed, self.last_errors)
            self.sent, self.failed, self.last_errors = 0, 0, []
            return out

    def run(self) -> None:
        with httpx.Client(timeout=10.0) as client:
            while not self.stop_event.wait(1.0 / self.rate):
                url = self.url
                if url is None or self.paused.is_set():
                    continue
                mode = "hybrid" if self.rng.random() < 0.1 else "bm25"
                q = " ".join(self.rng.sample(self.words, 2))
                error = None
                try:
                    response = client.get(f"{url}/search", params={"q": q, "k": 5, "mode": mode})
                    if response.status_code >= 300:
                        error = f"{response.status_code} {response.text[:120]}"
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                if self.paused.is_set():
                    continue  # the harness restarted the API meanwhile on purpose
                with self.lock:
                    self.sent += 1
                    if error is not None:
                        self.failed += 1
                        if len(self.last_errors) < 5:
                            self.last_errors.append(error)


# -- one stack ----------------------------------------------------------------------------------
class Stack:
    """Broker and Redis owned by this process; indexer and API as killable child processes."""

    def __init__(self, work: Path, data_dir: Path, model: EmbeddingModel, env: dict[str, str] | None = None) -> None:
        self.work = work
        self.data_dir = data_dir
        self.model = model
        self.settings = Settings(data_dir=data_dir)
        self.store = SnapshotStore(index_dir(self.settings, model.index_id))
        self.extra_env = env or {}
        self.broker: EmbeddedBroker | None = None
        self.redis: EmbeddedRedis | None = None
        self.indexer: subprocess.Popen[bytes] | None = None
        self.api: subprocess.Popen[bytes] | None = None
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.http = httpx.Client(timeout=10.0)
        self.indexer_log = work / "indexer.log"
        self.api_log = work / "api.log"
        self.indexer_restarts = 0
        self.indexer_mark = 0  # log size when the current indexer started
        self.confirmed: dict[str, int] = {}  # doc id -> version seen served (wait_served)

    # -- parts ---------------------------------------------------------------------------
    def start_broker(self, port: int = 0) -> EmbeddedBroker:
        broker = EmbeddedBroker(port=port, log_path=self.work / "tansu.log").start()
        CLEANUP.add(broker.stop)
        ensure_topics(broker.bootstrap, TOPICS)
        self.broker = broker
        return broker

    def start_redis(self) -> EmbeddedRedis:
        self.redis = start_embedded_redis(self.work / "redis")
        CLEANUP.add(self.redis.stop)
        return self.redis

    @property
    def bootstrap(self) -> str:
        assert self.broker is not None
        return self.broker.bootstrap

    def env(self) -> dict[str, str]:
        assert self.redis is not None
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SEMSEARCH_", "KAFKA_", "REDIS_"))},
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "REDIS_URL": self.redis.url,
            "SEMSEARCH_DATA_DIR": str(self.data_dir),
            "SEMSEARCH_API_HOST": "127.0.0.1",
            "SEMSEARCH_API_PORT": str(self.api_port),
            "SEMSEARCH_INDEXER_METRICS_PORT": "0",
            "SEMSEARCH_SNAPSHOT_INTERVAL_MS": "200",
            "SEMSEARCH_KAFKA_SESSION_TIMEOUT_MS": "3000",
            "SEMSEARCH_KAFKA_HEARTBEAT_MS": "1000",
            "SEMSEARCH_REFRESH_MS": "200",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            **self.extra_env,
        }

    def spawn(self, command: str, log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        argv = [str(SEMSEARCH), command] if SEMSEARCH.exists() else [sys.executable, "-m", "semsearch.cli", command]
        with log_path.open("ab") as log:
            log.write(f"\n==== {time.strftime('%H:%M:%S')} start {command}\n".encode())
            log.flush()
            process = subprocess.Popen(
                argv, env=env or self.env(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
            )
        def reap() -> None:
            kill_group(process)
            process.wait(30)

        CLEANUP.add(reap)
        return process

    def start_indexer(self) -> subprocess.Popen[bytes]:
        self.indexer_mark = self.indexer_log.stat().st_size if self.indexer_log.exists() else 0
        self.indexer = self.spawn("index", self.indexer_log)
        return self.indexer

    def indexer_alive(self) -> bool:
        return self.indexer is not None and self.indexer.poll() is None

    def ensure_indexer(self, notes: list[str], why: str) -> None:
        """Restart a dead indexer (noted: the row's expectation was that it survives)."""
        if self.indexer is not None and self.indexer.poll() is not None:
            notes.append(
                f"indexer exited rc={self.indexer.returncode} {why} ({self.last_error()}); restarted by the harness"
            )
            self.indexer_restarts += 1
            self.start_indexer()

    def last_error(self) -> str:
        """The last exception or error line the current indexer logged."""
        text = self.indexer_log.read_text(errors="replace")[self.indexer_mark :]
        lines = [ln for ln in text.splitlines() if "Error" in ln or " ERROR " in ln or "error:" in ln]
        return lines[-1].strip()[-200:] if lines else "no error logged"

    def kill_indexer(self) -> None:
        if self.indexer is not None:
            kill_group(self.indexer)
            self.indexer.wait(30)

    def start_api(self, timeout_s: float = 180.0) -> bool:
        self.api = self.spawn("serve", self.api_log)
        return wait_until(self.api_ready, timeout_s, 0.2)

    def api_ready(self) -> bool:
        try:
            return self.http.get(f"{self.api_url}/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def restart_api(self, queries: QueryLoad, timeout_s: float = 180.0) -> bool:
        queries.paused.set()
        try:
            if self.api is not None:
                stop_group(self.api, 30)
            return self.start_api(timeout_s)
        finally:
            queries.paused.clear()

    def set_pointer(self, timeout_s: float = 180.0) -> bool:
        """What `semsearch up` does: name the index active once its first snapshot exists."""
        assert self.redis is not None
        settings = self.settings.with_overrides(redis_url=self.redis.url)
        stop = threading.Event()
        timer = threading.Timer(timeout_s, stop.set)
        timer.start()
        try:
            set_pointer_when_indexed(settings, self.model.index_id, stop)
        finally:
            timer.cancel()
        return not stop.is_set()

    def up(self, queries: QueryLoad, feed_acks: Acks) -> Feed:
        """Broker, Redis, indexer; a first document indexed; pointer; API ready."""
        self.start_broker()
        self.start_redis()
        self.start_indexer()
        feed = Feed(self.bootstrap, feed_acks)
        feed.upsert("docs", UpsertEvent("warmup-0", 1, "Warm-up", "Warm-up document zqwarmup.", {}))
        feed.flush(30)
        if not self.set_pointer():
            raise RuntimeError(f"no first snapshot within 180 s; see {self.indexer_log}")
        if not self.start_api():
            raise RuntimeError(f"the API was not ready within 180 s; see {self.api_log}")
        queries.url = self.api_url
        return feed

    def down(self, queries: QueryLoad) -> None:
        queries.url = None
        for process in (self.indexer, self.api):
            if process is not None:
                stop_group(process, 60)
        if self.broker is not None:
            if self.broker.process is not None:
                kill_group_broker(self.broker)
            self.broker.stop()
        if self.redis is not None:
            self.redis.stop()
        self.http.close()

    # -- observation -----------------------------------------------------------------------
    def served_version(self, doc_id: str) -> int | None:
        try:
            response = self.http.get(f"{self.api_url}/documents/{doc_id}")
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        return int(response.json()["version"])

    def unserved(self, expected: dict[str, int], doc_ids: Iterable[str] | None = None) -> list[str]:
        return [d for d in (expected if doc_ids is None else doc_ids) if self.served_version(d) != expected[d]]

    def wait_served(self, acks: Acks, timeout_s: float, notes: list[str] | None = None) -> tuple[float | None, list[str]]:
        """Seconds until every acknowledged upsert is served at its newest version (None: not
        within `timeout_s`), and what is still missing then. Restarts a dead indexer."""
        started = time.monotonic()
        deadline = started + timeout_s
        while True:
            expected = acks.expected()
            check = [d for d, v in expected.items() if self.confirmed.get(d) != v]
            pending = self.unserved(expected, check)
            missing = set(pending)
            self.confirmed.update({d: expected[d] for d in check if d not in missing})
            if not pending:
                return time.monotonic() - started, []
            if time.monotonic() >= deadline:
                return None, pending
            if notes is not None:
                self.ensure_indexer(notes, "while catching up")
            time.sleep(0.3)

    def final_state(self) -> dict[str, Any]:
        """Duplicated chunks etc. from the newest loadable generation, read-only."""
        try:
            index, manifest = self.store.load(self.model, self.settings, fallback=True)
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        surplus = 0
        twice_in_doc = 0
        owners: dict[int, int] = {}
        for record in index.documents:
            clean = chunk_texts(
                self.model,
                self.settings,
                [UpsertEvent(record.doc_id, record.version, record.title, record.text, record.metadata)],
            )
            surplus += max(0, len(record.chunks) - len(clean))
            texts = [record.chunk_text(c) for c in record.chunks]
            twice_in_doc += len(texts) - len(set(texts)) - (len(clean) - len(set(clean)))
            for chunk in record.chunks:
                owners[chunk.chunk_id] = owners.get(chunk.chunk_id, 0) + 1
        shared_ids = sum(n - 1 for n in owners.values() if n > 1)
        live = len(owners)
        return {
            "generation": manifest.generation,
            "documents": len(index.documents),
            "chunks": index.count().chunks,
            "surplus_chunks": surplus,
            "same_text_twice_in_doc": max(0, twice_in_doc),
            "chunk_ids_owned_twice": shared_ids,
            "vectors": len(index.vectors),
            "vectors_minus_chunks": len(index.vectors) - live,
            "duplicated": surplus + max(0, twice_in_doc) + shared_ids,
        }

    def generations_state(self) -> str:
        return ", ".join(
            f"{g}:{'ok' if _manifest_ok(self.store, g) else 'BAD'}" for g in self.store.generations()[-4:]
        )


def kill_group_broker(broker: EmbeddedBroker) -> None:
    """A SIGSTOPped broker ignores SIGINT until continued."""
    if broker.process is not None and broker.process.poll() is None:
        os.kill(broker.process.pid, signal.SIGCONT)


def _manifest_ok(store: SnapshotStore, generation: int) -> bool:
    try:
        store.read_manifest(generation)
        return True
    except Exception:
        return False


# -- rows ---------------------------------------------------------------------------------------
@dataclass
class Row:
    fault: str
    acknowledged: int = 0
    lost: int | None = None
    duplicated_chunks: int | None = None
    failed_queries: int = 0
    queries: int = 0
    recover_s: float | None = None
    passed: bool = False
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def cells(self) -> list[Any]:
        recover = "-" if self.recover_s is None else f"{self.recover_s:.1f}"
        return [
            self.fault,
            self.acknowledged,
            "?" if self.lost is None else self.lost,
            "?" if self.duplicated_chunks is None else self.duplicated_chunks,
            f"{self.failed_queries}/{self.queries}",
            recover,
            "PASS" if self.passed else "FAIL",
        ]


@dataclass
class Context:
    model: EmbeddingModel
    docs: Docs
    queries: QueryLoad
    work: Path
    quick: bool
    rng: random.Random

    def scale(self, full: float, quick: float) -> float:
        return quick if self.quick else full


def finish_row(row: Row, stack: Stack, acks: Acks, catch_up_s: float, fault_end: float | None) -> None:
    """Common end of a row: wait until everything acknowledged is served, then measure."""
    waited, pending = stack.wait_served(acks, catch_up_s, row.notes)
    if waited is not None and fault_end is not None:
        row.recover_s = round(time.monotonic() - fault_end, 1)
    elif waited is None:
        row.notes.append(f"{len(pending)} acknowledged docs not served after {catch_up_s:.0f} s, e.g. {pending[:3]}")
    expected = acks.expected()
    row.acknowledged = acks.count
    row.lost = len(stack.unserved(expected))
    if acks.failed:
        row.notes.append(f"{acks.failed} produce attempts not acknowledged ({acks.errors[:2]})")
    state = stack.final_state()
    row.details["final_index"] = state
    row.duplicated_chunks = state.get("duplicated")
    if "error" in state:
        row.notes.append(f"final snapshot not loadable: {state['error']}")
    row.details["generations"] = stack.generations_state()
    row.details["indexer_restarts_by_harness"] = stack.indexer_restarts


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
    old = Stream(feed, ctx.docs, "o", rate=20)
    old.start()
    time.sleep(ctx.scale(6, 3))
    old.finish()
    feed.flush()
    # Whatever of the old broker's log is not yet indexed when it goes is lost by design.
    time.sleep(0.5)
    old_expected = acks.expected()
    not_indexed = set(stack.unserved(old_expected))
    assert stack.broker is not None
    port = stack.broker.port
    stack.broker.stop()
    stack.start_broker(port)  # same address, new cluster id, empty log
    fault_end = time.monotonic()
    new_acks = Acks()
    new_feed = Feed(stack.bootstrap, new_acks)
    new = Stream(new_feed, ctx.docs, "n", rate=20)
    new.start()
    time.sleep(ctx.scale(8, 4))
    new.finish()
    new_feed.flush()
    row.details["old_broker_acknowledged"] = acks.count
    row.details["old_not_indexed_at_swap_lost_by_design"] = len(not_indexed)
    row.notes.append(f"{len(not_indexed)} of {acks.count} old-broker events not indexed at the swap (lost by design)")
    finish_row(row, stack, new_acks, ctx.scale(120, 60), fault_end)
    # Old documents already indexed must still be served.
    indexed_old = {d: v for d, v in old_expected.items() if d not in not_indexed}
    regressed = stack.unserved(indexed_old)
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
    from semsearch.pointer import Pointer

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


def row_truncated_manifest(ctx: Context, stack: Stack, acks: Acks, feed: Feed, row: Row) -> None:
    stream = Stream(feed, ctx.docs, "t", rate=15)
    stream.start()
    time.sleep(ctx.scale(6, 4))
    stream.finish()
    feed.flush()
    stack.wait_served(acks, 60)
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
    more = Stream(feed, ctx.docs, "u", rate=15)
    more.start()
    time.sleep(ctx.scale(5, 3))
    more.finish()
    feed.flush()
    finish_row(row, stack, acks, ctx.scale(120, 60), fault_end)
    row.passed = (
        row.lost == 0 and row.duplicated_chunks == 0 and row.failed_queries == 0 and restarted
        and stack.indexer_restarts == 0 and ok_running
    )


def row_segment_bitflip(ctx: Context, stack: Stack, acks: Acks, feed: Feed, row: Row) -> None:
    for n in range(int(ctx.scale(300, 160))):
        feed.upsert("docs", ctx.docs.make(f"b-{n}", n, 1))
    feed.flush()
    stack.wait_served(acks, 180)
    has_sealed = wait_until(lambda: _latest_segments(stack.store) != [], 30, 0.2)
    rc = stop_group(stack.indexer, 60) if stack.indexer else None
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
    row.lost = len(stack.unserved(acks.expected())) if api_ok else row.lost
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
    stack.wait_served(acks, 120)
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
        waited, _ = stack.wait_served(acks, ctx.scale(300, 120), row.notes)
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
    indexed_kinds = [bad[n][2] for n in range(len(bad)) if stack.served_version(f"bad-{n}") is not None]
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


RowFn = Callable[[Context, Stack, Acks, Feed, Row], None]
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


def mount_tmpfs(directory: Path, size_mb: int) -> str | None:
    """Mount a small tmpfs; returns why not when the kernel or our rights refuse."""
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}M", "tmpfs", str(directory)], capture_output=True, text=True
    )
    if done.returncode != 0:
        return (done.stderr or done.stdout).strip() or f"mount exited {done.returncode}"
    def unmount() -> None:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)

    CLEANUP.add(unmount)
    return None


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=DEFAULT_OUT, help=f"result file (default {DEFAULT_OUT})")
    parser.add_argument("--only", help=f"comma-separated rows: {', '.join(ROWS)}")
    parser.add_argument("--quick", action="store_true", help="fewer kills, shorter waits, 50+50 poison storm")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DATA)
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

    print_table(
        "faults" + (" (--quick)" if args.quick else ""),
        ["fault", "events acknowledged", "lost", "duplicated chunks", "failed queries", "seconds to recover", "verdict"],
        [r.cells() for r in rows],
    )
    payload = {
        "command": " ".join(["python -m bench.faults", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "rows": {name: asdict(row) for name, row in zip(names, rows, strict=False)},
        "passed": all(r.passed for r in rows),
        "work_dir": str(work),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2, default=str))
    print(f"\nwrote {args.json}; logs in {work}")
    return 0 if payload["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
