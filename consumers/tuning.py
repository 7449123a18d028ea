"""ConsumerTuning: the group and fetch timing of the index's Kafka consumer."""

from __future__ import annotations

from dataclasses import dataclass

from contracts.settings import Settings


@dataclass(frozen=True)
class ConsumerTuning:
    """Group and fetch timing.

    Defaults suit Apache Kafka (whose minimum session timeout is 6 s) and keep a group join on
    the embedded broker at a few seconds; a long embedding batch must never look like a dead
    consumer, hence the generous poll interval. Tansu does not answer a waiting fetch when new
    data arrives, so an event waits up to `fetch.wait.max.ms` (librdkafka default 500) before
    the indexer sees it: 50 ms keeps that out of the freshness budget at the cost of ~20 tiny
    fetch requests a second when idle (Apache Kafka answers at once either way).
    """

    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 2000
    max_poll_interval_ms: int = 900_000
    fetch_wait_max_ms: int = 50

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsumerTuning:
        """SEMSEARCH_KAFKA_*; an unset heartbeat is a third of the session timeout, at most 2 s."""
        session = settings.kafka_session_timeout_ms
        heartbeat = settings.kafka_heartbeat_ms
        return cls(
            session_timeout_ms=session,
            heartbeat_interval_ms=heartbeat or min(cls.heartbeat_interval_ms, session // 3),
            max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
            fetch_wait_max_ms=settings.kafka_fetch_wait_ms,
        )

    def consumer_config(self) -> dict[str, int]:
        """The librdkafka properties this tuning sets."""
        return {
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": self.heartbeat_interval_ms,
            "max.poll.interval.ms": self.max_poll_interval_ms,
            "fetch.wait.max.ms": self.fetch_wait_max_ms,
        }
