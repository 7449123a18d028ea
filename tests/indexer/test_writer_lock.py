"""One writer per index: a second indexer or a build into a written index refuses, clearly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from consumers.worker import IndexWorker
from contracts.settings import Settings
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore, index_dir
from indexer.writer_lock import IndexLockedError, WriterLock, read_holder
from semsearch.cli import main

REPO = Path(__file__).resolve().parents[2]

HOLDER = """
import sys
from indexer.writer_lock import WriterLock
lock = WriterLock.acquire(sys.argv[1], "test holder")
print("locked", flush=True)
sys.stdin.read()  # hold until killed
"""


def test_a_second_worker_on_one_index_refuses_naming_the_holder(
    model: EmbeddingModel, stream_settings: Settings, bootstrap: str, cache: EmbeddingCache
) -> None:
    first = IndexWorker.open(model, stream_settings, bootstrap=bootstrap, cache=cache, group_id=stream_settings.group_id)
    try:
        generations = first.store.generations()
        with pytest.raises(IndexLockedError) as err:
            IndexWorker.open(model, stream_settings, bootstrap=bootstrap, cache=cache, group_id=stream_settings.group_id)
        message = str(err.value)
        assert f"pid {os.getpid()}" in message and str(first.store.root) in message
        assert "SEMSEARCH_DATA_DIR" in message and "stop that process" in message
        with pytest.raises(IndexLockedError):  # a shadow/from_index writer is a writer too
            IndexWorker.from_index(
                Index.create(model, stream_settings, cache), stream_settings, bootstrap=bootstrap, start_offsets={}
            )
        assert first.store.generations() == generations  # the refused writers wrote nothing
    finally:
        first.close(final_snapshot=False)
    # close() released it: the next writer starts.
    second = IndexWorker.open(model, stream_settings, bootstrap=bootstrap, cache=cache, group_id=stream_settings.group_id)
    try:
        assert second.generation == generations[-1]
    finally:
        second.close(final_snapshot=False)


def test_kill_9_of_the_holder_frees_the_lock(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(IndexLockedError) as err:
            WriterLock.acquire(root, "test")
        assert f"pid {child.pid}" in str(err.value) and err.value.holder["owner"] == "test holder"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    # No cleanup step: the kernel dropped the dead process's flock.
    with WriterLock.acquire(root, "after the kill") as lock:
        assert lock.held and read_holder(root)["pid"] == os.getpid()
    assert not lock.held


def test_build_into_a_locked_live_index_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], model: EmbeddingModel
) -> None:
    monkeypatch.setenv("SEMSEARCH_DATA_DIR", str(tmp_path / "data"))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "\n".join(
            json.dumps(d)
            for d in [
                {"_id": "a", "title": "Vitamin D", "text": "Vitamin D deficiency is associated with fractures."},
                {"_id": "b", "title": "Statins", "text": "Statins lower LDL cholesterol."},
            ]
        )
        + "\n"
    )
    live = index_dir(Settings.from_env(), model.index_id)
    indexer = WriterLock.acquire(live, f"the indexer of {model.index_id}")
    try:
        assert main(["build", "--corpus", str(corpus)]) == 1
        err = capsys.readouterr().err
        assert f"pid {os.getpid()}" in err and "--index-dir" in err and "live index" in err
        assert SnapshotStore(live).generations() == []
        elsewhere = tmp_path / "elsewhere"
        assert main(["build", "--corpus", str(corpus), "--index-dir", str(elsewhere)]) == 0
        assert SnapshotStore(elsewhere).generations() == [1]
    finally:
        indexer.release()
    capsys.readouterr()
    assert main(["build", "--corpus", str(corpus)]) == 0
    assert SnapshotStore(live).generations() == [1]
    with WriterLock.acquire(live, "next writer"):  # the build released it on exit
        pass
