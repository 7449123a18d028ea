"""Fixtures for the snapshot package's tests (the index fixtures come from tests/indexer)."""

from __future__ import annotations

import pytest

from contracts.documents import Document


@pytest.fixture
def many() -> list[Document]:
    """Enough notes (seal_chunks=64) for a sealed segment besides the live one."""
    return [
        Document(f"m{i}", f"Note {i}", f"Clinical note {i} about topic {i % 7} and dosage {i}.", 1)
        for i in range(90)
    ]
