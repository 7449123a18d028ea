"""The document table: which version of each document the index holds, and its chunks.

It is the index's source of truth for everything but vectors: search results are resolved through
it, the lexical index is rebuilt from it, and a model migration re-embeds from it instead of
replaying the whole topic.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

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


class DocumentTable:
    """doc_id → live record, plus the versions of deleted documents.

    Deleted versions are remembered so that a late, older upsert cannot resurrect a document
    (replays and out-of-order delivery change nothing).
    """

    def __init__(self) -> None:
        self._live: dict[str, DocumentRecord] = {}
        self._deleted: dict[str, int] = {}
        self._owner: dict[int, tuple[str, int]] = {}

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._live

    def __iter__(self) -> Iterator[DocumentRecord]:
        return iter(self._live.values())

    def get(self, doc_id: str) -> DocumentRecord | None:
        return self._live.get(doc_id)

    def held_version(self, doc_id: str) -> int | None:
        """The newest version seen for a document, live or deleted."""
        record = self._live.get(doc_id)
        if record is not None:
            return record.version
        return self._deleted.get(doc_id)

    def is_stale(self, doc_id: str, version: int) -> bool:
        held = self.held_version(doc_id)
        return held is not None and version <= held

    def put(self, record: DocumentRecord) -> DocumentRecord | None:
        previous = self._live.get(record.doc_id)
        if previous is not None:
            for chunk in previous.chunks:
                self._owner.pop(chunk.chunk_id, None)
        self._live[record.doc_id] = record
        self._deleted.pop(record.doc_id, None)
        for position, chunk in enumerate(record.chunks):
            self._owner[chunk.chunk_id] = (record.doc_id, position)
        return previous

    def remove(self, doc_id: str, version: int | None) -> DocumentRecord | None:
        previous = self._live.pop(doc_id, None)
        if previous is not None:
            for chunk in previous.chunks:
                self._owner.pop(chunk.chunk_id, None)
        held = previous.version if previous is not None else self._deleted.get(doc_id)
        candidates = [v for v in (held, version) if v is not None]
        self._deleted[doc_id] = max(candidates) if candidates else 0
        return previous

    def owner(self, chunk_id: int) -> tuple[DocumentRecord, ChunkRecord] | None:
        """The document and chunk a vector id belongs to, if it is still live."""
        found = self._owner.get(chunk_id)
        if found is None:
            return None
        record = self._live[found[0]]
        return record, record.chunks[found[1]]

    @property
    def chunk_count(self) -> int:
        return len(self._owner)

    @property
    def deleted_versions(self) -> dict[str, int]:
        return dict(self._deleted)

    def dump(self, out: TextIO) -> None:
        """Write one JSON line per document; `out` must be a UTF-8 text file.

        Nothing unwritable should get in (events and `Index.validate_document` refuse lone
        surrogates), but if one ever does, that one record is written with ASCII escapes, which
        load back to the same string: one bad record must never make every snapshot fail.
        A UTF-8 TextIOWrapper encodes in `write`, before buffering, so the failed write leaves
        nothing behind. The fallback costs nothing for records that encode.
        """
        for record in self._live.values():
            row = record.to_json()
            try:
                out.write(json.dumps(row, ensure_ascii=False))
            except UnicodeEncodeError:
                out.write(json.dumps(row, ensure_ascii=True))
            out.write("\n")
        out.write(json.dumps({"deleted": self._deleted}))
        out.write("\n")

    @classmethod
    def load(cls, path: Path) -> DocumentTable:
        table = cls()
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                if "deleted" in row and "doc_id" not in row:
                    table._deleted.update({k: int(v) for k, v in row["deleted"].items()})
                else:
                    table.put(DocumentRecord.from_json(row))
        return table
