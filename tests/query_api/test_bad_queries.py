"""Queries the API must refuse with a 4xx and a message, never a 500 (on a serving app).

A lone surrogate ("\\ud800" is valid JSON) used to reach the tokenizer and answer 500; an error
message quoting a client's un-encodable input failed while being rendered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contracts.pointer import Pointer
from contracts.settings import Settings
from indexer.snapshots import SnapshotStore
from query_api.app import create_app
from query_api.holder import IndexHolder

BuildIndex = Callable[..., tuple[Any, SnapshotStore]]


@pytest.fixture
def serving(settings: Settings, build_index: BuildIndex) -> Iterator[TestClient]:
    assert settings.redis_url
    pointer = Pointer.from_url(settings.redis_url, settings.pointer_key)
    holder = IndexHolder(settings, use_default_index=False)
    try:
        build_index("idx-a")
        pointer.set_if_unset("idx-a")
        holder.poll_once()
        assert holder.ready
        yield TestClient(create_app(settings, holder), raise_server_exceptions=False)
    finally:
        holder.stop()
        pointer.close()


def post_raw(client: TestClient, body: bytes) -> Any:
    return client.post("/search", content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"q": "vitamin \\ud800 d"}', "lone surrogate U+D800"),
        (b'{"q": "\\udc00"}', "lone surrogate U+DC00"),
        (b'{"q": "x", "mode": "\\ud800"}', "unknown mode"),
        (b'{"q": "x", "\\ud800": 1}', "Input should be a valid string"),
        (b'{"q": "x", "k": "\\ud800"}', "k: Input should be a valid"),
        (b'{"q": "x", "min_score": NaN}', "min_score must be a finite number"),
        (b'{"q": "x", "min_score": 1e400}', "min_score must be a finite number"),
        (b'{"q": "x", "k": 100000000000000000000000000000}', "k must be between 1 and 1000"),
        (b'{"q": "x", "k": -1}', "k must be between 1 and 1000"),
        (b'{"q": "x", "k": 2.5}', "k: Input should be a valid integer"),
        (b'{"q": ""}', "q is empty"),
        (b'{"q": "\\u0000"}', "NUL"),
        (b'{"q": null}', "q: Input should be a valid string"),
        (b'[1, 2]', "Input should be a valid dictionary"),
        (b'{"q": "' + b"[" * 50_000 + b'"}', "over the limit of 4096"),
    ],
)
def test_bad_post_queries_are_422_with_a_message(serving: TestClient, body: bytes, message: str) -> None:
    response = post_raw(serving, body)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"q": "x", "k": ' + b"[" * 30_000 + b"]" * 30_000 + b"}",  # deeper than json's recursion
        b'{"q": "x", "k": ' + b"9" * 5000 + b"}",  # past Python's int-parsing digit limit
    ],
)
def test_bodies_json_cannot_parse_are_4xx(serving: TestClient, body: bytes) -> None:
    response = post_raw(serving, body)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]


def test_huge_queries_are_413_or_422(serving: TestClient) -> None:
    posted = serving.post("/search", json={"q": "x" * 1_000_000})
    assert posted.status_code == 413 and "SEMSEARCH_MAX_BODY_BYTES" in posted.json()["detail"]
    # The test client refuses URLs of 1 MB (so do real servers, with 414/400); 60 kB reaches us.
    got = serving.get("/search", params={"q": "x" * 60_000})
    assert got.status_code == 422 and "SEMSEARCH_MAX_QUERY_CHARS" in got.json()["detail"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("k=100000000000000000000000000000&q=x", "k"),
        ("k=-3&q=x", "k must be between 1 and 1000"),
        ("min_score=NaN&q=x", "min_score must be a finite number"),
        ("min_score=-inf&q=x", "min_score must be a finite number"),
        ("min_score=1e999&q=x", "min_score must be a finite number"),
        ("q=", "q is empty"),
        ("q=%00", "NUL"),
        ("q=x&mode=%ED%A0%80", "unknown mode"),
    ],
)
def test_bad_get_queries_are_422_with_a_message(serving: TestClient, query: str, message: str) -> None:
    response = serving.get(f"/search?{query}")
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


@pytest.mark.parametrize("raw", ["%ED%A0%80", "vitamin%ED%A0%80d", "%FF%FE", "%F0%9F%98%80", "%E2%80%8B"])
def test_undecodable_get_queries_are_answered(serving: TestClient, raw: str) -> None:
    """Percent-encoded surrogates and invalid UTF-8 decode to U+FFFD: a normal search, not a 500."""
    response = serving.get(f"/search?q={raw}")
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["results"], list)


def test_the_api_still_answers_good_queries_after_bad_ones(serving: TestClient) -> None:
    assert post_raw(serving, b'{"q": "\\ud800"}').status_code == 422
    response = serving.post("/search", json={"q": "vitamin deficiency", "k": 3})
    assert response.status_code == 200
    assert response.json()["results"][0]["doc_id"] == "d1"
