"""The wired service: control accepts requests durably, commits, and the executor runs them.

Real embedded broker and Redis. The requests name a model that does not exist, so the executor
finishes each at once (outcome `failed`) - what is tested is the bookkeeping around it: the
pending ledger, the committed control offset, the resume of a request accepted before a
restart, and the liveness gauge.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from prometheus_client import REGISTRY

from consumers.migration.control import CONTROL_GROUP
from consumers.migration.ledger import request_key
from consumers.migration.service import MigrationService
from contracts.events import ModelUpgrade, encode_control_event
from contracts.settings import Settings
from producers.publisher import Publisher
from semsearch.embedded.redis import EmbeddedRedis


def _committed(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": CONTROL_GROUP, "enable.auto.commit": False})
    try:
        [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return int(tp.offset)
    finally:
        consumer.close()


def test_requests_are_accepted_committed_and_executed_also_after_a_restart(
    stream_settings: Settings, redis_server: EmbeddedRedis, bootstrap: str, tmp_path: Path
) -> None:
    settings = stream_settings.with_overrides(redis_url=redis_server.url)
    missing = str(tmp_path / "no-such-model")
    before_restart = ModelUpgrade(model=missing, requested_at=1.0, reason="accepted before a restart")
    live = ModelUpgrade(model=missing, requested_at=2.0, reason="published now")

    service = MigrationService(settings, bootstrap=bootstrap, cache=None, owned_index_id="owned-index")
    # As the control loop of a process that died before running it leaves it: pending only.
    service.ledger.accept(request_key(before_restart), encode_control_event(before_restart)[1])
    with Publisher(bootstrap) as publisher:
        publisher.publish_control(settings.control_topic, live)

    stop = threading.Event()
    service.start(stop)
    try:
        deadline = time.monotonic() + 60
        keys = {request_key(before_restart), request_key(live)}
        while not all(service.ledger.handled(key) for key in keys):
            assert time.monotonic() < deadline, "requests not executed within 60 s"
            threading.Event().wait(0.05)
        for key in keys:
            outcome = service.ledger.outcome(key)
            assert outcome is not None
            assert outcome["outcome"] == "failed" and outcome["message"], outcome
        assert service.ledger.pending() == [], "finished requests must leave the pending ledger"
        while _committed(bootstrap, settings.control_topic) != 1:
            assert time.monotonic() < deadline, "the control offset was never committed"
            threading.Event().wait(0.1)
        assert service.control_alive
        assert REGISTRY.get_sample_value("semsearch_migration_service_up") == 1.0
        assert REGISTRY.get_sample_value("semsearch_migrations_pending") == 0.0
    finally:
        service.join()
