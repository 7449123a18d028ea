"""The executor: accepted model upgrades run here, one at a time, in a thread of their own.

A migration can take many minutes, far beyond the control consumer's max.poll.interval.ms, so
the control loop only accepts a request (ledger) and enqueues it here; this thread runs them in
order, each through an Orchestrator, and records the outcome in the ledger. A request accepted
before a restart is resumed from the ledger; one interrupted by a shutdown stays pending; one
whose outcome cannot be written (Redis down) is retried.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

import redis
from prometheus_client import Gauge

from consumers.migration.ledger import RequestLedger
from consumers.migration.orchestrator import Orchestrator
from consumers.migration.status import FINISHED_STATES, MIGRATIONS, MigrationStatus
from contracts.events import ModelUpgrade, decode_control_event

log = logging.getLogger(__name__)

RETRY_DELAY_S = 5.0

MIGRATIONS_PENDING = Gauge(
    "semsearch_migrations_pending", "Model-upgrade requests accepted and not finished yet."
)


class Executor:
    """Runs the ledger's pending model upgrades in order (see the module docstring)."""

    def __init__(
        self,
        ledger: RequestLedger,
        status: MigrationStatus,
        make_orchestrator: Callable[[], Orchestrator],
        *,
        before_run: Callable[[str], None] = lambda index_id: None,
    ) -> None:
        self.ledger = ledger
        self.status = status
        self.make_orchestrator = make_orchestrator
        # Called with the index id a request will build before it runs (its kept worker must
        # stop first: never two writers on one index).
        self.before_run = before_run
        self._work: queue.Queue[str] = queue.Queue()  # request keys, in the pending ledger
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, stop: threading.Event) -> Executor:
        self._stop = stop
        self._thread = threading.Thread(target=self._main, name="migration-executor", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def enqueue(self, key: str) -> None:
        """A request just accepted in the ledger."""
        busy = self._work.qsize() or self.status.current.get("state") not in (None, *FINISHED_STATES)
        self._work.put(key)
        MIGRATIONS_PENDING.set(self._work.qsize())
        if busy:
            log.info("control: %s accepted and queued behind %d other request(s)", key, self._work.qsize() - 1)
        else:
            log.info("control: %s accepted", key)

    def _resume_pending(self) -> None:
        """Requests accepted before a restart go to this executor."""
        queued = set(self._work.queue)
        for key in self.ledger.pending():
            if key not in queued:
                log.info("control: resuming %s, accepted before a restart", key)
                self._work.put(key)
        MIGRATIONS_PENDING.set(self._work.qsize())

    def _main(self) -> None:
        orchestrator: Orchestrator | None = None
        try:
            orchestrator = self.make_orchestrator()
            self._run_pending(orchestrator)
        except Exception:
            log.exception("the migration executor stopped; accepted upgrades stay pending until a restart")
        finally:
            if orchestrator is not None and orchestrator.publisher is not None:
                orchestrator.publisher.close()

    def _run_pending(self, orchestrator: Orchestrator) -> None:
        resumed = False
        while not self._stop.is_set():
            if not resumed:
                try:
                    self._resume_pending()
                    resumed = True
                except (redis.RedisError, OSError) as exc:
                    log.warning("cannot read pending requests yet (%s); retrying", exc)
                    self._stop.wait(RETRY_DELAY_S)
                    continue
            try:
                key = self._work.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self._run_one(orchestrator, key)
            except (redis.RedisError, OSError) as exc:
                log.error("request %s not finished (%s); it stays pending and is retried", key, exc)
                self._stop.wait(RETRY_DELAY_S)
                self._work.put(key)
            except Exception as exc:
                log.exception("request %s failed", key)
                try:
                    self.ledger.finish(key, {"outcome": "failed", "message": f"{type(exc).__name__}: {exc}"})
                except (redis.RedisError, OSError):
                    log.error("could not record the failure of %s; it stays pending", key)
            finally:
                MIGRATIONS_PENDING.set(self._work.qsize())

    def _run_one(self, orchestrator: Orchestrator, key: str) -> None:
        raw = self.ledger.pending_event(key)
        if raw is None:  # finished by an earlier executor
            return
        event = decode_control_event(raw)
        assert isinstance(event, ModelUpgrade)
        target = orchestrator.target_of(event)
        if target is not None:
            self.before_run(target)  # a migration rebuilds it; never two writers on one index
        outcome = orchestrator.run(event)
        if outcome.outcome == "aborted":  # by shutdown: stays pending, resumed after the restart
            return
        MIGRATIONS.labels(outcome.outcome).inc()
        self.ledger.finish(key, outcome.to_json())
