"""GC: the newest `keep` generations stay; what interrupted writes left goes after a grace period."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from indexer.index import Index
from indexer.snapshots import SnapshotStore


def test_garbage_collection_keeps_recent_generations(
    make_index: Callable[..., Index], tmp_path: Path
) -> None:
    index = make_index()
    store = SnapshotStore(tmp_path / "idx", keep=2)
    for _ in range(4):
        store.write(index)
    assert store.generations() == [3, 4]


def test_what_interrupted_writes_left_is_swept_after_the_grace_period(
    make_index: Callable[..., Index], tmp_path: Path
) -> None:
    store = SnapshotStore(tmp_path / "idx")
    store.write(make_index())
    old, fresh = store.root / ".tmp-gen-000007-0badcafe", store.root / ".del-gen-000001-0badcafe"
    orphan, young = store.segments_dir / "seg-0rphan.faiss", store.segments_dir / "seg-y0ung.faiss"
    for path in (old, fresh):
        path.mkdir()
        (path / "tombstones.npy").write_bytes(b"x")
    for path in (orphan, young):
        path.write_bytes(b"x")
        path.with_name(path.name + ".sha256").write_text("{}")
    an_hour_ago = time.time() - 3600
    for path in (old, orphan, orphan.with_name(orphan.name + ".sha256")):
        os.utime(path, (an_hour_ago, an_hour_ago))
    store.collect_garbage()
    assert not old.exists() and not orphan.exists()
    assert not orphan.with_name(orphan.name + ".sha256").exists()
    # a writer may be about to publish what it just wrote: young files stay
    assert fresh.exists() and young.exists()
    assert store.generations() == [1]
