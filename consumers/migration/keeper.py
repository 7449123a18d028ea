"""Every index that may be served is kept fresh, not only the one the indexer is configured for.

Servable = the active index and every rollback target in the pointer's history that is still
registered. The configured model's index is the main worker's; every other one gets an
IndexWorker of its own here (its model found from its manifest), in a thread that reopens it
from its snapshot after a failure. So after a flip the old index keeps consuming `docs`, and a
rollback serves fresh data. A migration about to rebuild an index first `release`s its worker:
never two writers on one index directory.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import redis

from consumers.worker import IndexWorker
from contracts.errors import SemsearchError
from contracts.pointer import Pointer
from contracts.settings import Settings
from indexer.compatibility import model_for_manifest
from indexer.embedding_cache import EmbeddingCache
from indexer.snapshots import SnapshotStore, index_dir

log = logging.getLogger(__name__)

RESTART_DELAY_S = 5.0


@dataclass
class _Kept:
    thread: threading.Thread
    stop: threading.Event


class _Either(threading.Event):
    """Set when either of two events is (the worker's run() watches one event)."""

    def __init__(self, first: threading.Event, second: threading.Event) -> None:
        super().__init__()
        self._events = (first, second)

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)


class FreshKeeper:
    """One supervised worker per servable index other than `owned` (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        pointer: Pointer,
        *,
        bootstrap: str,
        cache: EmbeddingCache | None,
        owned_index_id: str,
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.pointer = pointer
        self.bootstrap = bootstrap
        self.cache = cache
        self.owned = owned_index_id
        self._stop = stop
        self._kept: dict[str, _Kept] = {}
        self._lock = threading.Lock()

    def kept_fresh(self) -> set[str]:
        """Index ids that have a worker of this keeper right now."""
        with self._lock:
            return {i for i, k in self._kept.items() if k.thread.is_alive()}

    def servable(self) -> list[str]:
        """The active index and the registered rollback targets, except the owned one."""
        try:
            active = self.pointer.get()
            history = self.pointer.history()
            registered = self.pointer.registered()
        except (redis.RedisError, OSError) as exc:
            log.warning("cannot read the pointer (%s); keeping the current workers", exc)
            return []
        ids = ([active] if active else []) + [i for i in history if i in registered]
        return [i for i in dict.fromkeys(ids) if i != self.owned]

    def refresh(self) -> None:
        """Start a worker for every servable index that has none."""
        for index_id in self.servable():
            if index_id not in self.kept_fresh():
                self.keep(index_id, None)

    def keep(self, index_id: str, worker: IndexWorker | None) -> None:
        """Keep `index_id` fresh with `worker` (None: opened from its snapshot). A worker
        handed in for an index that is already kept is closed."""
        with self._lock:
            if index_id in self._kept and self._kept[index_id].thread.is_alive():
                if worker is not None:
                    worker.close(final_snapshot=False)
                return
            stop = threading.Event()
            thread = threading.Thread(
                target=self._supervise,
                args=(index_id, worker, stop),
                name=f"keep-fresh-{index_id}",
                daemon=True,
            )
            self._kept[index_id] = _Kept(thread, stop)
            thread.start()

    def hand_over(self, worker: IndexWorker) -> None:
        """Keep the index of a worker built elsewhere (a migration's shadow) fresh with it."""
        self.keep(worker.index.index_id, worker)

    def release(self, index_id: str) -> None:
        """Stop `index_id`'s worker and wait until it has let go of the index."""
        with self._lock:
            kept = self._kept.pop(index_id, None)
        if kept is not None:
            kept.stop.set()
            kept.thread.join()

    def join(self, timeout_s: float) -> None:
        for kept in list(self._kept.values()):
            kept.stop.set()
            kept.thread.join(timeout_s)

    def _supervise(self, index_id: str, worker: IndexWorker | None, stop: threading.Event) -> None:
        """Run one index's worker until stopped; reopen it from its snapshot after a failure."""
        while not (stop.is_set() or self._stop.is_set()):
            try:
                if worker is None:
                    worker = self._open(index_id)
                    if worker is None:
                        return
                log.info("keeping %s fresh (group %s)", index_id, worker.group_id)
                worker.run(_Either(stop, self._stop))
                return
            except Exception:
                log.exception("worker of %s failed; reopening in %.0fs", index_id, RESTART_DELAY_S)
                worker = None
                stop.wait(RESTART_DELAY_S)

    def _open(self, index_id: str) -> IndexWorker | None:
        store = SnapshotStore(index_dir(self.settings, index_id))
        try:
            manifest = store.read_manifest()
        except SemsearchError as exc:  # IndexNotFoundError included
            log.warning("cannot keep %s fresh: %s", index_id, exc)
            return None
        model = model_for_manifest(
            manifest.model, self.settings.model, memory_mb=self.settings.embed_memory_mb
        )
        if model.index_id != index_id:
            log.error(
                "cannot keep %s fresh: its model (%s) is not available on this host; a rollback "
                "to it would serve data as of generation %d",
                index_id,
                manifest.model.get("source"),
                manifest.generation,
            )
            return None
        return IndexWorker.open(model, self.settings, bootstrap=self.bootstrap, cache=self.cache)
