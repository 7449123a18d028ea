"""The live vector segment on disk: one base file, then one small delta per generation.

Why: the live segment holds up to `seal_chunks` rows (8,192 x 384 float32 = 12.6 MB); rewriting
it every generation made a generation cost the live size, not its change (bench.scale: 5-13 MB
of `live.npz` per 256 changed documents). Now a generation writes only the rows added since the
previous one and the ids removed from the live segment since (`LiveSegment` journals both,
O(1) per row), and a reader that already holds the previous generation's rows reads only the
deltas it has not seen (`prepare_update` outside the index lock, `apply_update` under it).

Files: `live/live-<hex>.base.npz` and `live/live-<hex>.delta.npz` under the index root, written
once (tmp + fsync + rename) and shared by every generation whose manifest lists them. A file is
an npz of `ids` (int64), `vectors` (float32, rows x dimension) and `removed` (int64; empty in a
base). The manifest's `live` section lists the chain in order, each file with its sha256 and
size (also in the manifest's `files`, so loading verifies them like every other file), plus the
row count the chain must add up to; a delta whose removals are not in the rows before it, or a
chain that does not add up, is a LiveStoreError (a SnapshotError: the loader falls back).

Bounded chain: a base is written instead of a delta when the segment has no chain (a fresh index,
a seal replaced the segment, a generation of the layout before deltas), when MAX_DELTAS deltas
exist, when the chain's files would hold more than twice the live segment's rows (added plus
removed, the base's included), or when a file of the chain is gone. So loading reads at most
twice the live rows, and the base rewrites cost amortized O(change): after one, as many rows as
the segment holds must change before the next. (Counting the base matters: after a seal the
base is empty and the first delta holds every row; measuring deltas against the segment alone
rewrote the whole segment at the second generation, 7 MB of a 256-document change at 1M.) Generations before deltas have `GEN/live.npz` and no
`live` section: they still load (`LiveSegment.load`), and the next generation writes a base.
"""

from __future__ import annotations

import hashlib
import io
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from contracts.errors import SnapshotError
from indexer.durable_files import remove_unreferenced, write_atomically
from indexer.segments import LiveSegment

SECTION_FORMAT = 1
DIRECTORY = "live"
MAX_DELTAS = 16
_HINT = (
    "the snapshot loader serves an older generation; if none loads, rebuild the index "
    "(`semsearch build`, or delete the index directory and re-consume the topic)"
)


class LiveStoreError(SnapshotError):
    """A live-segment file is missing, malformed or does not add up to its manifest."""


@dataclass(frozen=True)
class LiveChain:
    """The manifest entries of the files a live segment's rows were persisted as, in order."""

    entries: tuple[dict[str, Any], ...]

    @property
    def files(self) -> list[str]:
        return [str(e["file"]) for e in self.entries]

    @property
    def deltas(self) -> int:
        return sum(1 for e in self.entries if e["kind"] == "delta")

    @property
    def rows_read(self) -> int:
        """Rows (added + removed) a load reads through this chain, its base's included."""
        return sum(int(e["added"]) + int(e["removed"]) for e in self.entries)


@dataclass
class LivePlan:
    """What `persist` wrote; `commit` once the generation naming it is published."""

    segment: LiveSegment
    chain: LiveChain
    added: np.ndarray
    removed: np.ndarray
    written: list[str] = field(default_factory=list)

    def commit(self) -> None:
        self.segment.persisted(self.chain, self.added, self.removed)


def _chain_of(segment: LiveSegment) -> LiveChain | None:
    return segment.chain if isinstance(segment.chain, LiveChain) else None


def _write(root: Path, kind: str, ids: np.ndarray, vectors: np.ndarray, removed: np.ndarray) -> dict[str, Any]:
    """One chain file, atomically; its entry carries the checksum of the bytes written."""
    buffer = io.BytesIO()
    np.savez(
        buffer,
        ids=np.ascontiguousarray(ids, dtype=np.int64),
        vectors=np.ascontiguousarray(vectors, dtype=np.float32),
        removed=np.ascontiguousarray(removed, dtype=np.int64),
    )
    data = buffer.getbuffer()
    rel = f"{DIRECTORY}/live-{uuid.uuid4().hex[:12]}.{kind}.npz"
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda tmp: tmp.write_bytes(data))
    return {
        "file": rel,
        "kind": kind,
        "added": int(ids.shape[0]),
        "removed": int(removed.shape[0]),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }


def persist(root: Path, segment: LiveSegment) -> tuple[dict[str, Any], LivePlan]:
    """Write what the segment changed since its chain (a delta, or a base when due); returns the
    manifest section and the plan to `commit` after publishing. Called under the index's read
    lock (no add/remove meanwhile); the segment itself is not changed until `commit`."""
    added, removed = segment.journal()
    chain = _chain_of(segment)
    if chain is not None and not all((root / rel).is_file() for rel in chain.files):
        chain = None  # a file GC removed (after a failed generation): start over from a base
    plan: LivePlan
    if chain is not None and not len(added) and not len(removed):
        plan = LivePlan(segment, chain, added, removed)
    elif (
        chain is not None
        and chain.deltas < MAX_DELTAS
        and chain.rows_read + len(added) + len(removed) <= 2 * len(segment)
    ):
        entry = _write(root, "delta", added, segment.rows_of(added), removed)
        plan = LivePlan(segment, LiveChain((*chain.entries, entry)), added, removed, [entry["file"]])
    else:
        entry = _write(root, "base", segment.ids, segment.vectors, np.zeros(0, dtype=np.int64))
        plan = LivePlan(segment, LiveChain((entry,)), added, removed, [entry["file"]])
    section = {
        "format": SECTION_FORMAT,
        "rows": len(segment),
        "dimension": segment.dimension,
        "files": [dict(e) for e in plan.chain.entries],
    }
    return section, plan


def files(section: dict[str, Any] | None) -> list[str]:
    """Paths (relative to the index root) a generation's live section needs."""
    return [str(e["file"]) for e in (section or {}).get("files", [])]


def checksums(section: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The manifest `files` entries of the section's files (computed when each was written)."""
    return {str(e["file"]): {"sha256": e["sha256"], "bytes": e["bytes"]} for e in section["files"]}


def _check_section(root: Path, section: Any) -> list[dict[str, Any]]:
    if not isinstance(section, dict) or section.get("format") != SECTION_FORMAT:
        found = section.get("format") if isinstance(section, dict) else section
        raise LiveStoreError(
            f"live section of {root} has format {found!r}, this version reads {SECTION_FORMAT}; "
            f"{_HINT}"
        )
    entries = section.get("files")
    if not isinstance(entries, list) or not entries or entries[0].get("kind") != "base":
        raise LiveStoreError(f"live section of {root} does not start with a base file; {_HINT}")
    if any(e.get("kind") != "delta" for e in entries[1:]):
        raise LiveStoreError(f"live section of {root} lists a base after its first file; {_HINT}")
    return entries


def _read(root: Path, entry: dict[str, Any], dimension: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    path = root / str(entry["file"])
    try:
        with np.load(path, allow_pickle=False) as data:
            ids, vectors, removed = data["ids"], data["vectors"], data["removed"]
    except FileNotFoundError:
        raise LiveStoreError(f"{path} is missing; {_HINT}") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise LiveStoreError(f"{path} is not a readable live-segment file ({exc}); {_HINT}") from None
    if (
        ids.dtype != np.int64
        or removed.dtype != np.int64
        or vectors.dtype != np.float32
        or ids.ndim != 1
        or removed.ndim != 1
        or vectors.shape != (ids.shape[0], dimension)
        or ids.shape[0] != int(entry["added"])
        or removed.shape[0] != int(entry["removed"])
    ):
        raise LiveStoreError(
            f"{path} holds {ids.shape[0]} ids / {removed.shape[0]} removals of shape "
            f"{vectors.shape}, the manifest lists {entry['added']} / {entry['removed']} of "
            f"dimension {dimension}; {_HINT}"
        )
    return ids, vectors, removed


def load(root: Path, section: dict[str, Any], dimension: int) -> LiveSegment:
    """The live segment of a generation: its base, then each delta (removals, then rows)."""
    entries = _check_section(root, section)
    rows = int(section["rows"])
    segment = LiveSegment(dimension, capacity=max(64, rows))
    for entry in entries:
        ids, vectors, removed = _read(root, entry, dimension)
        if len(removed) and segment.remove(set(removed.tolist())) != len(removed):
            raise LiveStoreError(
                f"{root / entry['file']} removes rows its predecessors do not hold; {_HINT}"
            )
        if any(segment.contains(i) for i in ids.tolist()):
            raise LiveStoreError(f"{root / entry['file']} adds rows already held; {_HINT}")
        segment.add(ids, vectors)
    if len(segment) != rows:
        raise LiveStoreError(
            f"live segment files of {root} add up to {len(segment)} rows, the manifest says "
            f"{rows}; {_HINT}"
        )
    segment.adopt_chain(LiveChain(tuple(dict(e) for e in entries)))
    return segment


def held_files(segment: LiveSegment, section: dict[str, Any] | None) -> list[str] | None:
    """The section's files `segment` already holds exactly (its chain is a prefix of the
    section's, nothing changed since): a refresh reads only the rest. None: read it all."""
    chain = _chain_of(segment)
    if chain is None or not segment.clean() or not isinstance(section, dict):
        return None
    entries = section.get("files")
    if section.get("format") != SECTION_FORMAT or not isinstance(entries, list):
        return None
    held = chain.entries
    if len(held) > len(entries):
        return None
    for mine, theirs in zip(held, entries, strict=False):
        if mine.get("file") != theirs.get("file") or mine.get("sha256") != theirs.get("sha256"):
            return None
    return chain.files


@dataclass
class LiveUpdate:
    """New deltas read for a held segment, ready to apply under the index's write lock."""

    segment: LiveSegment
    chain: LiveChain
    steps: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]]


def prepare_update(root: Path, segment: LiveSegment, section: dict[str, Any]) -> LiveUpdate | None:
    """Read and check the deltas `segment` lacks (and assign their rows to the quantizer's
    lists), outside the lock; None when `held_files` says the whole chain must be read."""
    if held_files(segment, section) is None:
        return None
    entries = _check_section(root, section)
    chain = _chain_of(segment)
    assert chain is not None
    gone: set[int] = set()
    new: set[int] = set()
    steps = []
    for entry in entries[len(chain.entries) :]:
        ids, vectors, removed = _read(root, entry, segment.dimension)
        for chunk_id in removed.tolist():
            if chunk_id in new:
                new.discard(chunk_id)
            elif segment.contains(chunk_id) and chunk_id not in gone:
                gone.add(chunk_id)
            else:
                raise LiveStoreError(
                    f"{root / entry['file']} removes rows its predecessors do not hold; {_HINT}"
                )
        for chunk_id in ids.tolist():
            if chunk_id in new or (segment.contains(chunk_id) and chunk_id not in gone):
                raise LiveStoreError(f"{root / entry['file']} adds rows already held; {_HINT}")
            new.add(chunk_id)
        steps.append((ids, vectors, removed, segment.assign_rows(vectors)))
    if len(segment) - len(gone) + len(new) != int(section["rows"]):
        raise LiveStoreError(
            f"live segment files of {root} add up to {len(segment) - len(gone) + len(new)} rows, "
            f"the manifest says {section['rows']}; {_HINT}"
        )
    return LiveUpdate(segment, LiveChain(tuple(dict(e) for e in entries)), steps)


def apply_update(update: LiveUpdate) -> LiveSegment:
    """Apply prepared deltas in place (under the index's write lock; checked beforehand)."""
    segment = update.segment
    for ids, vectors, removed, assigned in update.steps:
        if len(removed):
            segment.remove(set(removed.tolist()))
        segment.add(ids, vectors, assigned)
    segment.adopt_chain(update.chain)
    return segment


def collect_garbage(root: Path, referenced: set[str]) -> None:
    """Delete chain files no kept generation lists (and stale temporaries), once a minute old."""
    remove_unreferenced(root / DIRECTORY, referenced, suffix=".npz")
