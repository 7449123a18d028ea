"""Seals, merges and retrains computed in a worker thread; the writer thread installs them.

Why: a seal assigns 8,192 rows to the quantizer's lists and writes 12.6 MB; a tier merge at 1M
chunks copies and writes up to 4 x 131k vectors (~800 MB); a retrain re-assigns every vector.
Run in `Index.apply`, each one stalled ingest and made the next generation write the new
segment, so one generation's cost depended on where the corpus stood in the merge policy, not on
what changed. Lucene's answer is used here: merges run beside indexing, and a commit only names
segments that are already on disk.

How, with one writer thread and readers under the index's lock:
- `step` (called by `VectorIndex.maintain`, in the writer thread) installs a finished job under
  the write lock, then plans the next one if none is running. One job at a time, so a job's
  sources (immutable sealed segments, copies of live rows) cannot change under it, and a retrain
  never races a seal assigned with the old quantizer.
- A seal job builds the segment from copies of the live rows; the rows stay in the live
  segment, searchable, until the install moves them (rows deleted meanwhile are tombstoned in
  the new segment, rows added meanwhile stay live). A merge job copies alive vectors list by
  list; ids deleted after it was planned keep their tombstones (`VectorIndex._replace`).
- `sink` (set by the snapshot writer) writes each new segment's file and checksum from the worker
  thread, so the generation that first lists a segment writes only the change.
- A job that fails is logged and dropped (its inputs are unchanged, nothing is lost); the next
  `step` redoes that work in the writer's thread, so a real error surfaces there as before.

The first seal (which trains the first quantizer) stays in the writer's thread: it is small, and
until it exists there is nothing to assign rows to.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from indexer.segments import SealedSegment

if TYPE_CHECKING:
    from indexer.vector_index import Retrain, Swap, VectorIndex

log = logging.getLogger(__name__)

SegmentSink = Callable[[SealedSegment], None]


@dataclass
class _Seal:
    segment: SealedSegment


@dataclass
class _Merge:
    sources: list[SealedSegment]
    merged: SealedSegment


@dataclass
class _Retrained:
    retrain: Retrain


_Result = _Seal | _Merge | _Retrained


class BackgroundMaintenance:
    """The worker of one `VectorIndex` (attach with `VectorIndex.background = ...`)."""

    def __init__(self, index: VectorIndex, sink: SegmentSink | None = None) -> None:
        self.index = index
        self.sink = sink
        self._executor: ThreadPoolExecutor | None = None
        self._job: Future[_Result] | None = None
        self._failed = False  # the last job raised: do the next step's work in the writer
        self.completed = 0  # jobs installed (tests, metrics)
        # What the jobs cost in the worker thread (bench/scale.py reports them beside ingest).
        self.cpu_s = 0.0
        self.bytes_written = 0

    @property
    def busy(self) -> bool:
        return self._job is not None

    def step(self, swap: Swap = contextlib.nullcontext) -> list[SealedSegment]:
        """Install a finished job, start the next one; returns the segments sealed from the
        live segment that were installed now."""
        sealed: list[SealedSegment] = []
        if self._job is not None and self._job.done():
            sealed = self._install(self._job, swap)
            self._job = None
        if self._job is None:
            if self._failed:
                self._failed = False
                sealed += self._run_in_writer(swap)
            else:
                sealed += self._plan(swap)
        return sealed

    def finish(self, swap: Swap = contextlib.nullcontext) -> list[SealedSegment]:
        """Wait for the running job and install it (synchronous paths: compact, repair, close)."""
        if self._job is None:
            return []
        job, self._job = self._job, None
        return self._install(job, swap)

    def settle(self, swap: Swap = contextlib.nullcontext, timeout_s: float = 600.0) -> None:
        """Run jobs until nothing is due (a build's end, benches, tests); TimeoutError when a
        job takes longer than `timeout_s`."""
        for _ in range(10_000):
            if self._job is not None and not wait([self._job], timeout=timeout_s).done:
                raise TimeoutError(f"a background vector job ran past {timeout_s} s")
            self.step(swap)
            if self._job is None:
                return
        raise RuntimeError("background vector maintenance did not settle in 10,000 jobs")

    def close(self) -> None:
        """Stop the worker after its running job; an uninstalled result is dropped (its inputs
        are still in the index)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._job = None

    # -- internals ------------------------------------------------------------------------
    def _plan(self, swap: Swap) -> list[SealedSegment]:
        index = self.index
        if len(index.live) >= index.seal_chunks:
            if index.quantizer is None:
                return index.maintain_now(swap)  # the first seal trains the first quantizer
            ids, vectors = index.seal_rows()
            self._submit(lambda: _Seal(self._sunk(index.build_seal(ids, vectors))))
        elif index.retrain_due():
            sources, dead = index.plan_retrain()
            self._submit(lambda: _Retrained(self._sunk_retrain(index.compute_retrain(sources, dead))))
        else:
            groups = index.plan_merges()
            if groups:
                sources, dead = groups[0], index._dead_array()
                self._submit(lambda: _Merge(sources, self._sunk(index.compute_merge(sources, dead))))
        return []

    def _run_in_writer(self, swap: Swap) -> list[SealedSegment]:
        background, self.index.background = self.index.background, None
        try:
            return self.index.maintain_now(swap)
        finally:
            self.index.background = background

    def _submit(self, work: Callable[[], _Result]) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vector-maintenance")
        self._job = self._executor.submit(self._measured, work)

    def _measured(self, work: Callable[[], _Result]) -> _Result:
        cpu, written = time.thread_time(), _thread_bytes_written()
        try:
            return work()
        finally:
            self.cpu_s += time.thread_time() - cpu
            self.bytes_written += _thread_bytes_written() - written

    def _sunk(self, segment: SealedSegment) -> SealedSegment:
        if self.sink is not None and len(segment):
            try:
                self.sink(segment)
            except OSError as exc:  # e.g. disk full: the generation that lists it writes it
                log.warning("writing segment %s ahead of its generation failed: %s", segment.name, exc)
        return segment

    def _sunk_retrain(self, retrain: Retrain) -> Retrain:
        self._sunk(retrain.merged)
        return retrain

    def _install(self, job: Future[_Result], swap: Swap) -> list[SealedSegment]:
        try:
            result = job.result()
        except Exception:
            log.exception("background vector maintenance failed; the writer redoes it")
            self._failed = True
            return []
        index = self.index
        self.completed += 1
        if isinstance(result, _Seal):
            with swap():
                index.install_seal(result.segment)
            return [result.segment]
        if isinstance(result, _Merge):
            if all(source in index.sealed for source in result.sources):
                index.install_merge(result.sources, result.merged, swap)
            return []
        if all(source in index.sealed for source in result.retrain.sources) and len(
            index.sealed
        ) == len(result.retrain.sources):
            index.install_retrain(result.retrain, swap)
        return []



def _thread_bytes_written() -> int:
    """Bytes the calling thread passed to write(2) (Linux /proc/thread-self/io; 0 elsewhere)."""
    try:
        for line in Path("/proc/thread-self/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
