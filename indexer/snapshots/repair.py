"""Rebuilding the vectors of corrupt shared files (sealed segments, live bases and deltas).

Falling back to an older generation does not help there: every generation of a chain shares
those files. Which chunks they held needs no reading of the damaged files: every live chunk of
the document table that is in neither the live segment nor a healthy sealed segment. Their
vectors come from the embedding cache (keyed by fingerprint + content hash); only what the cache
lacks is embedded again. Chunks of deleted documents are simply not rebuilt. The writer alone
repairs (it publishes a generation, under the WriterLock); readers never write.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import numpy as np

from contracts.errors import SnapshotError
from indexer import live_store
from indexer.index import Index
from indexer.snapshots.manifest import Manifest
from indexer.snapshots.writer import GenerationWriter

log = logging.getLogger(__name__)


@dataclass
class RepairReport:
    """What rebuilding corrupt sealed segments cost (chunks_embedded is 0 with a warm cache)."""

    generation: int
    corrupt: list[str]
    chunks: int = 0
    chunks_cached: int = 0
    chunks_embedded: int = 0
    published: int | None = None


def repair_vectors(
    writer: GenerationWriter, index: Index, manifest: Manifest, corrupt: list[str]
) -> tuple[Manifest, RepairReport]:
    """Rebuild the vectors of the `corrupt` files into `index` (loaded without them) and publish
    the result as a new generation with the same offsets."""
    root = writer.root
    report = RepairReport(manifest.generation, corrupt)
    log.error(
        "generation %d of %s: sealed segment(s) %s fail their checksum; rebuilding their "
        "vectors from the document table and the embedding cache",
        manifest.generation,
        root,
        ", ".join(corrupt),
    )
    vectors = index.vectors
    present = set(vectors.live.ids.tolist())
    for segment in vectors.sealed:
        present.update(segment.ids.tolist())
    lost = [
        (record, chunk)
        for record in index.documents
        for chunk in record.chunks
        if chunk.chunk_id not in present
    ]
    report.chunks = len(lost)
    if lost:
        fingerprint = index.model.info.fingerprint
        hashes = [chunk.content_hash for _, chunk in lost]
        found = (
            index.cache.get_many(fingerprint, hashes, index.model.dimension)
            if index.cache is not None
            else {}
        )
        texts = {c.content_hash: r.chunk_text(c) for r, c in lost if c.content_hash not in found}
        report.chunks_cached = sum(1 for h in hashes if h in found)
        report.chunks_embedded = len(texts)
        if texts:
            log.warning(
                "repair of %s: re-embedding %d chunks the embedding cache does not hold",
                root,
                len(texts),
            )
            embedded = index.model.encode_documents(list(texts.values()))
            if not np.isfinite(embedded).all():
                raise SnapshotError(
                    f"repairing {root}: the model produced NaN/inf embeddings; rebuild "
                    "the index with a working model"
                )
            fresh = dict(zip(texts, embedded, strict=True))
            if index.cache is not None:
                index.cache.put_many(fingerprint, fresh.items())
            found.update(fresh)
        ids = np.fromiter((c.chunk_id for _, c in lost), dtype=np.int64, count=len(lost))
        rows = np.vstack([found[c.content_hash] for _, c in lost])
        if any(rel.startswith(f"{live_store.DIRECTORY}/") for rel in corrupt):
            # The live rows are among the lost: they go back where they were (sealed in
            # turn if that fills it); the next generation writes the live segment as a base.
            with index.lock.writing():
                vectors.add(ids, rows)
            vectors.maintain(index.lock.writing)
        else:
            if vectors.quantizer is None:
                raise SnapshotError(
                    f"{root} has sealed segments but no quantizer; rebuild the index"
                )
            segment = vectors.codec.build(
                f"seg-{uuid.uuid4().hex[:12]}", vectors.quantizer, vectors.nlist, ids, rows
            )
            with index.lock.writing():
                vectors.attach(segment)
    with index.lock.writing():
        sealed_ids: set[int] = set()
        for segment in vectors.sealed:
            sealed_ids.update(segment.ids.tolist())
        vectors.tombstones &= sealed_ids  # tombstones of vectors that are gone with the file
        vectors._selector = None
    published = writer.write(index, manifest.offsets, manifest.extra, manifest.newest_event_ms)
    report.published = published.generation
    log.warning(
        "repaired %s: %d chunks rebuilt (%d from the embedding cache, %d embedded); published "
        "generation %d",
        root,
        report.chunks,
        report.chunks_cached,
        report.chunks_embedded,
        published.generation,
    )
    return published, report
