"""One bad event must not stop indexing: it goes to the DLQ alone, everything else is indexed.

Reproduces the outage where a lone-surrogate escape (valid JSON) reached the tokenizer and the
indexer died on the same offset forever, where the same character in metadata or a keyless
doc_id made every snapshot fail, and where one NaN embedding failed its whole batch. The broker,
the index and the snapshots are real; the only double is the model's output for texts carrying
a marker (a NaN row, as a broken checkpoint or a numerically unstable input would give).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pytest
from confluent_kafka import Producer

from consumers.dead_letter import read_dead_letter
from consumers.worker import IndexWorker
from contracts.documents import Document
from contracts.errors import InvalidDocumentError
from contracts.events import UpsertEvent
from contracts.settings import Settings
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore, index_dir

from .conftest import Publish, drain

MARKER = "zqxnanmarker"


class NaNForMarker(EmbeddingModel):
    """The real model (same weights, tokenizer, fingerprint), whose document vectors are NaN for
    texts containing MARKER. Shares the loaded model instead of loading it again."""

    def __init__(self, real: EmbeddingModel) -> None:  # shares, does not reload, the weights
        self.__dict__.update(real.__dict__)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        vectors = super().encode_documents(texts)
        for row, text in enumerate(texts):
            if MARKER in text:
                vectors[row] = np.nan
        return vectors


@pytest.fixture
def nan_model(model: EmbeddingModel) -> EmbeddingModel:
    return NaNForMarker(model)


@pytest.fixture
def nan_worker(
    nan_model: EmbeddingModel, stream_settings: Settings, bootstrap: str, cache: EmbeddingCache
) -> Iterator[IndexWorker]:
    worker = IndexWorker.open(
        nan_model, stream_settings, bootstrap=bootstrap, cache=cache, group_id=stream_settings.group_id
    )
    yield worker
    worker.close(final_snapshot=False)


GOOD = {
    "d1": ("Vitamin D", "Vitamin D deficiency is associated with bone loss and fractures."),
    "d2": ("Heart disease", "Statins lower LDL cholesterol and reduce cardiovascular events."),
    "d3": ("Malaria", "Artemisinin resistance in Plasmodium falciparum is spreading in Asia."),
    "d4": ("Diabetes", "Metformin improves insulin sensitivity in type 2 diabetes patients."),
}


def good(doc_id: str) -> UpsertEvent:
    title, text = GOOD[doc_id]
    return UpsertEvent(doc_id, 1, title, text, {"source": "test"})


def test_apply_rejects_only_the_document_the_model_cannot_embed(
    nan_model: EmbeddingModel, stream_settings: Settings, cache: EmbeddingCache
) -> None:
    index = Index.create(nan_model, stream_settings, cache)
    bad = Document("bad", "Broken", f"The model cannot embed this {MARKER} passage.", 1)
    docs = [good("d1").to_change(), bad, good("d2").to_change()]
    report = index.apply(docs)
    assert report.upserted == 2
    assert [doc_id for doc_id, _ in report.rejected] == ["bad"]
    assert "NaN/inf embeddings" in report.rejected[0][1] and "republish" in report.rejected[0][1]
    assert report.rejected_changes == [bad]
    assert sorted(r.doc_id for r in index.documents) == ["d1", "d2"]
    # The NaN vector is neither indexed nor cached (a fixed model would otherwise be served it).
    [chunk] = index.chunker.split(bad.full_text)
    assert cache.get_many(nan_model.info.fingerprint, [chunk.content_hash], nan_model.dimension) == {}
    assert np.isfinite(np.vstack(list(index.vectors.vectors_of(list(range(index.next_chunk_id))).values()))).all()
    # A rejected update leaves the version the index held.
    old = Document("d1", "Vitamin D", f"Rewritten with {MARKER}.", 2)
    again = index.apply([old])
    assert [d for d, _ in again.rejected] == ["d1"] and index.get("d1") is not None
    assert index.get("d1").version == 1  # type: ignore[union-attr]
    assert index.search("vitamin deficiency bones", k=1)[0].doc_id == "d1"


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (Document("d1", "", "vitamin \ud800 d", 1), "text contains a lone surrogate"),
        (Document("d1", "\udc00", "vitamin d", 1), "title contains a lone surrogate"),
        (Document("a\ud800", "", "vitamin d", 1), "doc_id contains a lone surrogate"),
        (Document("d1", "", "vitamin d", 1, {"k": "\ud800"}), "metadata.k contains a lone surrogate"),
        (Document("d1", "", "vitamin d", 1, {"score": float("nan")}), "metadata.score is nan"),
        (Document("d1", "", "vitamin d", 1, {"s": float("-inf")}), "metadata.s is -inf"),
        (Document("d1", "", "vitamin d", 1, {"x": object()}), "which JSON cannot hold"),
    ],
)
def test_validate_document_refuses_them_too(make_doc_index: Index, doc: Document, reason: str) -> None:
    """Defence in depth for callers that bypass the event decoder (bulk builds, migrations)."""
    with pytest.raises(InvalidDocumentError) as caught:
        make_doc_index.validate_document(doc)
    assert reason in str(caught.value)
    report = make_doc_index.apply([doc, good("d2").to_change()])  # no TypeError from the tokenizer
    assert [d for d, _ in report.rejected] == [doc.doc_id] and report.upserted == 1


@pytest.fixture
def make_doc_index(model: EmbeddingModel, stream_settings: Settings, cache: EmbeddingCache) -> Index:
    return Index.create(model, stream_settings, cache)


def test_poison_events_are_dead_lettered_alone_and_indexing_goes_on(
    nan_worker: IndexWorker,
    publish: Publish,
    stream_settings: Settings,
    bootstrap: str,
    read_topic: Callable[..., list],
    model: EmbeddingModel,
    cache: EmbeddingCache,
) -> None:
    worker = nan_worker
    settings = stream_settings
    producer = Producer({"bootstrap.servers": bootstrap})
    # Raw bytes: these are valid JSON that json.dumps (and our producer) would never write.
    poison = {
        b"s-text": b'{"op":"upsert","doc_id":"s-text","version":1,"title":"t","text":"vitamin \\ud800 d"}',
        b"s-meta": b'{"op":"upsert","doc_id":"s-meta","version":1,"text":"vitamin d","metadata":{"tag":"\\udfff"}}',
        None: b'{"op":"upsert","doc_id":"s-id\\ud800","version":1,"text":"vitamin d"}',
        b"nan-meta": b'{"op":"upsert","doc_id":"nan-meta","version":1,"text":"vitamin d","metadata":{"score":NaN}}',
    }
    publish([good("d1"), good("d2")])
    for key, value in poison.items():
        producer.produce(settings.docs_topic, key=key, value=value)
    assert producer.flush(30) == 0
    nan_doc = UpsertEvent("nan-doc", 1, "Broken", f"The model cannot embed this {MARKER} passage.")
    publish([nan_doc, good("d3"), good("d4")])
    total = 2 + len(poison) + 3
    drain(worker, total)

    # The good ones are indexed and searchable.
    assert sorted(r.doc_id for r in worker.index.documents) == ["d1", "d2", "d3", "d4"]
    assert worker.index.search("malaria drug resistance in asia", k=1)[0].doc_id == "d3"
    assert worker.index.search("insulin sensitivity metformin", k=1)[0].doc_id == "d4"

    # Every bad one is in the DLQ, unchanged, with a reason that names the problem.
    letters = {letter.key: letter for letter in map(read_dead_letter, read_topic(settings.dlq_topic, 5))}
    assert sorted(letters, key=str) == sorted([*poison, b"nan-doc"], key=str)
    for key, value in poison.items():
        assert letters[key].value == value
        assert letters[key].topic == settings.docs_topic and letters[key].offset >= 0
    assert "'text' contains a lone surrogate U+D800" in letters[b"s-text"].reason
    assert "'metadata.tag' contains a lone surrogate U+DFFF" in letters[b"s-meta"].reason
    assert "'doc_id' contains a lone surrogate" in letters[None].reason
    assert "'metadata.score' is nan" in letters[b"nan-meta"].reason
    assert letters[b"nan-doc"].reason.startswith("rejected by the index: ")
    assert "NaN/inf embeddings" in letters[b"nan-doc"].reason
    assert letters[b"nan-doc"].index_id == worker.index.index_id

    # Offsets moved past all of them in a snapshot, and that snapshot loads (it used to fail to
    # be written at all once a surrogate was in the document table).
    assert sum(o for parts in worker.snapshot_offsets.values() for o in parts.values()) == total
    store = SnapshotStore(index_dir(settings, worker.index.index_id))
    loaded, manifest = store.load(model, settings, cache)
    assert manifest.generation == worker.generation
    assert sorted(r.doc_id for r in loaded.documents) == ["d1", "d2", "d3", "d4"]
    assert loaded.search("vitamin deficiency bones", k=1)[0].doc_id == "d1"
