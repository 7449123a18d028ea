"""Moving the active-index pointer: the flip after a passed gate, and rollback.

One implementation for the indexer's migration service (a `rollback` event on control) and for
`semsearch rollback` (Redis directly: it must work when Kafka is what is broken). Every move is a
compare-and-set on the pointer (contracts/pointer.py), so of two racing movers exactly one wins
and the other is told the pointer moved; only validated (registered) indexes are pointed at.
A move is then announced on control as a `flip` event - for observers, never needed for it
to take effect (API nodes follow the pointer itself).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from consumers.migration.status import announce
from contracts.events import Flip
from contracts.ids import validate_index_id
from contracts.pointer import Pointer, PointerError
from producers.publisher import Publisher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PointerMove:
    """The pointer named `from_index` (None: unset) and names `to_index` now."""

    from_index: str | None
    to_index: str

    def to_json(self) -> dict[str, Any]:
        return {"from_index": self.from_index, "to_index": self.to_index}


def flip(pointer: Pointer, live_id: str, new_id: str, **info: Any) -> PointerMove | None:
    """Point at `new_id` if the pointer still names `live_id` (registering `new_id` with
    `info`); None if it moved meanwhile (another migration or a rollback won)."""
    if not pointer.compare_and_set(live_id, new_id, **info):
        return None
    log.info("flipped the pointer from %s to %s", live_id, new_id)
    return PointerMove(live_id, new_id)


def roll_back(pointer: Pointer, to_index: str | None = None) -> PointerMove:
    """Back to the most recent previously active, still registered index, or to `to_index`
    (which must be registered). Raises PointerError when refused; Redis errors pass through."""
    current = pointer.get()
    if to_index is None:
        now = pointer.rollback(current)
    else:
        now = validate_index_id(to_index)
        registered = pointer.registered()
        if now not in registered:
            raise PointerError(
                f"{now} never passed validation; roll back only to a registered index: "
                f"{', '.join(sorted(registered)) or 'none'}"
            )
        if not pointer.compare_and_set(current, now):
            raise PointerError("the pointer moved while rolling back; run it again")
    log.info("rolled back from %s to %s", current, now)
    return PointerMove(current, now)


def announce_move(publisher: Publisher | None, topic: str, move: PointerMove) -> None:
    """The `flip` event of a move, on control (see status.announce: logged if it fails)."""
    announce(publisher, topic, Flip(from_index=move.from_index, to_index=move.to_index))
