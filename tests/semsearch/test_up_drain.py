"""`semsearch up` keeps what its memory-only broker acknowledged, and survives indexer failures.

Real processes only: `semsearch up` as a subprocess (embedded Tansu + embedded Redis), a real
producer, and a real fault (the index's `segments/` directory replaced by a file, so every
snapshot write fails the way a broken disk would).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from contracts.events import UpsertEvent
from indexer.model import EmbeddingModel
from producers.publisher import Publisher
from semsearch.embedded.broker import free_port

TOPICS = ("alpine glaciers", "tidal energy", "sourdough bread", "honeybee colonies", "river deltas")


@dataclass
class Up:
    process: subprocess.Popen[str]
    api: str
    bootstrap: str
    log: Path

    def tail(self) -> str:
        return self.log.read_text()[-4000:]


def _env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}
    env.update(
        SEMSEARCH_DATA_DIR=str(data),
        SEMSEARCH_API_PORT="0",
        SEMSEARCH_INDEXER_METRICS_PORT="0",
        HF_HUB_OFFLINE="1",
    )
    env.update(extra)
    return env


@contextmanager
def semsearch_up(data: Path, log: Path, **env: str) -> Iterator[Up]:
    """Start `semsearch up`, yield once its banner is printed; SIGINT and wait on exit."""
    with log.open("a") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "semsearch.cli", "up"],
            env=_env(data, **env),
            stdout=subprocess.PIPE,
            stderr=handle,
            text=True,
        )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while not lines or "Ctrl-C stops everything" not in lines[-1]:
            line = process.stdout.readline()
            assert line, f"up exited early: {log.read_text()[-3000:]}"
            lines.append(line)
            assert time.monotonic() < deadline, "no banner within 120 s"
        text = "".join(lines)
        api = re.search(r"API\s+(http://\S+)", text).group(1)  # type: ignore[union-attr]
        bootstrap = re.search(r"export KAFKA_BOOTSTRAP_SERVERS=(\S+)", text).group(1)  # type: ignore[union-attr]
        yield Up(process, api, bootstrap, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(300)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)


def _wait(condition: str, check: object, timeout_s: float, up: Up) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert up.process.poll() is None, f"up exited while waiting for {condition}: {up.tail()}"
        assert time.monotonic() < deadline, f"{condition} not within {timeout_s:.0f}s: {up.tail()}"
        threading.Event().wait(0.1)


def _documents(http: httpx.Client) -> int:
    response = http.get("/index")
    return int(response.json()["documents"]) if response.status_code == 200 else -1


def _doc(i: int) -> UpsertEvent:
    topic = TOPICS[i % len(TOPICS)]
    text = f"Note {i} on {topic}: observation number {i} about {topic} recorded during the survey."
    return UpsertEvent.build(doc_id=f"d{i:03d}", title=f"{topic} {i}", text=text, version=1)


def test_a_clean_stop_drains_every_acknowledged_event_into_the_index(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "up.log"
    total = 40
    # Batches of 4: at the SIGINT at most one batch is in flight, the rest must be drained.
    with semsearch_up(data, log, SEMSEARCH_BATCH_MAX_EVENTS="4") as up:
        with Publisher(up.bootstrap) as publisher:
            report = publisher.publish_docs("docs", [_doc(i) for i in range(total)])
        assert report.delivered == total and report.failed == 0
        up.process.send_signal(signal.SIGINT)  # right after the broker acknowledged them
        code = up.process.wait(300)
    assert code == 0, log.read_text()[-3000:]
    text = log.read_text()
    drained = re.search(r"draining (\d+) event\(s\) of docs", text)
    assert drained and int(drained.group(1)) > 0, f"the stop had nothing to drain: {text[-3000:]}"
    assert re.search(r"drained \d+ event\(s\)", text), text[-3000:]
    assert "NOT indexed" not in text

    # The broker (and its log) are gone; the index alone must hold every acknowledged document.
    with semsearch_up(data, tmp_path / "up2.log") as up2, httpx.Client(base_url=up2.api, timeout=30) as http:
        _wait("the index being served", lambda: _documents(http) >= 0, 120, up2)
        assert _documents(http) == total, http.get("/index").json()
        for i in (0, 17, total - 1):
            hits = http.get("/search", params={"q": f"Note {i} observation number {i}", "k": 40, "mode": "bm25"})
            assert hits.status_code == 200, hits.text
            assert f"d{i:03d}" in [r["doc_id"] for r in hits.json()["results"]]


def test_an_indexer_failure_restarts_the_indexer_and_keeps_the_api_up(tmp_path: Path, model: EmbeddingModel) -> None:
    data, log = tmp_path / "data", tmp_path / "up.log"
    # The fault: `segments/` of the index is a file, so writing its first generation fails
    # (FileExistsError, as a broken disk or a botched restore would) and the indexer raises.
    segments = data / "indexes" / model.index_id / "segments"
    segments.parent.mkdir(parents=True)
    segments.write_text("not a directory")
    metrics_port = free_port()

    def metrics() -> str:
        return httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text

    with (
        semsearch_up(data, log, SEMSEARCH_INDEXER_METRICS_PORT=str(metrics_port)) as up,
        httpx.Client(base_url=up.api, timeout=30) as http,
        Publisher(up.bootstrap) as publisher,
    ):
        _wait("the indexer failure in the log", lambda: "the indexer failed (restart 1)" in log.read_text(), 120, up)
        assert "File exists" in log.read_text()
        # The API answers (not ready: nothing to serve yet) and the broker takes events.
        assert http.get("/healthz").status_code == 200
        ready = http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        publisher.publish_docs("docs", [_doc(0)])
        assert publisher.report.delivered == 1 and publisher.report.failed == 0
        _wait("a second restart", lambda: "the indexer failed (restart 2)" in log.read_text(), 120, up)
        text = metrics()
        restarts = re.search(r'^semsearch_indexer_restarts_total\{error="SnapshotWriteError"\} (\S+)$', text, re.M)
        assert restarts and float(restarts.group(1)) >= 2, text[-3000:]

        # Repaired: the next restart (backoff 1 s, 2 s, 4 s, ...) creates the index and indexes
        # the event the broker kept meanwhile.
        segments.unlink()
        _wait("the document published during the failure", lambda: _documents(http) == 1, 120, up)
        hits = http.get("/search", params={"q": "alpine glaciers observation", "k": 3}).json()["results"]
        assert [r["doc_id"] for r in hits] == ["d000"]
        assert re.search(r"^semsearch_indexer_up 1\.0$", metrics(), re.M)
    assert up.process.returncode == 0, log.read_text()[-3000:]
