"""The control consumer: reads `control`, accepts each request once, never runs a migration.

Consumer group `semsearch-migrator`, manual commits. A `model-upgrade` is recorded as pending in
the ledger, its offset committed, and handed to the executor; the loop keeps polling (so the
consumer stays in its group however long the migration takes). A `rollback` is quick (Redis
only) and handled here directly, so it is never stuck behind a migration. Requests already in
the ledger are skipped; our own `gate-report`/`flip` events are ignored. A request that cannot
be recorded (Redis down) is not committed and read again; a failure of the loop itself is
logged, exported (`semsearch_migration_service_up` = 0) and the loop restarted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import Gauge

from consumers.migration.flip import announce_move, roll_back
from consumers.migration.ledger import RequestLedger, request_key
from consumers.record import Record
from contracts.events import EventError, ModelUpgrade, Rollback, decode_control_event
from contracts.pointer import Pointer, PointerError
from contracts.settings import Settings
from producers.publisher import Publisher

log = logging.getLogger(__name__)

CONTROL_GROUP = "semsearch-migrator"
RESCAN_S = 10.0
RESTART_DELAY_S = 5.0

SERVICE_UP = Gauge(
    "semsearch_migration_service_up",
    "1 while the control consumer (model upgrades, rollbacks) runs, 0 while it is restarting.",
)


class ControlConsumer:
    """The loop described in the module docstring, in a thread of its own."""

    def __init__(
        self,
        settings: Settings,
        *,
        bootstrap: str,
        pointer: Pointer,
        ledger: RequestLedger,
        accept: Callable[[str], None],
        every_rescan: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.pointer = pointer
        self.ledger = ledger
        self.accept = accept  # a model upgrade accepted in the ledger: run it (the executor)
        # Called every RESCAN_S and after each rollback (the keeper starts workers it lacks).
        self.every_rescan = every_rescan
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, stop: threading.Event) -> ControlConsumer:
        self._stop = stop
        self._thread = threading.Thread(target=self._main, name="migrations", daemon=True)
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _main(self) -> None:
        """The control loop, restarted after any failure until the service stops."""
        while not self._stop.is_set():
            SERVICE_UP.set(1)
            try:
                self._loop()
            except Exception:
                log.exception(
                    "the migration control loop failed; model upgrades are not handled - restarting it in %.0fs",
                    RESTART_DELAY_S,
                )
            SERVICE_UP.set(0)
            self._stop.wait(RESTART_DELAY_S)

    def _loop(self) -> None:
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
                    self.every_rescan()
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
            if self.ledger.handled(key):
                log.info("control: %s was handled before; skipping", key)
            elif self.ledger.is_pending(key):
                log.info("control: %s is already accepted; skipping", key)
            elif isinstance(event, Rollback):
                self.ledger.finish(key, self._rollback(event, publisher))
            else:
                # Durably accepted before the commit: the executor (now or after a restart) runs it.
                self.ledger.accept(key, message.value() or b"")
                self.accept(key)
        consumer.commit(message=message, asynchronous=False)

    def _rollback(self, event: Rollback, publisher: Publisher) -> dict[str, Any]:
        try:
            move = roll_back(self.pointer, event.to_index)
        except (PointerError, redis.RedisError) as exc:
            log.error("rollback refused: %s", exc)
            return {"outcome": "refused", "message": str(exc)}
        announce_move(publisher, self.settings.control_topic, move)
        self.every_rescan()
        return {"outcome": "rolled-back", **move.to_json()}
