"""Turn a polled batch into index changes and poison events.

Validation happens here, per event, before `Index.apply`: apply works on a whole batch, and one
bad document must not take the others down with it, nor vanish silently — it goes to the DLQ
with the reason, and its offset still advances.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from consumers.dead_letter import PoisonEvent
from consumers.source import Record
from indexer.documents import Change, Deletion, Document
from indexer.errors import InvalidDocumentError
from semsearch.events import EventError, decode_doc_event


@dataclass
class SplitBatch:
    changes: list[Change] = field(default_factory=list)
    poison: list[PoisonEvent] = field(default_factory=list)


def split_batch(records: Sequence[Record], validate: Callable[[Document], None]) -> SplitBatch:
    """Decode every record; keep the good ones in order (apply needs per-document order)."""
    result = SplitBatch()
    for record in records:
        try:
            change = decode_doc_event(record.key, record.value).to_change()
            if isinstance(change, Document):
                validate(change)
        except EventError as exc:
            result.poison.append(PoisonEvent(record, f"invalid event: {exc.reason}"))
            continue
        except InvalidDocumentError as exc:
            result.poison.append(PoisonEvent(record, f"invalid document: {exc}"))
            continue
        result.changes.append(change)
    return result


def apply_segments(changes: Sequence[Change]) -> list[list[Change]]:
    """Split a batch where a tombstone follows an earlier event of the same document.

    `Index.apply` dedupes a batch per document, and a tombstone (delete whatever is held) there
    forgets the version of an upsert earlier in the same batch, so [upsert v2, tombstone,
    replayed upsert v2] would end with v2 live instead of deleted. Applying such a batch in two
    calls gives the sequential answer; it is rare enough that the extra embedding call is free.
    """
    segments: list[list[Change]] = [[]]
    seen: set[str] = set()
    for change in changes:
        if isinstance(change, Deletion) and change.version is None and change.doc_id in seen:
            segments.append([])
            seen = set()
        segments[-1].append(change)
        seen.add(change.doc_id)
    return [segment for segment in segments if segment]
