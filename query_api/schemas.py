"""Request and response shapes of the HTTP API (they are also its OpenAPI schema).

Request limits depend on runtime settings (SEMSEARCH_MAX_QUERY_CHARS, SEMSEARCH_MAX_K), so they
are checked by `check_search` rather than frozen into the field declarations; every violation
becomes a 422 whose message says which limit was hit and how to change it.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from contracts.settings import Settings
from indexer.fusion import MAX_RRF_K, MODES, FusionWeights


class RequestError(ValueError):
    """A search request the API refuses; the message is returned to the client verbatim."""


class FusionWeightsIn(BaseModel):
    """Leg weights of a hybrid request; a weight left out is the server's default."""

    model_config = ConfigDict(extra="forbid")

    vector: float | None = Field(None, description="weight of the vector leg (>= 0)")
    lexical: float | None = Field(None, description="weight of the BM25 leg (>= 0)")


class SearchRequest(BaseModel):
    """POST /search body; the same fields as the GET query string (GET spells `weights` as
    `vector_weight` and `lexical_weight`)."""

    model_config = ConfigDict(extra="forbid")

    q: str = Field(description="query text")
    k: int = Field(10, description="number of documents to return (1..SEMSEARCH_MAX_K)")
    mode: str = Field("hybrid", description="vector | bm25 | hybrid")
    min_score: float | None = Field(
        None, description="cosine cutoff (vector/hybrid) or BM25 cutoff (bm25); none pass → []"
    )
    weights: FusionWeightsIn | None = Field(
        None,
        description="hybrid only: RRF weights of the legs; defaults SEMSEARCH_FUSION_VECTOR_WEIGHT "
        "and SEMSEARCH_FUSION_LEXICAL_WEIGHT; not both 0",
    )
    rrf_k: int | None = Field(
        None, description=f"hybrid only: RRF constant k (1..{MAX_RRF_K}); default SEMSEARCH_FUSION_RRF_K"
    )
    where: dict[str, Any] | None = Field(
        None,
        description='metadata filter in Chroma\'s syntax, e.g. {"lang": "en", "year": {"$gte": 2020}}'
        " ($eq $ne $gt $gte $lt $lte $in $nin $and $or; see docs/ARCHITECTURE.md)",
    )


class SearchHitOut(BaseModel):
    doc_id: str
    score: float = Field(description="ranking score of the mode (cosine, BM25 or fused RRF)")
    similarity: float | None = Field(description="cosine of the best chunk; null in bm25 mode")
    title: str
    snippet: str
    metadata: dict[str, Any] = Field(default_factory=dict, description="the document's metadata")


class FusionOut(BaseModel):
    weights: dict[str, float] = Field(description="{vector, lexical} weights used")
    rrf_k: int


class SearchResponse(BaseModel):
    index_id: str
    model_fingerprint: str
    generation: int
    took_ms: float
    mode: str
    k: int
    fusion: FusionOut | None = Field(
        None, description="the weights and RRF k a hybrid search fused with; null in other modes"
    )
    results: list[SearchHitOut]


class DocumentOut(BaseModel):
    index_id: str
    doc_id: str
    version: int
    title: str
    text: str
    metadata: dict[str, Any]


class PointerOut(BaseModel):
    value: str | None = Field(description="index id last read from Redis")
    redis_up: bool
    origin: str | None = Field(description="'pointer', or 'default' while the pointer is unset")
    last_error: str | None


class IndexOut(BaseModel):
    index_id: str
    model: dict[str, Any]
    documents: int
    chunks: int
    segments: int = Field(description="sealed IVF segments")
    live_chunks: int
    deleted_chunks: int
    generation: int
    snapshot_created_at: float
    snapshot_age_s: float
    offsets: dict[str, dict[str, int]] = Field(
        description="Kafka offsets (topic → partition → next offset) contained in this generation"
    )
    lag: dict[str, dict[str, int]] | None = Field(
        None,
        description="events in the Kafka log past this generation's offsets (log end - offsets), "
        "topic → partition → count; a partition the generation never read lags by all it holds. "
        "Read from the broker in the background every SEMSEARCH_LAG_POLL_S, never per request; "
        "null when unknown (see lag_error)",
    )
    lag_error: str | None = Field(
        None,
        description="why `lag` is null (broker unreachable, KAFKA_BOOTSTRAP_SERVERS unset, "
        "polling off, not read yet) or which partitions it lacks; null when complete",
    )
    lag_read_age_s: float | None = Field(
        None, description="seconds since the log end behind `lag` was read; null when unknown"
    )
    newest_event_at: float | None = Field(
        None,
        description="Kafka timestamp (unix seconds) of the newest event this generation contains, "
        "recorded in its manifest; null when unknown (no event yet, or an older manifest)",
    )
    newest_event_age_s: float | None = Field(
        None,
        description="seconds since newest_event_at: how old the freshest searchable event is "
        "(it grows while nothing is published, so alert on `lag`, not on this alone)",
    )
    pointer: PointerOut
    migration: dict[str, Any] | None = Field(None, description="progress a migrator reported, if any")


class HealthOut(BaseModel):
    status: str


class ReadyOut(BaseModel):
    status: str
    ready: bool
    index_id: str | None
    generation: int | None
    model_fingerprint: str | None
    origin: str | None
    pointer: str | None
    redis: dict[str, Any]
    last_error: str | None


class ErrorOut(BaseModel):
    detail: str


def check_search(request: SearchRequest, settings: Settings) -> SearchRequest:
    """Raise RequestError unless the request is within the API's limits."""
    if not request.q.strip():
        raise RequestError("q is empty; pass some text to search for, e.g. /search?q=vitamin+d")
    if len(request.q) > settings.max_query_chars:
        raise RequestError(
            f"q is {len(request.q)} characters, over the limit of {settings.max_query_chars} "
            "(SEMSEARCH_MAX_QUERY_CHARS); shorten the query"
        )
    if "\x00" in request.q:
        raise RequestError("q contains a NUL character")
    surrogate = _lone_surrogate(request.q)
    if surrogate is not None:
        raise RequestError(
            f"q contains a lone surrogate U+{ord(request.q[surrogate]):04X} at character {surrogate}, "
            "which is not text: JSON escapes \\ud800-\\udfff are only valid as a high+low pair; "
            "send the query as valid UTF-8"
        )
    if request.k <= 0 or request.k > settings.max_k:
        raise RequestError(f"k must be between 1 and {settings.max_k} (SEMSEARCH_MAX_K); got {request.k}")
    if request.mode not in MODES:
        raise RequestError(f"unknown mode {request.mode!r}; use one of: {', '.join(MODES)}")
    if request.min_score is not None and not math.isfinite(request.min_score):
        raise RequestError("min_score must be a finite number (cosine in [-1, 1], or a BM25 score)")
    return request


def fusion_of(request: SearchRequest, settings: Settings) -> FusionWeights | None:
    """The fusion a request asks for (its parts over Settings' defaults); None unless hybrid.

    Fusion parameters with another mode are refused rather than ignored: the client believes
    they change something.
    """
    asked = request.weights is not None or request.rrf_k is not None
    if request.mode != "hybrid":
        if asked:
            raise RequestError(
                f"weights and rrf_k apply to mode=hybrid only (mode is {request.mode!r}); "
                "drop them or search in hybrid mode"
            )
        return None
    defaults = FusionWeights.of(settings)
    if not asked:
        return defaults
    weights = request.weights or FusionWeightsIn()
    try:
        return defaults.with_overrides(weights.vector, weights.lexical, request.rrf_k)
    except ValueError as exc:
        raise RequestError(str(exc)) from None


def _lone_surrogate(text: str) -> int | None:
    """Position of the first character UTF-8 cannot encode (the tokenizer cannot take it)."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None
