"""The shadow index's starting point: which model, and the serving index's documents re-embedded.

A migration never replays the whole `docs` topic (retention may not even hold it): the serving
index's newest snapshot already holds every live document, the versions of deleted ones and the
offsets they correspond to. Re-embedding its document table with the new model, in batches
through `Index.apply` (whose embedding cache makes a repeated or rolled-back migration nearly
free), gives a shadow index equal to "the live index at those offsets, in the new model's space".
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from pathlib import Path
from typing import Any

from consumers.migration_status import MIGRATION_CHUNKS, MIGRATION_PROGRESS, MigrationStatus
from contracts.documents import Deletion, Document
from contracts.errors import SemsearchError
from contracts.settings import Settings
from indexer.index import Index
from indexer.model import BUNDLED_NAME, EmbeddingModel, load_model
from indexer.snapshots import Manifest

log = logging.getLogger(__name__)

BOOTSTRAP_BATCH_DOCS = 128
_BUNDLED_ALIASES = {BUNDLED_NAME, "all-MiniLM-L6-v2", "all-minilm-l6-v2", "bundled"}


class MigrationError(SemsearchError):
    """A migration could not be carried out; the serving index is unchanged."""


class MigrationAborted(MigrationError):
    """The process is stopping; the migration will start over when it restarts."""


def resolve_model_source(name: str) -> str | None:
    """A model-upgrade's `model`: a directory on this host, or the bundled model's name."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if name in _BUNDLED_ALIASES:
        return None
    raise MigrationError(
        f"model {name!r} is not a directory on the indexer's host nor a known model name; "
        "publish the absolute path of a sentence-transformers model directory that the "
        "indexer can read (semsearch upgrade-model --model /path/to/model)"
    )


def model_for_manifest(settings: Settings, manifest: Manifest) -> EmbeddingModel:
    """The model an index was built with: the configured one if it matches, else the recorded
    source. Whatever is returned is still verified by SnapshotStore.load."""
    configured = load_model(settings.model, memory_mb=settings.embed_memory_mb)
    if configured.info.fingerprint == manifest.model.get("fingerprint"):
        return configured
    recorded = manifest.model.get("source")
    if isinstance(recorded, str) and Path(recorded).is_dir():
        return load_model(recorded, memory_mb=settings.embed_memory_mb)
    return configured


def bootstrap_shadow(
    shadow: Index, live: Index, *, status: MigrationStatus, stop: threading.Event
) -> dict[str, Any]:
    """Re-embed every live document of `live` into `shadow` (same versions, same metadata) and
    carry over the versions of deleted documents. Returns counts and rates for the report."""
    # Streamed, BOOTSTRAP_BATCH_DOCS records at a time: the documents' texts are never all in
    # RAM (GBs at 1M chunks). `live` is a private copy nobody writes to during the bootstrap,
    # read at its pinned generation; the read lock is held per batch, not for the whole pass.
    with live.lock.reading():
        total = len(live.documents)
        deleted = live.documents.deleted_versions
        records = iter(live.documents)
    stats: dict[str, Any] = {"documents": total, "chunks_embedded": 0, "chunks_cached": 0}
    started = time.monotonic()
    embed_seconds = 0.0
    done = 0
    status.update("bootstrapping", progress={"documents_done": 0, "documents_total": total})
    while True:
        if stop.is_set():
            raise MigrationAborted("stopped while bootstrapping the shadow index")
        with live.lock.reading():
            batch = [
                Document(r.doc_id, r.title, r.text, r.version, dict(r.metadata))
                for r in itertools.islice(records, BOOTSTRAP_BATCH_DOCS)
            ]
        if not batch:
            break
        applied = shadow.apply(batch)
        for doc_id, reason in applied.rejected:
            log.error("migration: the new model's index rejected %s: %s", doc_id, reason)
        stats["chunks_embedded"] += applied.chunks_embedded
        stats["chunks_cached"] += applied.chunks_cached
        embed_seconds += applied.embed_seconds
        MIGRATION_CHUNKS.inc(applied.chunks_embedded)
        done += len(batch)
        MIGRATION_PROGRESS.set(min(1.0, done / total) if total else 1.0)
        elapsed = time.monotonic() - started
        chunks = stats["chunks_embedded"] + stats["chunks_cached"]
        status.update(
            "bootstrapping",
            progress={
                "documents_done": done,
                "documents_total": total,
                "chunks": chunks,
                "chunks_embedded": stats["chunks_embedded"],
                "chunks_per_s": round(chunks / elapsed, 2) if elapsed > 0 else None,
            },
        )
    deletions = [Deletion(doc_id, version) for doc_id, version in deleted.items()]
    for offset in range(0, len(deletions), BOOTSTRAP_BATCH_DOCS * 8):
        shadow.apply(deletions[offset : offset + BOOTSTRAP_BATCH_DOCS * 8])
    MIGRATION_PROGRESS.set(1.0)
    elapsed = time.monotonic() - started
    chunks = stats["chunks_embedded"] + stats["chunks_cached"]
    stats.update(
        bootstrap_seconds=round(elapsed, 3),
        embed_seconds=round(embed_seconds, 3),
        chunks=chunks,
        chunks_per_s=round(chunks / elapsed, 2) if elapsed > 0 else None,
    )
    log.info(
        "migration: re-embedded %d documents / %d chunks in %.1fs (%d from the cache)",
        done,
        chunks,
        elapsed,
        stats["chunks_cached"],
    )
    return stats
