"""Snapshot generations of an index directory, written atomically with the Kafka offsets they contain."""

from typing import TYPE_CHECKING

# mypy and IDEs read the real imports; the interpreter imports a name's module on first use.
if TYPE_CHECKING:
    from indexer.snapshots.generations import OnSkip
    from indexer.snapshots.layout import MANIFEST, index_dir
    from indexer.snapshots.manifest import FORMAT_VERSION, Manifest
    from indexer.snapshots.repair import RepairReport
    from indexer.snapshots.store import SnapshotStore
    from indexer.snapshots.writer import SnapshotWriteError
else:
    from contracts._exports import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "indexer.snapshots.generations": ("OnSkip",),
            "indexer.snapshots.layout": ("MANIFEST", "index_dir"),
            "indexer.snapshots.manifest": ("FORMAT_VERSION", "Manifest"),
            "indexer.snapshots.repair": ("RepairReport",),
            "indexer.snapshots.store": ("SnapshotStore",),
            "indexer.snapshots.writer": ("SnapshotWriteError",),
        },
    )

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
