"""The validation gate on tiny indexes: a good variant passes, every kind of bad shadow fails."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from migration_data import DOCS, QRELS, QUERIES
from migration_models import upgrade_variant, worse_variant

from contracts.documents import Deletion, Document
from contracts.settings import Settings
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.model import EmbeddingModel, load_model
from indexer.snapshots import SnapshotStore
from indexer.validation import (
    GateReport,
    check_canaries,
    check_documents,
    check_latency,
    check_offsets,
    check_quality,
    check_vectors,
    unusable_model,
    validate_shadow,
)

CORPUS = [Document(doc_id, title, text, 1) for doc_id, title, text in DOCS]
OFFSETS = {"docs": {0: 25}}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> EmbeddingCache:
    # One cache for the module: each model embeds the corpus once, later builds only chunk.
    return EmbeddingCache(tmp_path_factory.mktemp("cache") / "embeddings.sqlite")


@pytest.fixture(scope="module")
def build(
    tmp_path_factory: pytest.TempPathFactory, shared_cache: EmbeddingCache
) -> Callable[..., Index]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"))

    def make(model: EmbeddingModel, docs: list[Document] | None = None) -> Index:
        index = Index.create(model, settings, shared_cache)
        index.apply(CORPUS if docs is None else docs)
        return index

    return make


@pytest.fixture(scope="module")
def live(build: Callable[..., Index]) -> Index:
    """The serving index (pinned MiniLM); tests that mutate an index build their own."""
    return build(load_model())


@pytest.fixture(scope="module")
def shadow(build: Callable[..., Index], models_dir: Path) -> Index:
    return build(load_model(upgrade_variant(models_dir)))


def _gate(shadow: Index, live: Index, **kwargs: object) -> GateReport:
    # Few latency samples and a loose bound: the cores are shared with other test runs.
    options: dict[str, object] = {
        "queries": QUERIES,
        "qrels": QRELS,
        "latency_samples": 5,
        "p99_bound_ms": 30_000.0,
    }
    options.update(kwargs)
    return validate_shadow(shadow, live, **options)  # type: ignore[arg-type]


def test_an_equally_good_variant_passes_and_the_report_travels(
    live: Index, shadow: Index, tmp_path: Path
) -> None:
    assert shadow.index_id != live.index_id

    store = SnapshotStore(tmp_path / "shadow")
    manifest = store.write(shadow, OFFSETS)
    report = _gate(
        shadow, live, shadow_manifest=manifest, shadow_offsets=OFFSETS, live_offsets=OFFSETS
    )
    assert report.passed, report.summary()
    assert report.reasons == []
    assert {c.name for c in report.checks} == {
        "offsets",
        "documents",
        "vectors",
        "canaries",
        "quality",
        "latency",
    }
    quality = report.check("quality").data
    assert quality["shadow"]["ndcg@10"] >= quality["live"]["ndcg@10"] - 0.02
    assert report.check("documents").data["shadow_documents"] == len(CORPUS)

    # JSON all the way: into the manifest's `extra`, onto a topic, and back.
    wire = json.loads(json.dumps(report.to_json()))
    assert GateReport.from_json(wire) == report
    stored = store.write(shadow, OFFSETS, extra={"gate": wire})
    assert store.read_manifest(stored.generation).extra["gate"]["passed"] is True


def test_a_clearly_worse_model_is_rejected_with_its_numbers(
    build: Callable[..., Index], live: Index, models_dir: Path
) -> None:
    worse = build(load_model(worse_variant(models_dir)))  # CLS pooling
    report = _gate(worse, live)
    assert not report.passed
    assert [c.name for c in report.checks if not c.passed] == ["quality"]
    (reason,) = report.reasons
    assert "nDCG@10" in reason and "worse by more than 0.02" in reason
    # A looser tolerance is a deliberate operator decision, and it is honoured.
    assert check_quality(worse, live, QUERIES, QRELS, tolerance=0.5).passed


def test_missing_extra_and_stale_documents_fail_the_count(
    build: Callable[..., Index], models_dir: Path
) -> None:
    live = build(load_model())
    live.apply([Document(CORPUS[1].doc_id, "Updated", "A newer version of this abstract.", 2)])
    shadow = build(load_model(upgrade_variant(models_dir)))
    assert not check_documents(shadow, live).passed
    shadow.apply([Document(CORPUS[1].doc_id, "Updated", "A newer version of this abstract.", 2)])
    assert check_documents(shadow, live).passed
    shadow.apply([Deletion(CORPUS[0].doc_id, 2), Document("only-in-shadow", "x", "stray text", 1)])
    shadow.apply([Document(CORPUS[2].doc_id, "Moved on", "The shadow saw a later version.", 3)])
    check = check_documents(shadow, live)
    assert not check.passed
    assert check.data["missing"] == 1 and check.data["extra"] == 1
    assert check.data["version_mismatch"] == 1
    assert CORPUS[0].doc_id in check.detail and "only-in-shadow" in check.detail


def test_nan_vectors_fail(build: Callable[..., Index], models_dir: Path) -> None:
    broken = build(load_model(upgrade_variant(models_dir)))
    assert check_vectors(broken).passed
    broken.vectors.live.vectors[3, :] = np.nan  # what a broken fp16 export produces
    check = check_vectors(broken)
    assert not check.passed and "NaN" in check.detail and check.data["non_finite"] == 1


def test_canaries_must_match_the_shadow_manifest(
    build: Callable[..., Index], shadow: Index, models_dir: Path, tmp_path: Path
) -> None:
    manifest = SnapshotStore(tmp_path / "shadow").write(shadow, OFFSETS)
    assert check_canaries(shadow, manifest).passed
    # The manifest says the shadow was built by a model that embeds like the CLS variant:
    # whatever serves it now is not that model.
    other = build(load_model(worse_variant(models_dir)), CORPUS[:1])
    manifest = manifest.model_copy(update={"canaries": other.canaries.to_json()})
    check = check_canaries(shadow, manifest)
    assert not check.passed and "embeds differently" in check.detail


def test_no_held_out_set_means_no_flip(live: Index, shadow: Index) -> None:
    report = _gate(shadow, live, queries=None, qrels=None)
    assert not report.passed
    assert "SEMSEARCH_VALIDATION_QUERIES" in report.check("quality").detail
    assert report.check("latency").passed  # still measured, on the canary sentences


def test_different_offsets_and_slow_models_fail(live: Index, shadow: Index) -> None:
    assert check_offsets(OFFSETS, {"docs": {0: 25}}).passed
    moved = check_offsets({"docs": {0: 20}}, OFFSETS)
    assert not moved.passed and "same offsets" in moved.detail
    slow = check_latency(shadow, live, list(QUERIES.values()), p99_bound_ms=0.001, samples=3)
    assert not slow.passed and "SEMSEARCH_GATE_P99_MS" in slow.detail
    assert slow.data["queries"] == 3 and slow.data["live_p99_ms"] > 0


def test_a_model_that_cannot_build_an_index_is_rejected_with_why() -> None:
    error = OverflowError("cannot convert float infinity to integer")
    report = unusable_model("/models/minilm-static-64", "all-minilm-l6-v2-60f914301908", error)
    assert not report.passed and report.shadow_index_id == "minilm-static-64-unusable"
    assert report.reasons[0].startswith("model:") and "max_seq_length" in report.reasons[0]
    assert GateReport.from_json(json.loads(json.dumps(report.to_json()))) == report
