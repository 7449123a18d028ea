from __future__ import annotations

from collections.abc import Callable

import pytest
from tests_support import chunk_ids_consistent

from contracts.documents import Deletion, Document
from contracts.errors import InvalidQueryError
from indexer.index import ApplyReport, Index


def test_search_modes_find_the_relevant_document(make_index: Callable[..., Index]) -> None:
    index = make_index()
    for mode in ("vector", "bm25", "hybrid"):
        hits = index.search("does vitamin D deficiency cause fractures", k=3, mode=mode)
        assert hits[0].doc_id == "d1", mode
        assert hits[0].title == "Vitamin D" and "Vitamin D" in hits[0].snippet
    vector_hit = index.search("cholesterol lowering drugs", k=1, mode="vector")[0]
    assert vector_hit.doc_id == "d2" and vector_hit.similarity == pytest.approx(vector_hit.score)


def test_exact_identifier_comes_first_in_hybrid(make_index: Callable[..., Index]) -> None:
    filler = [
        Document(f"f{i}", "Invoice", f"Invoice for customer {i} is overdue; please pay.", 1)
        for i in range(12)
    ]
    index = make_index()
    index.apply(filler)
    hits = index.search("INV-2024-00917", k=5, mode="hybrid")
    assert hits[0].doc_id == "d7"
    # The vector leg alone cannot tell invoice numbers apart: that is why the rule exists.
    bm25_ids = [h.doc_id for h in index.search("INV-2024-00917", k=3, mode="bm25")]
    assert bm25_ids[0] == "d7"


def test_min_score_can_return_nothing(make_index: Callable[..., Index]) -> None:
    index = make_index()
    assert index.search("quantum chromodynamics of gluons", k=5, mode="vector", min_score=0.9) == []
    assert index.search("quantum chromodynamics of gluons", k=5, mode="hybrid", min_score=0.9) == []
    kept = index.search("vitamin D deficiency", k=5, mode="hybrid", min_score=0.3)
    assert [h.doc_id for h in kept][:1] == ["d1"]
    assert all(h.similarity is not None and h.similarity >= 0.3 for h in kept)


def test_upsert_replaces_chunks_and_stale_versions_are_ignored(
    make_index: Callable[..., Index],
) -> None:
    index = make_index()
    report = index.apply([Document("d1", "Vitamin C", "Vitamin C and the common cold.", 2)])
    assert report.upserted == 1
    assert index.get("d1").version == 2  # type: ignore[union-attr]
    stale = index.apply(
        [Document("d1", "Old", "old text", 1), Document("d1", "Vitamin C", "dup", 2)]
    )
    assert stale.stale == 2 and stale.upserted == 0
    assert index.search("common cold", k=1, mode="bm25")[0].doc_id == "d1"
    assert all(h.doc_id != "d1" for h in index.search("bone loss fractures", k=8, mode="bm25"))
    assert chunk_ids_consistent(index)


def test_delete_removes_every_chunk_and_blocks_resurrection(
    make_index: Callable[..., Index],
) -> None:
    index = make_index()
    long_doc = Document(
        "long", "Long", " ".join(f"sentence {i} about kidneys." for i in range(400)), 1
    )
    index.apply([long_doc])
    long_chunks = len(index.get("long").chunks)  # type: ignore[union-attr]
    assert long_chunks > 2
    before = index.count().chunks
    index.apply([Deletion("long", 2)])
    assert index.get("long") is None
    assert index.count().chunks == before - long_chunks
    assert all(h.doc_id != "long" for h in index.search("kidneys", k=10, mode="hybrid"))
    assert index.apply([Document("long", "Long", "resurrected", 1)]).stale == 1
    assert index.apply([Document("long", "Long", "a newer version", 3)]).upserted == 1
    assert chunk_ids_consistent(index)


def test_batches_apply_in_order_per_document(make_index: Callable[..., Index]) -> None:
    index = make_index([])
    report = index.apply(
        [
            Document("a", "A", "first", 1),
            Document("a", "A", "second", 2),
            Deletion("a", None),
            Document("b", "B", "bee", 5),
            Document("b", "B", "older bee", 4),
        ]
    )
    assert index.get("a") is None and index.get("b").text == "bee"  # type: ignore[union-attr]
    assert report.stale == 1


def test_identical_chunks_are_embedded_once(make_index: Callable[..., Index]) -> None:
    index = make_index([])
    report = index.apply([Document(f"copy{i}", "", "exactly the same text", 1) for i in range(5)])
    assert report.chunks_embedded == 1 and report.upserted == 5


def test_bad_documents_are_rejected_with_reasons(make_index: Callable[..., Index]) -> None:
    index = make_index([], max_doc_bytes=1024)
    report = index.apply(
        [
            Document("empty", "", "   ", 1),
            Document("huge", "", "x " * 5000, 1),
            Document("", "t", "text", 1),
            Document("ok", "t", "fine text", 1),
        ]
    )
    reasons = dict(report.rejected)
    assert set(reasons) == {"empty", "huge", ""}
    assert "no text" in reasons["empty"] and "SEMSEARCH_MAX_DOC_BYTES" in reasons["huge"]
    assert report.upserted == 1 and index.count().documents == 1


def test_bad_queries_get_clear_errors(make_index: Callable[..., Index]) -> None:
    index = make_index()
    for kwargs in ({"k": 0}, {"k": -3}, {"mode": "fuzzy"}, {"min_score": float("nan")}):
        with pytest.raises(InvalidQueryError):
            index.search("vitamin", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidQueryError, match="empty"):
        index.search("   ")
    long_query = " ".join(["vitamin deficiency bone"] * 3334)  # ~10,000 words
    assert index.search(long_query, k=3, mode="hybrid")[0].doc_id == "d1"


def test_empty_index_answers_empty(make_index: Callable[..., Index]) -> None:
    index = make_index([])
    assert index.search("anything", mode="hybrid") == []
    assert index.count().documents == 0


def test_a_five_megabyte_document_is_rejected_not_truncated(
    make_index: Callable[..., Index],
) -> None:
    index = make_index([])
    report = index.apply([Document("five", "Big", "word " * 1_000_000, 1)])  # 5 MB
    assert report.upserted == 0 and report.chunks_embedded == 0
    assert "over the 2097152-byte limit" in report.rejected[0][1]
    assert index.get("five") is None


def test_a_tombstone_inside_a_batch_keeps_replays_stale(make_index: Callable[..., Index]) -> None:
    index = make_index([])
    replayed = Document("a", "A", "second", 2)
    report = index.apply([Document("a", "A", "first", 1), replayed, Deletion("a", None), replayed])
    assert index.get("a") is None and report.stale == 1
    assert index.apply([replayed]).stale == 1  # and in a later batch too


def test_a_query_the_tokenizer_cannot_take_is_refused_with_a_reason(
    make_index: Callable[..., Index],
) -> None:
    index = make_index()
    for mode in ("vector", "bm25", "hybrid"):
        with pytest.raises(InvalidQueryError, match="lone surrogate"):
            index.search("vitamin \ud800 d", k=3, mode=mode)
    assert index.search("vitamin d", k=1, mode="hybrid")[0].doc_id == "d1"


def test_metadata_counts_towards_the_document_size_limit(make_index: Callable[..., Index]) -> None:
    index = make_index()
    limit = index.config.max_doc_bytes
    bulky = Document("big-meta", "T", "short text", 1, {"blob": "x" * limit})
    report = index.apply([bulky])
    assert report.upserted == 0 and index.get("big-meta") is None
    assert [doc_id for doc_id, _ in report.rejected] == ["big-meta"]
    assert "with its metadata" in report.rejected[0][1] and "SEMSEARCH_MAX_DOC_BYTES" in report.rejected[0][1]


def test_apply_reports_add_up(make_index: Callable[..., Index]) -> None:
    index = make_index()
    total = ApplyReport()
    total.add(index.apply([Document("s1", "T", "one", 1), Document("s2", "T", "two", 1)]))
    total.add(index.apply([Document("s1", "T", "one", 1), Deletion("s2", 2)]))
    assert (total.upserted, total.deleted, total.stale) == (2, 1, 1)
    assert total.chunks_embedded + total.chunks_cached == 2
    assert total.rejected == [] and total.rejected_changes == []


def test_bm25_mode_reads_deeper_when_one_document_fills_the_first_chunks(
    make_index: Callable[..., Index],
) -> None:
    """bm25 mode asks the lexical leg for 3k chunks first; when one long document holds all of
    them it must read deeper, and still return the exact k best documents."""
    long_text = " ".join(f"zebra stripes pattern {i} zebra" for i in range(700))
    index = make_index()
    index.apply(
        [Document("long", "Zebras", long_text, 1)]
        + [Document(f"s{i}", "Short", f"a zebra seen at site {i}", 1) for i in range(5)]
    )
    record = index.documents.get("long")
    assert record is not None and len(record.chunks) > 6  # more chunks than 3k for k=2
    chunks = index.lexical.search("zebra", 10_000)
    owners = index.documents.owner_ids([c for c, _ in chunks])
    expected: list[str] = []
    for owner in owners:
        if owner is not None and owner not in expected:
            expected.append(owner)
    hits = index.search("zebra", k=2, mode="bm25")
    assert [h.doc_id for h in hits] == expected[:2] and expected[0] == "long"
