"""The lexical leg's merges, run in a worker thread after the generation that made them due.

Why: the merge policy (indexer/lexical_store.py) rewrites O(log N) deltas now and then and the
whole base once the deltas hold 25 % of it: ~1 GB at 1M chunks. Run inside the generation, that
generation took seconds and wrote the merge, not the change. Here a generation writes only its
delta; once it is published, a worker merges the segments it listed (immutable files, the alive
flags of its checkpoint), writes each merged file with its checksum sidecar and swaps it into the
live index; the next generation lists it. One job at a time: a generation that finds one running
leaves the merges to a later one. A failed job is logged and dropped (its inputs are still the
published segments; GC removes what it left).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

from indexer.lexical import Checkpoint, LexicalIndex
from indexer.lexical_store import LexicalStore
from indexer.snapshots import checksums

log = logging.getLogger(__name__)


class LexicalMerger:
    """The merge worker of one index directory (owned by its GenerationWriter)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._executor: ThreadPoolExecutor | None = None
        self._job: Future[object] | None = None
        self.cpu_s = 0.0  # the worker thread's CPU seconds (bench/scale.py reports them)

    @property
    def busy(self) -> bool:
        return self._job is not None and not self._job.done()

    def start(self, lexical: LexicalIndex, persisted: Checkpoint) -> bool:
        """Merge what `persisted` (a published generation's segments) makes due; False when a
        job is still running or nothing is due."""
        if self.busy:
            return False
        self._collect()
        if not LexicalStore.merges_due(persisted):
            return False
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lexical-merges")
        store = LexicalStore(self.root)
        self._job = self._executor.submit(self._merge, store, lexical, persisted)
        return True

    def _merge(self, store: LexicalStore, lexical: LexicalIndex, persisted: Checkpoint) -> object:
        started = time.thread_time()
        try:
            return store.merge(lexical, persisted, self._sidecar)
        finally:
            self.cpu_s += time.thread_time() - started

    def settle(self, timeout_s: float = 600.0) -> bool:
        """Wait for the running job (benches, tests, a build's end); True if one finished
        without error. TimeoutError past `timeout_s`."""
        if self._job is None:
            return False
        if not wait([self._job], timeout=timeout_s).done:
            raise TimeoutError(f"a lexical merge ran past {timeout_s} s")
        return self._collect()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._collect()

    def _collect(self) -> bool:
        job, self._job = self._job, None
        if job is None or not job.done():
            return False
        if (error := job.exception()) is not None:
            log.warning("lexical merge in %s failed (%s); a later generation retries", self.root, error)
            return False
        return True

    def _sidecar(self, rel: str) -> None:
        checksums.write_sidecar(self.root, rel)
