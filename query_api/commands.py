"""`semsearch search`: query an index directory, or a running API over HTTP."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from contracts.errors import IndexNotFoundError, InvalidQueryError
from contracts.settings import Settings
from indexer.commands import model_and_cache
from indexer.fusion import MODES, FusionWeights


def register(subparsers: Any) -> None:
    search = subparsers.add_parser("search", help="query an index directory or a running API")
    search.add_argument("query")
    search.add_argument("--index-dir", type=Path)
    search.add_argument("--api", help="URL of a running semsearch API instead of --index-dir")
    search.add_argument("--mode", choices=MODES, default="hybrid")
    search.add_argument("-k", type=int, default=10)
    search.add_argument("--min-score", type=float)
    search.add_argument(
        "--vector-weight", type=float, help="hybrid: RRF weight of the vector leg (default "
        "SEMSEARCH_FUSION_VECTOR_WEIGHT)"
    )
    search.add_argument(
        "--lexical-weight", type=float, help="hybrid: RRF weight of the BM25 leg (default "
        "SEMSEARCH_FUSION_LEXICAL_WEIGHT)"
    )
    search.add_argument(
        "--rrf-k", type=int, help="hybrid: RRF constant k (default SEMSEARCH_FUSION_RRF_K)"
    )
    search.add_argument(
        "--where",
        help='metadata filter as JSON, e.g. \'{"lang": "en", "year": {"$gte": 2020}}\'',
    )
    search.add_argument("--json", action="store_true", help="print the results as JSON")
    search.set_defaults(func=run_search)


def _fusion_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The fusion flags given, refused unless hybrid (as the API refuses them)."""
    given = {
        "vector": args.vector_weight,
        "lexical": args.lexical_weight,
        "rrf_k": args.rrf_k,
    }
    given = {name: value for name, value in given.items() if value is not None}
    if given and args.mode != "hybrid":
        raise InvalidQueryError(
            "--vector-weight, --lexical-weight and --rrf-k apply to --mode hybrid only"
        )
    return given


def run_search(args: argparse.Namespace) -> int:
    if args.k <= 0:
        raise InvalidQueryError(f"-k must be a positive integer (got {args.k})")
    where = None
    if args.where:
        from indexer.filters import parse_json, to_json

        condition = parse_json(args.where)  # refused here, before a model or API is touched
        where = to_json(condition) if condition is not None else None
    flags = _fusion_flags(args)
    fusion_used: dict[str, Any] | None = None
    if args.api:
        from query_api.client import search_via_api

        weights: dict[str, float] = {leg: flags[leg] for leg in ("vector", "lexical") if leg in flags}
        response = search_via_api(
            args.api,
            args.query,
            args.k,
            args.mode,
            args.min_score,
            weights=weights or None,
            rrf_k=flags.get("rrf_k"),
            where=where,
        )
        results = response.get("results", [])
        index_id = response.get("index_id", "?")
        fusion_used = response.get("fusion")
    else:
        from indexer.snapshots import SnapshotStore, index_dir

        settings = Settings.from_env()
        fusion = None
        if args.mode == "hybrid":
            try:
                fusion = FusionWeights.of(settings).with_overrides(
                    flags.get("vector"), flags.get("lexical"), flags.get("rrf_k")
                )
            except ValueError as exc:
                raise InvalidQueryError(str(exc)) from None
            fusion_used = fusion.to_json()
        model, cache = model_and_cache(settings)
        root = args.index_dir or index_dir(settings, model.index_id)
        if not root.is_dir():
            raise IndexNotFoundError(
                f"no index at {root}; build one with `semsearch build --corpus ...`"
            )
        index, _ = SnapshotStore(root).load(model, settings, cache)
        index_id = index.index_id
        hits = index.search(
            args.query,
            k=args.k,
            mode=args.mode,
            min_score=args.min_score,
            fusion=fusion,
            where=where,
        )
        results = [hit.__dict__ for hit in hits]
    if args.json:
        print(
            json.dumps(
                {"index_id": index_id, "fusion": fusion_used, "results": results},
                ensure_ascii=False,
            )
        )
        return 0
    if not results:
        print("no results" + (" above --min-score" if args.min_score is not None else ""))
    for rank, hit in enumerate(results, start=1):
        similarity = hit.get("similarity")
        cosine = f" cos={similarity:.3f}" if similarity is not None else ""
        print(f"{rank:>3}. {hit['doc_id']}  score={hit['score']:.4f}{cosine}  {hit['title'][:80]}")
        print(f"     {hit['snippet'][:160]}")
    return 0
