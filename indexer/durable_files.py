"""Durable file primitives: what a crash-safe write needs (fsync of a file and of its directory)
and the checksum every generation records. One place, so every writer does it the same way."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

# An unreferenced file is deleted only once this old: a younger one may belong to a write in
# progress (a temporary, a segment whose generation is not committed yet).
STALE_S = 60


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable (POSIX: the directory's own fsync)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, writer: Callable[[Path], object]) -> None:
    """`path` appears whole or not at all: `writer` fills a temp file beside it (`.tmp-*`, which
    the snapshot GC sweeps after a crash), fsynced, renamed over `path`, directory fsynced."""
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        writer(tmp)
        fsync_file(tmp)
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_unreferenced(directory: Path, referenced: set[str], *, suffix: str, stale_s: float = STALE_S) -> None:
    """Delete the `*<suffix>` files of `directory` (with their `.sha256` sidecars) that no kept
    generation references, and leftover temporaries, once `stale_s` old. `referenced` names files
    as the manifests do: `<directory name>/<file name>`."""
    if not directory.is_dir():
        return
    cutoff = time.time() - stale_s
    for path in list(directory.iterdir()):
        owner = path.name.removesuffix(".sha256")  # a checksum sidecar goes with its file
        if f"{directory.name}/{owner}" in referenced:
            continue
        if not (owner.endswith(suffix) or path.name.startswith(".tmp-")):
            continue
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except FileNotFoundError:
            continue
