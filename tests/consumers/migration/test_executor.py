"""The executor runs the ledger's pending upgrades in order, through a real orchestrator
(real broker and Redis), and records every outcome so that none runs twice."""

from __future__ import annotations

import threading
from pathlib import Path

from prometheus_client import REGISTRY
from tests_support import wait_until

from consumers.migration.executor import Executor
from consumers.migration.ledger import RequestLedger, request_key
from consumers.migration.orchestrator import Orchestrator
from consumers.migration.status import MigrationStatus
from contracts.events import ModelUpgrade, encode_control_event
from contracts.pointer import Pointer
from contracts.settings import Settings
from indexer.model import EmbeddingModel


def test_pending_requests_are_resumed_run_in_order_and_recorded(
    stream_settings: Settings, bootstrap: str, pointer: Pointer, model: EmbeddingModel, tmp_path: Path
) -> None:
    pointer.set_if_unset(model.index_id)  # the bundled model already serves: a no-op upgrade
    status = MigrationStatus(pointer, tmp_path)
    ledger = RequestLedger(pointer)
    resumed = ModelUpgrade(model="bundled", requested_at=1.0)  # accepted before a "restart"
    missing = ModelUpgrade(model=str(tmp_path / "no-such-model"), requested_at=2.0)
    ledger.accept(request_key(resumed), encode_control_event(resumed)[1])
    stop = threading.Event()
    released: list[str] = []
    noops = REGISTRY.get_sample_value("semsearch_migrations_total", {"outcome": "noop"}) or 0.0

    def orchestrator() -> Orchestrator:
        return Orchestrator(
            stream_settings,
            bootstrap=bootstrap,
            pointer=pointer,
            cache=None,
            status=status,
            publisher=None,
            stop=stop,
        )

    executor = Executor(ledger, status, orchestrator, before_run=released.append).start(stop)
    try:
        ledger.accept(request_key(missing), encode_control_event(missing)[1])
        executor.enqueue(request_key(missing))
        wait_until(lambda: not ledger.pending(), 120, "both requests finished")
    finally:
        stop.set()
        executor.join(30)

    done = ledger.outcome(request_key(resumed))
    assert done is not None and done["outcome"] == "noop"
    failed = ledger.outcome(request_key(missing))
    assert failed is not None and failed["outcome"] == "failed"
    assert released == [model.index_id]  # only a usable model's index is released before its run
    assert REGISTRY.get_sample_value("semsearch_migrations_total", {"outcome": "noop"}) == noops + 1
    assert REGISTRY.get_sample_value("semsearch_migrations_pending") == 0.0
    assert pointer.get() == model.index_id
