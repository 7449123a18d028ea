"""Per-request fusion: `weights` and `rrf_k` over POST, GET, the Python client (issue 11, part 4).

The defaults are Settings' (SEMSEARCH_FUSION_*); the answer's `fusion` says what was used, and
bad values are a 422 naming the field. Validation tests need no index (refused before one is
consulted); the rest share the API fixtures' tiny index.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contracts.errors import InvalidQueryError
from contracts.pointer import Pointer
from contracts.settings import Settings
from indexer.snapshots import SnapshotStore
from query_api.app import create_app
from query_api.client import search_via_api
from query_api.holder import IndexHolder

BuildIndex = Callable[..., tuple[Any, SnapshotStore]]
DEFAULT = {"weights": {"vector": 1.0, "lexical": 1.0}, "rrf_k": 60}




def test_the_answer_says_which_fusion_was_used(serving: TestClient) -> None:
    default = serving.post("/search", json={"q": "bone fractures", "k": 3}).json()
    assert default["fusion"] == DEFAULT
    posted = serving.post(
        "/search", json={"q": "bone fractures", "k": 3, "weights": {"lexical": 3}, "rrf_k": 10}
    ).json()
    assert posted["fusion"] == {"weights": {"vector": 1.0, "lexical": 3.0}, "rrf_k": 10}
    # A document first in both legs scores sum(weight / (k + 1)).
    assert posted["results"][0]["doc_id"] == "d1"
    assert posted["results"][0]["score"] == pytest.approx(1 / 11 + 3 / 11)
    got = serving.get(
        "/search", params={"q": "bone fractures", "k": 3, "vector_weight": 0, "rrf_k": 1}
    ).json()
    assert got["fusion"] == {"weights": {"vector": 0.0, "lexical": 1.0}, "rrf_k": 1}
    assert got["results"][0]["score"] == pytest.approx(1 / 2)
    assert serving.get("/search", params={"q": "bone", "mode": "bm25"}).json()["fusion"] is None


def test_weights_change_the_ranking(serving: TestClient) -> None:
    """Each leg alone (the other weighted 0) ranks like that leg's own mode."""
    query = "heart attack prevention with cholesterol drugs and exercise"
    for leg, mode in (("vector", "vector"), ("lexical", "bm25")):
        other = "lexical" if leg == "vector" else "vector"
        fused = serving.post(
            "/search", json={"q": query, "k": 5, "weights": {leg: 1, other: 0}}
        ).json()["results"]
        alone = serving.post("/search", json={"q": query, "k": 5, "mode": mode}).json()["results"]
        assert alone and [r["doc_id"] for r in fused][: len(alone)] == [r["doc_id"] for r in alone], leg


def test_server_defaults_come_from_settings(
    settings: Settings, pointer: Pointer, build_index: BuildIndex
) -> None:
    tuned = settings.with_overrides(fusion_vector_weight=0.5, fusion_rrf_k=30)
    holder = IndexHolder(tuned, use_default_index=False)
    build_index("idx-a")
    pointer.set_if_unset("idx-a")
    holder.poll_once()
    try:
        body = TestClient(create_app(tuned, holder)).get("/search", params={"q": "sleep"}).json()
        assert body["fusion"] == {"weights": {"vector": 0.5, "lexical": 1.0}, "rrf_k": 30}
    finally:
        holder.stop()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"weights": {"vector": -1}}, "weights.vector must be a finite number >= 0"),
        ({"weights": {"lexical": -0.1}}, "weights.lexical must be a finite number >= 0"),
        ({"weights": {"vector": 0, "lexical": 0}}, "both 0"),
        ({"weights": {"vector": 0, "lexical": 0}, "mode": "hybrid"}, "at least one leg"),
        ({"weights": {"semantic": 1}}, "weights.semantic: Extra inputs are not permitted"),
        ({"weights": {"vector": "lots"}}, "weights.vector: Input should be a valid number"),
        ({"rrf_k": 0}, "rrf_k must be an integer from 1 to 10000"),
        ({"rrf_k": -60}, "rrf_k must be an integer from 1 to 10000"),
        ({"rrf_k": 10**9}, "rrf_k must be an integer from 1 to 10000"),
        ({"rrf_k": 6.5}, "rrf_k: Input should be a valid integer"),
        ({"rrf_k": 10, "mode": "vector"}, "apply to mode=hybrid only"),
        ({"weights": {"vector": 2}, "mode": "bm25"}, "apply to mode=hybrid only"),
    ],
)
def test_bad_fusion_in_a_body_is_422_naming_it(
    client: TestClient, body: dict[str, Any], message: str
) -> None:
    response = client.post("/search", json={"q": "x", **body})
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


def test_non_finite_weights_are_422(client: TestClient) -> None:
    """Python's JSON reader takes NaN and Infinity; the API must not."""
    for raw in (b'{"q": "x", "weights": {"vector": NaN}}', b'{"q": "x", "weights": {"lexical": Infinity}}'):
        response = client.post("/search", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
        assert "finite" in response.json()["detail"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"vector_weight": -2}, "weights.vector must be a finite number >= 0"),
        ({"lexical_weight": "nan"}, "weights.lexical must be a finite number >= 0"),
        ({"vector_weight": 0, "lexical_weight": 0}, "both 0"),
        ({"rrf_k": 0}, "rrf_k must be an integer from 1 to 10000"),
        ({"rrf_k": "sixty"}, "rrf_k: Input should be a valid integer"),
        ({"rrf_k": 5, "mode": "bm25"}, "apply to mode=hybrid only"),
    ],
)
def test_bad_fusion_in_a_query_string_is_422_naming_it(
    client: TestClient, params: dict[str, Any], message: str
) -> None:
    response = client.get("/search", params={"q": "x", **params})
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


def test_python_client_passes_fusion(
    settings: Settings, pointer: Pointer, build_index: BuildIndex, serve_api: Callable[[Any], str]
) -> None:
    build_index("idx-a")
    pointer.set_if_unset("idx-a")
    holder = IndexHolder(settings, use_default_index=False)
    holder.poll_once()
    url = serve_api(create_app(settings, holder))
    try:
        answer = search_via_api(url, "INV-2024-00917 overdue", k=2, weights={"vector": 2.0}, rrf_k=5)
        assert answer["fusion"] == {"weights": {"vector": 2.0, "lexical": 1.0}, "rrf_k": 5}
        assert answer["results"][0]["doc_id"] == "d7"
        assert search_via_api(url, "sleep", k=1)["fusion"] == DEFAULT
        with pytest.raises(InvalidQueryError, match="rrf_k must be an integer"):
            search_via_api(url, "sleep", k=1, rrf_k=0)
    finally:
        holder.stop()
