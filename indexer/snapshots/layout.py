"""Where an index directory keeps its generations: the names every other snapshot module agrees on.

Only names and paths, no I/O: a generation is `gen-NNNNNN/` (its manifest and tombstones), the
files it shares with other generations live beside it (`segments/`, `lexical/`, `live/`,
`documents.sqlite`), and a manifest names its own directory's files `GEN/<name>` so that a
manifest does not depend on where its generation is renamed to.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from contracts.errors import IndexNotFoundError
from contracts.ids import validate_index_id
from indexer.config import DataRoot

MANIFEST = "manifest.json"
TOMBSTONES = "tombstones.npy"
SEGMENTS = "segments"
# Files of generations written before the document store and live deltas (still loadable).
LEGACY_DOCUMENTS = "documents.jsonl"
LEGACY_LIVE = "live.npz"
# What a writer or GC interrupted leaves behind (removed once older than GC's grace period).
TMP_GENERATIONS = ".tmp-gen-*"
DOOMED_GENERATIONS = ".del-gen-*"

_GEN = re.compile(r"^gen-(\d{6,})$")
_OWN = "GEN/"


def index_dir(settings: DataRoot, index_id: str) -> Path:
    """The directory of an index id, always inside the data root."""
    root = settings.indexes_dir.resolve()
    path = (root / validate_index_id(index_id)).resolve()
    if path.parent != root:
        raise IndexNotFoundError(f"index id {index_id!r} resolves outside {root}")
    return path


def generation_of(name: str) -> int | None:
    """The generation a directory entry named `name` is, or None when it is not one."""
    match = _GEN.match(name)
    return int(match.group(1)) if match else None


def gen_dir(root: Path, generation: int) -> Path:
    return root / f"gen-{generation:06d}"


def manifest_path(root: Path, generation: int) -> Path:
    return gen_dir(root, generation) / MANIFEST


def temporary_gen_dir(root: Path, generation: int) -> Path:
    """Where a generation is written before its rename publishes it (unique per attempt)."""
    return root / f".tmp-gen-{generation:06d}-{uuid.uuid4().hex[:8]}"


def doomed_gen_dir(root: Path, generation: int) -> Path:
    """Where GC renames a generation before deleting it: a reader never sees half of one."""
    return root / f".del-gen-{generation:06d}-{uuid.uuid4().hex[:8]}"


def segments_dir(root: Path) -> Path:
    return root / SEGMENTS


def segment_file(name: str) -> str:
    """A sealed segment's faiss file, relative to the index directory."""
    return f"{SEGMENTS}/{name}.faiss"


def own_file(name: str) -> str:
    """The manifest's key for a file inside the generation's own directory."""
    return f"{_OWN}{name}"


def file_path(root: Path, generation: int, rel: str) -> Path:
    """The path of a manifest `files` key: `GEN/...` inside the generation, others shared."""
    if rel.startswith(_OWN):
        return gen_dir(root, generation) / rel[len(_OWN) :]
    return root / rel
