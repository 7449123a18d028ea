"""Snapshot generations of an index directory, written atomically with the Kafka offsets they contain."""

from indexer.snapshots.generations import OnSkip
from indexer.snapshots.layout import MANIFEST, index_dir
from indexer.snapshots.manifest import FORMAT_VERSION, Manifest
from indexer.snapshots.repair import RepairReport
from indexer.snapshots.store import SnapshotStore
from indexer.snapshots.writer import SnapshotWriteError

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "Manifest",
    "OnSkip",
    "RepairReport",
    "SnapshotStore",
    "SnapshotWriteError",
    "index_dir",
]
