"""On-disk embedding cache keyed by (model fingerprint, chunk content hash).

Embedding is the bottleneck (~16 passages/s on two cores), so no text is ever embedded twice by
the same model: an updated document re-embeds only its changed chunks, a rebuild or a crash
recovery re-embeds nothing, and a rollback migration is free. SQLite in WAL mode lets the
indexer, a migrator and `semsearch build` share one cache file safely.

The cache only saves work, so it never stops indexing: a read that fails (a locked or corrupt
file) is a miss, and a write that fails (disk full) is logged and counted (`write_failures`) and
costs a re-embedding later, never the batch. Snapshots, not the cache, are what must be durable.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    fingerprint TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (fingerprint, content_hash)
) WITHOUT ROWID
"""
_LOOKUP_BATCH = 500
_WARN_EVERY_S = 60.0

log = logging.getLogger(__name__)


class EmbeddingCache:
    """Vectors by (fingerprint, content hash); float32, already normalized."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._db.commit()
        self.read_failures = 0
        self.write_failures = 0
        self._warned_at: float | None = None

    def _warn(self, what: str, exc: sqlite3.Error) -> None:
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "embedding cache %s: %s failed (%s); indexing goes on, affected chunks will be "
                "embedded again (%d read / %d write failures so far)",
                self.path, what, exc, self.read_failures, self.write_failures,
            )

    def get_many(
        self, fingerprint: str, hashes: Sequence[str], dimension: int
    ) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        with self._lock:
            for offset in range(0, len(unique), _LOOKUP_BATCH):
                batch = unique[offset : offset + _LOOKUP_BATCH]
                marks = ",".join("?" * len(batch))
                try:
                    rows = self._db.execute(
                        "SELECT content_hash, vector FROM embeddings "
                        f"WHERE fingerprint = ? AND content_hash IN ({marks})",
                        (fingerprint, *batch),
                    ).fetchall()
                except sqlite3.Error as exc:
                    self.read_failures += 1
                    self._warn("a read", exc)
                    continue
                for content_hash, blob in rows:
                    vector = np.frombuffer(blob, dtype=np.float32)
                    if vector.shape[0] == dimension:
                        found[content_hash] = vector
        return found

    def put_many(self, fingerprint: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        rows = [
            (fingerprint, h, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for h, v in items
        ]
        if not rows:
            return
        with self._lock:
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO embeddings (fingerprint, content_hash, vector) VALUES (?, ?, ?)",
                    rows,
                )
                self._db.commit()
            except sqlite3.Error as exc:
                self.write_failures += 1
                with contextlib.suppress(sqlite3.Error):
                    self._db.rollback()
                self._warn("a write", exc)

    def count(self, fingerprint: str | None = None) -> int:
        with self._lock:
            if fingerprint is None:
                row = self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()
            else:
                row = self._db.execute(
                    "SELECT COUNT(*) FROM embeddings WHERE fingerprint = ?", (fingerprint,)
                ).fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
