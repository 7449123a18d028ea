"""IndexWorker: one index, one consumer group, one loop — poll, validate, apply, snapshot.

Effectively-once without transactions: the index and the offsets of the events it contains are
persisted together, atomically, in one snapshot generation. After a crash the worker loads the
newest generation and consumes from exactly its offsets, so an event is either in the snapshot
or consumed again; and because the index ignores any version it already holds, consuming an
event twice changes nothing either.

A worker owns nothing global, so a supervisor can run several in one process (the live index
and a shadow index being built for a model migration), each in its own thread with its own
`run(stop_event)`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from consumers.dead_letter import DeadLetterQueue
from consumers.metrics import WorkerMetrics
from consumers.operators import split_batch
from consumers.source import ConsumerTuning, KafkaSource, Record
from contracts.log_end import log_end_offsets
from contracts.offsets import Offsets, copy_offsets
from contracts.settings import Settings
from indexer.drift import DriftMonitor
from indexer.embedding_cache import EmbeddingCache
from indexer.index import ApplyReport, Index
from indexer.model import EmbeddingModel
from indexer.snapshots import Manifest, SnapshotStore, SnapshotWriteError, index_dir
from indexer.writer_lock import WriterLock

log = logging.getLogger(__name__)

# At most this share of the indexer's time goes to writing snapshot generations.
SNAPSHOT_TIME_SHARE = 0.2
_SPACING_FACTOR = (1 - SNAPSHOT_TIME_SHARE) / SNAPSHOT_TIME_SHARE

# A failed snapshot is retried after 1, 2, 4 ... at most 60 seconds.
SNAPSHOT_RETRY_MIN_S = 1.0
SNAPSHOT_RETRY_MAX_S = 60.0

# Manifest `extra` key: the Kafka cluster whose log the manifest's offsets point into.
CLUSTER_KEY = "kafka_cluster_id"
# drain(): how long the log-end probe may take, and how often progress is logged.
_DRAIN_PROBE_S = 30.0
_DRAIN_LOG_S = 5.0


def default_group_id(index_id: str) -> str:
    """One group per index: a shadow index consumes the same topic independently of the live one."""
    return f"semsearch-{index_id}"


@dataclass
class DrainReport:
    """How a drain ended; `not_indexed` maps partition -> [first, end) offsets left behind."""

    complete: bool
    events: int
    seconds: float
    not_indexed: dict[int, tuple[int, int]]

    @property
    def lost(self) -> int:
        return sum(end - first for first, end in self.not_indexed.values())


@dataclass
class StepReport:
    events: int = 0
    dead_lettered: int = 0
    apply: ApplyReport | None = None
    snapshot: Manifest | None = None


class IndexWorker:
    """Consumes `docs` into one Index and snapshots it together with the offsets it contains."""

    def __init__(
        self,
        index: Index,
        store: SnapshotStore,
        settings: Settings,
        *,
        bootstrap: str,
        start_offsets: Offsets | None = None,
        group_id: str | None = None,
        generation: int | None = None,
        metrics: WorkerMetrics | None = None,
        offsets_cluster_id: str | None = None,
        newest_event_ms: int | None = None,
    ) -> None:
        self.index = index
        self.store = store
        self.settings = settings
        self.bootstrap = bootstrap  # drain(): a probe consumer reads where the log ends
        # Not settings.group_id: one process may run several workers (live, shadow, rollback
        # targets) and each index needs its own group; run_indexer passes SEMSEARCH_GROUP_ID
        # explicitly for the index it owns.
        self.group_id = group_id or default_group_id(index.index_id)
        self.generation = generation
        self.metrics = metrics or WorkerMetrics(index.index_id)
        self.snapshot_offsets: Offsets = copy_offsets(start_offsets or {})
        # Kafka timestamp (ms) of the newest event the positions cover; each snapshot records it
        # beside the offsets (Manifest.newest_event_ms), so GET /index can say how old it is.
        self.newest_event_ms = newest_event_ms
        self.source = KafkaSource(
            bootstrap,
            self.group_id,
            [settings.docs_topic],
            start_offsets,
            window_ms=settings.batch_window_ms,
            max_events=settings.batch_max_events,
            tuning=ConsumerTuning.from_settings(settings),
            # The source re-checks, for as long as it runs, that its positions still point into
            # the log they were taken from (a new broker, a recreated topic) and replays a log
            # that started over from its beginning: versions make that harmless.
            cluster_id=offsets_cluster_id,
            on_reset=self.metrics.log_reset,
        )
        self.dead_letters = DeadLetterQueue(bootstrap, settings.dlq_topic, index.index_id)
        self._unsnapshotted_events = 0
        # Monotonic end of the newest snapshot; None = never, so the first change snapshots at
        # once (not 0.0: the monotonic clock starts near 0 at boot, and CI machines are young).
        self._last_snapshot: float | None = None
        self._last_snapshot_seconds = 0.0
        self._closed = False
        self.metrics.counts(index.count())
        # Drift detection (issue 5, indexer/drift.py): every SEMSEARCH_DRIFT_CHECK_S re-prove that
        # the model still embeds like the one the index was built with; step() raises if not.
        self.drift = DriftMonitor.for_index(index, interval_s=settings.drift_check_s)

    # -- construction paths -----------------------------------------------------------------
    @classmethod
    def open(
        cls,
        model: EmbeddingModel,
        settings: Settings,
        *,
        bootstrap: str,
        cache: EmbeddingCache | None = None,
        group_id: str | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> IndexWorker:
        """Resume the model's index from its newest loadable generation, or start a new one.

        Takes the index's WriterLock first (indexer/writer_lock.py): a second writer of the same
        index refuses here with IndexLockedError naming the holder. Loading may repair corrupt
        sealed segments from the embedding cache (and publish that as a generation).
        """
        store = SnapshotStore(index_dir(settings, model.index_id), keep=settings.keep_generations)
        lock = WriterLock.acquire(store.root, f"the indexer of {model.index_id}")
        try:
            if store.latest_generation() is None:
                index = Index.create(model, settings, cache)
                worker = cls(index, store, settings, bootstrap=bootstrap, group_id=group_id, metrics=metrics)
                worker._writer_lock = lock
                try:
                    worker.snapshot()  # an empty generation 1, so readers find the index at once
                except BaseException:
                    worker.close(final_snapshot=False)
                    raise
                log.info("index %s: new, consuming %s from the beginning", index.index_id, settings.docs_topic)
                return worker
            index, manifest = store.load(model, settings, cache, fallback=True, repair=True)
            log.info(
                "index %s: resumed generation %d (%d documents) at offsets %s",
                index.index_id,
                manifest.generation,
                manifest.counts.get("documents", 0),
                manifest.offsets or "{} (beginning)",
            )
            worker = cls(
                index,
                store,
                settings,
                bootstrap=bootstrap,
                start_offsets=manifest.offsets,
                group_id=group_id,
                generation=manifest.generation,
                metrics=metrics,
                offsets_cluster_id=manifest.extra.get(CLUSTER_KEY),
                newest_event_ms=manifest.newest_event_ms,
            )
        except BaseException:
            lock.release()
            raise
        worker._writer_lock = lock
        return worker

    @classmethod
    def from_index(
        cls,
        index: Index,
        settings: Settings,
        *,
        bootstrap: str,
        start_offsets: Offsets,
        group_id: str | None = None,
        store: SnapshotStore | None = None,
        metrics: WorkerMetrics | None = None,
        offsets_cluster_id: str | None = None,
        newest_event_ms: int | None = None,
    ) -> IndexWorker:
        """Tail `docs` into an index built elsewhere (a migration's shadow index), from the
        offsets its contents correspond to (e.g. the source index's manifest offsets; pass
        `offsets_cluster_id=manifest.extra.get(CLUSTER_KEY)` and `newest_event_ms` with them).
        Takes the index's WriterLock like open()."""
        store = store or SnapshotStore(index_dir(settings, index.index_id), keep=settings.keep_generations)
        lock = WriterLock.acquire(store.root, f"the indexer of {index.index_id}")
        try:
            worker = cls(
                index,
                store,
                settings,
                bootstrap=bootstrap,
                start_offsets=start_offsets,
                group_id=group_id,
                generation=store.latest_generation(),
                metrics=metrics,
                offsets_cluster_id=offsets_cluster_id,
                newest_event_ms=newest_event_ms,
            )
        except BaseException:
            lock.release()
            raise
        worker._writer_lock = lock
        return worker

    # -- the loop ---------------------------------------------------------------------------
    @property
    def cluster_id(self) -> str | None:
        """The Kafka cluster whose log `offsets` point into (None: none seen yet)."""
        return self.source.cluster

    @property
    def offsets(self) -> Offsets:
        """Next offset per partition that the in-memory index lacks."""
        return copy_offsets(self.source.positions)

    @property
    def dirty(self) -> bool:
        """Has the index moved past its newest snapshot (events applied, stale or dead-lettered)?"""
        return self.source.positions != self.snapshot_offsets

    def step(self, idle_timeout_s: float = 0.25) -> StepReport:
        """Process one batch (waiting up to `idle_timeout_s` for it); snapshot when due."""
        report = StepReport()
        records = self.source.poll_batch(idle_timeout_s)
        if records:
            self.drift.maybe_check()  # issue 5: never embed into the index with a drifted model
            report.events = len(records)
            self._saw(records)
            batch = split_batch(records, self.index.validate_document)
            # Confirmed in the DLQ before any snapshot can hold offsets past these events.
            self.dead_letters.send(batch.poison)
            report.dead_lettered = len(batch.poison)
            self.metrics.dead_lettered(len(batch.poison))
            report.apply = self.index.apply(batch.changes)
            # Documents the index refused alone (e.g. NaN embeddings): the rest of the batch is
            # applied; these are dead-lettered, confirmed before maybe_snapshot below.
            refused = batch.rejected_poison(
                report.apply.rejected_changes, [r for _, r in report.apply.rejected]
            )
            self.dead_letters.send(refused)
            report.dead_lettered += len(refused)
            self.metrics.dead_lettered(len(refused))
            self.metrics.applied(report.apply)
            self._unsnapshotted_events += len(records)
        else:
            self.index.maintain()  # installs a background seal or merge that finished meanwhile
        self.metrics.lag(self.source.lag())
        report.snapshot = self.maybe_snapshot()
        return report

    def _saw(self, records: list[Record]) -> None:
        """The newest timestamp so far: max, not last, since partitions interleave (and a
        producer may set CreateTime itself); records without a timestamp change nothing."""
        stamps = [r.timestamp_ms for r in records if r.timestamp_ms is not None and r.timestamp_ms >= 0]
        if self.newest_event_ms is not None:
            stamps.append(self.newest_event_ms)
        if stamps:
            self.newest_event_ms = max(stamps)

    def snapshot_due(self) -> bool:
        """Dirty, and SEMSEARCH_SNAPSHOT_EVENTS reached or the snapshot spacing has passed.

        The spacing is measured from the end of the previous snapshot: an event into an idle
        pipeline is snapshotted (made visible to readers) right away. It is at least
        SEMSEARCH_SNAPSHOT_INTERVAL_MS and grows with what the last snapshot cost, so that
        writing generations of a large index never takes more than ~SNAPSHOT_TIME_SHARE of the
        indexer's time (the cost of a generation grows with the index; embedding does not).
        """
        if not self.dirty:
            return False
        if self._unsnapshotted_events >= self.settings.snapshot_events:
            return True
        if self._last_snapshot is None:
            return True
        spacing = max(self.settings.snapshot_interval_ms / 1000, self._last_snapshot_seconds * _SPACING_FACTOR)
        return time.monotonic() - self._last_snapshot >= spacing

    # Set by open()/from_index(); released by close(). Class defaults keep __init__ untouched.
    _writer_lock: WriterLock | None = None
    # A failed snapshot (disk full, I/O error) is retried: count and monotonic time of the next try.
    _snapshot_failures = 0
    _snapshot_retry_at = 0.0

    def maybe_snapshot(self) -> Manifest | None:
        if time.monotonic() < self._snapshot_retry_at or not self.snapshot_due():
            return None
        try:
            return self.snapshot()
        except SnapshotWriteError:
            return None  # logged and counted by snapshot(); retried after the backoff

    def snapshot(self) -> Manifest:
        """Write a generation with the offsets its contents correspond to, then tell Kafka.

        A failed write (SnapshotWriteError: nothing was published) changes nothing here: the
        in-memory index and `snapshot_offsets` stay, readers keep the previous generation, and
        maybe_snapshot() retries with exponential backoff (SNAPSHOT_RETRY_MIN_S..MAX_S) instead of
        the indexer dying - a full disk is usually fixed by an operator within minutes.
        """
        offsets, cluster, newest = self.offsets, self.cluster_id, self.newest_event_ms
        started = time.perf_counter()
        # An unknown cluster is left out, never written as if known: a reader then trusts the
        # offsets until it can compare (KafkaSource adopts the first cluster it sees).
        try:
            manifest = self.store.write(
                self.index, offsets, extra={CLUSTER_KEY: cluster} if cluster else {}, newest_event_ms=newest
            )
        except SnapshotWriteError as exc:
            self._snapshot_failures += 1
            backoff = min(SNAPSHOT_RETRY_MAX_S, SNAPSHOT_RETRY_MIN_S * 2 ** (self._snapshot_failures - 1))
            self._snapshot_retry_at = time.monotonic() + backoff
            self.metrics.snapshot_failed()
            log.error(
                "index %s: snapshot failed (%d in a row): %s; still consuming, next attempt in %.0fs",
                self.index.index_id,
                self._snapshot_failures,
                exc,
                backoff,
            )
            raise
        if self._snapshot_failures:
            log.info(
                "index %s: snapshot written again after %d failed attempt(s)",
                self.index.index_id,
                self._snapshot_failures,
            )
            self._snapshot_failures, self._snapshot_retry_at = 0, 0.0
        seconds = time.perf_counter() - started
        self.snapshot_offsets = offsets
        self.generation = manifest.generation
        self._unsnapshotted_events = 0
        self._last_snapshot = time.monotonic()
        self._last_snapshot_seconds = seconds
        self.source.commit(offsets)
        self.metrics.snapshot(seconds, sum(int(f["bytes"]) for f in manifest.files.values()), manifest.generation)
        self.metrics.counts(self.index.count())
        log.debug("index %s: generation %d at %s (%.3fs)", self.index.index_id, manifest.generation, offsets, seconds)
        return manifest

    def caught_up(self) -> bool:
        """Everything in the assigned partitions is applied and snapshotted (per cached watermarks)."""
        lags = self.source.lag()
        return bool(lags) and not any(lags.values()) and not self.dirty

    def run(
        self,
        stop_event: threading.Event,
        *,
        drain_timeout_s: float | None = None,
        abort_drain: threading.Event | None = None,
    ) -> None:
        """Step until `stop_event` is set; then finish with a final snapshot and close.

        With `drain_timeout_s` (a memory-only broker, see drain()) the stop first consumes to
        the end of the log, for at most that long. On an exception nothing more is written: the
        newest snapshot is consistent, and the in-memory index may not be.
        """
        log.info("index %s: consuming %s as group %s", self.index.index_id, self.settings.docs_topic, self.group_id)
        try:
            while not stop_event.is_set():
                self.step()
            if drain_timeout_s is not None:
                self.drain(time.monotonic() + drain_timeout_s, abort_drain)
        except BaseException:
            self.close(final_snapshot=False)
            raise
        self.close()

    def drain(self, deadline: float, abort: threading.Event | None = None) -> DrainReport:
        """Consume every partition of `docs` to where its log ends now, before the broker stops.

        Why: the embedded broker keeps events in memory only, so whatever it acknowledged and
        this worker has not applied is gone once it stops. The targets are the high watermarks
        read right after the stop (contracts/log_end.py; Tansu's watermark queries are wrong),
        for every partition of the topic - also those this consumer was never assigned or never
        read, whose assignment the steps below wait for. Ends at `deadline` (monotonic) or when
        `abort` is set, then says loudly which offsets were not indexed. The caller snapshots.
        """
        topic = self.settings.docs_topic
        started = time.monotonic()
        ends = log_end_offsets(
            self.bootstrap,
            topic,
            self.offsets.get(topic, {}),
            timeout_s=max(1.0, min(_DRAIN_PROBE_S, deadline - started)),
            abort=abort,
        )

        def remaining() -> dict[int, tuple[int, int]]:
            positions = self.source.positions.get(topic, {})
            left = {p: (positions.get(p, low), high) for p, (low, high) in ends.items()}
            return {p: span for p, span in left.items() if span[1] > span[0]}

        events = 0
        next_log = started + _DRAIN_LOG_S
        left = remaining()
        if left:
            log.info(
                "index %s: draining %d event(s) of %s before the embedded broker stops (until %s; "
                "Ctrl-C again to abort)",
                self.index.index_id,
                sum(high - position for position, high in left.values()),
                topic,
                time.strftime("%H:%M:%S", time.localtime(time.time() + deadline - started)),
            )
        while left and ends and time.monotonic() < deadline and not (abort is not None and abort.is_set()):
            events += self.step().events
            left = remaining()
            if left and time.monotonic() >= next_log:
                unassigned = sorted(p for p in left if (topic, p) not in self.source.assigned)
                log.info(
                    "index %s: draining, %d event(s) left in %s%s",
                    self.index.index_id,
                    sum(high - position for position, high in left.values()),
                    ", ".join(f"{topic}[{p}]" for p in sorted(left)),
                    f" (waiting for the assignment of {unassigned})" if unassigned else "",
                )
                next_log = time.monotonic() + _DRAIN_LOG_S
        report = DrainReport(
            complete=bool(ends) and not left,
            events=events,
            seconds=time.monotonic() - started,
            not_indexed={p: span for p, span in left.items()},
        )
        if report.complete:
            log.info("index %s: drained %d event(s) in %.1fs", self.index.index_id, events, report.seconds)
        else:
            why = "aborted" if abort is not None and abort.is_set() else "deadline passed"
            if not ends:
                why = "the end of the log could not be read"
            log.error(
                "index %s: drain incomplete (%s after %.1fs): %d acknowledged event(s) were NOT indexed "
                "and are lost when the embedded broker stops: %s. Publish those documents again "
                "after the restart.",
                self.index.index_id,
                why,
                report.seconds,
                report.lost,
                "; ".join(f"{topic}[{p}] offsets {a}..{b - 1}" for p, (a, b) in sorted(left.items()))
                or f"every partition of {topic} (unknown)",
            )
        return report

    def close(self, *, final_snapshot: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if final_snapshot and self.dirty:
                manifest = self.snapshot()
                log.info("index %s: final snapshot generation %d", self.index.index_id, manifest.generation)
        finally:
            try:
                self.index.stop_maintenance()
                self.store.stop_background()
                self.source.close()
                self.dead_letters.close()
            finally:
                if self._writer_lock is not None:
                    self._writer_lock.release()
