"""The request ledger: each control request is handled once, and an accepted one is never lost.

Two Redis hashes beside the pointer (`<ns>` = the pointer key's namespace):
  <ns>:requests           request key -> JSON outcome: handled, never run again - so a new
                          consumer group replaying `control` from its beginning re-runs nothing
  <ns>:requests:pending   request key -> the raw event: accepted (its control offset is
                          committed) and not finished; resumed, oldest first, after a restart
A request is recorded in one of them *before* its control offset is committed.
"""

from __future__ import annotations

import json
from typing import Any

from contracts.events import ModelUpgrade, Rollback
from contracts.pointer import Pointer


def request_key(event: ModelUpgrade | Rollback) -> str:
    """Identity of a request: its kind, target and the time it was made."""
    target = event.model if isinstance(event, ModelUpgrade) else (event.to_index or "")
    return f"{event.TYPE}|{target}|{event.requested_at!r}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RequestLedger:
    """The two hashes above; Redis errors pass through (callers retry, nothing is committed)."""

    def __init__(self, pointer: Pointer) -> None:
        self.client = pointer.client
        self.requests_key = f"{pointer.namespace}:requests"
        self.pending_key = f"{pointer.namespace}:requests:pending"

    def handled(self, key: str) -> bool:
        return bool(self.client.hexists(self.requests_key, key))

    def outcome(self, key: str) -> dict[str, Any] | None:
        raw = self.client.hget(self.requests_key, key)
        return None if raw is None else dict(json.loads(raw))

    def is_pending(self, key: str) -> bool:
        return bool(self.client.hexists(self.pending_key, key))

    def accept(self, key: str, raw_event: bytes) -> None:
        """Durably accepted: whoever executes requests (now or after a restart) runs it."""
        self.client.hset(self.pending_key, key, raw_event)

    def pending(self) -> list[str]:
        """Accepted, unfinished request keys, in key order (kind, model, request time)."""
        return sorted(_text(k) for k in self.client.hkeys(self.pending_key))

    def pending_event(self, key: str) -> bytes | None:
        """The raw event of an accepted request; None once it is finished."""
        raw = self.client.hget(self.pending_key, key)
        return None if raw is None else (raw if isinstance(raw, bytes) else raw.encode())

    def finish(self, key: str, outcome: dict[str, Any]) -> None:
        """Record how a request ended and take it off the pending list."""
        self.client.hset(self.requests_key, key, json.dumps(outcome, default=str))
        self.client.hdel(self.pending_key, key)
