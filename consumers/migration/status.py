"""Where a running migration says how far it is: a Redis key, a file, Prometheus, the log.

The API shows it in `GET /index` (`migration`): its IndexHolder reads the Redis key
`<namespace>:migration` (the pointer key's namespace, e.g. `semsearch:migration`) and falls back
to `<data dir>/status.json` when Redis is unreachable - so both are written, the file
atomically. Prometheus gets the state as an enum plus progress and outcome counters, for
dashboards and for alerting on a rejected or stuck migration. Gate reports and flips are also
announced on `control`, for observers. How one request ended is the orchestrator's
`MigrationOutcome`; this module only publishes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import redis
from prometheus_client import Counter, Enum, Gauge

from contracts.errors import SemsearchError
from contracts.events import ControlEvent
from contracts.pointer import MIGRATION_STATUS_FILE, Pointer
from producers.publisher import Publisher

log = logging.getLogger(__name__)

STATES = (
    "idle",
    "loading",
    "bootstrapping",
    "catching-up",
    "validating",
    "flipped",
    "rejected",
    "superseded",
    "failed",
    "aborted",
)
# States in which no migration is running: the last one ended (or none ran).
FINISHED_STATES = frozenset({"idle", "flipped", "rejected", "superseded", "failed", "aborted"})

MIGRATION_STATE = Enum(
    "semsearch_migration_state",
    "State of the model migration this indexer runs (idle when none has run).",
    states=list(STATES),
)
MIGRATION_PROGRESS = Gauge(
    "semsearch_migration_progress_ratio",
    "Fraction of the serving index's documents re-embedded into the shadow index.",
)
MIGRATION_LAG = Gauge(
    "semsearch_migration_lag_events",
    "Events of the docs topic the shadow index still has to apply before the gate.",
)
MIGRATION_CHUNKS = Counter(
    "semsearch_migration_chunks_embedded",
    "Chunks embedded by the new model while bootstrapping shadow indexes.",
)
MIGRATION_GATE = Gauge(
    "semsearch_migration_gate_passed",
    "1 if the last validation gate of a shadow index passed, 0 if it was rejected.",
    ["index_id"],
)
MIGRATIONS = Counter(
    "semsearch_migrations",
    "Finished model migrations by outcome (flipped, rejected, superseded, failed, noop).",
    ["outcome"],
)


class MigrationStatus:
    """The one status document of the current (or last) migration, published on every change."""

    def __init__(self, pointer: Pointer | None, data_dir: Path) -> None:
        self.pointer = pointer
        self.path = Path(data_dir) / MIGRATION_STATUS_FILE
        self.key = pointer.migration_status_key if pointer is not None else None
        self.current: dict[str, Any] = {"state": "idle"}

    def begin(self, **fields: Any) -> None:
        now = time.time()
        self.current = {"state": "loading", "started_at": now, "progress": {}, **fields}
        self._publish()

    def update(self, state: str | None = None, **fields: Any) -> None:
        if state is not None:
            if state not in STATES:
                raise ValueError(f"unknown migration state {state!r}")
            self.current["state"] = state
        progress = fields.pop("progress", None)
        if progress:
            self.current.setdefault("progress", {}).update(progress)
        self.current.update(fields)
        self._publish()

    def _publish(self) -> None:
        self.current["updated_at"] = time.time()
        started = self.current.get("started_at")
        if isinstance(started, float):
            self.current["elapsed_s"] = round(self.current["updated_at"] - started, 3)
        MIGRATION_STATE.state(self.current["state"])
        body = json.dumps(self.current, default=str)
        if self.pointer is not None and self.key is not None:
            try:
                self.pointer.client.set(self.key, body)
            except (redis.RedisError, OSError) as exc:
                log.warning("migration status not written to Redis (%s); the file still is", exc)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(body)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("migration status not written to %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()


def announce(publisher: Publisher | None, topic: str, event: ControlEvent) -> None:
    """Publish a `gate-report` or `flip` event on control, for observers; a failure is logged,
    never raised: the Redis pointer is the truth, the event only reports it."""
    if publisher is None:
        return
    try:
        publisher.publish_control(topic, event)
    except SemsearchError as exc:
        log.error("could not publish %s on %s: %s", event.TYPE, topic, exc)
