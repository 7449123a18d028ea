"""The HTTP API: a thin lookup layer over whatever index the IndexHolder serves.

Handlers take `holder.current` once and use only that object for the whole request, which is
what lets a flip happen under load with zero failed queries. Searches run in the threadpool:
embedding a query is CPU-bound and would otherwise stall the event loop (and /healthz) for
every other client.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts.errors import InvalidQueryError
from contracts.settings import Settings
from indexer.filters import Filter, InvalidFilterError, parse, parse_json
from query_api.holder import IndexHolder
from query_api.schemas import (
    DocumentOut,
    ErrorOut,
    FusionOut,
    FusionWeightsIn,
    HealthOut,
    IndexOut,
    PointerOut,
    ReadyOut,
    RequestError,
    SearchHitOut,
    SearchRequest,
    SearchResponse,
    check_search,
    fusion_of,
)
from query_api.serving import Serving

log = logging.getLogger(__name__)

_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorOut, "description": "the request is outside the API's limits"},
    503: {"model": ErrorOut, "description": "no verified index is loaded yet"},
}


class _BodyLimit:
    """413 with a message naming the limit: at once when Content-Length declares too much, else
    as soon as the streamed body passes the limit (chunked uploads), before it is all buffered."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _message(self, size: str) -> str:
        return (
            f"request body is {size} bytes, over the limit of {self.limit} "
            "(SEMSEARCH_MAX_BODY_BYTES); send a shorter query"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            response = JSONResponse({"detail": self._message(str(int(declared)))}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Raised inside the route's body read: FastAPI re-raises HTTPExceptions there
                    # and the exception middleware turns it into a JSON 413.
                    raise HTTPException(413, self._message(f"more than {self.limit}"))
            return message

        await self.app(scope, counted, send)


class SafeJSONResponse(JSONResponse):
    """JSON that always renders: a string UTF-8 cannot encode (a lone surrogate a client sent,
    quoted back in an error message) is written as a JSON escape instead of failing the response
    with a 500. Costs nothing for responses that encode."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'decode error')})")
            continue
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "body", "path"))
        parts.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(
    settings: Settings, holder: IndexHolder | None = None, *, redis_url: str | None = None
) -> FastAPI:
    """The API app. Without `holder`, one is created for `redis_url` (default settings.redis_url).

    The lifespan starts the holder's watcher unless it already runs, and stops it if it
    started it.
    """
    holder = holder if holder is not None else IndexHolder(settings, redis_url)
    metrics = holder.metrics

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        started_here = not holder.running
        if started_here:
            holder.start()
        try:
            yield
        finally:
            if started_here:
                await run_in_threadpool(holder.stop)

    body_limit = settings.max_body_bytes
    app = FastAPI(
        title="semsearch",
        summary="Semantic search over a Kafka-fed index; serves the index the Redis pointer names.",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
    )
    app.add_middleware(_BodyLimit, limit=body_limit)
    app.state.holder = holder
    app.state.settings = settings

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.query_errors.labels(reason="invalid_request").inc()
        return SafeJSONResponse({"detail": _describe_validation(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        """FastAPI's own handler, rendered with SafeJSONResponse (details may quote the input)."""
        if exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=exc.headers)
        return SafeJSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        metrics.query_errors.labels(reason="internal").inc()
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return SafeJSONResponse({"detail": "internal error; see the API server log"}, status_code=500)

    def serving_or_503() -> Serving:
        serving = holder.current
        if serving is None:
            metrics.query_errors.labels(reason="not_ready").inc()
            reason = holder.last_error or "no index loaded yet (is the pointer set? see /readyz)"
            raise HTTPException(503, f"not ready: {reason}", headers={"Retry-After": "1"})
        return serving

    async def search(request: SearchRequest, where: Filter | None = None) -> SearchResponse:
        try:
            check_search(request, settings)
            fusion = fusion_of(request, settings)
            if where is None:
                where = parse(request.where)
        except (RequestError, InvalidFilterError) as exc:
            metrics.query_errors.labels(reason="invalid_request").inc()
            raise HTTPException(422, str(exc)) from None
        serving = serving_or_503()
        started = time.perf_counter()
        try:
            hits = await run_in_threadpool(
                serving.index.search,
                request.q,
                k=request.k,
                mode=request.mode,
                min_score=request.min_score,
                fusion=fusion,
                where=where,
            )
        except InvalidQueryError as exc:
            metrics.query_errors.labels(reason="invalid_request").inc()
            raise HTTPException(422, str(exc)) from None
        took = time.perf_counter() - started
        metrics.query_seconds.labels(mode=request.mode).observe(took)
        metrics.query_results.observe(len(hits))
        if hits and hits[0].similarity is not None:
            metrics.top_similarity.observe(hits[0].similarity)
        return SearchResponse(
            index_id=serving.index_id,
            model_fingerprint=serving.model_fingerprint,
            generation=serving.generation,
            took_ms=round(took * 1000.0, 3),
            mode=request.mode,
            k=request.k,
            fusion=None
            if fusion is None
            else FusionOut(weights={"vector": fusion.vector, "lexical": fusion.lexical}, rrf_k=fusion.k),
            results=[
                SearchHitOut(
                    doc_id=h.doc_id,
                    score=h.score,
                    similarity=h.similarity,
                    title=h.title,
                    snippet=h.snippet,
                    metadata=h.metadata,
                )
                for h in hits
            ],
        )

    @app.get("/search", response_model=SearchResponse, responses=_ERRORS, tags=["search"])
    async def search_get(
        q: str = "",
        k: int = 10,
        mode: str = "hybrid",
        min_score: float | None = None,
        vector_weight: float | None = None,
        lexical_weight: float | None = None,
        rrf_k: int | None = None,
        where: str | None = None,
    ) -> SearchResponse:
        """Search the active index: `mode` is vector, bm25 or hybrid (default); hybrid takes
        `vector_weight`, `lexical_weight` and `rrf_k` (defaults SEMSEARCH_FUSION_*); `where` is
        a metadata filter as JSON (URL-encoded), e.g. where={"lang":"en"}."""
        try:
            condition = parse_json(where) if where else None
        except InvalidFilterError as exc:
            metrics.query_errors.labels(reason="invalid_request").inc()
            raise HTTPException(422, str(exc)) from None
        weights = None
        if vector_weight is not None or lexical_weight is not None:
            weights = FusionWeightsIn(vector=vector_weight, lexical=lexical_weight)
        return await search(
            SearchRequest(q=q, k=k, mode=mode, min_score=min_score, weights=weights, rrf_k=rrf_k),
            condition,
        )

    @app.post("/search", response_model=SearchResponse, responses=_ERRORS, tags=["search"])
    async def search_post(body: SearchRequest) -> SearchResponse:
        """The same search with a JSON body (for long queries; bodies are size-limited → 413)."""
        return await search(body)

    @app.get(
        "/documents/{doc_id:path}",
        response_model=DocumentOut,
        responses={404: {"model": ErrorOut}, 503: _ERRORS[503]},
        tags=["documents"],
    )
    async def get_document(doc_id: str) -> DocumentOut:
        """One document as the active index holds it (the version it last applied)."""
        serving = serving_or_503()
        record = serving.index.get(doc_id)
        if record is None:
            raise HTTPException(404, f"document {doc_id!r} is not in index {serving.index_id}")
        return DocumentOut(
            index_id=serving.index_id,
            doc_id=record.doc_id,
            version=record.version,
            title=record.title,
            text=record.text,
            metadata=record.metadata,
        )

    @app.get("/index", response_model=IndexOut, responses={503: _ERRORS[503]}, tags=["status"])
    async def index_info() -> IndexOut:
        """What is served: id, sizes, generation, Kafka offsets it contains and how far they are
        behind the log (lag, newest event age), migration progress."""
        serving = serving_or_503()
        lag = holder.lag_poller.lag_of(serving.manifest)
        counts = serving.index.count()
        manifest = serving.manifest
        status = holder.status()
        migration = await run_in_threadpool(holder.migration_status)
        return IndexOut(
            index_id=serving.index_id,
            model={k: manifest.model.get(k) for k in ("name", "fingerprint", "revision", "source")},
            documents=counts.documents,
            chunks=counts.chunks,
            segments=counts.sealed_segments,
            live_chunks=counts.live_chunks,
            deleted_chunks=counts.deleted_chunks,
            generation=serving.generation,
            snapshot_created_at=float(manifest.created_at),
            snapshot_age_s=round(serving.snapshot_age_s(), 3),
            offsets={t: {str(p): int(o) for p, o in parts.items()} for t, parts in manifest.offsets.items()},
            lag=None
            if lag.events is None
            else {t: {str(p): n for p, n in parts.items()} for t, parts in lag.events.items()},
            lag_error=lag.reason,
            lag_read_age_s=lag.log_end_age_s,
            newest_event_at=lag.newest_event_at,
            newest_event_age_s=lag.newest_event_age_s,
            pointer=PointerOut(
                value=status["pointer"],
                redis_up=bool(status["redis"]["up"]),
                origin=serving.origin,
                last_error=status["last_error"],
            ),
            migration=migration,
        )

    @app.get("/healthz", response_model=HealthOut, tags=["status"])
    async def healthz() -> HealthOut:
        """Liveness: the process answers. Says nothing about the index (see /readyz)."""
        return HealthOut(status="ok")

    @app.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}}, tags=["status"])
    async def readyz() -> JSONResponse:
        """200 while a verified index is served (even if Redis is down: see `redis`), else 503."""
        status = holder.status()
        body = ReadyOut(status="ready" if status["ready"] else "not ready", **status)
        return JSONResponse(body.model_dump(), status_code=200 if status["ready"] else 503)

    @app.get("/metrics", tags=["status"], response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus text format."""
        payload = await run_in_threadpool(generate_latest, metrics.registry)
        return Response(payload, media_type=CONTENT_TYPE_LATEST)

    return app
