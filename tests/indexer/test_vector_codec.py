"""The `pq` vector codec: IVF-PQ sealed segments re-ranked exactly from full vectors on disk.

VectorIndex-level tests use synthetic clustered vectors (no model); the snapshot tests go through
Index.apply with vectors pre-filled in the embedding cache (as test_vector_snapshots does).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

from contracts.documents import Document
from contracts.errors import SnapshotError
from contracts.settings import Settings, SettingsError
from indexer.embedding_cache import EmbeddingCache
from indexer.full_vectors import FullVectors
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.segments import SealedSegment
from indexer.snapshots import SnapshotStore
from indexer.vector_codec import PQSegment, make_codec
from indexer.vector_index import VectorIndex


def _mixture(n: int, d: int, clusters: int, seed: int) -> np.ndarray:
    """Clusters with noise of a decaying spectrum, like embeddings. Isotropic noise is PQ's worst
    case (the residual to a centroid is then white noise): recall@10 ~0.88 there at k' = 10 k,
    against 0.99 here and 0.97 on bench.scale's sample-shaped vectors (indexer/vector_codec.py)."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(0).standard_normal((clusters, d))
    spectrum = (np.arange(d) + 1.0) ** -0.5
    x = centers[rng.integers(0, clusters, n)] + 2.0 * rng.standard_normal((n, d)) * spectrum
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _recall(index: VectorIndex, vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray) -> float:
    order = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    truth = [{int(ids[i]) for i in row} for row in order]
    got = [{i for i, _ in index.search(q, 10)} for q in queries]
    return float(np.mean([len(a & b) / 10 for a, b in zip(got, truth, strict=True)]))


def _grown(codec: str, x: np.ndarray, seal: int = 1024, step: int = 500) -> VectorIndex:
    index = VectorIndex(x.shape[1], seal_chunks=seal, codec=codec)
    for start in range(0, len(x), step):
        stop = min(len(x), start + step)
        index.add(np.arange(start, stop), x[start:stop])
        index.maintain()
    return index


def _codes_bytes(index: VectorIndex) -> int:
    return sum(int(s.index.code_size) * len(s) for s in index.sealed)


def test_pq_recall_against_exact_search_at_a_fraction_of_flat_memory() -> None:
    d = 128
    x = _mixture(12_000, d, 40, seed=1)
    queries = _mixture(60, d, 40, seed=2)
    flat, pq = _grown("flat", x), _grown("pq", x)
    ids = np.arange(len(x))
    assert all(type(s) is SealedSegment for s in flat.sealed)
    assert pq.sealed and all(isinstance(s, PQSegment) for s in pq.sealed)
    sealed = sum(len(s) for s in pq.sealed)
    # 16 sub-quantizers x 8 bits for d = 128: 16 B of codes per sealed vector instead of 512
    assert all(s.index.code_size == 16 for s in pq.sealed) and _codes_bytes(pq) == 16 * sealed
    assert _codes_bytes(flat) == 4 * d * sum(len(s) for s in flat.sealed)
    recall_pq, recall_flat = _recall(pq, x, ids, queries), _recall(flat, x, ids, queries)
    assert recall_pq >= 0.95 and recall_pq >= recall_flat - 0.03
    # scores are exact inner products (re-ranked from full vectors), not PQ estimates
    q = queries[0]
    for chunk_id, score in pq.search(q, 10):
        assert score == pytest.approx(float(x[chunk_id] @ q), abs=1e-5)
    assert np.array_equal(pq.vectors_of([5, 11_000])[5], x[5])


def _no_decoding(*args: object) -> None:
    raise AssertionError("a PQ code was decoded: merges and retrains must read full vectors")


def test_merges_and_compaction_under_pq_keep_full_vectors_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = 64
    x = _mixture(9_000, d, 30, seed=3)
    index = _grown("pq", x, seal=512, step=256)
    assert len(index.sealed) >= 2  # tiers merged on the way
    for segment in index.sealed:  # as after a snapshot: full vectors served from their files
        assert isinstance(segment, PQSegment) and segment.full.in_memory
        segment.full.write(tmp_path / f"{segment.name}.vectors")
        segment.full.spill(tmp_path / f"{segment.name}.vectors")
        assert segment.full.mapped
    for name in ("reconstruct", "reconstruct_n", "sa_decode"):
        monkeypatch.setattr(faiss.IndexIVFPQ, name, _no_decoding)
    monkeypatch.setattr(faiss.ProductQuantizer, "decode", _no_decoding)
    index.remove(set(range(0, 4000)))
    rewritten = index.compact()
    assert rewritten and all(isinstance(s, PQSegment) for s in index.sealed)
    for segment in index.sealed:
        assert isinstance(segment, PQSegment)
        ids = segment.ids
        assert np.isin(ids, np.arange(4000)).sum() <= 0.3 * len(ids)
        # merged/compacted full vectors are bit-exact copies (PQ codes cannot reproduce them)
        assert np.array_equal(segment.full.gather(ids), x[ids])
        assert len(segment.full) == len(segment)
    alive = np.arange(4000, len(x))
    live_ids = set(index.live.ids.tolist())
    found = {i for i, _ in index.search(x[5000], 50)}
    assert not found & set(range(4000)) and 5000 in found
    assert len(index) == len(alive) and live_ids <= set(alive.tolist())


def test_retrain_under_pq_trains_new_codebooks_and_reencodes_from_full_vectors() -> None:
    d = 64
    x = _mixture(12_000, d, 30, seed=4)
    index = VectorIndex(d, seal_chunks=1000, codec="pq")
    index.add(np.arange(1000), x[:1000])
    index.maintain()
    first = index.sealed[0]
    assert isinstance(first, PQSegment)
    first_codebooks = faiss.vector_to_array(first.index.pq.centroids)
    for start in range(1000, len(x), 500):
        index.add(np.arange(start, start + 500), x[start : start + 500])
        index.maintain()
    assert index.trained_on >= 4000 and index.nlist > 1  # retrained at 4x growth
    assert all(isinstance(s, PQSegment) and s.index.nlist == index.nlist for s in index.sealed)
    codebooks = [faiss.vector_to_array(s.index.pq.centroids) for s in index.sealed if isinstance(s, PQSegment)]
    assert not np.array_equal(codebooks[0], first_codebooks)
    for segment in index.sealed:
        assert isinstance(segment, PQSegment)
        assert np.array_equal(segment.full.gather(segment.ids), x[segment.ids])
    assert _recall(index, x, np.arange(len(x)), _mixture(40, d, 30, seed=5)) >= 0.95


def test_full_vectors_file_round_trip_is_memory_mapped_and_truncation_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ids = rng.permutation(500).astype(np.int64)
    vectors = rng.standard_normal((500, 16)).astype(np.float32)
    store = FullVectors.from_arrays(ids, vectors)
    path = tmp_path / "s.vectors"
    store.write(path)
    store.spill(path)
    assert not store.in_memory and store.mapped and not store.vectors.flags.writeable
    assert np.array_equal(store.gather(ids[:7]), vectors[:7])
    with pytest.raises(KeyError, match="chunk 999"):
        store.gather(np.array([3, 999]))
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(SnapshotError, match="truncated or corrupt"):
        FullVectors.open(path)


def test_vector_codec_setting_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().vector_codec == "flat" and Settings.from_env().vector_codec == "flat"
    monkeypatch.setenv("SEMSEARCH_VECTOR_CODEC", " PQ ")
    assert Settings.from_env().vector_codec == "pq"
    monkeypatch.setenv("SEMSEARCH_VECTOR_CODEC", "ivfpq")
    with pytest.raises(SettingsError, match=r"SEMSEARCH_VECTOR_CODEC='ivfpq' is not one of flat, pq"):
        Settings.from_env()
    with pytest.raises(ValueError, match="unknown vector codec 'opq'"):
        make_codec("opq")


# -- through snapshots -----------------------------------------------------------------------
def _docs(start: int, stop: int) -> list[Document]:
    return [Document(f"v{i}", f"V {i}", f"vector note {i} about item {i % 97}", 1) for i in range(start, stop)]


def _grow(index: Index, cache: EmbeddingCache, start: int, stop: int) -> None:
    d = index.model.dimension
    centers = np.random.default_rng(0).standard_normal((30, d)).astype(np.float32)
    for lo in range(start, stop, 250):
        docs = _docs(lo, min(stop, lo + 250))
        rng = np.random.default_rng(lo)
        hashes = [c.content_hash for doc in docs for c in index.chunker.split(doc.full_text)]
        x = centers[rng.integers(0, 30, len(hashes))] + 0.5 * rng.standard_normal((len(hashes), d))
        x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
        cache.put_many(index.model.info.fingerprint, zip(hashes, x, strict=True))
        report = index.apply(docs)
        assert report.chunks_embedded == 0 and report.upserted == len(docs)


def _top(index: Index, queries: np.ndarray) -> list[list[int]]:
    with index.lock.reading():
        return [[i for i, _ in index.vectors.search(q, 10)] for q in queries]


def _queries(d: int) -> np.ndarray:
    q = np.random.default_rng(1).standard_normal((5, d)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_pq_generations_save_load_and_refresh_with_checksummed_full_vectors(
    model: EmbeddingModel, settings: Settings, cache: EmbeddingCache, tmp_path: Path
) -> None:
    pq = settings.with_overrides(vector_codec="pq")
    writer = Index.create(model, pq, cache)  # seal_chunks=64
    _grow(writer, cache, 0, 600)
    store = SnapshotStore(tmp_path / "idx", keep=3)
    gen1 = store.write(writer, {"docs": {0: 600}})
    assert gen1.segments and all(s["vectors"] == s["file"][: -len(".faiss")] + ".vectors" for s in gen1.segments)
    for entry in gen1.segments:
        assert entry["vectors"] in gen1.files and (store.root / entry["vectors"]).is_file()
    # written once, then served from the file's memory map instead of RAM
    assert all(isinstance(s, PQSegment) and not s.full.in_memory for s in writer.vectors.sealed)
    queries = _queries(model.dimension)
    expected = _top(writer, queries)

    reader, _ = store.load(model, settings)  # the reader's own codec setting does not matter
    assert all(isinstance(s, PQSegment) and s.full.mapped for s in reader.vectors.sealed)
    assert _top(reader, queries) == expected

    _grow(writer, cache, 600, 1400)  # more seals, merges and a retrain: new segments
    store.write(writer, {"docs": {0: 1400}})
    store.refresh(reader)
    assert _top(reader, queries) == _top(writer, queries)
    assert reader.vectors.nlist == writer.vectors.nlist > 1
    names = {s.name for s in writer.vectors.sealed}
    assert {p.stem for p in store.segments_dir.glob("*.vectors")} >= names


def test_a_corrupt_full_vectors_file_is_refused_by_readers_and_rebuilt_by_the_writer(
    model: EmbeddingModel, settings: Settings, cache: EmbeddingCache, tmp_path: Path
) -> None:
    pq = settings.with_overrides(vector_codec="pq")
    writer = Index.create(model, pq, cache)
    _grow(writer, cache, 0, 400)
    store = SnapshotStore(tmp_path / "idx", keep=3)
    store.write(writer, {"docs": {0: 400}})
    queries = _queries(model.dimension)
    expected = _top(writer, queries)
    victim = sorted(store.segments_dir.glob("*.vectors"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))

    with pytest.raises(SnapshotError, match="no loadable generation") as err:
        store.load(model, pq, fallback=True)
    assert victim.name in str(err.value) and "semsearch index" in str(err.value)

    repaired, manifest = store.load(model, pq, cache, repair=True)
    report = store.last_repair
    assert report is not None and report.corrupt == [f"segments/{victim.name}"]
    assert report.chunks > 0 and report.chunks_embedded == 0 and manifest.generation == 2
    assert _top(repaired, queries) == expected
    assert victim.stem not in {s["name"] for s in manifest.segments}
    reader, again = SnapshotStore(store.root).load(model, pq)
    assert again.generation == 2 and _top(reader, queries) == expected


def test_flat_is_the_default_and_writes_no_full_vectors(
    model: EmbeddingModel, settings: Settings, cache: EmbeddingCache, tmp_path: Path
) -> None:
    writer = Index.create(model, settings, cache)
    assert writer.vectors.codec.name == "flat"
    _grow(writer, cache, 0, 300)
    store = SnapshotStore(tmp_path / "idx", keep=3)
    manifest = store.write(writer, {})
    assert all(type(s) is SealedSegment for s in writer.vectors.sealed)
    assert manifest.segments and all("vectors" not in s for s in manifest.segments)
    assert not list(store.segments_dir.glob("*.vectors"))
    reader, _ = store.load(model, settings)
    assert all(type(s) is SealedSegment for s in reader.vectors.sealed)


def test_switching_codec_reencodes_at_the_next_merge_or_retrain(
    model: EmbeddingModel, settings: Settings, cache: EmbeddingCache, tmp_path: Path
) -> None:
    writer = Index.create(model, settings, cache)  # flat
    _grow(writer, cache, 0, 300)
    store = SnapshotStore(tmp_path / "idx", keep=3)
    store.write(writer, {})
    queries = _queries(model.dimension)

    switched, _ = store.load(model, settings.with_overrides(vector_codec="pq"), cache, repair=True)
    assert switched.vectors.codec.name == "pq"
    assert all(type(s) is SealedSegment for s in switched.vectors.sealed)  # still flat, searchable
    _grow(switched, cache, 300, 1400)  # seals, merges and a retrain re-encode everything
    assert switched.vectors.sealed and all(isinstance(s, PQSegment) for s in switched.vectors.sealed)
    store.write(switched, {})
    reader, _ = store.load(model, settings)
    assert _top(reader, queries) == _top(switched, queries)


def test_full_vectors_files_are_garbage_collected_with_their_segments(
    model: EmbeddingModel, settings: Settings, cache: EmbeddingCache, tmp_path: Path
) -> None:
    writer = Index.create(model, settings.with_overrides(vector_codec="pq"), cache)
    store = SnapshotStore(tmp_path / "idx", keep=2)
    _grow(writer, cache, 0, 300)
    first = {s["vectors"] for s in store.write(writer, {}).segments}
    _grow(writer, cache, 300, 1400)  # merges and a retrain replace the first segments
    store.write(writer, {})
    for path in store.segments_dir.iterdir():  # past GC's grace period for unreferenced files
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    last = store.write(writer, {})  # generation 1 falls out of the kept two
    kept = {s["vectors"] for g in store.generations() for s in store.read_manifest(g).segments}
    on_disk = {f"segments/{p.name}" for p in store.segments_dir.glob("*.vectors")}
    assert first - kept and not (first - kept) & on_disk  # the replaced ones are gone
    assert on_disk == kept and {s["vectors"] for s in last.segments} <= on_disk
    sidecars = {p.name[: -len(".sha256")] for p in store.segments_dir.glob("*.vectors.sha256")}
    assert sidecars == {p.name for p in store.segments_dir.glob("*.vectors")}  # removed together
