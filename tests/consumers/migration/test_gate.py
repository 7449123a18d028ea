"""The gate: candidate and live copy at the same offsets, one verdict, stored and made known.

Fast and direct: tiny in-process indexes with the bundled model, the live copy already at the
candidate's offsets (so no replay reads Kafka), except for the test that reads the published
`gate-report` event back from the real broker.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from migration_data import DOCS, write_beir
from prometheus_client import REGISTRY

from consumers.migration.errors import MigrationError
from consumers.migration.gate import Gate, gate_stats, load_validation_set
from consumers.migration.status import MigrationStatus
from contracts.documents import Document
from contracts.events import GateReportEvent, decode_control_event
from contracts.settings import Settings, SettingsError
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots import Manifest, SnapshotStore
from indexer.validation import GateReport
from producers.publisher import Publisher

CORPUS = [Document(doc_id, title, text, 1) for doc_id, title, text in DOCS]
AT = {"docs": {0: len(DOCS)}}


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    queries, qrels = write_beir(tmp_path / "heldout")
    return Settings(
        data_dir=tmp_path / "data",
        validation_queries=queries,
        validation_qrels=qrels,
        gate_p99_ms=30000.0,  # shared cores: a loose bound
    )


def _index(model: EmbeddingModel, settings: Settings, cache: EmbeddingCache, docs: list[Document]) -> Index:
    index = Index.create(model, settings, cache)
    index.apply(docs)
    return index


def _candidate(
    model: EmbeddingModel, settings: Settings, cache: EmbeddingCache, root: Path, docs: list[Document]
) -> tuple[Index, Manifest]:
    index = _index(model, settings, cache, docs)
    return index, SnapshotStore(root).write(index, AT)


def _gate(settings: Settings, status: MigrationStatus, publisher: Publisher | None = None) -> Gate:
    return Gate(settings, bootstrap="unused:9092", status=status, publisher=publisher)


def test_a_candidate_equal_to_the_live_index_passes_and_the_report_is_stored(
    model: EmbeddingModel, settings: Settings, cache: EmbeddingCache, tmp_path: Path
) -> None:
    live = _index(model, settings, cache, CORPUS)
    candidate, manifest = _candidate(model, settings, cache, tmp_path / "candidate", CORPUS)
    status = MigrationStatus(None, tmp_path)

    report = _gate(settings, status).check(candidate, manifest, AT, live, AT, tmp_path / "candidate")

    assert report.passed, report.summary()
    stored = json.loads((tmp_path / "candidate" / "gate-report.json").read_text())
    assert GateReport.from_json(stored).passed
    assert stored["offsets"] == {"docs": {"0": len(DOCS)}}
    assert status.current["state"] == "validating"
    assert status.current["gate"] == {"passed": True, "reasons": []}
    assert REGISTRY.get_sample_value(
        "semsearch_migration_gate_passed", {"index_id": candidate.index_id}
    ) == 1.0
    stats = gate_stats(report)
    assert stats["shadow_quality"] == stats["live_quality"]
    assert stats["gate_p99_ms"] is not None


def test_a_candidate_missing_documents_is_rejected_with_the_reason(
    model: EmbeddingModel, settings: Settings, cache: EmbeddingCache, tmp_path: Path
) -> None:
    live = _index(model, settings, cache, CORPUS)
    candidate, manifest = _candidate(model, settings, cache, tmp_path / "candidate", CORPUS[:-3])
    status = MigrationStatus(None, tmp_path)

    report = _gate(settings, status).check(candidate, manifest, AT, live, AT, tmp_path / "candidate")

    assert not report.passed
    assert any(reason.startswith("documents:") for reason in report.reasons)
    assert not json.loads((tmp_path / "candidate" / "gate-report.json").read_text())["passed"]
    assert status.current["gate"]["passed"] is False
    assert REGISTRY.get_sample_value(
        "semsearch_migration_gate_passed", {"index_id": candidate.index_id}
    ) == 0.0


def test_every_verdict_is_announced_on_control(
    model: EmbeddingModel,
    stream_settings: Settings,
    settings: Settings,
    cache: EmbeddingCache,
    tmp_path: Path,
    bootstrap: str,
    read_topic: object,
) -> None:
    settings = settings.with_overrides(control_topic=stream_settings.control_topic)
    live = _index(model, settings, cache, CORPUS)
    candidate, manifest = _candidate(model, settings, cache, tmp_path / "candidate", CORPUS)
    with Publisher(bootstrap) as publisher:
        gate = Gate(settings, bootstrap=bootstrap, status=MigrationStatus(None, tmp_path), publisher=publisher)
        report = gate.check(candidate, manifest, AT, live, AT, tmp_path / "candidate")

    [message] = read_topic(settings.control_topic, 1)  # type: ignore[operator]
    event = decode_control_event(message.value())
    assert isinstance(event, GateReportEvent)
    assert (event.index_id, event.passed) == (candidate.index_id, report.passed)
    assert event.metrics["checks"] == report.to_json()["checks"]


def test_the_held_out_set_is_read_at_gate_time_and_an_unreadable_one_is_named(
    settings: Settings, tmp_path: Path
) -> None:
    queries, qrels = load_validation_set(settings)
    assert queries and qrels and set(qrels) <= set(queries)
    assert load_validation_set(Settings(data_dir=tmp_path)) == (None, None)
    broken = settings.with_overrides(validation_queries=tmp_path / "missing.jsonl")
    with pytest.raises(MigrationError, match="SEMSEARCH_VALIDATION_QUERIES"):
        load_validation_set(broken)


def test_the_latency_bound_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEMSEARCH_GATE_P99_MS", raising=False)
    assert Settings.from_env().gate_p99_ms == 1000.0
    monkeypatch.setenv("SEMSEARCH_GATE_P99_MS", "250")
    assert Settings.from_env().gate_p99_ms == 250.0
    for bad in ("fast", "0", "-5"):
        monkeypatch.setenv("SEMSEARCH_GATE_P99_MS", bad)
        with pytest.raises(SettingsError, match="SEMSEARCH_GATE_P99_MS"):
            Settings.from_env()
