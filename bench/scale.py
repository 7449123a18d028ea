"""Scale benchmark: the storage engine at N chunks, beside raw faiss on the same vectors.

Embedding N chunks would take hours on two cores and says nothing about storage, so the corpus is
synthetic but shaped like the real one: a SciFact sample (`--sample-docs`, a few hundred chunks)
is embedded with the pinned model, and each of the N vectors is a sampled real embedding plus
Gaussian noise of the sample's covariance shape (NOISE_SCALE), then L2-normalized (fixed seed):
clustered like real embeddings, which a single Gaussian is not. Texts are drawn from SciFact's own
word-frequency distribution (~150-word chunks, ~2 chunks per document), so BM25 postings have
SciFact's shape.

Only the project's public storage API is used, so the same command measures the storage engine
before and after it is rebuilt: `Index.apply`, `SnapshotStore.write/load/refresh`, `Index.get`,
`Index.search` and the index's internal search with a precomputed query vector. Embedding is
excluded from ingest by pre-filling the project's `EmbeddingCache` (model fingerprint + chunk
content hash) with the synthetic vectors right before each batch, so `Index.apply` runs the real
ingest path (chunking, cache look-up, vector insert, BM25, document table) and embeds nothing.

Steps:
1. ingest through `Index.apply` in batches of `--batch` documents, `SnapshotStore.write` every
   `--snapshot-every` documents (as the worker does) and once at the end;
2. 256 documents get a new version (new text, new vectors); one more generation is written:
   its time and the bytes that generation wrote (files new or changed under the index dir);
3. a fresh process loads the newest generation (model load included; memory before/after the
   index load: anonymous memory plus the index's own mapped files, the whole process's VmRSS
   apart), then loads the previous generation and `refresh`es it to the newest;
4. 200 queries, one at a time, 1 search thread: vector (a live chunk vector plus a fresh draw
   from the same distribution, normalized; query embedding excluded), BM25 (3-6 content words
   from the vocabulary), hybrid (both); recall@10 of the vector leg against exact search
   (faiss IndexFlatIP over exactly the live vectors);
5. raw faiss IndexIVFFlat (nlist = 4*sqrt(N), nprobe 8) on the same live vectors, and at the
   cheapest nprobe that reaches the project's recall (the "equal recall" reference).

    python -m bench.scale --chunks 20000            # writes bench/results/scale-20000.json
    python -m bench.scale --chunks 100000 --json /tmp/scale.json
    python -m bench.scale --chunks 2000 --profile   # where ingest time goes (cProfile)
    python -m bench.scale --chunks 20000 --filters  # + filtered search (bench/scale_filters.py)
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import json
import math
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from bench._data import DEFAULT_DATA, REPO, RESULTS, load_documents, word_counts
from bench._process import disk_waits, io_written, rss_by_mapping, rss_bytes
from bench._stats import summary, timed, timed_with_cpu
from bench.reporting import command, machine, print_table, write_json
from contracts.documents import Document
from contracts.settings import Settings
from indexer.analyzer import analyze
from indexer.chunking import Chunk
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index, IndexCounts
from indexer.lexical import precompile_kernels
from indexer.model import EmbeddingModel, load_model
from indexer.snapshots import SnapshotStore

DEFAULT_SAMPLE_CACHE = RESULTS / "scale-sample-embeddings.sqlite"
CHANGED_DOCUMENTS = 256
TOP_K = 10
FAISS_NPROBE = 8
# nprobe values tried on the raw IVF to find the project's recall: "within 1.5x raw faiss at equal
# recall" compares the project's vector leg with the cheapest of these that reaches it.
FAISS_NPROBE_SWEEP = (8, 16, 32, 64, 128)
# Recall measured on 200 queries x 10 neighbours moves in steps of 0.0005: "equal" allows two.
EQUAL_RECALL_SLACK = 0.001
# Text shape: ~150 words per chunk, ~2 chunks per document (the Chunker decides the real cut).
TITLE_WORDS = (6, 14)
BODY_WORDS = (180, 330)
QUERY_WORDS = (3, 6)
# Noise around a sampled real embedding for each synthetic vector: 1.0 gives a median
# nearest-neighbour cosine of 0.68 at 50k (the real sample's is 0.76) and raw IVF (4*sqrt(N)
# lists, nprobe 8) recall@10 0.996, as on real MiniLM vectors.
NOISE_SCALE = 1.0
# Noise around its seed chunk for a query vector: far enough that the top-10 is a real
# neighbourhood, not one duplicate and nine ties.
QUERY_NOISE = 0.5
# Synthetic documents are ~500 tokens (2-3 chunks); `batches` relies on this bound.
MAX_CHUNKS_PER_DOCUMENT = 8


@contextlib.contextmanager
def one_search_thread() -> Iterator[None]:
    """numpy's BLAS (the live segment's matmul) and faiss/torch's OpenMP, all at one thread.

    The spec is one query at a time on one thread; a 2-thread BLAS on a shared 2-core machine
    also turns sub-millisecond matmuls into multi-millisecond spin-waits.
    """
    faiss.omp_set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn/sentence-transformers
        print("threadpoolctl missing: numpy's BLAS keeps its default threads", file=sys.stderr)
        yield
        return
    with threadpool_limits(limits=1):
        yield


def file_state(root: Path) -> dict[Path, tuple[int, int]]:
    return {
        p: (s.st_size, s.st_mtime_ns) for p in root.rglob("*") if p.is_file() for s in [p.stat()]
    }


def bytes_written(before: dict[Path, tuple[int, int]], after: dict[Path, tuple[int, int]]) -> int:
    """Bytes of files that are new or changed: what one generation cost the disk, whatever its layout."""
    return sum(size for path, (size, mtime) in after.items() if before.get(path) != (size, mtime))


def new_files_by_directory(
    root: Path, before: dict[Path, tuple[int, int]], after: dict[Path, tuple[int, int]]
) -> dict[str, int]:
    """Sizes of the files a generation created (not those updated in place), by the directory
    under the index root they are in: which part of the layout one generation wrote."""
    sizes: dict[str, int] = {}
    for path, (size, _) in after.items():
        if path not in before:
            rel = path.relative_to(root)
            top = rel.parts[0] if len(rel.parts) > 1 else "."
            top = "gen-N" if top.startswith("gen-") else top
            sizes[top] = sizes.get(top, 0) + size
    return dict(sorted(sizes.items()))


# -- synthetic corpus -------------------------------------------------------------------------
class Synthesizer:
    """Vectors from the sample's Gaussian, texts from SciFact's unigram distribution."""

    def __init__(self, sample: np.ndarray, words: list[str], counts: np.ndarray, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.dimension = int(sample.shape[1])
        self.mean = sample.mean(axis=0).astype(np.float64)
        self.sample = sample.astype(np.float64)
        cov = np.cov(sample.astype(np.float64), rowvar=False)
        eigvals, eigvecs = np.linalg.eigh(cov)
        # A few hundred samples leave the covariance rank-deficient; clipping keeps the draw
        # inside the sample's subspace (the real embeddings' shape), not a full-rank sphere.
        self.transform = (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))).T
        self.words = np.array(words, dtype=object)
        self.cdf = np.cumsum(counts / counts.sum())
        content = np.array([bool(analyze(w)) for w in words])
        content_counts = np.where(content, counts, 0).astype(np.float64)
        self.content_cdf = np.cumsum(content_counts / content_counts.sum())
        # --filters: every document's metadata, a function of its id (bench/scale_filters.py)
        self.metadata_of: Callable[[str], dict[str, Any]] | None = None

    def vectors(self, n: int) -> np.ndarray:
        # Real embeddings are clustered by topic; one Gaussian is not (raw IVF recall@10 was
        # 0.3-0.4 on it at any sane nprobe, against ~0.99 on real MiniLM vectors). So each vector
        # is a sampled real embedding plus noise of the sample's covariance shape.
        centers = self.sample[self.rng.integers(0, len(self.sample), n)]
        x = centers + NOISE_SCALE * self.noise(n)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(x, dtype=np.float32)

    def noise(self, n: int) -> np.ndarray:
        """Gaussian draws of the sample's covariance shape, centred on 0."""
        return self.rng.standard_normal((n, self.dimension)) @ self.transform

    def _draw(self, cdf: np.ndarray, n: int) -> str:
        picks = np.searchsorted(cdf, self.rng.random(n), side="right")
        return " ".join(self.words[np.minimum(picks, len(self.words) - 1)])

    def document(self, doc_id: str, version: int = 0) -> Document:
        title = self._draw(self.cdf, int(self.rng.integers(TITLE_WORDS[0], TITLE_WORDS[1] + 1)))
        body = self._draw(self.cdf, int(self.rng.integers(BODY_WORDS[0], BODY_WORDS[1] + 1)))
        metadata = self.metadata_of(doc_id) if self.metadata_of is not None else {}
        return Document(doc_id, title.capitalize(), body, version, metadata)

    def query_text(self) -> str:
        return self._draw(
            self.content_cdf, int(self.rng.integers(QUERY_WORDS[0], QUERY_WORDS[1] + 1))
        )


def sample_vectors(
    index: Index, model: EmbeddingModel, corpus: Path, docs: int, cache_path: Path
) -> np.ndarray:
    """Embeddings of the first `docs` SciFact documents' chunks (cached across runs by fingerprint)."""
    chunks = [c for d in load_documents(corpus, docs) for c in index.chunker.split(d.full_text)]
    hashes = list(dict.fromkeys(c.content_hash for c in chunks))
    text_of = {c.content_hash: c.text for c in chunks}
    cache = EmbeddingCache(cache_path)
    try:
        fingerprint = model.info.fingerprint
        found = cache.get_many(fingerprint, hashes, model.dimension)
        missing = [h for h in hashes if h not in found]
        if missing:
            print(f"embedding the SciFact sample: {len(missing)} chunks ...", flush=True)
            fresh = dict(
                zip(missing, model.encode_documents([text_of[h] for h in missing]), strict=True)
            )
            cache.put_many(fingerprint, fresh.items())
            found.update(fresh)
    finally:
        cache.close()
    return np.vstack([found[h] for h in hashes])


class VectorBank:
    """Every synthetic vector by content hash: the cache is filled from it, exact search reads it."""

    def __init__(self, dimension: int) -> None:
        self.rows: dict[str, int] = {}
        self._parts: list[np.ndarray] = []
        self._count = 0
        self._dense: np.ndarray | None = None
        self.dimension = dimension

    def add(self, hashes: list[str], vectors: np.ndarray) -> None:
        for offset, h in enumerate(hashes):
            self.rows[h] = self._count + offset
        self._count += len(hashes)
        self._parts.append(vectors)
        self._dense = None

    def take(self, hashes: list[str]) -> np.ndarray:
        if self._dense is None:
            self._dense = (
                np.vstack(self._parts) if self._parts else np.zeros((0, self.dimension), np.float32)
            )
            self._parts = [self._dense]
        return self._dense[[self.rows[h] for h in hashes]]


def prefill(
    index: Index,
    synth: Synthesizer,
    bank: VectorBank,
    cache: EmbeddingCache,
    docs: list[Document],
    chunked: list[list[Chunk]] | None = None,
) -> int:
    """Put vectors for every new chunk of `docs` in the cache; returns the chunk count.

    `chunked` is the documents' chunks when the caller has them already (`batches` does).
    """
    if chunked is None:
        chunked = index.chunker.split_many([d.full_text for d in docs])
    chunks = [c for doc_chunks in chunked for c in doc_chunks]
    fresh = [h for h in dict.fromkeys(c.content_hash for c in chunks) if h not in bank.rows]
    vectors = synth.vectors(len(fresh))
    bank.add(fresh, vectors)
    cache.put_many(index.model.info.fingerprint, zip(fresh, vectors, strict=True))
    return len(chunks)


# -- the fresh-process reload ---------------------------------------------------------------
def child_reload(data_dir: Path, root: Path, previous: int) -> dict[str, Any]:
    """Runs in a fresh process: load the newest generation (model included), then refresh an older one."""
    started = time.perf_counter()
    settings = Settings.from_env().with_overrides(data_dir=data_dir)
    model = load_model(settings.model, memory_mb=settings.embed_memory_mb)
    model_loaded = time.perf_counter()
    store = SnapshotStore(root)
    # Per-process costs first, so that the memory measured next is the index's: the model's
    # first inference (the load's canary check runs one) and every compiled BM25 kernel
    # variant (~26 MB of LLVM code each, whatever the corpus). Both stay in the restart time.
    model.encode_documents(["warm up the model before the memory baseline"])
    precompile_kernels()
    gc.collect()
    rss_before, maps_before = rss_bytes(), rss_by_mapping()
    index, manifest = store.load(model, settings)
    loaded = time.perf_counter()
    gc.collect()
    rss_after, maps_after = rss_bytes(), rss_by_mapping()
    chunks = index.count().chunks
    del index
    gc.collect()
    # The older generation is loaded under tracemalloc (not the timed load: tracing slows it):
    # Python and numpy allocations still held after the load, by the file that made them.
    tracemalloc.start(30)
    older, _ = store.load(model, settings, generation=previous)
    traced = tracemalloc.take_snapshot().statistics("traceback")
    tracemalloc.stop()
    by_file = traced_by_project_file(traced)
    refresh_started = time.perf_counter()
    refreshed = store.refresh(older, manifest.generation)
    refresh_s = time.perf_counter() - refresh_started
    if older.count() != IndexCounts(**manifest.counts):
        raise SystemExit(
            f"refresh to {refreshed.generation} gave {older.count()}, manifest says {manifest.counts}"
        )
    return {
        "generation": manifest.generation,
        "previous_generation": previous,
        "chunks": chunks,
        "model_load_s": model_loaded - started,
        "index_load_s": loaded - model_loaded,
        "restart_load_s": loaded - started,
        "rss_before_index_bytes": rss_before,  # the process with model and kernels loaded
        "rss_after_index_bytes": rss_after,
        **index_memory(maps_before, maps_after, root),
        "traced_bytes_by_file": by_file,
        "traced_bytes_total": sum(stat.size for stat in traced),
        "refresh_s": refresh_s,
    }


def index_memory(before: dict[str, int], after: dict[str, int], root: Path) -> dict[str, Any]:
    """What the load added: anonymous memory plus the index's own mapped files (the index's
    memory), and apart from it the other files' pages it touched (model weights read by the
    model canary, libllvmlite by the numba kernels: fixed per process, not per chunk)."""
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after.keys() | before}
    inside = {n: d for n, d in delta.items() if n.startswith(str(root))}
    outside = {n: d for n, d in delta.items() if n != "anonymous" and n not in inside and d}
    return {
        "index_anonymous_bytes": delta.get("anonymous", 0),
        "index_mapped_file_bytes": sum(inside.values()),
        "index_rss_bytes": delta.get("anonymous", 0) + sum(inside.values()),
        "other_mapped_file_bytes": dict(sorted(outside.items(), key=lambda i: -i[1])[:8]),
    }


def traced_by_project_file(traced: list[tracemalloc.Statistic]) -> dict[str, int]:
    """Traced bytes by the innermost project frame (the indexer line that asked numpy or json for
    them), largest first: a reading of which structure holds the per-chunk memory."""
    totals: dict[str, int] = {}
    for stat in traced:
        where = "outside the project"
        for frame in reversed(stat.traceback):
            path = Path(frame.filename)
            if path.is_relative_to(REPO) and ".venv" not in path.parts:
                where = f"{path.relative_to(REPO)}:{frame.lineno}"
                break
        totals[where] = totals.get(where, 0) + stat.size
    return dict(sorted(totals.items(), key=lambda item: -item[1])[:15])


def run_child(data_dir: Path, root: Path, previous: int) -> dict[str, Any]:
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.scale",
            "--child-reload",
            str(root),
            str(previous),
            str(data_dir),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"the reload process failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - started
    return result


# -- main -----------------------------------------------------------------------------------
def batches(
    total_chunks: int, batch: int, synth: Synthesizer, index: Index
) -> Iterator[tuple[list[Document], list[list[Chunk]]]]:
    """Documents (and their chunks) in batches until the corpus holds `total_chunks` chunks.

    Documents are drawn one at a time and the last batch stops short, as before; but they are
    chunked in groups (one tokenizer call per group, see `Chunker.split_many`). A group holds
    only as many documents as cannot overshoot the target at MAX_CHUNKS_PER_DOCUMENT chunks
    each, so exactly the same documents are drawn as when each was chunked alone.
    """
    made = 0
    next_id = 0
    while made < total_chunks:
        docs: list[Document] = []
        chunked: list[list[Chunk]] = []
        while len(docs) < batch and made < total_chunks:
            group = min(batch - len(docs), -(-(total_chunks - made) // MAX_CHUNKS_PER_DOCUMENT))
            drawn = [synth.document(f"doc-{next_id + i:07d}") for i in range(group)]
            next_id += group
            for doc, chunks in zip(
                drawn, index.chunker.split_many([d.full_text for d in drawn]), strict=True
            ):
                if made >= total_chunks:
                    break  # only if a document had more than MAX_CHUNKS_PER_DOCUMENT chunks
                made += len(chunks)
                docs.append(doc)
                chunked.append(chunks)
        yield docs, chunked


def ingest(
    args: argparse.Namespace,
    index: Index,
    store: SnapshotStore,
    synth: Synthesizer,
    bank: VectorBank,
    cache: EmbeddingCache,
) -> dict[str, Any]:
    apply_s = prefill_s = write_s = 0.0
    documents = chunks = since_write = 0
    snapshots: list[dict[str, Any]] = []
    profiler = cProfile.Profile() if args.profile else None
    started = time.perf_counter()
    next_report = started + 30.0

    def write() -> None:
        nonlocal write_s, since_write
        before = file_state(store.root)
        if profiler:
            profiler.enable()
        thread_before = io_written(thread=True)
        t0 = time.perf_counter()
        manifest = store.write(index)
        seconds = time.perf_counter() - t0
        thread_bytes = io_written(thread=True) - thread_before
        if profiler:
            profiler.disable()
        write_s += seconds
        since_write = 0
        snapshots.append(
            {
                "generation": manifest.generation,
                "documents": documents,
                "chunks": chunks,
                "seconds": seconds,
                "bytes_written": bytes_written(before, file_state(store.root)),
                "write_bytes": thread_bytes,  # write(2) of the writer's thread
            }
        )

    drawn = batches(args.chunks, args.batch, synth, index)
    while True:
        t0 = time.perf_counter()  # the pre-fill includes drawing and chunking the documents
        batch = next(drawn, None)
        if batch is None:
            break
        docs, chunked = batch
        batch_chunks = prefill(index, synth, bank, cache, docs, chunked)
        prefill_s += time.perf_counter() - t0
        if profiler:
            profiler.enable()
        t0 = time.perf_counter()
        report = index.apply(docs)
        apply_s += time.perf_counter() - t0
        if profiler:
            profiler.disable()
        if report.chunks_embedded or report.rejected or report.upserted != len(docs):
            raise SystemExit(
                f"ingest embedded {report.chunks_embedded} chunks / rejected {report.rejected[:3]} "
                f"/ upserted {report.upserted} of {len(docs)}: the cache pre-fill missed"
            )
        documents += len(docs)
        chunks += batch_chunks
        since_write += len(docs)
        if since_write >= args.snapshot_every:
            write()
        if time.perf_counter() >= next_report:
            elapsed = time.perf_counter() - started
            print(
                f"  {documents} docs / {chunks} chunks in {elapsed:.0f}s: apply "
                f"{chunks / apply_s:.0f} chunks/s, {write_s:.1f}s in {len(snapshots)} snapshot(s)"
                + (f", last {snapshots[-1]['seconds']:.2f}s" if snapshots else ""),
                flush=True,
            )
            next_report = time.perf_counter() + 30.0
    t0 = time.perf_counter()
    index.settle()  # background seals and merges still running count as ingest time
    store.settle()  # and the lexical merges of the last generation
    write()  # the generation before the change
    store.settle()
    settle_s = time.perf_counter() - t0 - snapshots[-1]["seconds"]
    if profiler:
        stats = pstats.Stats(profiler, stream=sys.stdout)
        print("\ningest profile (Index.apply + SnapshotStore.write), top 25 by own time:")
        stats.sort_stats("tottime").print_stats(25)
    background = index.vectors.background
    background_cpu_s = (
        background.cpu_s if background is not None else 0.0
    ) + store.background_cpu_s
    return {
        "documents": documents,
        "chunks": chunks,
        "apply_s": apply_s,
        "snapshot_s": write_s,
        "settle_s": settle_s,
        "prefill_s_untimed": prefill_s,
        "snapshots": snapshots,
        "ingest_chunks_per_s": chunks / (apply_s + write_s + settle_s),
        "apply_only_chunks_per_s": chunks / apply_s,
        # Seals, merges and retrains (and lexical merges) ran in worker threads beside apply (and
        # beside the untimed pre-fill); as if they had run in the writer's thread instead:
        "background_jobs": background.completed if background is not None else 0,
        "background_cpu_s": background_cpu_s,
        "background_bytes_written": background.bytes_written if background is not None else 0,
        "ingest_chunks_per_s_serial": chunks / (apply_s + write_s + settle_s + background_cpu_s),
        # The costliest ingest generation (each wrote ~`--snapshot-every` documents' change).
        "max_generation_s": max(g["seconds"] for g in snapshots),
        "max_generation_write_bytes": max(g["write_bytes"] for g in snapshots),
    }


def change(
    index: Index,
    store: SnapshotStore,
    synth: Synthesizer,
    bank: VectorBank,
    cache: EmbeddingCache,
    documents: int,
) -> dict[str, Any]:
    """New versions of CHANGED_DOCUMENTS documents, then one timed generation."""
    picks = synth.rng.choice(documents, size=min(CHANGED_DOCUMENTS, documents), replace=False)
    docs = [synth.document(f"doc-{int(i):07d}", version=1) for i in sorted(picks)]
    prefill(index, synth, bank, cache, docs)
    t0 = time.perf_counter()
    report = index.apply(docs)
    apply_s = time.perf_counter() - t0
    if report.upserted != len(docs) or report.chunks_embedded:
        raise SystemExit(
            f"the change applied {report.upserted}/{len(docs)}, embedded {report.chunks_embedded}"
        )
    before = file_state(store.root)
    io_before, thread_before = io_written(), io_written(thread=True)
    t0 = time.perf_counter()
    manifest = store.write(index)
    seconds = time.perf_counter() - t0
    io_bytes, thread_bytes = io_written() - io_before, io_written(thread=True) - thread_before
    after = file_state(store.root)
    return {
        "changed_documents": len(docs),
        "apply_s": apply_s,
        "generation": manifest.generation,
        "snapshot_after_change_s": seconds,
        # Bytes the generation wrote (write(2)): new files plus the pages SQLite wrote to its WAL
        # and, at a checkpoint, into documents.sqlite. Sizes of the files that changed count a
        # 1.3 GB documents.sqlite whole once a checkpoint touched one page of it: reported too,
        # as snapshot_after_change_file_bytes, and used only where /proc is not available.
        # The writer's thread only: a background seal or merge writing its segment meanwhile
        # (indexer/vector_maintenance.py) is counted in the process figure.
        "snapshot_after_change_bytes": thread_bytes or io_bytes or bytes_written(before, after),
        "snapshot_after_change_io_bytes": io_bytes,
        "background_job_during_change": bool(
            index.vectors.background and index.vectors.background.busy
        ),
        "snapshot_after_change_file_bytes": bytes_written(before, after),
        "snapshot_after_change_new_files": new_files_by_directory(store.root, before, after),
        "index_dir_bytes": sum(size for size, _ in after.values()),
    }


def live_vectors(
    index: Index, bank: VectorBank, doc_ids: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(chunk ids, vectors) of every live chunk, read through Index.get: what exact search covers."""
    ids: list[int] = []
    hashes: list[str] = []
    for doc_id in doc_ids:
        record = index.get(doc_id)
        if record is None:
            continue
        for chunk in record.chunks:
            ids.append(chunk.chunk_id)
            hashes.append(chunk.content_hash)
    return np.asarray(ids, dtype=np.int64), bank.take(hashes)


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return statistics.fmean(
        len(set(f[:TOP_K]) & set(t.tolist())) / TOP_K for f, t in zip(found, truth, strict=True)
    )


def queries_phase(
    index: Index, synth: Synthesizer, ids: np.ndarray, vectors: np.ndarray, n: int
) -> tuple[dict[str, Any], dict[str, Any], np.ndarray, np.ndarray]:
    """Project search latency/recall, and exact flat search as ground truth, one query at a time."""
    seeds = synth.rng.choice(len(ids), size=n, replace=False)
    mixed = vectors[seeds] + QUERY_NOISE * synth.noise(n)
    mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
    qvecs: np.ndarray = np.ascontiguousarray(mixed, dtype=np.float32)
    texts = [synth.query_text() for _ in range(n)]
    items = list(zip(texts, qvecs, strict=True))

    flat = faiss.IndexIDMap(faiss.IndexFlatIP(vectors.shape[1]))
    flat.add_with_ids(vectors, ids)
    _, truth = flat.search(qvecs, TOP_K)
    flat_ms = timed(lambda q: flat.search(q.reshape(1, -1), TOP_K), list(qvecs))

    def internal(text: str, qvec: np.ndarray | None, mode: str) -> Any:
        # Index.search minus the query encoder: the same lock and the same internal search.
        with index.lock.reading():
            return index._search(text, qvec, TOP_K, mode, None)

    def leg(qvec: np.ndarray) -> list[tuple[int, float]]:
        with index.lock.reading():
            return index.vectors.search(qvec, TOP_K)

    found = [[chunk_id for chunk_id, _ in leg(q)] for q in qvecs]
    calls: dict[str, tuple[Callable[[Any], object], list[Any]]] = {
        "vector": (lambda it: internal(it[0], it[1], "vector"), items),
        "vector_leg": (leg, list(qvecs)),
        "bm25": (lambda t: index.search(t, k=TOP_K, mode="bm25"), texts),
        "hybrid": (lambda it: internal(it[0], it[1], "hybrid"), items),
    }
    runs, waits = {}, {}
    for name, (call, inputs) in calls.items():
        before = disk_waits()
        runs[name] = timed_with_cpu(call, inputs)
        waits[name] = {key: value - before[key] for key, value in disk_waits().items()}
    project = {
        **{name: summary(wall) for name, (wall, _) in runs.items()},
        "cpu": {name: summary(cpu) for name, (_, cpu) in runs.items()},
        "disk_waits": waits,
        "vector_recall_at_10": recall(found, truth),
        "bm25_empty_results": sum(1 for t in texts if not index.search(t, k=TOP_K, mode="bm25")),
    }
    exact = {"flat": summary(flat_ms)}
    return project, exact, qvecs, truth


def raw_faiss(
    ids: np.ndarray,
    vectors: np.ndarray,
    qvecs: np.ndarray,
    truth: np.ndarray,
    workdir: Path,
    seed: int,
    project_recall: float,
) -> dict[str, Any]:
    """Raw IndexIVFFlat on the live vectors: what the storage engine is compared with.

    Timed at nprobe 8 (the headline row) and at every nprobe of FAISS_NPROBE_SWEEP; `matched`
    is the cheapest one whose recall reaches the project's, the fair reference for latency."""
    n, d = vectors.shape
    nlist = max(1, round(4 * math.sqrt(n)))
    quantizer = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    train_rows = rng.choice(n, size=min(n, 64 * nlist), replace=False)
    t0 = time.perf_counter()
    ivf.train(vectors[np.sort(train_rows)])
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ivf.add_with_ids(vectors, ids)
    add_s = time.perf_counter() - t0
    ivf.nprobe = FAISS_NPROBE
    samples = timed(lambda q: ivf.search(q.reshape(1, -1), TOP_K), list(qvecs))
    _, found = ivf.search(qvecs, TOP_K)
    sweep: list[dict[str, Any]] = []
    for nprobe in FAISS_NPROBE_SWEEP:
        ivf.nprobe = nprobe
        _, swept = ivf.search(qvecs, TOP_K)
        sweep.append(
            {
                "nprobe": nprobe,
                "recall_at_10": recall([list(map(int, row)) for row in swept], truth),
                "search": summary(
                    timed(lambda q: ivf.search(q.reshape(1, -1), TOP_K), list(qvecs))
                ),
            }
        )
    reaching = [s for s in sweep if s["recall_at_10"] >= project_recall - EQUAL_RECALL_SLACK]
    matched = reaching[0] if reaching else sweep[-1]
    ivf.nprobe = FAISS_NPROBE
    path = workdir / "raw-ivf.faiss"
    t0 = time.perf_counter()
    faiss.write_index(ivf, str(path))
    write_s = time.perf_counter() - t0
    size = path.stat().st_size
    t0 = time.perf_counter()
    faiss.read_index(str(path))
    read_s = time.perf_counter() - t0
    return {
        "nlist": nlist,
        "nprobe": FAISS_NPROBE,
        "train_points": len(train_rows),
        "train_s": train_s,
        "add_s": add_s,
        "add_vectors_per_s": n / add_s if add_s else float("inf"),
        "search": summary(samples),
        "recall_at_10": recall([list(map(int, row)) for row in found], truth),
        "write_index_s": write_s,
        "index_bytes": size,
        "read_index_s": read_s,
        "bytes_per_vector": size / n,
        "nprobe_sweep": sweep,
        "matched": matched,
        "matched_reaches_project_recall": bool(reaching),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=20_000, help="synthetic chunks (up to 1M)")
    parser.add_argument(
        "--json", type=Path, help="result file (default bench/results/scale-<N>.json)"
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SciFact (BEIR) directory")
    parser.add_argument(
        "--sample-docs",
        type=int,
        default=300,
        help="SciFact documents embedded for the distribution",
    )
    parser.add_argument(
        "--sample-cache",
        type=Path,
        default=DEFAULT_SAMPLE_CACHE,
        help="embedding cache of the sample, kept across runs",
    )
    parser.add_argument("--batch", type=int, default=256, help="documents per Index.apply")
    parser.add_argument(
        "--snapshot-every",
        type=int,
        default=5000,
        help="documents between generations during ingest",
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20240)
    parser.add_argument(
        "--filters",
        action="store_true",
        help="synthetic metadata + filtered search at 50/10/1/0.1 %% selectivity (recall, latency)",
    )
    parser.add_argument(
        "--workdir", type=Path, help="parent of the temporary data directory (default: system temp)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile Index.apply + SnapshotStore.write and print the top functions",
    )
    parser.add_argument(
        "--child-reload", nargs=3, metavar=("ROOT", "PREVIOUS", "DATA_DIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child_reload:
        root, previous, data_dir = args.child_reload
        print(json.dumps(child_reload(Path(data_dir), Path(root), int(previous))))
        return 0
    if not 100 <= args.chunks <= 2_000_000:
        parser.error("--chunks must be between 100 and 2,000,000")
    if args.batch <= 0 or args.snapshot_every <= 0 or args.queries <= 10:
        parser.error("--batch and --snapshot-every must be positive, --queries > 10")
    corpus = args.data / "corpus.jsonl"
    if not corpus.is_file():
        parser.error(f"{corpus} not found; pass --data DIR with a BEIR corpus.jsonl (SciFact)")
    out = args.json or RESULTS / f"scale-{args.chunks}.json"

    faiss.omp_set_num_threads(1)
    load_start = os.getloadavg()
    wall_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="semsearch-bench-scale-", dir=args.workdir) as tmp_name:
        tmp = Path(tmp_name)
        settings = Settings.from_env().with_overrides(data_dir=tmp / "data")
        model = load_model(settings.model, memory_mb=settings.embed_memory_mb)
        cache = EmbeddingCache(settings.cache_dir / "embeddings.sqlite")
        index = Index.create(model, settings, cache)
        store = SnapshotStore(settings.indexes_dir / model.index_id)

        sample = sample_vectors(index, model, corpus, args.sample_docs, args.sample_cache)
        words, counts = word_counts(corpus)
        synth = Synthesizer(sample, words, counts, args.seed)
        if args.filters:
            from bench.scale_filters import metadata_of

            synth.metadata_of = metadata_of
        bank = VectorBank(model.dimension)
        import torch

        torch.set_num_threads(1)
        print(
            f"sample: {len(sample)} SciFact chunks embedded; vocabulary {len(words)} words; "
            f"ingesting {args.chunks} synthetic chunks into {store.root}",
            flush=True,
        )

        ingested = ingest(args, index, store, synth, bank, cache)
        print(
            f"ingest: {ingested['documents']} docs / {ingested['chunks']} chunks, "
            f"{ingested['ingest_chunks_per_s']:.0f} chunks/s (apply {ingested['apply_s']:.1f}s, "
            f"{len(ingested['snapshots'])} snapshots {ingested['snapshot_s']:.1f}s, settle "
            f"{ingested['settle_s']:.1f}s; {ingested['background_jobs']} background jobs "
            f"{ingested['background_cpu_s']:.1f} CPU-s; untimed pre-fill incl. chunking "
            f"{ingested['prefill_s_untimed']:.1f}s)",
            flush=True,
        )
        changed = change(index, store, synth, bank, cache, ingested["documents"])
        # Background seals, merges and lexical merges the change started finish before the
        # fresh process loads (they would share its cores) and before the queries.
        t0 = time.perf_counter()
        index.settle()
        store.settle()
        changed["settle_after_change_s"] = time.perf_counter() - t0
        print(
            f"change: {changed['changed_documents']} docs -> generation {changed['generation']} in "
            f"{changed['snapshot_after_change_s']:.2f}s, {changed['snapshot_after_change_bytes'] / 1e6:.1f} MB written",
            flush=True,
        )
        reload = run_child(settings.data_dir, store.root, changed["generation"] - 1)
        print(
            f"reload (fresh process): {reload['restart_load_s']:.1f}s ({reload['model_load_s']:.1f}s model); "
            f"refresh {reload['refresh_s']:.2f}s",
            flush=True,
        )

        doc_ids = [f"doc-{i:07d}" for i in range(ingested["documents"])]
        ids, vectors = live_vectors(index, bank, doc_ids)
        counts_now = index.count()
        if len(ids) != counts_now.chunks:
            raise SystemExit(
                f"{len(ids)} live chunks through Index.get, count() says {counts_now.chunks}"
            )
        with one_search_thread():
            project, exact, qvecs, truth = queries_phase(index, synth, ids, vectors, args.queries)
            print(
                f"queries: project vector recall@10 {project['vector_recall_at_10']:.3f}",
                flush=True,
            )
            raw = raw_faiss(
                ids, vectors, qvecs, truth, tmp, args.seed, project["vector_recall_at_10"]
            )
            filtered: dict[str, Any] | None = None
            if args.filters:
                from bench.scale_filters import filters_phase

                texts = [synth.query_text() for _ in range(len(qvecs))]
                filtered = filters_phase(index, ids, vectors, qvecs, texts, args.seed)
        cache.close()

    n = counts_now.chunks
    rss_delta = reload["rss_after_index_bytes"] - reload["rss_before_index_bytes"]
    result: dict[str, Any] = {
        "bench": "scale",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command("scale", argv),
        "chunks": n,
        "documents": counts_now.documents,
        "ingest_chunks_per_s": ingested["ingest_chunks_per_s"],
        "snapshot_after_change_s": changed["snapshot_after_change_s"],
        "snapshot_after_change_bytes": changed["snapshot_after_change_bytes"],
        "snapshot_after_change_io_bytes": changed["snapshot_after_change_io_bytes"],
        "snapshot_after_change_file_bytes": changed["snapshot_after_change_file_bytes"],
        "restart_load_s": reload["restart_load_s"],
        "refresh_s": reload["refresh_s"],
        # The index's memory (anonymous + its own mapped files) after a fresh load; the whole
        # process's VmRSS delta, which adds the model's and libraries' pages, beside it.
        "rss_bytes_per_chunk": reload["index_rss_bytes"] / n,
        "process_rss_bytes_per_chunk": rss_delta / n,
        "vector_p50_ms": project["vector"]["p50_ms"],
        "vector_p99_ms": project["vector"]["p99_ms"],
        "vector_recall_at_10": project["vector_recall_at_10"],
        "bm25_p50_ms": project["bm25"]["p50_ms"],
        "bm25_p99_ms": project["bm25"]["p99_ms"],
        "hybrid_p99_ms": project["hybrid"]["p99_ms"],
        "bm25_cpu_p99_ms": project["cpu"]["bm25"]["p99_ms"],
        "hybrid_cpu_p99_ms": project["cpu"]["hybrid"]["p99_ms"],
        "faiss_ivf_p99_ms": raw["search"]["p99_ms"],
        "faiss_ivf_recall_at_10": raw["recall_at_10"],
        "vector_leg_p99_ms": project["vector_leg"]["p99_ms"],
        "faiss_ivf_matched_nprobe": raw["matched"]["nprobe"],
        "faiss_ivf_matched_recall_at_10": raw["matched"]["recall_at_10"],
        "faiss_ivf_matched_p99_ms": raw["matched"]["search"]["p99_ms"],
        "vector_leg_p99_vs_faiss_matched": project["vector_leg"]["p99_ms"]
        / raw["matched"]["search"]["p99_ms"],
        **(_filter_keys(filtered) if filtered is not None else {}),
        "details": {
            "ingest": ingested,
            "change": changed,
            "reload": reload,
            "counts": {**counts_now.__dict__, "lexical_segments": len(index.lexical.segments)},
            "queries": project,
            "exact_flat": exact,
            "raw_faiss_ivf": raw,
            "settings": {
                "seal_chunks": settings.seal_chunks,
                "nprobe": settings.nprobe,
                "chunk_tokens": settings.chunk_tokens,
                "chunk_overlap": settings.chunk_overlap,
                "batch_documents": args.batch,
                "snapshot_every_documents": args.snapshot_every,
                "sample_chunks": len(sample),
                "query_noise": QUERY_NOISE,
                "search_threads": 1,
            },
            "notes": [
                "ingest_chunks_per_s = chunks / (Index.apply + SnapshotStore.write + the final "
                "settle of background maintenance); embedding excluded by a pre-filled "
                "EmbeddingCache (0 chunks embedded, checked); details.ingest."
                "ingest_chunks_per_s_serial adds the background jobs' CPU seconds (as if they "
                "had run in the writer's thread)",
                "snapshot_after_change_bytes: write(2) bytes of the writer's thread during the "
                "generation; snapshot_after_change_io_bytes: the whole process's (a background "
                "job may be writing a segment meanwhile)",
                "vector/hybrid latencies call Index._search with a precomputed query vector under "
                "the read lock (Index.search minus the query encoder); bm25 calls Index.search",
                "vector_recall_at_10 is chunk-level: VectorIndex.search(q, 10) vs faiss IndexFlatIP "
                "over exactly the live vectors; faiss_ivf_recall_at_10 likewise",
                "restart_load_s: model load + SnapshotStore.load in a fresh process (interpreter "
                "start and imports excluded; process_wall_s includes them)",
            ],
        },
        "environment": {
            **machine(load_start),
            "wall_s": time.perf_counter() - wall_start,
            "libraries": model.info.library_versions,
        },
    }
    write_json(out, result)

    def ms(d: dict[str, float]) -> str:
        return f"{d['p50_ms']:.2f} / {d['p99_ms']:.2f}"

    print_table(
        f"Storage at {n} chunks / {counts_now.documents} docs ({counts_now.sealed_segments} sealed "
        f"segments + {counts_now.live_chunks} live), 1 search thread, {args.queries} queries, k={TOP_K}",
        ["", "project", "raw faiss"],
        [
            [
                "ingest chunks/s (embedding excluded)",
                f"{result['ingest_chunks_per_s']:.0f}",
                f"IVF add {raw['add_vectors_per_s']:.0f}/s (+{raw['train_s']:.1f}s train)",
            ],
            ["  of which Index.apply only", f"{ingested['apply_only_chunks_per_s']:.0f}", ""],
            [
                "  with background jobs' CPU counted serially",
                f"{ingested['ingest_chunks_per_s_serial']:.0f}",
                f"{ingested['background_jobs']} vector jobs, {ingested['background_bytes_written'] / 1e6:.0f} MB",
            ],
            [
                "snapshot after 256 changed docs",
                f"{changed['snapshot_after_change_s']:.2f}s, {changed['snapshot_after_change_bytes'] / 1e6:.1f} MB "
                f"written ({changed['snapshot_after_change_file_bytes'] / 1e6:.1f} MB of files touched)",
                f"write_index {raw['write_index_s']:.2f}s, {raw['index_bytes'] / 1e6:.1f} MB",
            ],
            [
                "restart load (model incl.)",
                f"{reload['restart_load_s']:.2f}s (index {reload['index_load_s']:.2f}s)",
                f"read_index {raw['read_index_s']:.2f}s",
            ],
            ["refresh to next generation", f"{reload['refresh_s']:.2f}s", "-"],
            [
                "index RSS bytes / chunk",
                f"{result['rss_bytes_per_chunk']:.0f} (process: "
                f"{result['process_rss_bytes_per_chunk']:.0f})",
                f"{raw['bytes_per_vector']:.0f} (file)",
            ],
            ["vector p50/p99 ms", ms(project["vector"]), f"IVF {ms(raw['search'])}"],
            [
                "  vector leg only p50/p99 ms",
                ms(project["vector_leg"]),
                f"flat {ms(exact['flat'])}",
            ],
            [
                "vector recall@10",
                f"{project['vector_recall_at_10']:.3f}",
                f"IVF {raw['recall_at_10']:.3f} (nlist {raw['nlist']}, nprobe {FAISS_NPROBE})",
            ],
            [
                "  vector leg vs raw IVF at equal recall",
                f"p99 {result['vector_leg_p99_vs_faiss_matched']:.2f}x",
                f"nprobe {raw['matched']['nprobe']}: {ms(raw['matched']['search'])}, "
                f"recall {raw['matched']['recall_at_10']:.3f}",
            ],
            ["bm25 p50/p99 ms", ms(project["bm25"]), f"CPU {ms(project['cpu']['bm25'])}"],
            ["hybrid p50/p99 ms", ms(project["hybrid"]), f"CPU {ms(project['cpu']['hybrid'])}"],
        ],
    )
    if filtered is not None:
        from bench.scale_filters import TABLE_HEADER, table_rows

        print()
        print_table(
            f"Filtered search at {n} chunks: recall@10 vs exact filtered brute force, p50 ms "
            "filtered / unfiltered (same queries)",
            TABLE_HEADER,
            table_rows(filtered),
        )
    print(f"\nwrote {out}")
    return 0


def _filter_keys(levels: dict[str, Any]) -> dict[str, Any]:
    """Top-level JSON keys of --filters: filter_<level>_<mode>_recall_at_10 / _p50_ms / _p99_ms."""
    keys: dict[str, Any] = {"filters": levels}
    for level, row in levels.items():
        name = level.rstrip("%").replace(".", "_")
        for mode in ("vector", "bm25", "hybrid"):
            keys[f"filter_{name}pct_{mode}_recall_at_10"] = row["recall_at_10"][mode]
            keys[f"filter_{name}pct_{mode}_p50_ms"] = row["latency"][mode]["p50_ms"]
            keys[f"filter_{name}pct_{mode}_p99_ms"] = row["latency"][mode]["p99_ms"]
    return keys


if __name__ == "__main__":
    sys.exit(main())
