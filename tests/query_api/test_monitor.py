"""The recall monitor against a real API (uvicorn, embedded Redis, tiny snapshot-backed indexes).

Hold-out set: four queries answered by the DOCS of idx-a and one answered only by the extra
document, which is all idx-b holds - so recall@5 is 0.8 on idx-a and 0.2 on idx-b, and which
index a number belongs to is never in doubt.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests_support import wait_until

from contracts.documents import Document
from contracts.errors import SemsearchError
from contracts.pointer import Pointer
from contracts.settings import Settings
from query_api.app import create_app
from query_api.holder import IndexHolder
from query_api.monitor import HoldOut, Monitor
from query_api.monitor_command import build_monitor, parse_duration
from semsearch.cli import main

BuildIndex = Callable[..., Any]  # tests/query_api/conftest.py: build_index

QUERIES = {
    "q1": ("vitamin D deficiency and bone fractures", "d1"),
    "q2": ("statins lower LDL cholesterol", "d2"),
    "q3": ("sleep duration and memory in adolescents", "d3"),
    "q4": ("artemisinin resistant malaria", "d4"),
    "q5": ("antibiotic overuse and resistant bacteria", "d11"),
}
UNJUDGED = ("q9", "a query nobody judged")


@pytest.fixture
def holdout_files(tmp_path: Path) -> tuple[Path, Path]:
    queries = tmp_path / "queries.jsonl"
    qrels = tmp_path / "qrels.tsv"
    rows = [{"_id": qid, "text": text} for qid, (text, _) in QUERIES.items()]
    rows.append({"_id": UNJUDGED[0], "text": UNJUDGED[1]})
    queries.write_text("".join(json.dumps(row) + "\n" for row in rows))
    qrels.write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, (_, d) in QUERIES.items())
    )
    return queries, qrels


def scrape(monitor: Monitor) -> str:
    """The monitor's /metrics as Prometheus scrapes it (a real HTTP endpoint)."""
    server = monitor.serve_metrics(0, "127.0.0.1")
    try:
        return httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10).text
    finally:
        server.shutdown()
        server.server_close()


def sample(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{([^}}]*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))).strip(",") == wanted:
            return float(match.group(2))
    return None


def serve(holder: IndexHolder, settings: Settings, serve_api: Callable[[Any], str]) -> str:
    """A real API on the holder: loaded before it starts, following the pointer after."""
    holder.poll_once()
    url = serve_api(create_app(settings, holder))
    ready = httpx.get(f"{url}/readyz", timeout=30)
    assert ready.status_code == 200, ready.text
    return url


def served(url: str, index_id: str, generation: int = 1) -> bool:
    answer = httpx.get(f"{url}/index", timeout=10).json()
    return bool(answer.get("index_id") == index_id and answer.get("generation") == generation)


def test_once_run_exports_quality_and_sets_the_baseline(
    settings: Settings,
    holder: IndexHolder,
    pointer: Pointer,
    build_index: BuildIndex,
    serve_api: Callable[[Any], str],
    holdout_files: tuple[Path, Path],
) -> None:
    build_index("idx-a")
    pointer.set_if_unset("idx-a")
    url = serve(holder, settings, serve_api)
    monitor = build_monitor(settings, url, queries=holdout_files[0], qrels=holdout_files[1], period_s=3600)
    assert len(monitor.holdout.queries) == 5, "the unjudged query is not asked"

    result = monitor.run_once()
    assert result is not None, monitor.last_error
    assert result.index_id == "idx-a" and result.queries == 5
    assert result.recall_at_5 == pytest.approx(0.8)
    text = scrape(monitor)
    assert sample(text, "semsearch_monitor_recall_at_5", index_id="idx-a") == pytest.approx(0.8)
    assert sample(text, "semsearch_monitor_recall_at_5_baseline", index_id="idx-a") == pytest.approx(0.8)
    ndcg = sample(text, "semsearch_monitor_ndcg_at_10", index_id="idx-a")
    assert ndcg is not None and 0.7 < ndcg <= 0.8
    assert sample(text, "semsearch_monitor_ndcg_at_10_baseline", index_id="idx-a") == ndcg
    assert sample(text, "semsearch_monitor_runs_total", outcome="ok") == 1
    assert sample(text, "semsearch_monitor_runs_total", outcome="error") == 0
    assert sample(text, "semsearch_monitor_top_similarity_count", index_id="idx-a") == 5
    assert sample(text, "semsearch_monitor_period_seconds") == 3600
    last = sample(text, "semsearch_monitor_last_success_timestamp_seconds")
    assert last is not None and last == monitor.state.last_success
    state = json.loads((settings.data_dir / "monitor" / "state.json").read_text())
    assert state["baselines"]["idx-a"]["recall_at_5"] == pytest.approx(0.8)


def test_baseline_is_kept_per_index_across_restarts_and_new_for_a_new_index(
    settings: Settings,
    holder: IndexHolder,
    pointer: Pointer,
    build_index: BuildIndex,
    serve_api: Callable[[Any], str],
    holdout_files: tuple[Path, Path],
    extra_doc: Document,
) -> None:
    index_a, store_a = build_index("idx-a")
    build_index("idx-b", docs=[extra_doc])
    pointer.set_if_unset("idx-a")
    url = serve(holder, settings, serve_api)

    def monitor() -> Monitor:
        return build_monitor(settings, url, queries=holdout_files[0], qrels=holdout_files[1])

    first = monitor()
    assert first.run_once() is not None

    # idx-a loses d1 (a bad re-index): recall drops, and the baseline does not follow it.
    index_a.apply([Document("d1", "Invoice", "Invoice INV-2024-00919 is overdue.", 2)])
    store_a.write(index_a, {"docs": {0: 11}})
    wait_until(lambda: served(url, "idx-a", 2), 30, "the API to serve generation 2")
    restarted = monitor()  # a new process: the baseline comes from the state file
    result = restarted.run_once()
    assert result is not None and result.recall_at_5 == pytest.approx(0.6)
    text = scrape(restarted)
    assert sample(text, "semsearch_monitor_recall_at_5", index_id="idx-a") == pytest.approx(0.6)
    assert sample(text, "semsearch_monitor_recall_at_5_baseline", index_id="idx-a") == pytest.approx(0.8)

    # A flip: the first run on idx-b is idx-b's baseline; idx-a's numbers leave the gauges.
    assert pointer.compare_and_set("idx-a", "idx-b")
    wait_until(lambda: served(url, "idx-b"), 30, "the API to flip to idx-b")
    result = restarted.run_once()
    assert result is not None and result.index_id == "idx-b"
    text = scrape(restarted)
    assert sample(text, "semsearch_monitor_recall_at_5_baseline", index_id="idx-b") == pytest.approx(0.2)
    assert sample(text, "semsearch_monitor_recall_at_5", index_id="idx-b") == pytest.approx(0.2)
    assert sample(text, "semsearch_monitor_recall_at_5", index_id="idx-a") is None
    assert sample(text, "semsearch_monitor_top_similarity_count", index_id="idx-a") == 5

    # A rollback finds idx-a's own baseline again.
    assert pointer.compare_and_set("idx-b", "idx-a")
    wait_until(lambda: served(url, "idx-a", 2), 30, "the API to flip back to idx-a")
    assert restarted.run_once() is not None
    text = scrape(restarted)
    assert sample(text, "semsearch_monitor_recall_at_5_baseline", index_id="idx-a") == pytest.approx(0.8)
    assert sample(text, "semsearch_monitor_runs_total", outcome="ok") == 3


def test_a_failed_run_is_an_error_outcome_and_the_loop_goes_on(
    settings: Settings,
    pointer: Pointer,
    serve_api: Callable[[Any], str],
    holdout_files: tuple[Path, Path],
) -> None:
    down = build_monitor(
        settings.with_overrides(monitor_retry_s=0.05),
        "http://127.0.0.1:9",  # nothing listens on the discard port
        queries=holdout_files[0],
        qrels=holdout_files[1],
        period_s=3600,
    )
    assert down.run_once() is None
    assert down.last_error is not None and "cannot reach the semsearch API" in down.last_error
    stop = threading.Event()
    loop = threading.Thread(target=down.run_forever, args=(stop,))
    loop.start()
    try:
        wait_until(
            lambda: (sample(scrape(down), "semsearch_monitor_runs_total", outcome="error") or 0) >= 3,
            30,
            "failed runs to be retried",
        )
        assert loop.is_alive()
    finally:
        stop.set()
        loop.join(10)
    assert not loop.is_alive()
    text = scrape(down)
    assert sample(text, "semsearch_monitor_runs_total", outcome="ok") == 0
    assert sample(text, "semsearch_monitor_last_success_timestamp_seconds") == 0, "0 = never"
    assert sample(text, "semsearch_monitor_started_timestamp_seconds")

    # An API that is up but serves nothing (no pointer yet) fails the run the same way.
    url = serve_api(create_app(settings))
    not_ready = build_monitor(settings, url, queries=holdout_files[0], qrels=holdout_files[1])
    assert not_ready.run_once() is None
    assert not_ready.last_error is not None and "not ready" in not_ready.last_error


def test_semsearch_monitor_once_command(
    settings: Settings,
    holder: IndexHolder,
    pointer: Pointer,
    build_index: BuildIndex,
    serve_api: Callable[[Any], str],
    holdout_files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    build_index("idx-a")
    pointer.set_if_unset("idx-a")
    url = serve(holder, settings, serve_api)
    args = ["monitor", "--queries", str(holdout_files[0]), "--qrels", str(holdout_files[1]), "--once"]
    args += ["--state", str(tmp_path / "state.json"), "--textfile", str(tmp_path / "monitor.prom")]
    assert main([*args, "--api", url]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["outcome"] == "ok" and summary["index_id"] == "idx-a"
    assert summary["recall@5"] == pytest.approx(0.8) and summary["baseline"]["recall@5"] == pytest.approx(0.8)
    exported = (tmp_path / "monitor.prom").read_text()
    assert sample(exported, "semsearch_monitor_recall_at_5", index_id="idx-a") == pytest.approx(0.8)

    assert main([*args, "--api", "http://127.0.0.1:9"]) == 1
    failed = json.loads(capsys.readouterr().out)
    assert failed["outcome"] == "error" and "cannot reach" in failed["error"]


def test_bad_holdout_files_fail_at_start_with_a_clear_message(
    holdout_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queries, qrels = holdout_files
    with pytest.raises(SemsearchError, match="does not exist"):
        HoldOut.load(tmp_path / "nope.jsonl", qrels)
    other = tmp_path / "other.tsv"
    other.write_text("query-id\tcorpus-id\tscore\nx1\td1\t1\n")
    with pytest.raises(SemsearchError, match=r"no query of .* has a relevant document"):
        HoldOut.load(queries, other)
    empty = tmp_path / "empty.tsv"
    empty.write_text("query-id\tcorpus-id\tscore\n")
    with pytest.raises(SemsearchError, match="no relevance judgements"):
        HoldOut.load(queries, empty)
    binary = tmp_path / "binary.tsv"
    binary.write_bytes(b"\xff\xfe\x00q1\td1\t1\n")
    with pytest.raises(SemsearchError, match="not UTF-8"):
        HoldOut.load(queries, binary)
    # Through the command: exit 1 and a message naming the missing argument, before any query.
    assert main(["monitor", "--queries", str(queries), "--once", "--api", "http://127.0.0.1:9"]) == 1
    assert "--queries and --qrels" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "seconds"), [("7d", 604800), ("12h", 43200), ("1h30m", 5400), ("90s", 90), ("2.5", 2.5)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7 days", "d7", "0", "-1h", "5x"])
def test_parse_duration_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(SemsearchError, match="--every"):
        parse_duration(text)


def test_an_empty_index_is_not_measured_and_gets_no_baseline(
    settings: Settings,
    holder: IndexHolder,
    pointer: Pointer,
    build_index: BuildIndex,
    serve_api: Callable[[Any], str],
    holdout_files: tuple[Path, Path],
) -> None:
    """`semsearch up` names the first, empty snapshot active: a baseline of 0 there would
    disarm the recall alert for that index for good."""
    build_index("idx-empty", docs=[])
    pointer.set_if_unset("idx-empty")
    url = serve(holder, settings, serve_api)
    monitor = build_monitor(settings, url, queries=holdout_files[0], qrels=holdout_files[1])
    assert monitor.run_once() is None
    assert monitor.last_error is not None and "no result for any" in monitor.last_error
    assert monitor.state.baseline("idx-empty") is None
    assert sample(scrape(monitor), "semsearch_monitor_runs_total", outcome="error") == 1
