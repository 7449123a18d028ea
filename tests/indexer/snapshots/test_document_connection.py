"""The writer's one-time check of documents.sqlite: done once, and a failure stays a refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.errors import SnapshotError
from indexer.snapshots.document_connection import DocumentConnection


def test_the_writer_checks_the_store_once(tmp_path: Path) -> None:
    asked: list[int] = []

    def latest() -> int | None:
        asked.append(1)
        return None

    connection = DocumentConnection(tmp_path)
    connection.open_for_writer(latest)
    connection.open_for_writer(latest)
    assert asked == [1] and connection.path.is_file()


def test_a_corrupt_store_stays_refused(tmp_path: Path) -> None:
    (tmp_path / "documents.sqlite").write_bytes(b"not a database" * 512)
    connection = DocumentConnection(tmp_path)
    with pytest.raises(SnapshotError, match="corrupt or truncated") as first:
        connection.open_for_writer(lambda: 1)
    with pytest.raises(SnapshotError) as again:
        connection.open_for_writer(lambda: 1)
    assert again.value is first.value
