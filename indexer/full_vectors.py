"""The full float32 vectors of one PQ-coded sealed segment, on disk beside it.

Why: PQ codes are lossy (48 bytes for 384 floats), so a PQ segment cannot serve exact scores,
and nothing may be rebuilt from its codes. Its full vectors are kept in `<segment>.vectors`,
memory-mapped rather than read: a query re-ranks its few hundred PQ candidates with a gather of
those rows, merges and retrains read them in order, and the kernel's page cache (not the
process' heap) decides what stays resident. Rows are sorted by chunk id, so a gather is one
`searchsorted`.

File layout (little-endian): 32-byte header (magic, row count, dimension, 0), the ids (int64,
ascending), then the vectors (float32, row-major, in id order). The manifest checksums the file
like the segment itself; `open` also checks that the size matches the header, so a truncated
file is refused even where checksums are skipped (a refresh of files already held).

A store built in memory (a seal, merge or retrain) stays in RAM until the snapshot that first
writes it; `spill` then swaps in the memory map of the written file.

The map is advised MADV_RANDOM: a re-rank reads ~100 scattered 1.5 KB rows per segment, and the
kernel's default readahead (128 KB per fault) would page in the whole file under a query load
(measured at 100k: 169 MB resident after 200 queries, the full file). Scans that read
everything (merges, retrains) advise MADV_WILLNEED first, so they stream instead of faulting.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np

from contracts.errors import SnapshotError

MAGIC = b"SSFVEC01"
HEADER = 32
_WRITE_ROWS = 16384  # rows per write: a merge's output is not copied into one bytes object


class FullVectors:
    """Chunk id -> float32 vector, sorted by id; in RAM or memory-mapped from its file."""

    def __init__(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        path: Path | None = None,
        mapping: mmap.mmap | None = None,
    ) -> None:
        self.ids = ids
        self.vectors = vectors
        self.path = path
        self._mapping = mapping

    def _will_scan(self) -> None:
        if self._mapping is not None and hasattr(mmap, "MADV_WILLNEED"):
            self._mapping.madvise(mmap.MADV_WILLNEED)

    @classmethod
    def from_arrays(cls, ids: np.ndarray, vectors: np.ndarray) -> FullVectors:
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        return cls(ids[order], np.ascontiguousarray(vectors[order], dtype=np.float32))

    @classmethod
    def empty_for(cls, ids: np.ndarray, dimension: int) -> FullVectors:
        """A store for exactly `ids`, filled part by part (`fill`): a merge or retrain then
        holds its output and one source's vectors, not every source's plus a sorted copy."""
        ids = np.sort(np.asarray(ids, dtype=np.int64))
        return cls(ids, np.empty((len(ids), dimension), dtype=np.float32))

    def fill(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.vectors[np.searchsorted(self.ids, ids)] = vectors

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def in_memory(self) -> bool:
        return self.path is None

    @property
    def mapped(self) -> bool:
        """Served from the file's memory map (not heap memory)."""
        return self._mapping is not None

    def gather(self, ids: np.ndarray, *, scan: bool = False) -> np.ndarray:
        """The vectors of `ids` (in that order); a missing id is a KeyError. `scan`: most of
        the file is wanted, so it is read ahead."""
        if scan:
            self._will_scan()
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return np.zeros((0, self.dimension), dtype=np.float32)
        if not len(self):
            raise KeyError(f"chunk {int(ids[0])} has no full vector here")
        rows = np.minimum(np.searchsorted(self.ids, ids), len(self) - 1)
        wrong = self.ids[rows] != ids
        if wrong.any():
            raise KeyError(f"chunk {int(ids[wrong][0])} has no full vector here")
        # Ascending rows: a memory map reads the pages in file order.
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(ids), self.dimension), dtype=np.float32)
        out[order] = self.vectors[rows[order]]
        return out

    def alive(self, dead: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) without `dead`, read in file order (copied out of the map)."""
        self._will_scan()
        keep = ~np.isin(self.ids, dead) if len(dead) else np.ones(len(self), dtype=bool)
        return self.ids[keep], np.asarray(self.vectors[keep], dtype=np.float32)

    def write(self, path: Path) -> None:
        count, dimension = len(self), self.dimension
        with path.open("wb") as handle:
            header = MAGIC + np.array([count, dimension, 0], dtype="<u8").tobytes()
            handle.write(header)
            handle.write(np.ascontiguousarray(self.ids, dtype="<i8").tobytes())
            for start in range(0, count, _WRITE_ROWS):
                block = self.vectors[start : start + _WRITE_ROWS]
                handle.write(np.ascontiguousarray(block, dtype="<f4").tobytes())

    def spill(self, path: Path) -> None:
        """After `path` was written from this store: serve from its memory map, free the RAM."""
        if self.path == path:
            return
        opened = FullVectors.open(path)
        if len(opened) != len(self):
            raise SnapshotError(f"{path} holds {len(opened)} vectors, not {len(self)}")
        self.ids, self.vectors, self._mapping = opened.ids, opened.vectors, opened._mapping
        self.path = path

    @classmethod
    def open(cls, path: Path) -> FullVectors:
        size = path.stat().st_size
        with path.open("rb") as handle:
            header = handle.read(HEADER)
        if len(header) != HEADER or header[:8] != MAGIC:
            raise SnapshotError(
                f"{path} is not a full-vectors file; the segment it belongs to must be rebuilt "
                "(start the indexer of this index: `semsearch index`)"
            )
        count, dimension, _ = (int(v) for v in np.frombuffer(header[8:], dtype="<u8"))
        expected = HEADER + 8 * count + 4 * count * dimension
        if size != expected:
            raise SnapshotError(
                f"{path} is truncated or corrupt ({size} bytes, {expected} expected for "
                f"{count} vectors of dimension {dimension}); the segment it belongs to must be "
                "rebuilt (start the indexer of this index: `semsearch index`)"
            )
        if count == 0:
            return cls(np.zeros(0, dtype=np.int64), np.zeros((0, dimension), dtype=np.float32), path)
        with path.open("rb") as handle:
            mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        if hasattr(mmap, "MADV_RANDOM"):
            mapping.madvise(mmap.MADV_RANDOM)
        ids = np.frombuffer(mapping, dtype="<i8", count=count, offset=HEADER)
        vectors = np.frombuffer(
            mapping, dtype="<f4", count=count * dimension, offset=HEADER + 8 * count
        ).reshape(count, dimension)
        return cls(ids, vectors, path, mapping)
