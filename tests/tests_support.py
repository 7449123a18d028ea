"""Assertions shared by tests of different packages."""

from __future__ import annotations

from indexer.index import Index


def chunk_ids_consistent(index: Index) -> bool:
    """Every live chunk has exactly one vector and one lexical entry; nothing else is searchable."""
    live_chunks = {c.chunk_id for record in index.documents for c in record.chunks}
    vectors = index.vectors.vectors_of(sorted(live_chunks))
    searchable = len(index.vectors)
    return set(vectors) == live_chunks and searchable == len(live_chunks) == len(index.lexical)
