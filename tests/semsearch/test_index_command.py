"""`semsearch index` as a real process: an embedded broker, metrics, and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
from tests_support import wait_until

from contracts.events import UpsertEvent
from contracts.settings import Settings
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore, index_dir
from producers.publisher import Publisher
from semsearch.embedded.broker import free_port

REPO = Path(__file__).resolve().parents[2]
_wait_for = wait_until


def _documents_in_latest(store: SnapshotStore) -> int:
    if store.latest_generation() is None:
        return -1
    return int(store.read_manifest().counts["documents"])


def test_index_command_with_embedded_broker_metrics_and_sigterm(tmp_path: Path, model: EmbeddingModel) -> None:
    metrics_port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(
        SEMSEARCH_DATA_DIR=str(tmp_path / "data"),
        SEMSEARCH_INDEXER_METRICS_PORT=str(metrics_port),
        SEMSEARCH_SNAPSHOT_INTERVAL_MS="50",
        SEMSEARCH_BATCH_WINDOW_MS="50",
        PYTHONPATH=str(REPO),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "semsearch.cli", "index"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        _wait_for(lambda: any("started an embedded broker" in line for line in lines), 60, "the broker address")
        address = re.search(r"at (127\.0\.0\.1:\d+)", next(line for line in lines if "embedded broker" in line))
        assert address is not None
        bootstrap = address.group(1)
        store = SnapshotStore(index_dir(Settings(data_dir=tmp_path / "data"), model.index_id))
        _wait_for(lambda: store.latest_generation() is not None, 90, "the initial generation")

        with Publisher(bootstrap) as publisher:
            publisher.publish_docs("docs", [UpsertEvent("x1", 1, "Fresh", "A freshly published document.")])
            assert publisher.report.delivered == 1
        _wait_for(lambda: _documents_in_latest(store) == 1, 60, "the document in a snapshot")

        body = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        labels = f'index_id="{model.index_id}"'
        assert re.search(rf'semsearch_events_total\{{{labels},outcome="applied"\}} 1\.0', body), body[:2000]
        assert f"semsearch_index_documents{{{labels}}} 1.0" in body
        assert "semsearch_embed_seconds_bucket" in body and "semsearch_consumer_lag" in body

        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, "".join(lines[-30:])
        assert any("final snapshot" in line or "SIGTERM" in line for line in lines)
        host, port = bootstrap.split(":")
        with socket.socket() as probe:
            assert probe.connect_ex((host, int(port))) != 0, "the embedded broker outlived the indexer"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
