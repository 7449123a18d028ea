"""Snapshot generations: `gen-N/` directories written atomically, with the Kafka offsets they contain.

A generation is written into a temporary directory, fsynced, and renamed; the manifest (written
last) lists a checksum for every file it needs. A crash at any point therefore leaves the
previous generation intact, and the offsets in a manifest are exactly those whose events the
generation contains (bytewax-style recovery: resume from the snapshot, not from Kafka commits).
Sealed segments live in `segments/`, are written once and referenced by later generations.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from indexer.canaries import CanaryProbe
from indexer.compatibility import ensure_compatible
from indexer.documents import DocumentTable
from indexer.embedding_cache import EmbeddingCache
from indexer.errors import IndexNotFoundError, SnapshotError
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.segments import LiveSegment, SealedSegment
from semsearch.settings import Settings

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_GEN = re.compile(r"^gen-(\d{6,})$")

Offsets = dict[str, dict[int, int]]


def validate_index_id(index_id: str) -> str:
    if not isinstance(index_id, str) or not INDEX_ID_PATTERN.fullmatch(index_id) or ".." in index_id:
        raise IndexNotFoundError(
            f"{index_id!r} is not a valid index id (lowercase letters, digits, '.', '_', '-'; no paths)"
        )
    return index_id


def index_dir(settings: Settings, index_id: str) -> Path:
    """The directory of an index id, always inside the data root."""
    root = settings.indexes_dir.resolve()
    path = (root / validate_index_id(index_id)).resolve()
    if path.parent != root:
        raise IndexNotFoundError(f"index id {index_id!r} resolves outside {root}")
    return path


@dataclass
class Manifest:
    index_id: str
    generation: int
    created_at: float
    model: dict[str, Any]
    canaries: dict[str, Any]
    settings: dict[str, Any]
    counts: dict[str, int]
    next_chunk_id: int
    quantizer: dict[str, Any] | None
    segments: list[dict[str, Any]]
    offsets: Offsets
    files: dict[str, dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["offsets"] = {
            t: {str(p): o for p, o in parts.items()} for t, parts in self.offsets.items()
        }
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        data["offsets"] = {
            t: {int(p): int(o) for p, o in parts.items()} for t, parts in data["offsets"].items()
        }
        return cls(**data)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SnapshotStore:
    """Writes, verifies, loads and garbage-collects the generations of one index directory."""

    def __init__(self, root: Path, keep: int = 3) -> None:
        self.root = Path(root)
        self.keep = max(2, keep)
        self.segments_dir = self.root / "segments"

    # -- listing --------------------------------------------------------------------------
    def generations(self) -> list[int]:
        if not self.root.is_dir():
            return []
        found = []
        for entry in self.root.iterdir():
            match = _GEN.match(entry.name)
            if match and (entry / MANIFEST).is_file():
                found.append(int(match.group(1)))
        return sorted(found)

    def latest_generation(self) -> int | None:
        generations = self.generations()
        return generations[-1] if generations else None

    def _gen_dir(self, generation: int) -> Path:
        return self.root / f"gen-{generation:06d}"

    def read_manifest(self, generation: int | None = None) -> Manifest:
        if generation is None:
            generation = self.latest_generation()
            if generation is None:
                raise IndexNotFoundError(
                    f"no snapshot in {self.root}; build one with `semsearch build` or run `semsearch index`"
                )
        path = self._gen_dir(generation) / MANIFEST
        try:
            return Manifest.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            raise IndexNotFoundError(
                f"generation {generation} does not exist in {self.root}"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotError(f"{path} is not a valid manifest: {exc}") from None

    # -- writing --------------------------------------------------------------------------
    def write(
        self, index: Index, offsets: Offsets | None = None, extra: dict[str, Any] | None = None
    ) -> Manifest:
        """Persist the index as the next generation; returns its manifest."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.segments_dir.mkdir(exist_ok=True)
        generation = (self.latest_generation() or 0) + 1
        tmp = self.root / f".tmp-gen-{generation:06d}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        files: dict[str, dict[str, Any]] = {}
        with index.lock.reading():
            vectors = index.vectors
            quantizer: dict[str, Any] | None = None
            if vectors.quantizer is not None:
                quantizer = {"file": "segments/quantizer.faiss", "nlist": vectors.nlist}
                self._write_once(
                    self.root / quantizer["file"],
                    lambda p: faiss.write_index(vectors.quantizer, str(p)),
                )
            segments: list[dict[str, Any]] = []
            for segment in vectors.sealed:
                rel = f"segments/{segment.name}.faiss"
                self._write_once(self.root / rel, segment.save)
                segments.append({"name": segment.name, "file": rel, "count": len(segment)})
            vectors.live.save(tmp / "live.npz")
            np.save(tmp / "tombstones.npy", np.fromiter(sorted(vectors.tombstones), dtype=np.int64))
            with (tmp / "documents.jsonl").open("w", encoding="utf-8") as handle:
                index.documents.dump(handle)
            counts = index.count().__dict__
            next_chunk_id = index.next_chunk_id
        for name in ("live.npz", "tombstones.npy", "documents.jsonl"):
            _fsync_file(tmp / name)
            files[f"GEN/{name}"] = {
                "sha256": _sha256(tmp / name),
                "bytes": (tmp / name).stat().st_size,
            }
        for rel in [s["file"] for s in segments] + ([quantizer["file"]] if quantizer else []):
            files[rel] = self._segment_checksum(rel)
        manifest = Manifest(
            index_id=index.index_id,
            generation=generation,
            created_at=time.time(),
            model=index.model.info.to_json(),
            canaries=index.canaries.to_json(),
            settings={
                "chunk_tokens": index.settings.chunk_tokens,
                "chunk_overlap": index.settings.chunk_overlap,
                "nprobe": index.settings.nprobe,
                "seal_chunks": index.settings.seal_chunks,
            },
            counts=counts,
            next_chunk_id=next_chunk_id,
            quantizer=quantizer,
            segments=segments,
            offsets={t: dict(p) for t, p in (offsets or {}).items()},
            files=files,
            extra=extra or {},
        )
        manifest_path = tmp / MANIFEST
        manifest_path.write_text(json.dumps(manifest.to_json(), indent=1))
        _fsync_file(manifest_path)
        _fsync_dir(tmp)
        os.rename(tmp, self._gen_dir(generation))
        _fsync_dir(self.root)
        self.collect_garbage()
        return manifest

    def _segment_checksum(self, rel: str) -> dict[str, Any]:
        # Sealed files never change, so their checksum is computed once and kept beside them.
        path = self.root / rel
        sidecar = path.with_suffix(path.suffix + ".sha256")
        if sidecar.is_file():
            return json.loads(sidecar.read_text())
        entry = {"sha256": _sha256(path), "bytes": path.stat().st_size}
        sidecar.write_text(json.dumps(entry))
        return entry

    @staticmethod
    def _write_once(path: Path, writer: Any) -> None:
        if path.exists():
            return
        tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
        writer(tmp)
        _fsync_file(tmp)
        os.rename(tmp, path)
        _fsync_dir(path.parent)

    def collect_garbage(self) -> None:
        """Keep the newest `keep` generations and the segment files they reference."""
        generations = self.generations()
        for old in generations[: -self.keep]:
            shutil.rmtree(self._gen_dir(old), ignore_errors=True)
        for stale in self.root.glob(".tmp-gen-*"):
            if stale.stat().st_mtime < time.time() - 60:
                shutil.rmtree(stale, ignore_errors=True)
        referenced = set()
        for generation in generations[-self.keep :]:
            try:
                manifest = self.read_manifest(generation)
            except (SnapshotError, IndexNotFoundError):
                continue
            referenced |= {s["file"] for s in manifest.segments}
            if manifest.quantizer:
                referenced.add(manifest.quantizer["file"])
        if self.segments_dir.is_dir():
            for path in self.segments_dir.glob("*.faiss"):
                rel = f"segments/{path.name}"
                if rel not in referenced and path.stat().st_mtime < time.time() - 60:
                    path.unlink(missing_ok=True)
                    path.with_suffix(".faiss.sha256").unlink(missing_ok=True)

    # -- reading --------------------------------------------------------------------------
    def verify(self, manifest: Manifest, skip: set[str] | None = None) -> None:
        gen_dir = self._gen_dir(manifest.generation)
        for rel, expected in manifest.files.items():
            if skip and rel in skip:
                continue
            path = gen_dir / rel[4:] if rel.startswith("GEN/") else self.root / rel
            if not path.is_file():
                raise SnapshotError(
                    f"generation {manifest.generation} of {self.root} is missing {rel}"
                )
            if _sha256(path) != expected["sha256"]:
                raise SnapshotError(
                    f"{path} fails its checksum (generation {manifest.generation}); the file is "
                    "corrupt - load an older generation or rebuild the index"
                )

    def load(
        self,
        model: EmbeddingModel,
        settings: Settings,
        cache: EmbeddingCache | None = None,
        generation: int | None = None,
        *,
        fallback: bool = False,
    ) -> tuple[Index, Manifest]:
        """Load and verify a generation (the latest by default), refusing a different model."""
        candidates = [generation] if generation is not None else list(reversed(self.generations()))
        if not candidates:
            raise IndexNotFoundError(
                f"no snapshot in {self.root}; build one with `semsearch build` or run `semsearch index`"
            )
        errors = []
        for candidate in candidates:
            try:
                return self._load(model, settings, cache, candidate)
            except SnapshotError as exc:
                if not fallback:
                    raise
                log.error("skipping generation %s: %s", candidate, exc)
                errors.append(str(exc))
        raise SnapshotError("no loadable generation: " + "; ".join(errors))

    def _load(
        self,
        model: EmbeddingModel,
        settings: Settings,
        cache: EmbeddingCache | None,
        generation: int,
    ) -> tuple[Index, Manifest]:
        manifest = self.read_manifest(generation)
        canaries = CanaryProbe.from_json(manifest.canaries)
        ensure_compatible(model, manifest.model, canaries, manifest.index_id)
        self.verify(manifest)
        stored = manifest.settings
        settings = settings.with_overrides(
            chunk_tokens=stored["chunk_tokens"], chunk_overlap=stored["chunk_overlap"]
        )
        index = Index(model, settings, cache, canaries=canaries)
        index.index_id = manifest.index_id
        self._install(index, manifest, sealed={})
        return index, manifest

    def refresh(self, index: Index, generation: int | None = None) -> Manifest:
        """Move an open index forward to a newer generation in place (near-real-time reopen)."""
        manifest = self.read_manifest(generation)
        if manifest.index_id != index.index_id:
            raise SnapshotError(f"{self.root} holds {manifest.index_id}, not {index.index_id}")
        loaded = {s.name: s for s in index.vectors.sealed}
        known = {s["file"] for s in manifest.segments if s["name"] in loaded}
        if manifest.quantizer and index.vectors.quantizer is not None:
            known.add(manifest.quantizer["file"])
        self.verify(manifest, skip=known)
        self._install(index, manifest, sealed=loaded)
        return manifest

    def _install(self, index: Index, manifest: Manifest, sealed: dict[str, SealedSegment]) -> None:
        gen_dir = self._gen_dir(manifest.generation)
        documents = DocumentTable.load(gen_dir / "documents.jsonl")
        live = LiveSegment.load(gen_dir / "live.npz", index.model.dimension)
        tombstones = {int(i) for i in np.load(gen_dir / "tombstones.npy")}
        segments = [
            sealed.get(s["name"]) or SealedSegment.load(s["name"], self.root / s["file"])
            for s in manifest.segments
        ]
        quantizer: Any = None
        if manifest.quantizer and index.vectors.quantizer is None:
            quantizer = faiss.read_index(str(self.root / manifest.quantizer["file"]))
        with index.lock.writing():
            self._update_lexical(index, documents)
            vectors = index.vectors
            for segment in list(vectors.sealed):
                if segment not in segments:
                    vectors.detach(segment)
            for segment in segments:
                if segment not in vectors.sealed:
                    vectors.attach(segment)
            if quantizer is not None:
                vectors.quantizer, vectors.nlist = quantizer, int(manifest.quantizer["nlist"])  # type: ignore[index]
            vectors.live = live
            vectors.tombstones = tombstones
            vectors._selector = None
            index.documents = documents
            index.next_chunk_id = manifest.next_chunk_id

    @staticmethod
    def _update_lexical(index: Index, documents: DocumentTable) -> None:
        """Apply only the documents whose version changed: BM25 is not rebuilt per refresh."""
        old = index.documents
        for record in old:
            fresh = documents.get(record.doc_id)
            if fresh is None or fresh.version != record.version:
                for chunk in record.chunks:
                    index.lexical.remove(chunk.chunk_id, record.chunk_text(chunk))
        for record in documents:
            previous = old.get(record.doc_id)
            if previous is None or previous.version != record.version:
                for chunk in record.chunks:
                    index.lexical.add(chunk.chunk_id, record.chunk_text(chunk))
