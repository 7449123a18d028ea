"""A small client for a running semsearch API (`semsearch search --api URL`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from contracts.errors import InvalidQueryError, SemsearchError


def search_via_api(
    url: str,
    query: str,
    k: int = 10,
    mode: str = "hybrid",
    min_score: float | None = None,
    *,
    weights: Mapping[str, float] | None = None,
    rrf_k: int | None = None,
    where: dict[str, Any] | None = None,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """POST /search on the API at `url`; returns its JSON (index_id, fusion, results, ...).

    POST rather than GET so long queries are not limited by URL length. `weights` ({"vector":
    ..., "lexical": ...}, either may be left out) and `rrf_k` tune hybrid fusion; left out, the
    server's defaults apply and the answer's `fusion` says what they were. `where`: a metadata
    filter (indexer/filters.py); every hit carries its document's `metadata`. Errors come back
    as SemsearchError with the API's own message (it says what to fix).
    """
    body: dict[str, Any] = {"q": query, "k": k, "mode": mode}
    if min_score is not None:
        body["min_score"] = min_score
    if weights is not None:
        body["weights"] = dict(weights)
    if rrf_k is not None:
        body["rrf_k"] = rrf_k
    if where:
        body["where"] = where
    endpoint = url.rstrip("/") + "/search"
    try:
        response = httpx.post(endpoint, json=body, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise SemsearchError(
            f"cannot reach the semsearch API at {url} ({exc}); start it with `semsearch serve` "
            "or `semsearch up`, or fix --api"
        ) from None
    if response.status_code == 200:
        data: dict[str, Any] = response.json()
        return data
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    if response.status_code in (400, 413, 422):
        raise InvalidQueryError(f"the API refused the query: {detail}")
    if response.status_code == 503:
        raise SemsearchError(f"the API at {url} is not ready: {detail} (check {url}/readyz)")
    raise SemsearchError(f"the API at {url} answered HTTP {response.status_code}: {detail}")
