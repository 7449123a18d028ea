"""Servable indexes other than the configured one are kept fresh (real broker and Redis)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from tests_support import wait_until

from consumers.migration.keeper import FreshKeeper
from consumers.worker import IndexWorker
from contracts.events import UpsertEvent
from contracts.pointer import Pointer
from contracts.settings import Settings
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore, index_dir

from ..conftest import Publish, drain

OWNED = "minilm-0wned0000000"
GONE = "minilm-9999999999ab"


def _documents(settings: Settings, index_id: str) -> int:
    return SnapshotStore(index_dir(settings, index_id)).read_manifest().counts["documents"]


def test_the_active_index_and_registered_rollback_targets_get_a_worker(
    stream_settings: Settings,
    bootstrap: str,
    pointer: Pointer,
    model: EmbeddingModel,
    open_worker: Callable[..., IndexWorker],
    publish: Publish,
    tmp_path: Path,
) -> None:
    publish([UpsertEvent.build("k1", "Kept", "Kept fresh.", 1)])
    first = open_worker()
    drain(first, 1)
    first.close()  # the index now has a snapshot and no writer
    pointer.set_if_unset(OWNED)
    pointer.compare_and_set(OWNED, model.index_id)  # active: the bundled model's index
    pointer.compare_and_set(model.index_id, GONE)  # a newer active index that does not exist here
    pointer.compare_and_set(GONE, model.index_id)
    pointer.unregister(GONE)
    stop = threading.Event()
    keeper = FreshKeeper(
        stream_settings, pointer, bootstrap=bootstrap, cache=None, owned_index_id=OWNED, stop=stop
    )
    try:
        # Active first, then registered history; never the owned index, never an unregistered one.
        assert keeper.servable() == [model.index_id]
        keeper.refresh()
        assert keeper.kept_fresh() == {model.index_id}
        publish([UpsertEvent.build("k2", "Kept", "Arrived while kept fresh.", 1)])
        wait_until(lambda: _documents(stream_settings, model.index_id) == 2, 120, "k2 indexed")

        keeper.release(model.index_id)  # a migration is about to rebuild it
        assert keeper.kept_fresh() == set()
        reopened = open_worker()  # the writer lock was let go
        assert len(reopened.index.documents) == 2
    finally:
        stop.set()
        keeper.join(30)
