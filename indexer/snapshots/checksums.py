"""The checksum records a manifest lists for every file it needs, and how they are checked.

A record is `{"sha256": ..., "bytes": ...}`. Files shared by generations (sealed segments,
quantizers, lexical segments) never change once written, so their record is computed once and
kept beside them as a `<file>.sha256` sidecar: a generation does not rehash the whole index.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from contracts.errors import SnapshotError
from indexer.durable_files import sha256_of, write_atomically
from indexer.snapshots.layout import file_path

log = logging.getLogger(__name__)

Record = dict[str, Any]


def record(path: Path) -> Record:
    return {"sha256": sha256_of(path), "bytes": path.stat().st_size}


def read_sidecar(root: Path, rel: str) -> Record | None:
    """The record kept beside a shared file; None (recompute it) when missing or unreadable."""
    sidecar = root / f"{rel}.sha256"
    try:
        entry = json.loads(sidecar.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s); recomputing it", sidecar, exc)
        return None
    if (
        isinstance(entry, dict)
        and isinstance(entry.get("sha256"), str)
        and isinstance(entry.get("bytes"), int)
    ):
        return entry
    log.warning("%s is not a checksum record; recomputing it", sidecar)
    return None


def write_sidecar(root: Path, rel: str, known: Record | None = None) -> Record:
    """The record of a shared file, (re)written atomically as its sidecar. `known` (what a
    manifest already recorded) wins over rehashing: a sidecar lost after its file was corrupted
    must not bless the corruption."""
    path = root / rel
    entry = known if known is not None else record(path)
    write_atomically(
        path.with_name(path.name + ".sha256"), lambda tmp: tmp.write_text(json.dumps(entry))
    )
    return entry


def corrupt_files(
    root: Path, generation: int, files: dict[str, Record], skip: set[str] | None = None
) -> list[tuple[str, str]]:
    """(file, problem) for every file of a manifest's `files` that is missing or fails its
    checksum; `skip`: files the caller already holds (not read, not hashed)."""
    bad = []
    for rel, expected in files.items():
        if skip and rel in skip:
            continue
        path = file_path(root, generation, rel)
        if not path.is_file():
            bad.append((rel, f"generation {generation} of {root} is missing {rel}"))
        elif sha256_of(path) != expected["sha256"]:
            bad.append(
                (
                    rel,
                    f"{path} fails its checksum (generation {generation}); the file "
                    "is corrupt - load an older generation or rebuild the index",
                )
            )
    return bad


def verify(
    root: Path, generation: int, files: dict[str, Record], skip: set[str] | None = None
) -> None:
    """Raise SnapshotError naming the first file that is missing or corrupt."""
    bad = corrupt_files(root, generation, files, skip)
    if bad:
        raise SnapshotError(bad[0][1])
