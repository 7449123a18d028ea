"""`semsearch build`, `semsearch eval`: the search core without Kafka."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from contracts.errors import SemsearchError
from contracts.settings import Settings
from indexer.fusion import MODES, FusionWeights


def register(subparsers: Any) -> None:
    build = subparsers.add_parser("build", help="build an index from a BEIR-format corpus.jsonl")
    build.add_argument("--corpus", type=Path, required=True)
    build.add_argument(
        "--index-dir", type=Path, help="default: $SEMSEARCH_DATA_DIR/indexes/<index id>"
    )
    build.set_defaults(func=run_build)

    evaluate = subparsers.add_parser("eval", help="measure nDCG@10/recall/MRR on BEIR-format data")
    evaluate.add_argument("--corpus", type=Path, required=True)
    evaluate.add_argument("--queries", type=Path, required=True)
    evaluate.add_argument("--qrels", type=Path, required=True)
    evaluate.add_argument("--mode", choices=MODES, default="hybrid")
    evaluate.add_argument(
        "--index-dir", type=Path, help="default: a cached index per corpus and model"
    )
    evaluate.add_argument("--json", action="store_true", help="last stdout line is one JSON object")
    evaluate.set_defaults(func=run_eval)


def model_and_cache(settings: Settings) -> tuple[Any, Any]:
    from indexer.embedding_cache import EmbeddingCache
    from indexer.model import load_model

    model = load_model(settings.model, memory_mb=settings.embed_memory_mb)
    return model, EmbeddingCache(settings.cache_dir / "embeddings.sqlite")


def run_build(args: argparse.Namespace) -> int:
    from indexer.build import build_index
    from indexer.snapshots import index_dir

    settings = Settings.from_env()
    model, cache = model_and_cache(settings)
    root = args.index_dir or index_dir(settings, model.index_id)
    hint = (
        "this is the live index; stop its indexer first, or build elsewhere with "
        "`semsearch build --index-dir DIR`"
        if args.index_dir is None
        else "stop that process, or build into another --index-dir"
    )
    report = build_index(args.corpus, root, model, settings, cache, show_progress=True, lock_hint=hint)
    assert report.manifest is not None
    print(
        f"built {report.manifest.index_id} generation {report.manifest.generation} in {root}: "
        f"{report.documents} documents, {report.manifest.counts['chunks']} chunks "
        f"({report.chunks_embedded} embedded, {report.chunks_cached} from cache)"
    )
    if len(report.unreadable):
        print(f"warning: {report.unreadable.summary()}", file=sys.stderr)
    for doc_id, reason in report.rejected[:10]:
        print(f"warning: rejected {doc_id}: {reason}", file=sys.stderr)
    return 0


def _corpus_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def run_eval(args: argparse.Namespace) -> int:
    from indexer.beir import read_qrels, read_queries
    from indexer.build import build_index
    from indexer.evaluation import evaluate
    from indexer.snapshots import SnapshotStore

    settings = Settings.from_env()
    queries = read_queries(args.queries)
    qrels = read_qrels(args.qrels)
    model, cache = model_and_cache(settings)
    if not args.corpus.is_file():
        raise SemsearchError(f"{args.corpus} does not exist or is not a file")
    root = (
        args.index_dir
        or settings.data_dir / "eval" / f"{model.index_id}-{_corpus_digest(args.corpus)}"
    )
    store = SnapshotStore(root)
    if store.latest_generation() is None:
        print(f"building index in {root}", file=sys.stderr)
        build_index(args.corpus, root, model, settings, cache, show_progress=True)
    else:
        print(f"reusing index in {root}", file=sys.stderr)
    index, _ = store.load(model, settings, cache)

    fusion = FusionWeights.of(settings) if args.mode == "hybrid" else None

    def search(query: str, k: int) -> list[str]:
        return [hit.doc_id for hit in index.search(query, k=k, mode=args.mode, fusion=fusion)]

    judged = sum(1 for q in queries if q in qrels)
    with tqdm(total=judged, desc=f"eval {args.mode}", disable=None, file=sys.stderr) as bar:
        quality = evaluate(search, queries, qrels, progress=bar.update)
    result: dict[str, Any] = {**quality.to_json(), "mode": args.mode, "index_id": index.index_id}
    print(
        f"{args.mode}: nDCG@10 {quality.ndcg_at_10:.4f}  recall@10 {quality.recall_at_10:.4f}  "
        f"recall@100 {quality.recall_at_100:.4f}  MRR@10 {quality.mrr_at_10:.4f}  ({quality.queries} queries)"
    )
    if args.json:
        print(json.dumps(result))
    return 0
