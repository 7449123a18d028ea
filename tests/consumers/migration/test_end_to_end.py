"""End to end: a model migration under load, with real broker, real Redis, real indexer and API.

One scenario, in the order an operator lives it:
1. `semsearch index` (run_indexer, migrations included) indexes 25 SciFact abstracts with the
   pinned MiniLM; the API serves them; a client queries at a steady rate throughout.
2. `semsearch upgrade-model` to an equally good MiniLM variant while documents keep changing:
   zero failed queries, every answer after the flip carries the new index id, and the
   documents changed during the migration are in the new index at their latest version.
3. `semsearch upgrade-model --wait` to a clearly worse variant (CLS pooling): the gate rejects
   it with its numbers, the pointer does not move, the report is on `control`; a static 64-dim
   model (model2vec-like) is rejected too, before a single document is embedded.
4. `semsearch upgrade-model` back to the pinned model: its index is the indexer's own and
   already fresh, so it is gated as it stands (no rebuild) and the pointer flips back.
5. `semsearch rollback`: the variant's index serves again - and it is fresh, because the
   indexer kept a worker consuming into it after the pointer moved away.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from migration_data import DOCS, QUERIES, write_beir
from migration_models import static_variant, upgrade_variant, worse_variant
from tests_support import pace, wait_until

from consumers.service import run_indexer
from contracts.errors import IndexNotFoundError
from contracts.events import (
    ControlEvent,
    DeleteEvent,
    Flip,
    GateReportEvent,
    UpsertEvent,
    decode_control_event,
)
from contracts.pointer import Pointer
from contracts.settings import Settings
from indexer.model import EmbeddingModel, load_model
from indexer.snapshots import SnapshotStore, index_dir
from producers.publisher import Publisher
from query_api.app import create_app
from semsearch.cli import main as cli
from semsearch.embedded.redis import EmbeddedRedis

pytestmark = pytest.mark.slow

DISTRACTORS = [doc_id for doc_id, _, _ in DOCS[-10:]]  # judged relevant to no query
QUERY_TEXTS = list(QUERIES.values())


@pytest.fixture
def settings(
    stream_settings: Settings,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    queries, qrels = write_beir(tmp_path / "heldout")
    # The CLI commands read the environment, like an operator's shell.
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", str(stream_settings.kafka_bootstrap))
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("SEMSEARCH_DATA_DIR", str(stream_settings.data_dir))
    monkeypatch.setenv("SEMSEARCH_CONTROL_TOPIC", stream_settings.control_topic)
    monkeypatch.setenv("SEMSEARCH_DOCS_TOPIC", stream_settings.docs_topic)
    monkeypatch.setenv("SEMSEARCH_INDEXER_METRICS_PORT", "0")
    # Two shared cores also run the indexer, a shadow build and the client: a loose bound.
    monkeypatch.setenv("SEMSEARCH_GATE_P99_MS", "30000")
    return stream_settings.with_overrides(
        redis_url=redis_server.url,
        validation_queries=queries,
        validation_qrels=qrels,
        refresh_ms=50,
        indexer_metrics_port=0,
        gate_p99_ms=30000.0,
    )


@dataclass
class QueryLoad:
    """A client issuing one vector search every `interval_s`, recording every answer."""

    client: TestClient
    interval_s: float = 0.1
    answers: list[tuple[float, int, str | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> QueryLoad:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        for query in itertools.cycle(QUERY_TEXTS):
            if self._stop.wait(self.interval_s):
                return
            # Stamped when sent: a query sent after a flip was observed must see the new index
            # (one sent before may be answered by either).
            sent = time.monotonic()
            response = self.client.get("/search", params={"q": query, "k": 5, "mode": "vector"})
            index_id = response.json().get("index_id") if response.status_code == 200 else None
            self.answers.append((sent, response.status_code, index_id))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def failures(self) -> list[tuple[float, int, str | None]]:
        return [a for a in self.answers if a[1] != 200]

    def ids_since(self, since: float) -> list[str | None]:
        return [index_id for at, _, index_id in self.answers if at >= since]

    def ids_between(self, start: float, end: float) -> list[str | None]:
        return [index_id for at, _, index_id in self.answers if start <= at < end]


def _wait(what: str, condition: Callable[[], object], timeout_s: float = 240.0) -> None:
    wait_until(condition, timeout_s, what, poll_s=0.1)


def _documents_in(settings: Settings, index_id: str) -> int:
    try:
        return SnapshotStore(index_dir(settings, index_id)).read_manifest().counts["documents"]
    except IndexNotFoundError:
        return -1


def _control_events(read_topic: object, settings: Settings, expect: int) -> list[ControlEvent]:
    messages = read_topic(settings.control_topic, expect)  # type: ignore[operator]
    return [decode_control_event(m.value()) for m in messages]


def test_migration_under_load_then_rejection_then_rollback(
    settings: Settings, model: EmbeddingModel, tmp_path: Path, read_topic: object
) -> None:
    pinned = model.index_id
    upgrade = load_model(upgrade_variant(tmp_path / "models"))
    worse_dir = worse_variant(tmp_path / "models")
    static_dir = static_variant(tmp_path / "models")
    publisher = Publisher(str(settings.kafka_bootstrap))
    publisher.publish_docs(
        settings.docs_topic, [UpsertEvent.build(d, t, x, version=1) for d, t, x in DOCS]
    )
    stop = threading.Event()
    indexer = threading.Thread(target=run_indexer, args=(settings, stop), daemon=True)
    indexer.start()
    pointer = Pointer.from_url(str(settings.redis_url), settings.pointer_key)
    load: QueryLoad | None = None
    try:
        _wait("the pinned index", lambda: _documents_in(settings, pinned) == len(DOCS))
        assert pointer.set_if_unset(pinned)
        with TestClient(create_app(settings)) as client:
            _wait("the API", lambda: client.get("/readyz").status_code == 200)
            load = QueryLoad(client).start()

            # -- 2. upgrade under load, documents changing all the time ---------------------
            assert cli(["upgrade-model", "--model", upgrade.info.source]) == 0
            latest: dict[str, int | None] = {}
            version = itertools.count(2)
            changes = itertools.cycle(DISTRACTORS[:6])
            flipped_at: float | None = None
            deadline = time.monotonic() + 300
            while flipped_at is None or time.monotonic() < flipped_at + 1.0:
                assert time.monotonic() < deadline, client.get("/index").json().get("migration")
                doc_id = next(changes)
                latest[doc_id] = next(version)
                event = UpsertEvent.build(
                    doc_id, "Revised", f"Revision {latest[doc_id]}", latest[doc_id]
                )
                publisher.publish_docs(settings.docs_topic, [event])
                if flipped_at is None and pointer.get() == upgrade.index_id:
                    flipped_at = time.monotonic()
                pace(0.3)
            publisher.publish_docs(
                settings.docs_topic,
                [
                    DeleteEvent(DISTRACTORS[6], None),
                    UpsertEvent.build("new-1", "New", "Added late", 1),
                ],
            )
            latest.update({DISTRACTORS[6]: None, "new-1": 1})

            def served_by_new() -> bool:
                return client.get("/index").json().get("index_id") == upgrade.index_id

            _wait("the API to flip", served_by_new, 60)
            swapped = time.monotonic()
            for doc_id, wanted in latest.items():
                _wait(
                    f"{doc_id} at version {wanted} in the new index",
                    lambda d=doc_id, w=wanted: _served_version(client, d) == (upgrade.index_id, w),
                    60,
                )
            info = client.get("/index").json()
            assert info["migration"]["state"] == "flipped"
            assert info["migration"]["to_index"] == upgrade.index_id
            assert info["documents"] == len(DOCS)  # one deleted, one added

            # -- 3. a clearly worse model is rejected; serving does not move -----------------
            assert (
                cli(["upgrade-model", "--model", str(worse_dir), "--wait", "--timeout", "300"]) == 1
            )
            assert pointer.get() == upgrade.index_id
            migration = client.get("/index").json()["migration"]
            assert migration["state"] == "rejected"
            assert any("quality" in reason for reason in migration["gate"]["reasons"])
            # ... and so is a static 64-dim model (model2vec-like), before embedding anything.
            assert (
                cli(["upgrade-model", "--model", str(static_dir), "--wait", "--timeout", "120"])
                == 1
            )
            assert pointer.get() == upgrade.index_id
            migration = client.get("/index").json()["migration"]
            assert migration["state"] == "rejected" and migration["gate"]["reasons"][0].startswith(
                "model:"
            )

            # -- 4. upgrade back to the pinned model: its index is the main worker's, already
            # fresh, so it is gated as it stands (no rebuild) and flipped to -----------------
            # Each window the assertions below look at must hold answers, however slow the machine.
            _wait("queries answered by the new index", lambda: len(load.ids_since(swapped)) >= 3, 60)
            back_called = time.monotonic()
            assert cli(["upgrade-model", "--model", model.info.source, "--wait"]) == 0
            assert pointer.get() == pinned
            _wait("the API to flip back", lambda: _index_id(client) == pinned, 60)
            back = time.monotonic()

            # -- 5. rollback to the variant's index: a worker kept it fresh meanwhile ---------
            publisher.publish_docs(
                settings.docs_topic,
                [UpsertEvent.build(DISTRACTORS[0], "After", "After flipping back", 999)],
            )
            latest[DISTRACTORS[0]] = 999
            _wait(
                "the update in the pinned index",
                lambda: _served_version(client, DISTRACTORS[0]) == (pinned, 999),
                60,
            )
            _wait("queries answered by the flipped-back index", lambda: len(load.ids_since(back)) >= 3, 60)
            rollback_called = time.monotonic()
            assert cli(["rollback"]) == 0
            assert pointer.get() == upgrade.index_id
            _wait("the API to roll back", lambda: _index_id(client) == upgrade.index_id, 60)
            rolled_back = time.monotonic()
            for doc_id, wanted in latest.items():
                _wait(
                    f"{doc_id} at version {wanted} after the rollback",
                    lambda d=doc_id, w=wanted: _served_version(client, d) == (upgrade.index_id, w),
                    10,
                )
            _wait("queries answered after the rollback", lambda: len(load.ids_since(rolled_back)) >= 3, 60)
            load.stop()

            # -- what the client saw --------------------------------------------------------
            assert load.failures() == [], load.failures()[:5]
            assert len(load.answers) > 50
            assert load.ids_since(swapped)
            assert set(load.ids_between(swapped, back_called)) == {upgrade.index_id}
            assert set(load.ids_between(back, rollback_called)) == {pinned}
            assert set(load.ids_since(rolled_back)) == {upgrade.index_id}
    finally:
        if load is not None:
            load.stop()
        stop.set()
        indexer.join(120)
        pointer.close()
        publisher.close()
    assert not indexer.is_alive()

    events = _control_events(read_topic, settings, expect=11)
    reports = [e for e in events if isinstance(e, GateReportEvent)]
    assert [(r.index_id, r.passed) for r in reports] == [
        (upgrade.index_id, True),
        (load_model(worse_dir).index_id, False),
        ("minilm-static-64-unusable", False),
        (pinned, True),
    ]
    assert "nDCG@10" in reports[1].reason
    flips = [(e.from_index, e.to_index) for e in events if isinstance(e, Flip)]
    assert flips == [
        (pinned, upgrade.index_id),
        (upgrade.index_id, pinned),
        (pinned, upgrade.index_id),
    ]
    stored = SnapshotStore(index_dir(settings, upgrade.index_id))
    assert (
        any(
            stored.read_manifest(g).extra.get("gate", {}).get("passed")
            for g in stored.generations()
        )
        or (stored.root / "gate-report.json").is_file()
    )


def _index_id(client: TestClient) -> str | None:
    return client.get("/index").json().get("index_id")


def _served_version(client: TestClient, doc_id: str) -> tuple[str | None, int | None]:
    response = client.get(f"/documents/{doc_id}")
    if response.status_code == 404:
        return client.get("/index").json().get("index_id"), None
    body = response.json()
    return body.get("index_id"), body.get("version")
