"""Settings: one model declares every variable, and a bad value says which and what it takes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from consumers.tuning import ConsumerTuning
from contracts.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]


def test_construction_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMSEARCH_NPROBE", "5")
    assert Settings().nprobe == 16 and Settings.from_env().nprobe == 5
    assert Settings(nprobe=7).with_overrides(max_k=3).nprobe == 7


def test_environment_values_are_trimmed_and_empty_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", " broker:9092 ")
    monkeypatch.setenv("SEMSEARCH_MODEL", "   ")
    monkeypatch.setenv("SEMSEARCH_DATA_DIR", "")
    monkeypatch.setenv("SEMSEARCH_VALIDATION_QRELS", "/held/qrels.tsv")
    settings = Settings.from_env()
    assert settings.kafka_bootstrap == "broker:9092" and settings.model is None
    assert settings.data_dir == Path("semsearch-data")
    assert settings.validation_qrels == Path("/held/qrels.tsv")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SEMSEARCH_NPROBE", "many", "SEMSEARCH_NPROBE='many' is not an integer; unset it to use 16"),
        ("SEMSEARCH_SEAL_CHUNKS", "8", "SEMSEARCH_SEAL_CHUNKS='8' must be >= 64"),
        ("SEMSEARCH_GATE_TOLERANCE", "lots", "SEMSEARCH_GATE_TOLERANCE='lots' is not a number"),
        ("SEMSEARCH_VECTOR_CODEC", "opq", "SEMSEARCH_VECTOR_CODEC='opq' is not one of flat, pq"),
        ("SEMSEARCH_DRAIN_TIMEOUT_S", "-1", "SEMSEARCH_DRAIN_TIMEOUT_S='-1' must be >= 0"),
        ("SEMSEARCH_DRAIN_TIMEOUT_S", "nan", "SEMSEARCH_DRAIN_TIMEOUT_S='nan' must be >= 0"),
        ("SEMSEARCH_INDEXER_METRICS_PORT", "x", "SEMSEARCH_INDEXER_METRICS_PORT='x' is not an integer"),
        ("SEMSEARCH_KAFKA_SESSION_TIMEOUT_MS", "0", "SEMSEARCH_KAFKA_SESSION_TIMEOUT_MS='0' must be > 0"),
        ("SEMSEARCH_KAFKA_HEARTBEAT_MS", "-5", "SEMSEARCH_KAFKA_HEARTBEAT_MS='-5' must be > 0"),
        ("SEMSEARCH_GATE_P99_MS", "0", "SEMSEARCH_GATE_P99_MS='0' must be > 0"),
        ("SEMSEARCH_MAX_BODY_BYTES", "100", "SEMSEARCH_MAX_BODY_BYTES='100' must be >= 1024"),
        ("SEMSEARCH_DOCS_PARTITIONS", "zero", "SEMSEARCH_DOCS_PARTITIONS='zero' is not an integer"),
        ("SEMSEARCH_CHUNK_OVERLAP", "300", "SEMSEARCH_CHUNK_OVERLAP must be smaller than SEMSEARCH_CHUNK_TOKENS"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_it_accepts(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    assert message in str(caught.value), str(caught.value)


def test_unknown_overrides_are_refused() -> None:
    with pytest.raises(SettingsError, match="unknown settings"):
        Settings().with_overrides(nprobes=3)


def test_kafka_tuning_comes_from_settings() -> None:
    assert ConsumerTuning.from_settings(Settings()) == ConsumerTuning()
    tuned = ConsumerTuning.from_settings(Settings(kafka_session_timeout_ms=3000, kafka_fetch_wait_ms=10))
    assert (tuned.session_timeout_ms, tuned.heartbeat_interval_ms, tuned.fetch_wait_max_ms) == (3000, 1000, 10)
    assert ConsumerTuning.from_settings(Settings(kafka_heartbeat_ms=700)).heartbeat_interval_ms == 700


def _environment_reads(path: Path) -> list[str]:
    """Variables read through os.environ / os.getenv that may be SEMSEARCH_* ones: constants
    naming one, and names computed at run time (a helper reading variables by name)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = ast.unparse(node.func)
            if target in ("os.environ.get", "os.getenv", "environ.get") and node.args:
                found.append(ast.unparse(node.args[0]))
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            found.append(ast.unparse(node.slice))
    return [name for name in found if "SEMSEARCH_" in name or not name.startswith(("'", '"'))]


def test_no_variable_is_read_outside_the_settings_model() -> None:
    reads = {
        str(path.relative_to(ROOT)): names
        for package in ("contracts", "producers", "consumers", "indexer", "query_api", "semsearch")
        for path in (ROOT / package).rglob("*.py")
        if path != ROOT / "contracts" / "settings.py" and (names := _environment_reads(path))
    }
    assert not reads, f"declare these in contracts/settings.py: {reads}"
