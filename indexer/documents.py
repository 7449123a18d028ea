"""What the index holds for one live document (DocumentRecord, its ChunkRecords).

These records are the index's source of truth for everything but vectors: search results are
resolved through them, and a model migration re-embeds from them instead of replaying the
whole topic. What arrives from a source (Document, Deletion) is contracts/documents.py; where
the records are stored: `indexer/document_store.py` (SQLite, MVCC by generation); what the
index keeps of them in RAM: `indexer/document_table.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contracts.documents import Document


@dataclass(frozen=True)
class ChunkRecord:
    """One chunk: its vector id, where its text lies in the document, and its content hash."""

    chunk_id: int
    start: int
    end: int
    content_hash: str


@dataclass(frozen=True)
class DocumentRecord:
    """What the index holds for one live document."""

    doc_id: str
    version: int
    title: str
    text: str
    metadata: dict[str, Any]
    chunks: tuple[ChunkRecord, ...]

    @property
    def full_text(self) -> str:
        return Document(self.doc_id, self.title, self.text).full_text

    def chunk_text(self, chunk: ChunkRecord) -> str:
        return self.full_text[chunk.start : chunk.end]

    def to_json(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id,
            "version": self.version,
            "title": self.title,
            "text": self.text,
            "metadata": self.metadata,
            "chunks": [[c.chunk_id, c.start, c.end, c.content_hash] for c in self.chunks],
        }

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> DocumentRecord:
        return cls(
            doc_id=row["doc_id"],
            version=int(row["version"]),
            title=row["title"],
            text=row["text"],
            metadata=row.get("metadata") or {},
            chunks=tuple(ChunkRecord(int(c[0]), int(c[1]), int(c[2]), c[3]) for c in row["chunks"]),
        )
