"""The migration side of `semsearch index`: control events in, every servable index kept fresh.

Why inside `semsearch index` and not a separate `semsearch migrate` process: one process per
data directory then writes every index in it (no two writers can race on one index directory),
and `semsearch up` - which runs the indexer - gets migrations without a third process to start.

What it does, in one thread plus one thread per extra index:
- consumes `control` (consumer group `semsearch-migrator`): `model-upgrade` → a Migrator run,
  `rollback` → the pointer's atomic rollback. Requests are handled once: each is recorded in
  Redis (`<ns>:requests`) before its offset is committed, so a new consumer group replaying
  the topic from the beginning re-runs nothing. Its own `gate-report`/`flip` events are ignored.
- a model migration can take many minutes, far beyond max.poll.interval.ms, so the control
  consumer never runs one itself: it records the request as *pending* in Redis
  (`<ns>:requests:pending`, the raw event), commits the control offset, and keeps polling (the
  consumer stays in its group). One executor thread runs pending requests one at a time, oldest
  first; a request that arrives meanwhile waits (logged as queued). Pending requests survive a
  restart and are resumed by the next executor. Rollbacks are quick (Redis only) and are
  handled by the control loop directly, so they are never stuck behind a migration.
- a failure of the control loop is logged, exported (`semsearch_migration_service_up` = 0) and the
  loop restarted after RESTART_DELAY_S instead of silently ending.
- keeps fresh every index that may be served: the active one and every rollback target in the
  pointer's history that is still registered. The configured model's index is the main
  worker's; every other one gets an IndexWorker of its own here (its model loaded from the
  source recorded in its manifest). So after a flip the old index keeps consuming `docs`, and a
  rollback serves fresh data.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import Gauge

from consumers.migration_status import MIGRATIONS, MigrationStatus
from consumers.migrator import Migrator
from consumers.shadow import model_for_manifest, resolve_model_source
from consumers.source import Record
from consumers.worker import IndexWorker
from contracts.errors import IndexNotFoundError, SemsearchError
from contracts.events import EventError, Flip, ModelUpgrade, Rollback, decode_control_event
from contracts.pointer import Pointer, PointerError
from contracts.settings import Settings
from indexer.embedding_cache import EmbeddingCache
from indexer.model import load_model
from indexer.snapshots import SnapshotStore, index_dir
from producers.publisher import Publisher

log = logging.getLogger(__name__)

CONTROL_GROUP = "semsearch-migrator"
RESCAN_S = 10.0
RESTART_DELAY_S = 5.0

SERVICE_UP = Gauge(
    "semsearch_migration_service_up",
    "1 while the control consumer (model upgrades, rollbacks) runs, 0 while it is restarting.",
)
MIGRATIONS_PENDING = Gauge(
    "semsearch_migrations_pending", "Model-upgrade requests accepted and not finished yet."
)


_IDLE_STATES = ("idle", "flipped", "rejected", "superseded", "failed", "aborted")


def request_key(event: ModelUpgrade | Rollback) -> str:
    """Identity of a request: its kind, target and the time it was made."""
    target = event.model if isinstance(event, ModelUpgrade) else (event.to_index or "")
    return f"{event.TYPE}|{target}|{event.requested_at!r}"


@dataclass
class _Kept:
    thread: threading.Thread
    stop: threading.Event


class MigrationService:
    """Runs migrations and the workers of servable non-configured indexes (see module doc)."""

    def __init__(
        self,
        settings: Settings,
        *,
        bootstrap: str,
        cache: EmbeddingCache | None,
        owned_index_id: str,
    ) -> None:
        if not settings.redis_url:
            raise SemsearchError("model migrations need the Redis pointer: set REDIS_URL")
        self.settings = settings
        self.bootstrap = bootstrap
        self.cache = cache
        self.owned = owned_index_id
        self.pointer = Pointer.from_url(settings.redis_url, settings.pointer_key)
        namespace = settings.pointer_key.rsplit(":", 1)[0]
        self.requests_key = f"{namespace}:requests"
        self.status = MigrationStatus(self.pointer, settings.data_dir)
        self._kept: dict[str, _Kept] = {}
        self._lock = threading.Lock()
        self.pending_key = f"{namespace}:requests:pending"
        self._thread: threading.Thread | None = None
        self._executor: threading.Thread | None = None
        self._work: queue.Queue[str] = queue.Queue()  # request keys, in pending_key
        self._stop = threading.Event()

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, stop: threading.Event) -> MigrationService:
        self._stop = stop
        self._thread = threading.Thread(target=self._main, name="migrations", daemon=True)
        self._thread.start()
        self._executor = threading.Thread(target=self._execute, name="migration-executor", daemon=True)
        self._executor.start()
        return self

    @property
    def control_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout_s: float = 60.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._executor is not None:
            self._executor.join(timeout_s)
        for kept in list(self._kept.values()):
            kept.stop.set()
            kept.thread.join(timeout_s)
        self.pointer.close()

    def kept_fresh(self) -> set[str]:
        """Index ids that have a worker of this service right now."""
        with self._lock:
            return {i for i, k in self._kept.items() if k.thread.is_alive()}

    def _main(self) -> None:
        """The control loop, restarted after any failure until the service stops."""
        while not self._stop.is_set():
            SERVICE_UP.set(1)
            try:
                self._control_loop()
            except Exception:
                log.exception(
                    "the migration control loop failed; model upgrades are not handled - restarting it in %.0fs",
                    RESTART_DELAY_S,
                )
            SERVICE_UP.set(0)
            self._stop.wait(RESTART_DELAY_S)

    def _control_loop(self) -> None:
        publisher: Publisher | None = None
        consumer: Consumer | None = None
        try:
            publisher = Publisher(self.bootstrap)
            consumer = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": CONTROL_GROUP,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                }
            )
            consumer.subscribe([self.settings.control_topic])
            log.info("migrations: listening on %s", self.settings.control_topic)
            next_scan = 0.0
            while not self._stop.is_set():
                if time.monotonic() >= next_scan:
                    self._keep_servable_fresh()
                    next_scan = time.monotonic() + RESCAN_S
                message = consumer.poll(0.5)
                if message is None:
                    continue
                try:
                    self._on_message(consumer, message, publisher)
                except (redis.RedisError, OSError) as exc:
                    # Not committed: read it again once Redis answers.
                    log.error(
                        "control event at offset %s not handled (%s); retrying",
                        message.offset(),
                        exc,
                    )
                    record = Record.from_message(message)
                    consumer.seek(TopicPartition(record.topic, record.partition, record.offset))
                    self._stop.wait(RESTART_DELAY_S)
                except KafkaException:
                    raise  # a fatal consumer error: nothing more can be read (restarted by _main)
                except Exception:
                    # A bug handling one request must not stop migrations for good: skip it.
                    log.exception("control event at offset %s skipped", message.offset())
                    consumer.commit(message=message, asynchronous=False)
        finally:
            if consumer is not None:
                consumer.close()
            if publisher is not None:
                publisher.close()

    # -- control events ---------------------------------------------------------------------
    def _on_message(self, consumer: Consumer, message: Message, publisher: Publisher) -> None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise KafkaException(error)
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("control consumer: %s", error)
            return
        try:
            event = decode_control_event(message.value())
        except EventError as exc:
            log.error("ignoring a malformed control event at offset %s: %s", message.offset(), exc)
            consumer.commit(message=message, asynchronous=False)
            return
        if isinstance(event, ModelUpgrade | Rollback):
            key = request_key(event)
            if self.pointer.client.hexists(self.requests_key, key):
                log.info("control: %s was handled before; skipping", key)
            elif self.pointer.client.hexists(self.pending_key, key):
                log.info("control: %s is already accepted; skipping", key)
            elif isinstance(event, Rollback):
                result = self._rollback(event, publisher)
                self.pointer.client.hset(self.requests_key, key, json.dumps(result, default=str))
            else:
                # Durably accepted before the commit: the executor (now or after a restart) runs it.
                raw = message.value() or b""
                self.pointer.client.hset(self.pending_key, key, raw)
                self._enqueue(key)
        consumer.commit(message=message, asynchronous=False)

    # -- the executor: one migration at a time ------------------------------------------------
    def _enqueue(self, key: str) -> None:
        busy = self._work.qsize() or self.status.current.get("state") not in (None, *_IDLE_STATES)
        self._work.put(key)
        MIGRATIONS_PENDING.set(self._work.qsize())
        if busy:
            log.info("control: %s accepted and queued behind %d other request(s)", key, self._work.qsize() - 1)
        else:
            log.info("control: %s accepted", key)

    def _resume_pending(self) -> None:
        """Requests accepted before a restart (oldest first) go to the new executor."""
        pending = self.pointer.client.hgetall(self.pending_key)
        keys = sorted((k.decode() if isinstance(k, bytes) else str(k)) for k in pending)
        queued = set(self._work.queue)
        for key in keys:
            if key not in queued:
                log.info("control: resuming %s, accepted before a restart", key)
                self._work.put(key)
        MIGRATIONS_PENDING.set(self._work.qsize())

    def _execute(self) -> None:
        """Runs accepted model upgrades one at a time, with a publisher and Migrator of its own."""
        publisher: Publisher | None = None
        try:
            publisher = Publisher(self.bootstrap)
            migrator = Migrator(
                self.settings,
                bootstrap=self.bootstrap,
                pointer=self.pointer,
                cache=self.cache,
                status=self.status,
                publisher=publisher,
                stop=self._stop,
                writers={self.owned},
            )
            self._run_pending(migrator, publisher)
        except Exception:
            log.exception("the migration executor stopped; accepted upgrades stay pending until a restart")
        finally:
            if publisher is not None:
                publisher.close()

    def _run_pending(self, migrator: Migrator, publisher: Publisher) -> None:
        resumed = False
        while not self._stop.is_set():
            if not resumed:
                try:
                    self._resume_pending()
                    resumed = True
                except (redis.RedisError, OSError) as exc:
                    log.warning("cannot read pending requests yet (%s); retrying", exc)
                    self._stop.wait(RESTART_DELAY_S)
                    continue
            try:
                key = self._work.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                raw = self.pointer.client.hget(self.pending_key, key)
                if raw is None:  # finished by an earlier executor
                    continue
                event = decode_control_event(raw)
                assert isinstance(event, ModelUpgrade)
                result = self._handle(event, migrator, publisher)
                if result is None:  # aborted by shutdown: stays pending, resumed after the restart
                    continue
                self.pointer.client.hset(self.requests_key, key, json.dumps(result, default=str))
                self.pointer.client.hdel(self.pending_key, key)
            except (redis.RedisError, OSError) as exc:
                log.error("request %s not finished (%s); it stays pending and is retried", key, exc)
                self._stop.wait(RESTART_DELAY_S)
                self._work.put(key)
            except Exception as exc:
                log.exception("request %s failed", key)
                try:
                    failure = {"outcome": "failed", "message": f"{type(exc).__name__}: {exc}"}
                    self.pointer.client.hset(self.requests_key, key, json.dumps(failure))
                    self.pointer.client.hdel(self.pending_key, key)
                except (redis.RedisError, OSError):
                    log.error("could not record the failure of %s; it stays pending", key)
            finally:
                MIGRATIONS_PENDING.set(self._work.qsize())

    def _handle(
        self, event: ModelUpgrade | Rollback, migrator: Migrator, publisher: Publisher
    ) -> dict[str, Any] | None:
        if isinstance(event, Rollback):
            return self._rollback(event, publisher)
        target = self._target_id(event)
        if target is not None:
            self._release(target)  # a migration rebuilds it; never two writers on one index
        outcome = migrator.run(event)
        if outcome.outcome == "aborted":
            return None
        MIGRATIONS.labels(outcome.outcome).inc()
        if outcome.worker is not None:
            self._keep(outcome.worker.index.index_id, outcome.worker)
        return outcome.to_json()

    def _target_id(self, event: ModelUpgrade) -> str | None:
        try:
            source = resolve_model_source(event.model)
            return load_model(source, memory_mb=self.settings.embed_memory_mb).index_id
        except Exception:  # unusable or missing model: the migrator reports it
            return None

    def _rollback(self, event: Rollback, publisher: Publisher) -> dict[str, Any]:
        current = self.pointer.get()
        try:
            if event.to_index:
                if event.to_index not in self.pointer.registered():
                    raise PointerError(
                        f"{event.to_index} was never validated; refusing to point at it"
                    )
                if not self.pointer.compare_and_set(current, event.to_index):
                    raise PointerError("the pointer moved meanwhile; retry")
                now = event.to_index
            else:
                now = self.pointer.rollback(current)
        except (PointerError, redis.RedisError) as exc:
            log.error("rollback refused: %s", exc)
            return {"outcome": "refused", "message": str(exc)}
        log.info("rolled back from %s to %s", current, now)
        try:
            publisher.publish_control(
                self.settings.control_topic, Flip(from_index=current, to_index=now)
            )
        except SemsearchError as exc:
            log.error("could not publish the flip event: %s", exc)
        self._keep_servable_fresh()
        return {"outcome": "rolled-back", "from_index": current, "to_index": now}

    # -- keeping servable indexes fresh -----------------------------------------------------
    def _servable(self) -> list[str]:
        try:
            active = self.pointer.get()
            history = self.pointer.history()
            registered = self.pointer.registered()
        except (redis.RedisError, OSError) as exc:
            log.warning("cannot read the pointer (%s); keeping the current workers", exc)
            return []
        ids = ([active] if active else []) + [i for i in history if i in registered]
        return [i for i in dict.fromkeys(ids) if i != self.owned]

    def _keep_servable_fresh(self) -> None:
        for index_id in self._servable():
            if index_id not in self.kept_fresh():
                self._keep(index_id, None)

    def _keep(self, index_id: str, worker: IndexWorker | None) -> None:
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

    def _release(self, index_id: str) -> None:
        with self._lock:
            kept = self._kept.pop(index_id, None)
        if kept is not None:
            kept.stop.set()
            kept.thread.join()

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
        except (IndexNotFoundError, SemsearchError) as exc:
            log.warning("cannot keep %s fresh: %s", index_id, exc)
            return None
        model = model_for_manifest(self.settings, manifest)
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


class _Either(threading.Event):
    """Set when either of two events is (the worker's run() watches one event)."""

    def __init__(self, first: threading.Event, second: threading.Event) -> None:
        super().__init__()
        self._events = (first, second)

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)


def start_migrations(
    settings: Settings,
    *,
    bootstrap: str,
    cache: EmbeddingCache | None,
    owned_index_id: str,
    stop: threading.Event,
) -> MigrationService | None:
    """The one call `run_indexer` makes; None (and a log line) when REDIS_URL is unset."""
    if not settings.redis_url:
        log.info("model migrations are off: set REDIS_URL so the indexer can flip the pointer")
        return None
    return MigrationService(
        settings, bootstrap=bootstrap, cache=cache, owned_index_id=owned_index_id
    ).start(stop)
