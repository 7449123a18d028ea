"""Turn a polled batch into index changes and poison events.

Validation happens here, per event, before `Index.apply`: apply works on a whole batch, and one
bad document must not take the others down with it, nor vanish silently — it goes to the DLQ
with the reason, and its offset still advances.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from consumers.dead_letter import PoisonEvent
from consumers.record import Record
from contracts.documents import Change, Document
from contracts.errors import InvalidDocumentError
from contracts.events import EventError, decode_doc_event


@dataclass
class SplitBatch:
    changes: list[Change] = field(default_factory=list)
    poison: list[PoisonEvent] = field(default_factory=list)
    # id(change) -> (change, the record it was decoded from); the change is kept so the id
    # cannot be reused while the batch lives.
    _origins: dict[int, tuple[Change, Record]] = field(default_factory=dict, repr=False)

    def add(self, change: Change, record: Record) -> None:
        self.changes.append(change)
        self._origins[id(change)] = (change, record)

    def record_of(self, change: Change) -> Record:
        """The record `change` was decoded from (it must be one of this batch's changes)."""
        found = self._origins.get(id(change))
        if found is None or found[0] is not change:
            raise KeyError(f"change for {change.doc_id!r} is not from this batch")
        return found[1]

    def rejected_poison(self, changes: Sequence[Change], reasons: Sequence[str]) -> list[PoisonEvent]:
        """Poison events for changes the index refused after validation (e.g. NaN embeddings):
        their records go to the DLQ like any other poison, so that nothing is lost."""
        return [
            PoisonEvent(self.record_of(change), f"rejected by the index: {reason}")
            for change, reason in zip(changes, reasons, strict=True)
        ]


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
        result.add(change, record)
    return result
