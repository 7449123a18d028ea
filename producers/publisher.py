"""Publishing events to Kafka with every delivery checked.

The producer is idempotent (`enable.idempotence=true`, which implies `acks=all`), so librdkafka's
own retries cannot duplicate or reorder events within a partition. A publish is only successful
when the broker has acknowledged every event: delivery reports are counted, and failures are
reported with the doc id and the broker's reason (callers exit non-zero on any failure).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from tqdm import tqdm

from contracts.errors import SemsearchError
from contracts.events import ControlEvent, DocEvent, encode_control_event, encode_doc_event

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
# How long librdkafka keeps retrying one event before it reports a failure.
DELIVERY_TIMEOUT_MS = 30_000


class BrokerUnreachableError(SemsearchError):
    """No broker answered at the configured bootstrap address."""


class PublishError(SemsearchError):
    """Some events were not acknowledged by the broker."""


@dataclass
class PublishReport:
    delivered: int = 0
    failed: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (doc id / key, reason)

    def summary(self, limit: int = 5) -> str:
        shown = "; ".join(f"{key}: {reason}" for key, reason in self.errors[:limit])
        more = f" (+{len(self.errors) - limit} more)" if len(self.errors) > limit else ""
        return f"{self.delivered} delivered, {self.failed} failed" + (f": {shown}{more}" if shown else "")


class Publisher:
    """One idempotent producer; `publish_docs` for streams, `publish_control` for one-offs."""

    def __init__(
        self,
        bootstrap: str,
        *,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.report = PublishReport()
        self._progress: tqdm[Any] | None = None
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "delivery.timeout.ms": DELIVERY_TIMEOUT_MS,
                "socket.connection.setup.timeout.ms": int(connect_timeout_s * 1000),
                "error_cb": self._on_error,
                **(config or {}),
            }
        )
        self._check_reachable(connect_timeout_s)

    def _check_reachable(self, timeout_s: float) -> None:
        try:
            metadata = self._producer.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            metadata, reason = None, str(exc.args[0])
        else:
            reason = "no brokers in the metadata response"
        if metadata is None or not metadata.brokers:
            raise BrokerUnreachableError(
                f"no Kafka broker answered at {self.bootstrap} within {timeout_s:.0f}s ({reason}); "
                "check KAFKA_BOOTSTRAP_SERVERS, or start the stack with `semsearch up`"
            )

    @staticmethod
    def _on_error(error: KafkaError) -> None:
        if error.fatal():
            log.error("fatal producer error: %s", error)
        else:
            log.debug("producer: %s", error)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        key = message.key()
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        if error is not None:
            self.report.failed += 1
            self.report.errors.append((name, error.str()))
        else:
            self.report.delivered += 1
        if self._progress is not None:
            self._progress.update(1)
            if self.report.failed:
                self._progress.set_postfix(failed=self.report.failed, refresh=False)

    def _produce(self, topic: str, key: bytes, value: bytes | None) -> None:
        while True:
            try:
                self._producer.produce(topic, key=key, value=value, on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._producer.poll(0.1)
            except KafkaException as exc:  # e.g. message larger than message.max.bytes
                self.report.failed += 1
                self.report.errors.append((key.decode("utf-8", "replace"), str(exc.args[0])))
                if self._progress is not None:
                    self._progress.update(1)
                break
        self._producer.poll(0)

    def publish_doc(self, topic: str, event: DocEvent) -> None:
        """Queue one event; its outcome is in `report` after `flush()`."""
        key, value = encode_doc_event(event)
        self._produce(topic, key, value)

    def publish_docs(
        self,
        topic: str,
        events: Iterable[DocEvent],
        *,
        progress: bool = False,
        total: int | None = None,
        description: str = "publishing",
    ) -> PublishReport:
        """Publish a stream and wait for every delivery report; returns the cumulative report."""
        with tqdm(total=total, unit="ev", desc=description, disable=not progress) as bar:
            self._progress = bar
            try:
                for event in events:
                    self.publish_doc(topic, event)
                self.flush()
            finally:
                self._progress = None
        return self.report

    def publish_control(self, topic: str, event: ControlEvent, *, timeout_s: float = 30.0) -> None:
        """Publish one control event and return only once the broker has acknowledged it."""
        before = self.report.failed
        key, value = encode_control_event(event)
        self._produce(topic, key, value)
        self.flush(timeout_s)
        if self.report.failed > before:
            raise PublishError(f"control event {event.TYPE!r} was not delivered: {self.report.errors[-1][1]}")

    def flush(self, timeout_s: float = DELIVERY_TIMEOUT_MS / 1000 + 10) -> PublishReport:
        deadline = time.monotonic() + timeout_s
        while (pending := self._producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))) > 0:
            if time.monotonic() >= deadline:
                self.report.failed += pending
                self.report.errors.append(("*", f"{pending} event(s) still unacknowledged after {timeout_s:.0f}s"))
                break
        return self.report

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
