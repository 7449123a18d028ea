"""Assertions and waits shared by tests of different packages."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from indexer.index import Index

T = TypeVar("T")

# Tests synchronise on conditions, never on elapsed time: a busy CI machine makes any fixed
# sleep too short sometimes. The poll interval only bounds how soon a met condition is seen.
_POLL_S = 0.05


def wait_until(
    condition: Callable[[], T], timeout_s: float, what: str, *, poll_s: float = _POLL_S
) -> T:
    """Poll `condition` until it returns something truthy (returned), or fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    tick = threading.Event()
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        tick.wait(poll_s)


def pace(seconds: float) -> None:
    """Spread load over time (a producer's rate, a query loop's rate); never a synchronisation."""
    threading.Event().wait(seconds)


def chunk_ids_consistent(index: Index) -> bool:
    """Every live chunk has exactly one vector and one lexical entry; nothing else is searchable."""
    live_chunks = {c.chunk_id for record in index.documents for c in record.chunks}
    vectors = index.vectors.vectors_of(sorted(live_chunks))
    searchable = len(index.vectors)
    return set(vectors) == live_chunks and searchable == len(live_chunks) == len(index.lexical)


def flip_a_byte(path: Path) -> None:
    """Corrupt a file the way a bad disk does: same size, one byte in the middle changed."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
