"""Generation pins: GC never removes a generation a reader is loading, nor its segments."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import indexer.snapshots.loader as snapshot_loader
from contracts.documents import Document
from contracts.settings import Settings
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore, index_dir
from query_api.holder import IndexHolder
from query_api.loader import IndexLoader
from query_api.metrics import ApiMetrics

REPO = Path(__file__).resolve().parents[2]
MANY = [Document(f"m{i}", f"Note {i}", f"Clinical note {i} about topic {i % 7}.", 1) for i in range(70)]
PIN_HOLDER = """
import sys
from indexer.pins import GenerationPins
pin = GenerationPins(sys.argv[1]).pin(int(sys.argv[2]), lambda: True)
print("pinned", flush=True)
sys.stdin.read()
"""


def _age(path: Path) -> None:
    """Old enough for segment GC (which spares files younger than a minute)."""
    os.utime(path, (1_000_000_000, 1_000_000_000))


def test_a_pinned_generation_and_its_segments_survive_gc(
    make_index: Callable[..., Index], model: EmbeddingModel, settings: Settings, tmp_path: Path
) -> None:
    store = SnapshotStore(tmp_path / "idx", keep=2)
    first = make_index(MANY)  # sealed: seal_chunks is 64
    store.write(first)
    segment = next(store.segments_dir.glob("seg-*.faiss"))
    _age(segment)
    other = make_index([Document("o", "Other", "a different index state", 1)])
    with store.pin(1):
        for _ in range(3):
            store.write(other)  # none of these references `segment`
        assert store.generations() == [1, 3, 4] and segment.is_file()
        loaded, manifest = store.load(model, settings, generation=1)
        assert manifest.generation == 1 and loaded.count() == first.count()
    store.write(other)
    assert store.generations() == [4, 5] and not segment.exists()
    assert not list((store.root / "pins").glob("1.*"))


def test_a_pin_of_another_process_counts_until_it_dies(
    make_index: Callable[..., Index], tmp_path: Path
) -> None:
    store = SnapshotStore(tmp_path / "idx", keep=2)
    index = make_index()
    store.write(index)
    child = subprocess.Popen(
        [sys.executable, "-c", PIN_HOLDER, str(store.root), "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "pinned"
        for _ in range(3):
            store.write(index)
        assert 1 in store.generations()
        child.send_signal(signal.SIGKILL)  # a reader dies without removing its pin
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    store.write(index)  # the dead pid's pin is stale: ignored and removed
    assert store.generations() == [4, 5]
    assert not list((store.root / "pins").glob(f"1.{child.pid}.*"))


def test_a_load_racing_gc_keeps_its_generation(
    make_index: Callable[..., Index],
    model: EmbeddingModel,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The migration failure: the writer collected the generation a reader was verifying."""
    writer = make_index(MANY)
    store = SnapshotStore(tmp_path / "idx", keep=2)
    store.write(writer)
    original = snapshot_loader.ensure_compatible
    raced: list[int] = []

    def slow_check(*args: Any) -> None:
        original(*args)
        if not raced:  # while the reader checks the model, the writer moves on 3 generations
            raced.extend(store.write(writer).generation for _ in range(3))
            for segment in store.segments_dir.glob("*.faiss"):
                _age(segment)

    monkeypatch.setattr(snapshot_loader, "ensure_compatible", slow_check)
    loaded, manifest = SnapshotStore(store.root).load(model, settings, fallback=True)
    assert raced == [2, 3, 4] and manifest.generation == 1
    assert loaded.count() == writer.count()


def test_the_api_loader_pins_the_generation_while_its_model_loads(
    make_index: Callable[..., Index], model: EmbeddingModel, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = make_index(MANY)
    store = SnapshotStore(index_dir(settings, model.index_id), keep=2)
    store.write(writer)
    loader = IndexLoader(settings, ApiMetrics())
    pick = loader._model_for
    held: list[list[int]] = []

    def slow_model_for(manifest: Any) -> EmbeddingModel:
        chosen = pick(manifest)
        for _ in range(3):
            store.write(writer)
        held.append(store.generations())  # the manifest that picked the model is still there
        return chosen

    monkeypatch.setattr(loader, "_model_for", slow_model_for)
    serving = loader.load(model.index_id, "default")
    assert serving.index.count() == writer.count()
    assert held == [[1, 3, 4]] and serving.generation == 4
    # The load's pin on 1 is released; the generation served (4) stays pinned while served.
    assert [p.name.split(".")[0] for p in (store.root / "pins").glob("*.*.*")] == ["4"]
    serving.hold.release()
    assert not list((store.root / "pins").glob("*.*.*"))


def test_the_api_keeps_serving_its_generation_across_writer_gc(
    make_index: Callable[..., Index], model: EmbeddingModel, settings: Settings
) -> None:
    """A reader that has not refreshed yet queries documents.sqlite at its generation: the
    writer's GC must not delete the rows of documents changed since (they would vanish from its
    hits), until the reader refreshes past that generation or stops."""
    writer = make_index(MANY)
    store = SnapshotStore(index_dir(settings, model.index_id), keep=2)
    store.write(writer)
    holder = IndexHolder(settings, redis_url="")
    holder.poll_once()
    served = holder.current
    assert served is not None and served.generation == 1
    query = "clinical note about topic"
    assert len(served.index.search(query, k=100, mode="bm25")) == len(MANY)

    changed = [Document(f"m{i}", f"Memo {i}", f"Radiology memo {i} on fractures.", 2) for i in range(5)]
    writer.apply(changed)
    for _ in range(3):  # each write collects: keep=2, so only the pin keeps generation 1
        store.write(writer)
    assert store.generations() == [1, 3, 4]

    hits = served.index.search(query, k=100, mode="bm25")
    assert len(hits) == len(MANY), "documents changed since the served generation lost their rows"
    by_id = {h.doc_id: h for h in hits}
    assert by_id["m3"].title == "Note 3" and "Clinical note 3" in by_id["m3"].snippet
    record = served.index.get("m2")
    assert record is not None and record.version == 1
    vector_hits = served.index.search("Clinical note 4 about topic 4", k=100, mode="hybrid")
    assert "m4" in {h.doc_id for h in vector_hits}

    holder.poll_once()  # refresh: the pin moves to the new generation, 1 is collectable
    current = holder.current
    assert current is not None and current.generation == 4 and current.index is served.index
    assert [p.name.split(".")[0] for p in (store.root / "pins").glob("*.*.*")] == ["4"]
    assert {h.title for h in current.index.search("radiology memo fractures", k=10, mode="bm25")} == {
        f"Memo {i}" for i in range(5)
    }
    store.write(writer)
    assert 1 not in store.generations()
    holder.stop()
    assert not list((store.root / "pins").glob("*.*.*"))
