"""The query path around the legs: owners, fusion, document rows and snippets of the hits.

Each piece was rewritten for speed (one gather for owners, HitRecord instead of a full
DocumentRecord per row, prefix-only snippet normalization, key-free fusion sort); these tests
hold them to the results of the straightforward versions they replaced.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import astuple
from pathlib import Path

import numpy as np

from contracts.documents import Deletion, Document
from contracts.settings import Settings
from indexer.fusion import reciprocal_rank_fusion
from indexer.index import SNIPPET_CHARS, Index, snippet_of
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore


def reference_snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1].rstrip() + "…"


def reference_fusion(
    rankings: Sequence[tuple[Sequence[str], float]], k: int
) -> list[tuple[str, float]]:
    scores: dict[str, float] = {}
    first_seen: dict[str, tuple[int, int]] = {}
    for leg, (ranking, weight) in enumerate(rankings):
        for rank, doc_id in enumerate(ranking, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + weight / (k + rank)
            first_seen.setdefault(doc_id, (rank, leg))
    return sorted(scores.items(), key=lambda item: (-item[1], first_seen[item[0]], item[0]))


def test_snippets_equal_normalizing_the_whole_chunk() -> None:
    rng = random.Random(9)
    spaces = [" ", "  ", "\n", "\t", " \n\n ", "\u3000", "\xa0", " " * 40]
    words = ["a", "word", "Ünïcode", "x" * 50, "INV-2024-00917", "é", "long" * 40]
    texts = ["", " ", "short text", "x" * 1000, " " * 1000 + "tail", "y" * 449 + " z"]
    for _ in range(3000):
        n = rng.randint(0, 260)
        parts = [rng.choice(spaces) if rng.random() < 0.2 else ""]
        for _ in range(n):
            parts.append(rng.choice(words))
            parts.append(rng.choice(spaces))
        texts.append("".join(parts)[: rng.randint(0, 1200)])
    for text in texts:
        assert snippet_of(text) == reference_snippet(text), repr(text)


def test_fusion_equals_the_reference_order_and_scores() -> None:
    rng = random.Random(3)
    ids = [f"d{i}" for i in range(120)]
    for _ in range(300):
        vector = rng.sample(ids, rng.randint(0, 100))
        lexical = rng.sample(ids, rng.randint(0, 100))
        weights = (rng.choice([0.0, 0.5, 1.0, 2.0]), rng.choice([0.5, 1.0, 3.0]))
        k = rng.choice([1, 60])
        rankings = [(vector, weights[0]), (lexical, weights[1])]
        assert reciprocal_rank_fusion(rankings, k) == reference_fusion(rankings, k)


def test_owner_ids_match_owner_id(make_index: Callable[..., Index]) -> None:
    index = make_index()
    table = index.documents
    probe = [-5, -1, 0, 1, 2, 3, index.next_chunk_id - 1, index.next_chunk_id, 10**9]
    assert table.owner_ids(probe) == [table.owner_id(c) for c in probe]
    assert table.owner_ids(np.asarray(probe[2:5])) == [table.owner_id(c) for c in probe[2:5]]
    assert table.owner_ids([]) == []


LONG = [
    Document(
        f"long{i}",
        f"Long report {i}" if i % 3 else "",  # untitled documents: spans start in the text
        " ".join(
            f"Section {j} of report {i} discusses {topic} trials with  extra\tspacing {j * i}."
            for j in range(50)
        ),
        1,
        {"n": i, "tags": ["a", "b"]} if i % 2 else {},
    )
    for i, topic in enumerate(["vaccine", "insulin", "statin", "malaria", "sleep", "coffee"])
]
QUERIES = [
    "vaccine trials",
    "Section 40 of report 3 discusses malaria",
    "insulin",
    "coffee report 5 spacing 245",
    "INV-2024-00917",
    "bone loss",
]


def test_hits_read_from_the_store_equal_the_hits_of_the_index_that_wrote_them(
    make_index: Callable[..., Index], model: EmbeddingModel, settings: Settings, tmp_path: Path
) -> None:
    """In RAM (pending records) and from documents.sqlite (HitRecord rows) a search shows the
    same documents, scores, snippets (any chunk, titled or not) and metadata, in every mode."""
    writer = make_index()
    writer.apply(LONG)
    assert max(len(r.chunks) for r in map(writer.get, (d.doc_id for d in LONG)) if r) > 2

    def shown(index: Index) -> list[list[tuple[object, ...]]]:
        results = []
        for query in QUERIES:
            for mode in ("vector", "bm25", "hybrid"):
                for min_score in (None, 0.3):
                    hits = index.search(query, k=5, mode=mode, min_score=min_score)
                    results.append([astuple(h) for h in hits])
        return results

    assert writer.documents.pending_count == len(LONG) + 8  # every record still in RAM
    expected = shown(writer)
    store = SnapshotStore(tmp_path / "idx")
    store.write(writer)
    reader, _ = store.load(model, settings)
    assert reader.documents.pending_count == 0  # every record read from documents.sqlite
    assert shown(reader) == expected
    snippets = {str(h[4]) for result in expected for h in result}
    assert any("Section 4" in s and not s.startswith("Long report") for s in snippets)
    metadata = [h[5] for result in expected for h in result]
    assert {"n": 1, "tags": ["a", "b"]} in metadata and {} in metadata

    # A document deleted after the generation: RAM (pending) masks the stored row.
    reader.apply([Deletion("long2", 2)])
    for mode in ("vector", "bm25", "hybrid"):
        found = [h.doc_id for h in reader.search("statin trials report 2", k=20, mode=mode)]
        assert "long2" not in found and found


def test_a_query_does_not_wait_behind_a_long_store_read(
    make_index: Callable[..., Index], model: EmbeddingModel, settings: Settings, tmp_path: Path
) -> None:
    """A refresh's delta read, a full scan or a commit holds the store's main connection for as
    long as it runs; the hits of a query are read on a connection of their own."""
    store = SnapshotStore(tmp_path / "idx")
    store.write(make_index())
    reader, _ = store.load(model, settings)
    documents = reader.documents.store
    assert documents is not None
    query = "vitamin D and bone loss"
    expected = [astuple(h) for h in reader.search(query, k=3)]
    assert expected and expected[0][0] == "d1"
    done: list[list[tuple[object, ...]]] = []
    with documents._lock:  # what a long read on the main connection holds while it runs
        searching = threading.Thread(
            target=lambda: done.append([astuple(h) for h in reader.search(query, k=3)])
        )
        searching.start()
        searching.join(60)
        assert done == [expected], "the query waited for the main connection"
