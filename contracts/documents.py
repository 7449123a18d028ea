"""What a source sends to be indexed: a Document to upsert or a Deletion, one per change.

The contract between the event decoder (contracts/events.py), which produces them, and the
index (indexer/), which applies them; what the index then holds is indexer/documents.py.
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
