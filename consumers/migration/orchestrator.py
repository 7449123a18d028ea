"""One model migration: shadow index → catch up → gate at equal offsets → compare-and-set flip.

1. **Bootstrap** from the *serving* index (the one the pointer names): its newest snapshot holds
   every live document, the versions of deleted ones, and the Kafka offsets O it contains. The
   documents are re-embedded by the new model (`shadow.bootstrap_shadow`); deletions are
   carried over so a late, older upsert cannot resurrect a document.
2. **Catch up**: an IndexWorker of the shadow (its own consumer group, `semsearch-<new id>`)
   tails `docs` from O until its lag is under one batch (`shadow.catch_up`). The live index
   keeps serving and updating the whole time; nothing here touches it.
3. **Gate at equal offsets**: the shadow worker pauses at S (it is ours, so it simply is not
   stepped). A private copy of the live snapshot (`copies`) is brought from O to exactly S and
   both are compared (`gate`). The report also goes into a shadow snapshot's manifest
   (`extra.gate`).
4. **Flip**: pass → compare-and-set of the pointer (`flip`: of two racing migrators one wins,
   the other reports "superseded"), a `flip` event, and the shadow worker is handed over to keep
   the new index fresh. Fail → the pointer is not touched; the reasons are logged, exported and
   published.

The orchestrator returns a `MigrationOutcome`: plain data recorded with the request, so that a
request is handled only once. A live worker is never part of it: it goes to `hand_over`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consumers.cluster_id import lookup_cluster_id
from consumers.migration.copies import PrivateCopies
from consumers.migration.errors import MigrationAborted, MigrationError
from consumers.migration.flip import announce_move, flip
from consumers.migration.gate import Gate, gate_stats
from consumers.migration.replay import offsets_in, replay
from consumers.migration.shadow import bootstrap_shadow, catch_up
from consumers.migration.status import MigrationStatus
from consumers.worker import CLUSTER_KEY, IndexWorker
from contracts.errors import SemsearchError
from contracts.events import ModelUpgrade
from contracts.ids import validate_index_id
from contracts.pointer import Pointer
from contracts.settings import Settings
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.model import BUNDLED_NAME, EmbeddingModel, load_model
from indexer.snapshots import Manifest, SnapshotStore, index_dir
from indexer.validation import GateReport, unusable_model
from producers.publisher import Publisher

log = logging.getLogger(__name__)

_BUNDLED_ALIASES = {BUNDLED_NAME, "all-MiniLM-L6-v2", "all-minilm-l6-v2", "bundled"}


def resolve_model_source(name: str) -> str | None:
    """A model-upgrade's `model`: a directory on this host, or the bundled model's name."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if name in _BUNDLED_ALIASES:
        return None
    raise MigrationError(
        f"model {name!r} is not a directory on the indexer's host nor a known model name; "
        "publish the absolute path of a sentence-transformers model directory that the "
        "indexer can read (semsearch upgrade-model --model /path/to/model)"
    )


@dataclass
class MigrationOutcome:
    """How one model-upgrade request ended."""

    outcome: str  # flipped | rejected | superseded | failed | noop | aborted
    from_index: str | None
    to_index: str | None
    message: str
    report: GateReport | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "from_index": self.from_index,
            "to_index": self.to_index,
            "message": self.message,
            "gate": self.report.to_json() if self.report else None,
            "stats": self.stats,
        }


class Orchestrator:
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
        hand_over: Callable[[IndexWorker], None] | None = None,
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
        # Takes the worker of a newly served index (keeps it fresh); None: it is closed.
        self.hand_over = hand_over
        self.gate = Gate(settings, bootstrap=bootstrap, status=status, publisher=publisher)
        self.cluster: str | None = None

    def target_of(self, request: ModelUpgrade) -> str | None:
        """The index id a request would build, or None if its model is unusable (run() then
        reports why)."""
        try:
            source = resolve_model_source(request.model)
            return load_model(source, memory_mb=self.settings.embed_memory_mb).index_id
        except Exception:
            return None

    # -- entry point ------------------------------------------------------------------------
    def run(self, request: ModelUpgrade) -> MigrationOutcome:
        started = time.monotonic()
        self.status.begin(model=request.model, requested_at=request.requested_at)
        log.info("migration requested: model %s (%s)", request.model, request.reason or "no reason")
        copies = PrivateCopies(self.settings, self.cache)
        try:
            outcome = self._run(request, copies)
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
            copies.release()
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

    def _run(self, request: ModelUpgrade, copies: PrivateCopies) -> MigrationOutcome:
        source = resolve_model_source(request.model)
        self.cluster = lookup_cluster_id(self.bootstrap)  # offsets of another cluster are void
        live_id = self._serving_index_id()
        try:
            new_model = load_model(source, memory_mb=self.settings.embed_memory_mb)
            # Building an empty index chunks with the model's tokenizer and embeds the canaries:
            # the cheapest proof that the model can serve at all.
            shadow = Index.create(new_model, self.settings, self.cache)
        except Exception as exc:
            report = unusable_model(request.model, live_id, exc)
            self.gate.publish(report)
            return MigrationOutcome("rejected", live_id, None, report.summary(), report)
        new_id = new_model.index_id
        self.status.update(from_index=live_id, to_index=new_id, model_info=new_model.info.to_json())
        if new_id == live_id:
            return MigrationOutcome(
                "noop", live_id, new_id, f"{new_model.info.describe()} already serves {live_id}"
            )
        if new_id in self.writers:
            return self._to_maintained(new_model, live_id, copies)
        self.status.update("loading")
        live, origin = copies.of_serving(live_id)
        stats = bootstrap_shadow(shadow, live, status=self.status, stop=self.stop)
        worker = IndexWorker.from_index(
            shadow,
            self.settings,
            bootstrap=self.bootstrap,
            start_offsets=offsets_in(origin, self.cluster),
            store=copies.store_of(new_id),
            # The start offsets are positions in the log of the cluster read above (or empty).
            offsets_cluster_id=self.cluster,
            newest_event_ms=origin.newest_event_ms if offsets_in(origin, self.cluster) else None,
        )
        try:
            worker.snapshot()  # the bootstrapped shadow, at the offsets it was built from
            catch_up(worker, status=self.status, stop=self.stop)
            report = self._gate_shadow(worker, live, origin)
        except BaseException:
            worker.close(final_snapshot=False)
            raise
        return self._decide(report, live_id, new_model, stats, worker)

    def _to_maintained(
        self, model: EmbeddingModel, live_id: str, copies: PrivateCopies
    ) -> MigrationOutcome:
        """Migrate to an index another worker of this process keeps fresh (the configured
        model's, e.g. after an upgrade away from it): nothing to build. Private copies of both
        newest snapshots are replayed to the same offsets and gated like a shadow."""
        store = copies.store_of(model.index_id)
        target, manifest = copies.load(store, model)
        self.status.update("loading")
        live, origin = copies.of_serving(live_id)
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
        # The directory belongs to the other worker: the report goes beside its generations.
        report = self.gate.check(target, manifest, reached or at, live, theirs, store.root)
        return self._decide(report, live_id, model, {}, None)

    def _gate_shadow(self, worker: IndexWorker, live: Index, origin: Manifest) -> GateReport:
        """Gate the paused shadow worker's index; the report also goes into a generation."""
        at = worker.offsets
        manifest = worker.snapshot() if worker.dirty else worker.store.read_manifest()
        self.status.update("validating", progress={"lag": 0})
        live_start = offsets_in(origin, self.cluster)
        report = self.gate.check(worker.index, manifest, at, live, live_start, worker.store.root)
        extra: dict[str, Any] = {"gate": report.to_json()}
        if worker.cluster_id is not None:  # an unknown cluster is never recorded as if known
            extra[CLUSTER_KEY] = worker.cluster_id
        stored = worker.store.write(worker.index, at, extra=extra, newest_event_ms=worker.newest_event_ms)
        log.info("gate report stored in generation %d of %s", stored.generation, stored.index_id)
        return report

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
        stats.update(gate_stats(report))
        if not report.passed:
            if worker is not None:
                worker.close()
            return MigrationOutcome(
                "rejected", live_id, new_id, report.summary(), report, stats=stats
            )
        info = {"model": model.info.source, "gate": "passed", "from": live_id}
        move = flip(self.pointer, live_id, new_id, **info)
        if move is None:
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
        announce_move(self.publisher, self.settings.control_topic, move)
        if worker is not None:
            if self.hand_over is not None:
                self.hand_over(worker)
            else:
                worker.close()
        return MigrationOutcome(
            "flipped",
            live_id,
            new_id,
            f"{new_id} serves now (was {live_id}); {report.summary()}",
            report,
            stats,
        )

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
