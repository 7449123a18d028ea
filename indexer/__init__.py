"""Chunk, embed and index documents; search them; snapshot and reload the index."""

from typing import TYPE_CHECKING

# mypy and IDEs read the real imports; the interpreter imports a name's module on first use.
if TYPE_CHECKING:
    from indexer.beir import read_corpus, read_qrels, read_queries
    from indexer.build import build_index
    from indexer.chunking import Chunk, Chunker
    from indexer.commands import model_and_cache
    from indexer.compatibility import model_for_manifest
    from indexer.drift import DriftMonitor
    from indexer.embedding_cache import EmbeddingCache
    from indexer.fusion import MODES
    from indexer.index import ApplyReport, Index, IndexCounts
    from indexer.lexical import LexicalIndex
    from indexer.lexical_store import LexicalStore
    from indexer.model import BUNDLED_NAME, EmbeddingModel, bundled_model_path, load_model
    from indexer.pins import StandingPin
    from indexer.snapshots import Manifest, SnapshotStore, SnapshotWriteError, index_dir
    from indexer.validation import GateReport, unusable_model, validate_shadow
    from indexer.writer_lock import IndexLockedError, WriterLock
else:
    from contracts._exports import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "indexer.beir": ("read_corpus", "read_qrels", "read_queries"),
            "indexer.build": ("build_index",),
            "indexer.chunking": ("Chunk", "Chunker"),
            "indexer.commands": ("model_and_cache",),
            "indexer.compatibility": ("model_for_manifest",),
            "indexer.drift": ("DriftMonitor",),
            "indexer.embedding_cache": ("EmbeddingCache",),
            "indexer.fusion": ("MODES",),
            "indexer.index": ("ApplyReport", "Index", "IndexCounts"),
            "indexer.lexical": ("LexicalIndex",),
            "indexer.lexical_store": ("LexicalStore",),
            "indexer.model": ("BUNDLED_NAME", "EmbeddingModel", "bundled_model_path", "load_model"),
            "indexer.pins": ("StandingPin",),
            "indexer.snapshots": ("Manifest", "SnapshotStore", "SnapshotWriteError", "index_dir"),
            "indexer.validation": ("GateReport", "unusable_model", "validate_shadow"),
            "indexer.writer_lock": ("IndexLockedError", "WriterLock"),
        },
    )

__all__ = [
    "BUNDLED_NAME",
    "MODES",
    "ApplyReport",
    "Chunk",
    "Chunker",
    "DriftMonitor",
    "EmbeddingCache",
    "EmbeddingModel",
    "GateReport",
    "Index",
    "IndexCounts",
    "IndexLockedError",
    "LexicalIndex",
    "LexicalStore",
    "Manifest",
    "SnapshotStore",
    "SnapshotWriteError",
    "StandingPin",
    "WriterLock",
    "build_index",
    "bundled_model_path",
    "index_dir",
    "load_model",
    "model_and_cache",
    "model_for_manifest",
    "read_corpus",
    "read_qrels",
    "read_queries",
    "unusable_model",
    "validate_shadow",
]
