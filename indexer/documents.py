"""The document contract: what a source sends (Document, Deletion) and what the index holds for
one live document (DocumentRecord, its ChunkRecords).

These records are the index's source of truth for everything but vectors: search results are
resolved through them, and a model migration re-embeds from them instead of replaying the
whole topic. Where they are stored: `indexer/document_store.py` (SQLite, MVCC by generation);
what the index keeps of them in RAM: `indexer/document_table.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Longest doc_id accepted anywhere (events, the index): ids travel in every search hit and key.
MAX_DOC_ID_CHARS = 512


@dataclass(frozen=True)
class Document:
    """A document as it arrives from a source: the unit of upsert."""

    doc_id: str
    title: str
    text: str
    version: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def full_text(self) -> str:
        """Title and body as one stream: the title belongs to the first chunk."""
        if self.title and self.text:
            return f"{self.title}\n\n{self.text}"
        return self.title or self.text


@dataclass(frozen=True)
class Deletion:
    """A request to remove a document. `version=None` is a tombstone: delete whatever is held."""

    doc_id: str
    version: int | None = None


Change = Document | Deletion


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
