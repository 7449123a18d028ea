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
from indexer.documents import Change, Document
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
