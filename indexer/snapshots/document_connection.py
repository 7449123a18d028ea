"""The one connection to an index directory's documents.sqlite that a SnapshotStore's parts share.

Shared because the writer, GC, loading and refresh all read or write the same store: one
connection per SnapshotStore, opened read-only until the writer (under the WriterLock) asks for
a writable one, which only it may create or write to.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from contracts.errors import SnapshotError
from indexer.document_store import STORE_FILE, DocumentStore


class DocumentConnection:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._store: DocumentStore | None = None
        self._writer_checked = False
        self._writer_error: SnapshotError | None = None

    @property
    def path(self) -> Path:
        return self.root / STORE_FILE

    def store(self, *, writer: bool = False) -> DocumentStore:
        current = self._store
        if current is None or (writer and not current.writer):
            current = self._store = DocumentStore(self.root, writer=writer)
        return current

    def open_for_writer(self, latest_generation: Callable[[], int | None]) -> None:
        """What the writer does once when it opens: undo rows a crash left above the newest
        manifest, and let SQLite check its pages (O(file), so not on every reader load). A
        failure is remembered: the store stays refused, not half-checked."""
        if self._writer_error is not None:
            raise self._writer_error
        if self._writer_checked:
            return
        store = self.store(writer=True)
        try:
            store.quick_check()
            store.rollback_after(latest_generation() or 0)
        except SnapshotError as exc:
            self._writer_error = exc
            raise
        self._writer_checked = True
