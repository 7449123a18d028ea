"""The migration progress GET /index shows: what a migrator published, read, never interpreted.

The migration orchestrator (consumers/migration/status.py writes it) publishes a JSON document under
`<namespace>:migration` next to the pointer in Redis, and as <data_dir>/status.json for a
process without Redis; Redis wins while it answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis

from contracts.pointer import MIGRATION_STATUS_FILE, Pointer


def migration_status(pointer: Pointer | None, data_dir: Path) -> dict[str, Any] | None:
    """The published progress; `pointer` is the connection to ask first (None: Redis is down)."""
    if pointer is not None:
        try:
            raw = pointer.client.get(pointer.migration_status_key)
            if raw:
                data = json.loads(raw)
                return data if isinstance(data, dict) else {"value": data}
        except (redis.RedisError, OSError, ValueError):
            pass
    try:
        data = json.loads((Path(data_dir) / MIGRATION_STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
