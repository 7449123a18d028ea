"""Offline build of an index from a corpus file, in batches that keep the model busy."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from contracts.corpus import SkippedLines
from contracts.documents import Document
from contracts.errors import SemsearchError
from indexer.beir import read_corpus
from indexer.config import IndexSettings
from indexer.embedding_cache import EmbeddingCache
from indexer.index import ApplyReport, Index
from indexer.model import EmbeddingModel
from indexer.snapshots import Manifest, SnapshotStore
from indexer.writer_lock import DEFAULT_HINT, WriterLock

log = logging.getLogger(__name__)

# Documents per apply(): enough chunks for several full embedding batches per model call.
BUILD_BATCH_DOCS = 256


@dataclass
class BuildReport:
    # Every batch's ApplyReport folded into one (ApplyReport.add): a build is one long apply.
    applied: ApplyReport = field(default_factory=ApplyReport)
    unreadable: SkippedLines = field(default_factory=SkippedLines)
    manifest: Manifest | None = None

    @property
    def documents(self) -> int:
        return self.applied.upserted

    @property
    def chunks_embedded(self) -> int:
        return self.applied.chunks_embedded

    @property
    def chunks_cached(self) -> int:
        return self.applied.chunks_cached

    @property
    def embed_seconds(self) -> float:
        return self.applied.embed_seconds

    @property
    def rejected(self) -> list[tuple[str, str]]:
        return self.applied.rejected


def _batches(docs: Iterable[Document], size: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def build_index(
    corpus: Path,
    root: Path,
    model: EmbeddingModel,
    settings: IndexSettings,
    cache: EmbeddingCache | None,
    *,
    show_progress: bool = True,
    lock_hint: str = DEFAULT_HINT,
) -> BuildReport:
    """Index every readable document of `corpus` and write one snapshot generation to `root`.

    A build is a writer like `semsearch index`: it holds `root`'s WriterLock throughout, taken
    before any embedding, so a build into an index that an indexer writes refuses at once
    (IndexLockedError, with `lock_hint` saying what to do) instead of tearing it.
    """
    with WriterLock.acquire(root, "semsearch build", hint=lock_hint):
        return _build(corpus, root, model, settings, cache, show_progress)


def _build(
    corpus: Path,
    root: Path,
    model: EmbeddingModel,
    settings: IndexSettings,
    cache: EmbeddingCache | None,
    show_progress: bool,
) -> BuildReport:
    report = BuildReport()
    index = Index.create(model, settings, cache)
    total = corpus.stat().st_size if corpus.is_file() else None
    with tqdm(
        total=total, unit="B", unit_scale=True, desc="indexing", disable=not show_progress
    ) as bar:
        for batch in _batches(read_corpus(corpus, report.unreadable), BUILD_BATCH_DOCS):
            report.applied.add(index.apply(batch))
            size = sum(len(d.text.encode()) + len(d.title.encode()) for d in batch)
            bar.update(size)
    if report.documents == 0:
        detail = f"; {report.unreadable.summary()}" if len(report.unreadable) else ""
        rejected = f"; rejected: {report.rejected[:3]}" if report.rejected else ""
        raise SemsearchError(f"{corpus} produced no indexable documents{detail}{rejected}")
    index.settle()  # a built index is searched as it is written: every seal and merge done
    store = SnapshotStore(root, keep=settings.keep_generations)
    report.manifest = store.write(index)
    if store.settle():  # that generation's lexical merges ran in the background: list them
        report.manifest = store.write(index)
    return report
