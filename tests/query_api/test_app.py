"""The HTTP API: contract, limits, readiness, and a pointer flip under concurrent load.

In-process tests use FastAPI's TestClient (the ASGI app is the same one uvicorn runs) and drive
the holder by hand; the flip and the CLI tests use a real uvicorn server over TCP.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from tests_support import wait_until

from contracts.documents import Document
from contracts.errors import InvalidQueryError, SemsearchError
from contracts.pointer import Pointer
from contracts.settings import Settings
from indexer.snapshots import SnapshotStore
from query_api.app import create_app
from query_api.client import search_via_api
from query_api.holder import IndexHolder
from semsearch.embedded.redis import EmbeddedRedis

BuildIndex = Callable[..., tuple[Any, SnapshotStore]]




def test_not_ready_before_an_index_is_loaded(
    client: TestClient, holder: IndexHolder, pointer: Pointer, build_index: BuildIndex
) -> None:
    holder.poll_once()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["ready"] is False and ready.json()["status"] == "not ready"
    for path in ("/search?q=vitamin", "/index", "/documents/d1"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert response.headers["retry-after"] == "1"
        assert "not ready" in response.json()["detail"]
    assert client.get("/healthz").json() == {"status": "ok"}
    build_index("idx-a")
    pointer.set_if_unset("idx-a")
    holder.poll_once()
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["index_id"] == "idx-a" and body["redis"]["up"] is True and body["model_fingerprint"]


def test_search_get_and_post(serving: TestClient) -> None:
    response = serving.get("/search", params={"q": "INV-2024-00917", "k": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["index_id"] == "idx-a" and body["mode"] == "hybrid" and body["k"] == 3
    assert len(body["model_fingerprint"]) == 64 and body["took_ms"] > 0 and body["generation"] == 1
    assert body["results"][0]["doc_id"] == "d7", "an exact identifier must come first"
    assert set(body["results"][0]) == {"doc_id", "score", "similarity", "title", "snippet", "metadata"}
    assert len(body["results"]) == 3

    posted = serving.post("/search", json={"q": "bone fractures", "mode": "vector", "k": 2}).json()
    assert [r["doc_id"] for r in posted["results"]][:1] == ["d1"]
    assert posted["results"][0]["similarity"] == pytest.approx(posted["results"][0]["score"])

    lexical = serving.get("/search", params={"q": "malaria artemisinin", "mode": "bm25"}).json()
    assert lexical["results"][0]["doc_id"] == "d4" and lexical["results"][0]["similarity"] is None

    nothing = serving.get("/search", params={"q": "quantum chromodynamics", "mode": "vector", "min_score": 0.9})
    assert nothing.status_code == 200 and nothing.json()["results"] == []


def test_documents_and_index(serving: TestClient) -> None:
    doc = serving.get("/documents/d3")
    assert doc.status_code == 200
    assert doc.json() == {
        "index_id": "idx-a",
        "doc_id": "d3",
        "version": 1,
        "title": "Sleep",
        "text": "Short sleep duration impairs memory consolidation in adolescents.",
        "metadata": {},
    }
    missing = serving.get("/documents/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]

    info = serving.get("/index").json()
    assert info["index_id"] == "idx-a"
    assert (info["documents"], info["chunks"], info["generation"], info["segments"]) == (10, 10, 1, 0)
    assert info["offsets"] == {"docs": {"0": 10}}
    assert info["pointer"] == {"value": "idx-a", "redis_up": True, "origin": "pointer", "last_error": None}
    assert info["model"]["fingerprint"] and info["migration"] is None


def test_migration_progress_hook(serving: TestClient, pointer: Pointer) -> None:
    pointer.client.set("semsearch:migration", '{"state": "building", "documents": 4, "of": 10}')
    assert serving.get("/index").json()["migration"] == {"state": "building", "documents": 4, "of": 10}


def test_metrics_after_queries(serving: TestClient) -> None:
    for mode in ("vector", "bm25", "hybrid"):
        assert serving.get("/search", params={"q": "vitamin d", "mode": mode}).status_code == 200
    assert serving.get("/search", params={"q": ""}).status_code == 422
    text = serving.get("/metrics").text
    for mode in ("vector", "bm25", "hybrid"):
        assert re.search(rf'semsearch_query_seconds_count{{mode="{mode}"}} 1\.0', text), mode
    assert "semsearch_query_results_count 3.0" in text
    assert "semsearch_top_similarity_count 2.0" in text  # bm25 has no cosine
    assert 'semsearch_query_errors_total{reason="invalid_request"} 1.0' in text
    assert 'semsearch_serving_index_info{index_id="idx-a"' in text
    assert "semsearch_redis_up 1.0" in text and "semsearch_index_documents 10.0" in text


def test_openapi_schema_describes_the_contract(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/search", "/documents/{doc_id}", "/index", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
    assert {"get", "post"} <= set(schema["paths"]["/search"])
    hit = schema["components"]["schemas"]["SearchHitOut"]["properties"]
    assert {"doc_id", "score", "similarity", "title", "snippet", "metadata"} <= set(hit)
    assert "where" in schema["components"]["schemas"]["SearchRequest"]["properties"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "q is empty"),
        ({"q": "   "}, "q is empty"),
        ({"q": "x" * 4097}, "over the limit of 4096"),
        ({"q": "x", "k": 0}, "k must be between 1 and 1000"),
        ({"q": "x", "k": -5}, "k must be between 1 and 1000"),
        ({"q": "x", "k": 1001}, "k must be between 1 and 1000"),
        ({"q": "x", "k": "ten"}, "k: Input should be a valid integer"),
        ({"q": "x", "k": "99999999999999999999999"}, "k"),
        ({"q": "x", "mode": "fuzzy"}, "unknown mode 'fuzzy'"),
        ({"q": "x", "min_score": "nan"}, "min_score must be a finite number"),
        ({"q": "x", "min_score": "inf"}, "min_score must be a finite number"),
        ({"q": "x", "min_score": "high"}, "min_score: Input should be a valid number"),
        ({"q": "a\x00b"}, "NUL"),
    ],
)
def test_bad_get_requests_are_4xx_with_a_message(client: TestClient, params: dict[str, Any], message: str) -> None:
    """Requests are checked before the index is consulted (no index needed to refuse them)."""
    response = client.get("/search", params=params)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"k": 3}, 422, "q: Field required"),
        ({"q": "x", "k": 3, "limit": 9}, 422, "limit: Extra inputs are not permitted"),
        ({"q": 17}, 422, "q: Input should be a valid string"),
        ({"q": "x", "mode": "semantic"}, 422, "unknown mode"),
        ({"q": "x" * 5000}, 422, "over the limit of 4096"),
        ({"q": "x" * 70_000}, 413, "over the limit of 65536 (SEMSEARCH_MAX_BODY_BYTES)"),
    ],
)
def test_bad_post_bodies_are_4xx_with_a_message(
    client: TestClient, body: dict[str, Any], status: int, message: str
) -> None:
    response = client.post("/search", json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_body_limits_hold_without_content_length_and_for_broken_json(serving: TestClient) -> None:
    """On a serving app: limits hold where a search would otherwise run."""
    def chunks() -> Iterator[bytes]:
        yield b'{"q": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    streamed = serving.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert "SEMSEARCH_MAX_BODY_BYTES" in streamed.json()["detail"]
    broken = serving.post("/search", content=b'{"q": ', headers={"content-type": "application/json"})
    assert broken.status_code == 422 and "not valid JSON" in broken.json()["detail"]


def test_readyz_reports_a_redis_outage_while_still_serving(
    serving: TestClient, holder: IndexHolder, redis_server: EmbeddedRedis
) -> None:
    redis_server.stop()
    holder.poll_once()
    ready = serving.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["redis"]["up"] is False and ready.json()["redis"]["error"]
    assert serving.get("/search", params={"q": "vitamin d"}).json()["results"][0]["doc_id"] == "d1"
    assert "semsearch_redis_up 0.0" in serving.get("/metrics").text


def test_flip_under_concurrent_queries_fails_no_request(
    settings: Settings,
    pointer: Pointer,
    build_index: BuildIndex,
    extra_doc: Document,
    serve_api: Callable[[Any], str],
) -> None:
    build_index("idx-a")
    build_index("idx-b", docs=[extra_doc])
    pointer.set_if_unset("idx-a")
    url = serve_api(create_app(settings))  # the app owns its holder; lifespan starts it
    with httpx.Client(base_url=url, timeout=30) as probe:
        wait_until(lambda: probe.get("/readyz").status_code == 200, 60, "the API to become ready")

    stop = threading.Event()
    seen: list[list[tuple[int, str | None]]] = [[] for _ in range(4)]
    queries = ["vitamin d", "INV-2024-00918", "sleep memory", "antibiotics"]
    modes = ["hybrid", "vector", "bm25"]

    def hammer(slot: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            n = 0
            while not stop.is_set():
                params = {"q": queries[n % len(queries)], "mode": modes[(n + slot) % len(modes)], "k": 5}
                try:
                    response = http.get("/search", params=params)
                    index_id = response.json().get("index_id") if response.status_code == 200 else None
                    seen[slot].append((response.status_code, index_id))
                except httpx.HTTPError as exc:  # a dropped connection is a failed query too
                    seen[slot].append((-1, repr(exc)))
                n += 1

    threads = [threading.Thread(target=hammer, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    # Every client has been answered by the old index before the flip ...
    wait_until(lambda: all(len(per) >= 5 for per in seen), 60, "every client to get answers")
    assert pointer.compare_and_set("idx-a", "idx-b")
    wait_until(lambda: any(ids and ids[-1][1] == "idx-b" for ids in seen), 30, "the API to flip")
    # ... and by the new one after it, several times each.
    after = [len(per) for per in seen]
    wait_until(
        lambda: all(len(per) >= n + 5 for per, n in zip(seen, after, strict=True)),
        60,
        "every client to get answers after the flip",
    )
    stop.set()
    for thread in threads:
        thread.join(30)

    everything = [entry for per_thread in seen for entry in per_thread]
    failures = [entry for entry in everything if entry[0] != 200]
    assert failures == [], f"{len(failures)} of {len(everything)} queries failed: {failures[:5]}"
    assert len(everything) >= 20
    for per_thread in seen:
        ids = [index_id for _, index_id in per_thread]
        assert ids[-1] == "idx-b"
        first_b = ids.index("idx-b")
        assert set(ids[first_b:]) == {"idx-b"}, "a thread saw the old index after the new one"
    assert any(ids[0][1] == "idx-a" for ids in seen)


def test_client_against_a_live_server(
    settings: Settings, pointer: Pointer, build_index: BuildIndex, serve_api: Callable[[Any], str]
) -> None:
    build_index("idx-a")
    pointer.set_if_unset("idx-a")
    holder = IndexHolder(settings, use_default_index=False)
    holder.poll_once()
    url = serve_api(create_app(settings, holder))
    try:
        answer = search_via_api(url, "INV-2024-00917", k=2, mode="hybrid", min_score=None)
        assert answer["index_id"] == "idx-a" and answer["results"][0]["doc_id"] == "d7"
        with pytest.raises(InvalidQueryError, match="unknown mode"):
            search_via_api(url, "x", k=2, mode="nope", min_score=None)
        with pytest.raises(SemsearchError, match="cannot reach"):
            search_via_api("http://127.0.0.1:9", "x", k=2, mode="hybrid", min_score=None, timeout_s=2)
    finally:
        holder.stop()


def test_semsearch_serve_command(settings: Settings, pointer: Pointer, build_index: BuildIndex) -> None:
    """`semsearch serve` as an operator runs it: env configuration, a real port, clean SIGTERM."""
    build_index("idx-a")
    pointer.set_if_unset("idx-a")
    assert settings.redis_url
    env = dict(
        os.environ,
        SEMSEARCH_DATA_DIR=str(settings.data_dir),
        REDIS_URL=settings.redis_url,
        SEMSEARCH_API_PORT="0",
        HF_HUB_OFFLINE="1",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "semsearch.cli", "serve", "--host", "127.0.0.1"],
        env=env, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stderr is not None
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            assert line or process.poll() is None, "serve exited early"
            match = re.search(r"semsearch API on (http://\S+)", line)
            url = match.group(1) if match else None
        assert url, "serve never printed its URL"
        with httpx.Client(base_url=url, timeout=10) as http:
            wait_until(lambda: http.get("/readyz").status_code == 200, 60, "serve to become ready")
            info = http.get("/index").json()
            assert (info["index_id"], info["documents"], info["generation"]) == ("idx-a", 10, 1)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
