"""The shadow index before its gate: bootstrapped from the serving index, then caught up.

A migration never replays the whole `docs` topic (retention may not even hold it): the serving
index's newest snapshot already holds every live document, the versions of deleted ones and the
offsets they correspond to. Re-embedding its document table with the new model, in batches
through `Index.apply` (whose embedding cache makes a repeated or rolled-back migration nearly
free), gives a shadow index equal to "the live index at those offsets, in the new model's space".
An IndexWorker of the shadow then tails `docs` from those offsets until it is less than one
batch behind: the gate needs no more, it compares at whatever offsets the shadow reached.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any

from consumers.migration.errors import MigrationAborted, MigrationError
from consumers.migration.status import (
    MIGRATION_CHUNKS,
    MIGRATION_LAG,
    MIGRATION_PROGRESS,
    MigrationStatus,
)
from consumers.worker import IndexWorker
from contracts.documents import Deletion, Document
from indexer.index import ApplyReport, Index

log = logging.getLogger(__name__)

BOOTSTRAP_BATCH_DOCS = 128
CATCH_UP_TIMEOUT_S = 1800.0
_STATUS_EVERY_S = 0.5


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
    applied = ApplyReport()
    started = time.monotonic()
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
        part = shadow.apply(batch)
        for doc_id, reason in part.rejected:
            log.error("migration: the new model's index rejected %s: %s", doc_id, reason)
        applied.add(part)
        MIGRATION_CHUNKS.inc(part.chunks_embedded)
        done += len(batch)
        MIGRATION_PROGRESS.set(min(1.0, done / total) if total else 1.0)
        elapsed = time.monotonic() - started
        chunks = applied.chunks_embedded + applied.chunks_cached
        status.update(
            "bootstrapping",
            progress={
                "documents_done": done,
                "documents_total": total,
                "chunks": chunks,
                "chunks_embedded": applied.chunks_embedded,
                "chunks_per_s": round(chunks / elapsed, 2) if elapsed > 0 else None,
            },
        )
    deletions = [Deletion(doc_id, version) for doc_id, version in deleted.items()]
    for offset in range(0, len(deletions), BOOTSTRAP_BATCH_DOCS * 8):
        shadow.apply(deletions[offset : offset + BOOTSTRAP_BATCH_DOCS * 8])
    MIGRATION_PROGRESS.set(1.0)
    elapsed = time.monotonic() - started
    chunks = applied.chunks_embedded + applied.chunks_cached
    log.info(
        "migration: re-embedded %d documents / %d chunks in %.1fs (%d from the cache)",
        done,
        chunks,
        elapsed,
        applied.chunks_cached,
    )
    return {
        "documents": total,
        "chunks_embedded": applied.chunks_embedded,
        "chunks_cached": applied.chunks_cached,
        "bootstrap_seconds": round(elapsed, 3),
        "embed_seconds": round(applied.embed_seconds, 3),
        "chunks": chunks,
        "chunks_per_s": round(chunks / elapsed, 2) if elapsed > 0 else None,
    }


def catch_up(
    worker: IndexWorker,
    *,
    status: MigrationStatus,
    stop: threading.Event,
    timeout_s: float = CATCH_UP_TIMEOUT_S,
) -> None:
    """Step the shadow worker until every assigned partition is known and the lag is at most
    one batch (SEMSEARCH_BATCH_MAX_EVENTS); the worker is then left paused (not stepped)."""
    settings = worker.settings
    deadline = time.monotonic() + timeout_s
    last_status = 0.0
    while True:
        if stop.is_set():
            raise MigrationAborted("stopped while the shadow index was catching up")
        if time.monotonic() > deadline:
            raise MigrationError(
                f"the shadow index did not catch up with {settings.docs_topic} within "
                f"{timeout_s:.0f}s; the topic grows faster than the new model embeds"
            )
        worker.step()
        lags = worker.source.lag()
        lag = sum(lags.values())
        MIGRATION_LAG.set(lag)
        if time.monotonic() - last_status > _STATUS_EVERY_S:
            last_status = time.monotonic()
            status.update("catching-up", progress={"lag": lag, "offsets": worker.offsets})
        assigned = worker.source.assigned
        if assigned and len(lags) == len(assigned) and lag <= settings.batch_max_events:
            return
