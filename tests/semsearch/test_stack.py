"""`semsearch up` end to end: embedded broker + embedded Redis + indexer + uvicorn, one command."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from tests_support import wait_until

from contracts.events import UpsertEvent
from contracts.pointer import Pointer
from producers.publisher import Publisher
from semsearch.embedded.redis import ping

DOCS = [
    ("s1", "Vitamin D", "Vitamin D deficiency is associated with bone loss and fractures."),
    ("s2", "Invoice", "Invoice INV-2024-00917 for ACME GmbH is overdue; please pay soon."),
    ("s3", "Sleep", "Short sleep duration impairs memory consolidation in adolescents."),
]


def _port_open(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_up_runs_the_stack_and_stops_it_on_ctrl_c(tmp_path: Path) -> None:
    """... with the recall monitor, which runs once the API is ready and exports on its port."""
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "overdue invoice ACME"}\n')
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\ts2\t1\n")
    monitor_port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}
    env.update(
        SEMSEARCH_MONITOR_QUERIES=str(tmp_path / "queries.jsonl"),
        SEMSEARCH_MONITOR_QRELS=str(tmp_path / "qrels.tsv"),
        SEMSEARCH_MONITOR_PORT=str(monitor_port),
        SEMSEARCH_MONITOR_RETRY_S="0.2",
        SEMSEARCH_DATA_DIR=str(tmp_path / "data"),
        SEMSEARCH_API_PORT="0",
        SEMSEARCH_INDEXER_METRICS_PORT="0",
        SEMSEARCH_SNAPSHOT_INTERVAL_MS="100",
        HF_HUB_OFFLINE="1",
    )
    with (tmp_path / "up.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "semsearch.cli", "up"], env=env, stdout=subprocess.PIPE, stderr=log, text=True
        )
        try:
            assert process.stdout is not None
            banner = []
            deadline = time.monotonic() + 120
            while not banner or "Ctrl-C stops everything" not in banner[-1]:
                line = process.stdout.readline()
                assert line, f"up exited early: {(tmp_path / 'up.log').read_text()[-2000:]}"
                banner.append(line)
                assert time.monotonic() < deadline
            text = "".join(banner)
            api = re.search(r"API\s+(http://\S+)", text).group(1)  # type: ignore[union-attr]
            bootstrap = re.search(r"export KAFKA_BOOTSTRAP_SERVERS=(\S+)", text).group(1)  # type: ignore[union-attr]
            redis_url = re.search(r"export REDIS_URL=(\S+)", text).group(1)  # type: ignore[union-attr]
            assert redis_url.startswith("unix://") and str(tmp_path / "data") in redis_url

            with Publisher(bootstrap) as publisher:
                report = publisher.publish_docs(
                    "docs", [UpsertEvent.build(doc_id=d, title=t, text=x, version=1) for d, t, x in DOCS]
                )
            assert report.delivered == 3 and report.failed == 0

            with httpx.Client(base_url=api, timeout=30) as http:

                def top_hit() -> str | None:
                    response = http.get("/search", params={"q": "INV-2024-00917", "k": 3})
                    results = response.json()["results"] if response.status_code == 200 else []
                    return results[0]["doc_id"] if results else None

                wait_until(lambda: top_hit() == "s2", 120, "the documents to become searchable")
                ready = http.get("/readyz").json()
                assert ready["ready"] and ready["redis"]["up"] and ready["origin"] == "pointer"
                wait_until(lambda: http.get("/index").json()["documents"] == 3, 60, "3 documents in /index")
                index_id = http.get("/index").json()["index_id"]
            pointer = Pointer.from_url(redis_url)
            assert pointer.get() == index_id, "up must name the first index active"
            pointer.close()

            def monitored() -> str | None:
                text = httpx.get(f"http://127.0.0.1:{monitor_port}/metrics", timeout=10).text
                return text if 'semsearch_monitor_runs_total{outcome="ok"} 1.0' in text else None

            text = wait_until(monitored, 60, "the monitor's first run")
            assert f'semsearch_monitor_recall_at_5_baseline{{index_id="{index_id}"}}' in text
            assert (tmp_path / "data" / "monitor" / "state.json").is_file()
        finally:
            process.send_signal(signal.SIGINT)
            code = process.wait(120)
    assert code == 0, (tmp_path / "up.log").read_text()[-2000:]
    assert not ping(redis_url), "the embedded Redis outlived `up`"
    assert not _port_open(bootstrap), "the embedded broker outlived `up`"
