"""`where` at the API (POST body, GET query string, the client) and `metadata` on every hit."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contracts.documents import Document
from contracts.errors import InvalidQueryError
from contracts.pointer import Pointer
from contracts.settings import Settings
from indexer.snapshots import SnapshotStore
from query_api.app import create_app
from query_api.client import search_via_api
from query_api.holder import IndexHolder

BuildIndex = Callable[..., tuple[Any, SnapshotStore]]

DOCS = [
    Document("a", "Vitamin D", "Vitamin D deficiency and bone loss.", 1, {"lang": "en", "year": 2020, "tags": ["bone", "diet"]}),
    Document("b", "Vitamin D", "Vitamin-D-Mangel und Knochenschwund.", 1, {"lang": "de", "year": 2018, "tags": ["bone"]}),
    Document("c", "Vitamin C", "Vitamin C and the common cold.", 1, {"lang": "en", "year": 2015, "score": 0.5, "draft": False, "owner": None, "extra": {"x": [1]}}),
    Document("d", "Sleep", "Sleep and memory in adolescents.", 1, {}),
]


@pytest.fixture
def serving(settings: Settings, build_index: BuildIndex) -> Iterator[TestClient]:
    assert settings.redis_url
    pointer = Pointer.from_url(settings.redis_url, settings.pointer_key)
    holder = IndexHolder(settings, use_default_index=False)
    try:
        build_index("idx-f", DOCS)
        pointer.set_if_unset("idx-f")
        holder.poll_once()
        assert holder.ready
        yield TestClient(create_app(settings, holder), raise_server_exceptions=False)
    finally:
        holder.stop()
        pointer.close()


def _ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [hit["doc_id"] for hit in response.json()["results"]]


def test_where_in_post_and_get_in_every_mode(serving: TestClient) -> None:
    for mode in ("vector", "bm25", "hybrid"):
        body = {"q": "vitamin", "k": 4, "mode": mode, "where": {"lang": "en"}}
        assert sorted(_ids(serving.post("/search", json=body))) == ["a", "c"]
        got = serving.get("/search", params={"q": "vitamin", "k": 4, "mode": mode, "where": json.dumps({"tags": "bone"})})
        assert sorted(_ids(got)) == ["a", "b"]
    where = {"$or": [{"year": {"$lt": 2016}}, {"tags": {"$in": ["diet"]}}]}
    assert sorted(_ids(serving.post("/search", json={"q": "vitamin", "where": where}))) == ["a", "c"]
    # nothing matches: 200 and no hits
    assert _ids(serving.post("/search", json={"q": "vitamin", "where": {"lang": "fr"}})) == []
    assert _ids(serving.get("/search", params={"q": "vitamin", "where": "{}"})) != []


def test_hits_carry_their_metadata(serving: TestClient) -> None:
    results = serving.post("/search", json={"q": "vitamin C cold", "k": 4, "mode": "bm25"}).json()["results"]
    by_id = {hit["doc_id"]: hit["metadata"] for hit in results}
    assert by_id["c"] == DOCS[2].metadata
    sleep = serving.post("/search", json={"q": "sleep", "k": 1, "mode": "bm25"}).json()["results"]
    assert sleep[0]["metadata"] == {}


def _nested(depth: int) -> dict[str, Any]:
    where: dict[str, Any] = {"lang": "en"}
    for _ in range(depth - 1):
        where = {"$and": [where]}
    return where


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({"lang": {"$like": "e"}}, "$like"),
        ({"year": {"$gt": "2019"}}, "$gt"),
        ({"tags": {"$in": "bone"}}, "$in"),
        ({"$and": {"lang": "en"}}, "$and"),
        ({"$nor": [{"lang": "en"}]}, "$nor"),
        ({"n": {"$in": list(range(10_001))}}, "over the limit of 10000"),
        (_nested(100), "deeper than 16"),
        ("lang", "JSON object"),
    ],
)
def test_bad_filters_are_422_naming_the_problem(serving: TestClient, where: Any, message: str) -> None:
    posted = serving.post("/search", json={"q": "vitamin", "where": where})
    if message.startswith("over the limit"):  # 10,001 values: the body limit may answer first
        assert posted.status_code in (413, 422), posted.text
    else:
        assert posted.status_code == 422, posted.text
        assert message in posted.json()["detail"] or "dictionary" in posted.json()["detail"]
    if len(json.dumps(where)) > 20_000:  # clients refuse such URLs before we see them
        return
    got = serving.get("/search", params={"q": "vitamin", "where": json.dumps(where)})
    assert got.status_code == 422, got.text
    assert message in got.json()["detail"]


def test_malformed_where_json_and_deep_bodies_are_4xx(serving: TestClient) -> None:
    for raw in ("{lang: en}", "[", '{"lang": "en"', "[" * 5_000 + "]" * 5_000):
        got = serving.get("/search", params={"q": "vitamin", "where": raw})
        assert got.status_code == 422, got.text
        assert got.json()["detail"]
    deep = b'{"q": "x", "where": ' + b'{"$and": [' * 5_000 + b"{}" + b"]}" * 5_000 + b"}"
    posted = serving.post("/search", content=deep, headers={"content-type": "application/json"})
    assert 400 <= posted.status_code < 500, posted.text


def test_thousand_value_in(serving: TestClient) -> None:
    where = {"year": {"$in": [*range(1000, 1999), 2018]}}
    assert _ids(serving.post("/search", json={"q": "vitamin", "where": where})) == ["b"]


def test_the_client_passes_where(settings: Settings, build_index: BuildIndex, serve_api: Callable[[Any], str]) -> None:
    assert settings.redis_url
    pointer = Pointer.from_url(settings.redis_url, settings.pointer_key)
    holder = IndexHolder(settings, use_default_index=False)
    try:
        build_index("idx-f", DOCS)
        pointer.set_if_unset("idx-f")
        holder.poll_once()
        url = serve_api(create_app(settings, holder))
        answer = search_via_api(url, "vitamin", k=4, mode="hybrid", where={"lang": "de"})
        assert [h["doc_id"] for h in answer["results"]] == ["b"]
        assert answer["results"][0]["metadata"] == DOCS[1].metadata
        with pytest.raises(InvalidQueryError, match=r"\$bad"):
            search_via_api(url, "vitamin", where={"lang": {"$bad": 1}})
    finally:
        holder.stop()
        pointer.close()
