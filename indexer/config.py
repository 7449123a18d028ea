"""The part of the configuration the index reads, so `indexer/` does not depend on all of `Settings`.

Callers pass whatever holds these fields (`contracts.settings.Settings` does, structurally);
the index copies them into an `IndexConfig` at once, so later changes of the caller's object
never reach a built index, and what a snapshot records is exactly what built it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol


class IndexSettings(Protocol):
    """What an index (and a build) is configured by."""

    @property
    def chunk_tokens(self) -> int: ...
    @property
    def chunk_overlap(self) -> int: ...
    @property
    def max_doc_bytes(self) -> int: ...
    @property
    def nprobe(self) -> int: ...
    @property
    def seal_chunks(self) -> int: ...
    @property
    def vector_codec(self) -> str: ...
    @property
    def keep_generations(self) -> int: ...
    @property
    def background_maintenance(self) -> bool: ...


class DataRoot(Protocol):
    """Where index directories live (`$SEMSEARCH_DATA_DIR/indexes`)."""

    @property
    def indexes_dir(self) -> Path: ...


@dataclass(frozen=True)
class IndexConfig:
    """A frozen copy of an index's settings (defaults = `Settings`' defaults)."""

    chunk_tokens: int = 256
    chunk_overlap: int = 32
    max_doc_bytes: int = 2 * 1024 * 1024
    nprobe: int = 16
    seal_chunks: int = 8192
    vector_codec: str = "flat"
    keep_generations: int = 3
    background_maintenance: bool = False

    @classmethod
    def of(cls, settings: IndexSettings) -> IndexConfig:
        if isinstance(settings, IndexConfig):
            return settings
        return cls(
            chunk_tokens=settings.chunk_tokens,
            chunk_overlap=settings.chunk_overlap,
            max_doc_bytes=settings.max_doc_bytes,
            nprobe=settings.nprobe,
            seal_chunks=settings.seal_chunks,
            vector_codec=settings.vector_codec,
            keep_generations=settings.keep_generations,
            background_maintenance=settings.background_maintenance,
        )

    def with_chunking(self, chunk_tokens: int, chunk_overlap: int) -> IndexConfig:
        """The config a snapshot was built with: its chunking is fixed, the rest is today's."""
        return replace(self, chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap)
