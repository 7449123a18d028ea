"""One model migration: shadow index → catch up → gate at equal offsets → compare-and-set flip.

1. **Bootstrap** from the *serving* index (the one the pointer names): its newest snapshot holds
   every live document, the versions of deleted ones, and the Kafka offsets O it contains. The
   documents are re-embedded by the new model in batches through `Index.apply` (the shared
   embedding cache makes a repeated or rolled-back migration nearly free), deletions are
   carried over so a late, older upsert cannot resurrect a document.
2. **Catch up**: an IndexWorker of the shadow (its own consumer group, `semsearch-<new id>`)
   tails `docs` from O until its lag is under one batch. The live index keeps serving and
   updating the whole time; nothing here touches it.
3. **Gate at equal offsets**: the shadow worker pauses at S (it is ours, so it simply is not
   stepped). The migrator's private copy of the live snapshot is brought from O to exactly S by
   a bounded replay (`consumers.replay`). Both indexes now contain precisely the events before S;
   `indexer.validation` compares them. The report goes into a shadow snapshot's manifest
   (`extra.gate`), into `<index dir>/gate-report.json` and onto the `control` topic.
4. **Flip**: pass → `compare_and_set(live → new)` on the Redis pointer (atomic: of two racing
   migrators one wins, the other reports "superseded"), a `flip` event, and the shadow worker
   is handed to the caller to keep the new index fresh. Fail → the pointer is not touched; the
   reasons are logged, exported and published.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from consumers.migration_status import (
    MIGRATION_GATE,
    MIGRATION_LAG,
    MigrationOutcome,
    MigrationStatus,
)
from consumers.replay import cluster_id, offsets_in, replay
from consumers.shadow import (
    MigrationAborted,
    MigrationError,
    bootstrap_shadow,
    model_for_manifest,
    resolve_model_source,
)
from consumers.worker import CLUSTER_KEY, IndexWorker
from contracts.errors import IndexNotFoundError, SemsearchError
from contracts.events import Flip, GateReportEvent, ModelUpgrade
from contracts.ids import validate_index_id
from contracts.offsets import Offsets
from contracts.pointer import Pointer
from contracts.settings import Settings
from indexer.beir import read_qrels, read_queries
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.model import EmbeddingModel, load_model
from indexer.pins import StandingPin
from indexer.snapshots import Manifest, SnapshotStore, index_dir
from indexer.validation import GateReport, unusable_model, validate_shadow
from producers.publisher import Publisher

log = logging.getLogger(__name__)

CATCH_UP_TIMEOUT_S = 1800.0
GATE_REPORT_FILE = "gate-report.json"
_STATUS_EVERY_S = 0.5


def load_validation_set(
    settings: Settings,
) -> tuple[dict[str, str] | None, dict[str, dict[str, int]] | None]:
    """The held-out set, read at gate time (an unset path leaves the gate to refuse)."""
    if settings.validation_queries is None or settings.validation_qrels is None:
        return None, None
    try:
        return read_queries(settings.validation_queries), read_qrels(settings.validation_qrels)
    except SemsearchError as exc:
        raise MigrationError(
            f"the held-out set is unreadable ({exc}); fix SEMSEARCH_VALIDATION_QUERIES / "
            "SEMSEARCH_VALIDATION_QRELS and publish the upgrade again"
        ) from None


class Migrator:
    """Carries out model-upgrade requests one at a time (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        bootstrap: str,
        pointer: Pointer,
        cache: EmbeddingCache | None,
        status: MigrationStatus,
        publisher: Publisher | None,
        stop: threading.Event,
        writers: set[str] | None = None,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.pointer = pointer
        self.cache = cache
        self.status = status
        self.publisher = publisher
        self.stop = stop
        # Index ids another worker of this process writes to: never built into by a migration.
        self.writers = writers if writers is not None else set()
        self._last_status = 0.0
        self.cluster: str | None = None
        # Pins on the generations the private copies read (documents.sqlite rows at that
        # generation, for hours at 1M chunks): released when the migration ends.
        self._holds: list[StandingPin] = []

    # -- entry point ------------------------------------------------------------------------
    def run(self, request: ModelUpgrade) -> MigrationOutcome:
        started = time.monotonic()
        self.status.begin(model=request.model, requested_at=request.requested_at)
        log.info("migration requested: model %s (%s)", request.model, request.reason or "no reason")
        try:
            outcome = self._run(request)
        except MigrationAborted as exc:
            outcome = MigrationOutcome("aborted", None, None, str(exc))
        except SemsearchError as exc:
            outcome = MigrationOutcome("failed", None, None, str(exc))
        except Exception as exc:  # a model sentence-transformers loads but semsearch cannot use
            log.exception("migration to %s failed unexpectedly", request.model)
            outcome = MigrationOutcome(
                "failed",
                None,
                None,
                f"{type(exc).__name__}: {exc} - the serving index is unchanged; is {request.model} "
                "a sentence-transformers text model directory?",
            )
        finally:
            for hold in self._holds:
                hold.release()
            self._holds.clear()
        outcome.from_index = outcome.from_index or self.status.current.get("from_index")
        outcome.to_index = outcome.to_index or self.status.current.get("to_index")
        outcome.stats.setdefault("seconds", round(time.monotonic() - started, 3))
        state = "idle" if outcome.outcome == "noop" else outcome.outcome
        self.status.update(
            state, outcome=outcome.outcome, message=outcome.message, stats=outcome.stats
        )
        level = logging.INFO if outcome.outcome in ("flipped", "noop") else logging.ERROR
        log.log(level, "migration %s: %s", outcome.outcome, outcome.message)
        return outcome

    def _run(self, request: ModelUpgrade) -> MigrationOutcome:
        source = resolve_model_source(request.model)
        self.cluster = cluster_id(self.bootstrap)  # offsets from another cluster's log are void
        live_id = self._serving_index_id()
        try:
            new_model = load_model(source, memory_mb=self.settings.embed_memory_mb)
            # Building an empty index chunks with the model's tokenizer and embeds the canaries:
            # the cheapest proof that the model can serve at all.
            shadow = Index.create(new_model, self.settings, self.cache)
        except Exception as exc:
            report = unusable_model(request.model, live_id, exc)
            self._publish_report(report)
            return MigrationOutcome("rejected", live_id, None, report.summary(), report)
        new_id = new_model.index_id
        self.status.update(from_index=live_id, to_index=new_id, model_info=new_model.info.to_json())
        if new_id == live_id:
            return MigrationOutcome(
                "noop", live_id, new_id, f"{new_model.info.describe()} already serves {live_id}"
            )
        if new_id in self.writers:
            return self._to_maintained(new_model, live_id)
        live, origin = self._load_live(live_id)
        stats = bootstrap_shadow(shadow, live, status=self.status, stop=self.stop)
        store = SnapshotStore(index_dir(self.settings, new_id), keep=self.settings.keep_generations)
        worker = IndexWorker.from_index(
            shadow,
            self.settings,
            bootstrap=self.bootstrap,
            start_offsets=offsets_in(origin, self.cluster),
            store=store,
            # The start offsets are positions in the log of the cluster read above (or empty).
            offsets_cluster_id=self.cluster,
        )
        try:
            worker.snapshot()  # the bootstrapped shadow, at the offsets it was built from
            self._catch_up(worker)
            report = self._gate(worker, live, origin)
        except BaseException:
            worker.close(final_snapshot=False)
            raise
        return self._decide(report, live_id, new_model, stats, worker)

    def _to_maintained(self, model: EmbeddingModel, live_id: str) -> MigrationOutcome:
        """Migrate to an index another worker of this process keeps fresh (the configured
        model's, e.g. after an upgrade away from it): nothing to build. Private copies of both
        newest snapshots are replayed to the same offsets and gated like a shadow."""
        store = SnapshotStore(
            index_dir(self.settings, model.index_id), keep=self.settings.keep_generations
        )
        target, manifest = self._load_pinned(store, model)
        live, origin = self._load_live(live_id)
        ours, theirs = offsets_in(manifest, self.cluster), offsets_in(origin, self.cluster)
        at = {
            topic: {
                p: max(ours.get(topic, {}).get(p, 0), theirs.get(topic, {}).get(p, 0))
                for p in set(ours.get(topic, {})) | set(theirs.get(topic, {}))
            }
            for topic in set(ours) | set(theirs)
        }
        self.status.update("validating", progress={"offsets": at})
        reached = replay(target, self.bootstrap, ours, at).reached
        report = self._validate(target, live, theirs, manifest, reached or at)
        # The directory belongs to the other worker: the report goes beside its generations.
        (store.root / GATE_REPORT_FILE).write_text(json.dumps(report.to_json(), indent=1))
        self._publish_report(report)
        return self._decide(report, live_id, model, {}, None)

    def _decide(
        self,
        report: GateReport,
        live_id: str,
        model: EmbeddingModel,
        stats: dict[str, Any],
        worker: IndexWorker | None,
    ) -> MigrationOutcome:
        """Flip on a passed gate (compare-and-set), otherwise leave the pointer alone."""
        new_id = model.index_id
        stats.update(self._stats_of(report))
        if not report.passed:
            if worker is not None:
                worker.close()
            return MigrationOutcome(
                "rejected", live_id, new_id, report.summary(), report, stats=stats
            )
        info = {"model": model.info.source, "gate": "passed", "from": live_id}
        if not self.pointer.compare_and_set(live_id, new_id, **info):
            if worker is not None:
                worker.close()
            current = self.pointer.get()
            return MigrationOutcome(
                "superseded",
                live_id,
                new_id,
                f"the gate passed, but the pointer moved from {live_id} to {current} meanwhile "
                "(another migration or a rollback won); publish the upgrade again to retry",
                report,
                stats=stats,
            )
        self._publish(Flip(from_index=live_id, to_index=new_id))
        return MigrationOutcome(
            "flipped",
            live_id,
            new_id,
            f"{new_id} serves now (was {live_id}); {report.summary()}",
            report,
            worker,
            stats,
        )

    # -- steps ------------------------------------------------------------------------------
    def _serving_index_id(self) -> str:
        value = self.pointer.get()
        if value is not None:
            return validate_index_id(value)
        # Unset pointer: the API serves the configured model's index; name it, so the flip is a
        # compare-and-set from it and rollback has somewhere to return to.
        configured = load_model(self.settings.model, memory_mb=self.settings.embed_memory_mb)
        store = SnapshotStore(index_dir(self.settings, configured.index_id))
        if store.latest_generation() is None:
            raise MigrationError(
                f"nothing is served yet (the pointer {self.pointer.key} is unset and "
                f"{configured.index_id} has no snapshot); index documents first"
            )
        self.pointer.set_if_unset(configured.index_id, origin="migrator")
        return validate_index_id(self.pointer.get() or configured.index_id)

    def _load_live(self, live_id: str) -> tuple[Index, Manifest]:
        """A private copy of the serving index's newest snapshot (the live one keeps moving)."""
        self.status.update("loading")
        store = SnapshotStore(
            index_dir(self.settings, live_id), keep=self.settings.keep_generations
        )
        live, manifest = self._load_pinned(store, None)
        log.info(
            "migration: private copy of the serving index %s, generation %d (%d documents, offsets %s)",
            live_id,
            manifest.generation,
            manifest.counts.get("documents", 0),
            manifest.offsets,
        )
        return live, manifest

    def _load_pinned(
        self, store: SnapshotStore, model: EmbeddingModel | None
    ) -> tuple[Index, Manifest]:
        """A private copy of `store`'s newest loadable generation, pinned until the migration
        ends: the copy reads its documents from documents.sqlite at that generation throughout
        bootstrap and gate, while the index's worker snapshots and collects. The pin is taken
        before the model loads (`model` None: the one the manifest names)."""
        pin, newest = store.pin_latest()
        hold = StandingPin(pin)
        self._holds.append(hold)
        if model is None:
            model = model_for_manifest(self.settings, newest)
        index, manifest = store.load(model, self.settings, self.cache, fallback=True)
        try:
            hold.move_to(manifest.generation, store.pin)
        except IndexNotFoundError:
            raise MigrationError(
                f"generation {manifest.generation} of {store.root} was collected right after it "
                "loaded; publish the upgrade again"
            ) from None
        return index, manifest

    def _catch_up(self, worker: IndexWorker) -> None:
        """Step the shadow worker until its lag is below one batch (the gate needs no more:
        it compares at whatever offsets the shadow reached)."""
        deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
        threshold = self.settings.batch_max_events
        while True:
            if self.stop.is_set():
                raise MigrationAborted("stopped while the shadow index was catching up")
            if time.monotonic() > deadline:
                raise MigrationError(
                    f"the shadow index did not catch up with {self.settings.docs_topic} within "
                    f"{CATCH_UP_TIMEOUT_S:.0f}s; the topic grows faster than the new model embeds"
                )
            worker.step()
            lags = worker.source.lag()
            lag = sum(lags.values())
            MIGRATION_LAG.set(lag)
            if time.monotonic() - self._last_status > _STATUS_EVERY_S:
                self._last_status = time.monotonic()
                self.status.update("catching-up", progress={"lag": lag, "offsets": worker.offsets})
            assigned = worker.source.assigned
            if assigned and len(lags) == len(assigned) and lag <= threshold:
                return

    def _gate(self, worker: IndexWorker, live: Index, origin: Manifest) -> GateReport:
        """Gate the paused shadow worker's index against the live copy at the same offsets."""
        at = worker.offsets
        manifest = worker.snapshot() if worker.dirty else worker.store.read_manifest()
        self.status.update("validating", progress={"lag": 0, "offsets": at})
        report = self._validate(worker.index, live, offsets_in(origin, self.cluster), manifest, at)
        extra: dict[str, Any] = {"gate": report.to_json()}
        if worker.cluster_id is not None:  # an unknown cluster is never recorded as if known
            extra[CLUSTER_KEY] = worker.cluster_id
        stored = worker.store.write(worker.index, at, extra=extra)
        (worker.store.root / GATE_REPORT_FILE).write_text(json.dumps(report.to_json(), indent=1))
        log.info("gate report stored in generation %d of %s", stored.generation, stored.index_id)
        self._publish_report(report)
        return report

    def _validate(
        self, shadow: Index, live: Index, live_start: Offsets, manifest: Manifest, at: Offsets
    ) -> GateReport:
        """Bring the live copy from its snapshot's offsets to `at` (where the shadow stands),
        then run every check of the gate."""
        replayed = replay(live, self.bootstrap, live_start, at)
        log.info("migration: live copy replayed %d events to offsets %s", replayed.events, at)
        queries, qrels = load_validation_set(self.settings)
        return validate_shadow(
            shadow,
            live,
            queries=queries,
            qrels=qrels,
            tolerance=self.settings.gate_tolerance,
            shadow_manifest=manifest,
            shadow_offsets=at,
            live_offsets=replayed.reached,
            p99_bound_ms=self.settings.gate_p99_ms,
        )

    def _publish_report(self, report: GateReport) -> None:
        """Metric, status, log and a `gate-report` event on control, pass or fail."""
        MIGRATION_GATE.labels(report.shadow_index_id).set(1 if report.passed else 0)
        self.status.update(gate={"passed": report.passed, "reasons": report.reasons})
        log.log(logging.INFO if report.passed else logging.ERROR, "%s", report.summary())
        self._publish(
            GateReportEvent(
                index_id=report.shadow_index_id,
                passed=report.passed,
                reason="; ".join(report.reasons) or report.summary(),
                metrics=report.to_json(),
            )
        )

    def _publish(self, event: GateReportEvent | Flip) -> None:
        if self.publisher is None:
            return
        try:
            self.publisher.publish_control(self.settings.control_topic, event)
        except SemsearchError as exc:  # the pointer is the truth; the event is for observers
            log.error(
                "could not publish %s on %s: %s", event.TYPE, self.settings.control_topic, exc
            )

    @staticmethod
    def _stats_of(report: GateReport) -> dict[str, Any]:
        quality = report.check("quality").data
        latency = report.check("latency").data
        return {
            "shadow_quality": quality.get("shadow"),
            "live_quality": quality.get("live"),
            "gate_p99_ms": latency.get("shadow_p99_ms"),
        }
