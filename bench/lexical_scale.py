"""BM25 query latency at 100k-1M chunks: the pruned evaluation against exhaustive scoring.

bench/lexical.py builds through `LexicalIndex.add` (analysis included), which takes minutes per
100k chunks on the shared machine; query latency at 1M only needs the segments. So this bench
builds them with numpy from the same material as bench/scale.py: words drawn from SciFact's
unigram distribution (~150 per chunk), each word analyzed once, batches of 100k chunks frozen
as segments, all but the newest two merged into a base (the shape a live index has between
full merges). Queries are bench/scale.py's (`Synthesizer.query_text`: 3-6 words drawn by
frequency from SciFact's content words) and SciFact's own claims.

The reference is exhaustive BM25 over the same segments (every posting of every query term
scored into a dense array, then top k: bm25s's way, without its precomputed scores): it checks
that the pruned top k is exact (same ids up to float32 ties, same scores) and is the
no-pruning baseline, timed interleaved with the pruned path, query by query, so both see the
same load. k defaults to 100: Index.search asks the lexical leg for CANDIDATE_DEPTH = 100.

    python -m bench.lexical_scale --chunks 100000,300000        # writes bench/results/lexical_scale.json
    python -m bench.lexical_scale --chunks 1000000 --queries 300
    # also time an earlier evaluation (a copy of an older indexer/lexical.py) on the same segments:
    git show 0a3fe45^:indexer/lexical.py > /tmp/lexical_before.py
    python -m bench.lexical_scale --old /tmp/lexical_before.py
    # or a directory with copies of lexical.py, lexical_query.py and lexical_segment.py:
    python -m bench.lexical_scale --old /tmp/lexical_old
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench._data import DEFAULT_DATA, RESULTS, word_counts
from bench._stats import summary
from bench.reporting import command, print_table, write_json
from indexer.analyzer import analyze
from indexer.beir import read_queries
from indexer.lexical import K1, B, LexicalIndex, Segment, merge_segments
from indexer.lexical_segment import new_name

DEFAULT_OUT = RESULTS / "lexical_scale.json"
TARGET_P99_MS = 10.0
BATCH = 100_000


class Vocabulary:
    """SciFact's words by frequency, each with its analyzed terms (as term ids)."""

    def __init__(self, corpus: Path) -> None:
        self.words, frequencies = word_counts(corpus)
        analyzed = [analyze(w) for w in self.words]
        term_id: dict[str, int] = {}
        flat = [term_id.setdefault(t, len(term_id)) for a in analyzed for t in a]
        self.terms = list(term_id)
        self.flat = np.asarray(flat, dtype=np.int64)
        self.count = np.asarray([len(a) for a in analyzed], dtype=np.int64)
        self.start = np.cumsum(self.count) - self.count
        self.cdf = np.cumsum(frequencies / frequencies.sum())
        content = np.where(self.count > 0, frequencies, 0.0)
        self.content_cdf = np.cumsum(content / content.sum())

    def draw(self, rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
        return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(self.words) - 1)


def build(vocab: Vocabulary, chunks: int, seed: int) -> LexicalIndex:
    rng = np.random.default_rng(seed)
    vocabulary_size = len(vocab.terms)
    segments = []
    for first in range(0, chunks, BATCH):
        m = min(BATCH, chunks - first)
        words_per_chunk = rng.integers(100, 201, size=m)
        words = vocab.draw(rng, vocab.cdf, int(words_per_chunk.sum()))
        per_word = vocab.count[words]
        positions = np.repeat(vocab.start[words], per_word) + (
            np.arange(int(per_word.sum())) - np.repeat(np.cumsum(per_word) - per_word, per_word)
        )
        term_ids = vocab.flat[positions]
        chunk_of = np.repeat(np.repeat(np.arange(m), words_per_chunk), per_word)
        keys, tfs = np.unique(term_ids * m + chunk_of, return_counts=True)
        rows, local = keys // m, keys % m
        counts = np.bincount(rows, minlength=vocabulary_size)
        present = counts > 0
        offsets = np.concatenate([[0], np.cumsum(counts[present])]).astype(np.int64)
        segments.append(
            Segment(
                new_name(),
                [vocab.terms[i] for i in np.flatnonzero(present)],
                offsets,
                (local + first).astype(np.int32),
                np.minimum(tfs, 65535).astype(np.uint16),
                np.arange(first, first + m, dtype=np.int64),
                np.bincount(chunk_of, minlength=m).astype(np.float32),
                np.zeros(0, np.int64),
            )
        )
    if len(segments) > 2:
        base = merge_segments(segments[:-2], np.ones(chunks, bool), last=True)
        segments = [base, *segments[-2:]]
    return LexicalIndex.from_segments(segments)


class Exhaustive:
    """Every posting of every query term scored into a dense array (the exactness reference)."""

    def __init__(self, index: LexicalIndex) -> None:
        self.index = index
        self.scratch = np.zeros(index._length.shape[0], np.float32)

    def search(self, terms: list[str], k: int) -> list[tuple[int, float]]:
        index = self.index
        n = float(len(index))
        avgdl = index.total_length / n
        touched = []
        for term, count in Counter(terms).items():
            runs = [seg.postings_of(term) for seg in index.segments]
            found = [r for r in runs if r is not None]
            if not found:
                continue
            ids = np.concatenate([r[0] for r in found]).astype(np.intp)
            tfs = np.concatenate([r[1] for r in found]).astype(np.float32)
            keep = index._alive[ids]
            ids, tfs = ids[keep], tfs[keep]
            if not ids.shape[0]:
                continue
            weight = count * math.log1p((n - ids.shape[0] + 0.5) / (ids.shape[0] + 0.5))
            denominator = index._length[ids] * np.float32(K1 * B / avgdl)
            denominator += np.float32(K1 * (1 - B))
            denominator += tfs
            self.scratch[ids] += tfs * np.float32(weight * (K1 + 1)) / denominator
            touched.append(ids)
        if not touched:
            return []
        ids = np.flatnonzero(self.scratch)  # one dense pass: cheaper than sorting the postings
        scores = self.scratch[ids]
        self.scratch[ids] = 0.0
        if k < ids.shape[0]:
            kth = np.partition(scores, ids.shape[0] - k)[ids.shape[0] - k]
            ids, scores = ids[scores >= kth], scores[scores >= kth]
        order = np.lexsort((ids, -scores))[:k]
        return [(int(ids[i]), float(scores[i])) for i in order]


def same_top(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> bool:
    if len(got) != len(want):
        return False
    if not np.allclose([s for _, s in got], [s for _, s in want], rtol=1e-4):
        return False
    last = want[-1][1] if want else 0.0
    wanted = {i for i, _ in want}
    return all(i in wanted or math.isclose(s, last, rel_tol=1e-4) for i, s in got)


def _import_as(name: str, path: Path, source: str) -> Any:
    spec = importlib.util.spec_from_loader(name, loader=None, origin=str(path))
    if spec is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module by name
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def load_old(path: Path, index: LexicalIndex) -> Any:
    """The LexicalIndex class of an older lexical.py, over the same segments (postings_of API).

    `path` is a lexical.py, or a directory holding copies of lexical.py, lexical_query.py and
    lexical_segment.py (their `indexer.lexical_*` imports are redirected to the copies).
    """
    if not path.is_dir():
        return _import_as("lexical_before", path, path.read_text()).LexicalIndex.from_segments(
            index.segments
        )
    renames = {f"indexer.{m}": f"before_{m}" for m in ("lexical_segment", "lexical_query")}
    module = None
    for name in ("lexical_segment", "lexical_query", "lexical"):
        file = path / f"{name}.py"
        source = file.read_text()
        for before, after in renames.items():
            source = source.replace(before, after)
        module = _import_as(f"before_{name}", file, source)
    assert module is not None
    return module.LexicalIndex.from_segments(index.segments)


def measure(index: LexicalIndex, queries: list[str], k: int, old: Any = None) -> dict[str, Any]:
    reference = Exhaustive(index)
    analyzed = [analyze(q) for q in queries]
    for terms in analyzed[:10]:
        index.search_terms(terms, k)
        reference.search(terms, k)
        if old is not None:
            old.search_terms(terms, k)
    pruned_ms, exhaustive_ms, old_ms, mismatches = [], [], [], 0
    for terms in analyzed:
        if old is not None:
            started = time.perf_counter()
            old.search_terms(terms, k)
            old_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        got = index.search_terms(terms, k)
        pruned_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        want = reference.search(terms, k)
        exhaustive_ms.append((time.perf_counter() - started) * 1000)
        mismatches += not same_top(got, want)
    return {
        "pruned": summary(pruned_ms),
        "exhaustive": summary(exhaustive_ms),
        **({"old": summary(old_ms)} if old_ms else {}),
        "mismatches": mismatches,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", default="100000,300000", help="comma-separated sizes")
    parser.add_argument("--queries", type=int, default=500, help="synthetic queries per size")
    parser.add_argument("--scifact-queries", type=int, default=809, help="SciFact claims used")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--old",
        type=Path,
        help="an older indexer/lexical.py (or a directory of lexical*.py copies) to time as well",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.chunks.split(",") if s]
    if not (args.data / "corpus.jsonl").is_file():
        parser.error(f"SciFact not found under {args.data} (--data)")
    vocab = Vocabulary(args.data / "corpus.jsonl")
    claims = list(read_queries(args.data / "queries.jsonl").values())[: args.scifact_queries]
    rng = np.random.default_rng(args.seed + 1)
    synthetic = [
        " ".join(vocab.words[i] for i in vocab.draw(rng, vocab.content_cdf, int(n)))
        for n in rng.integers(3, 7, size=args.queries)
    ]
    results: dict[str, Any] = {}
    rows = []
    for size in sizes:
        started = time.perf_counter()
        index = build(vocab, size, args.seed)
        build_s = time.perf_counter() - started
        print(f"[{size}] built in {build_s:.1f}s, segments {[s.chunks for s in index.segments]}")
        entry: dict[str, Any] = {
            "build_seconds": build_s,
            "ram_bytes_per_chunk": index.nbytes() / size,
        }
        old = load_old(args.old, index) if args.old else None
        for name, queries in (("synthetic", synthetic), ("scifact", claims)):
            entry[name] = measure(index, queries, args.k, old)
            m = entry[name]
            rows.append(
                [
                    size,
                    name,
                    f"{m['pruned']['p50_ms']:.2f} / {m['pruned']['p99_ms']:.2f}",
                    f"{m['exhaustive']['p50_ms']:.2f} / {m['exhaustive']['p99_ms']:.2f}",
                    f"{m['old']['p50_ms']:.2f} / {m['old']['p99_ms']:.2f}" if "old" in m else "-",
                    m["mismatches"],
                ]
            )
            print(f"  {name}: {rows[-1][2]} ms pruned, {rows[-1][3]} ms exhaustive", flush=True)
        results[str(size)] = entry
        del index, old
    result = {
        "bench": "lexical_scale",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command("lexical_scale", argv),
        "k": args.k,
        "loadavg_end": os.getloadavg(),
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "target_p99_ms": TARGET_P99_MS,
        "sizes": results,
    }
    write_json(args.out, result)
    print_table(
        f"BM25 query ms (p50 / p99), k = {args.k}, one thread; exhaustive = every posting scored",
        ["chunks", "queries", "pruned (LexicalIndex)", "exhaustive", "--old", "top-k mismatches"],
        rows,
    )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
