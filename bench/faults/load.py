"""The load on a fault row's stack: documents produced with per-event delivery tracking (what
the broker acknowledged is what must not be lost) and background queries whose failures count."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx
from confluent_kafka import KafkaError, Message, Producer

from contracts.corpus import SkippedLines
from contracts.events import UpsertEvent, encode_doc_event
from producers.corpus import read_events


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


def stream_for(feed: Feed, docs: Docs, prefix: str, rate: float, seconds: float) -> None:
    """A burst of load with no fault during it; returns once all of it is acknowledged (or
    the flush deadline passed)."""
    stream = Stream(feed, docs, prefix, rate)
    stream.start()
    time.sleep(seconds)
    stream.finish()
    feed.flush()


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

