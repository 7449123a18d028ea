"""On-disk embedding cache keyed by (model fingerprint, chunk content hash).

Embedding is the bottleneck (~16 passages/s on two cores), so no text is ever embedded twice by
the same model: an updated document re-embeds only its changed chunks, a rebuild or a crash
recovery re-embeds nothing, and a rollback migration is free. SQLite in WAL mode lets the
indexer, a migrator and `semsearch build` share one cache file safely.
"""

from __future__ import annotations

import sqlite3
import threading
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

    def get_many(
        self, fingerprint: str, hashes: Sequence[str], dimension: int
    ) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        with self._lock:
            for offset in range(0, len(unique), _LOOKUP_BATCH):
                batch = unique[offset : offset + _LOOKUP_BATCH]
                marks = ",".join("?" * len(batch))
                rows = self._db.execute(
                    "SELECT content_hash, vector FROM embeddings "
                    f"WHERE fingerprint = ? AND content_hash IN ({marks})",
                    (fingerprint, *batch),
                ).fetchall()
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
            self._db.executemany(
                "INSERT OR REPLACE INTO embeddings (fingerprint, content_hash, vector) VALUES (?, ?, ?)",
                rows,
            )
            self._db.commit()

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
