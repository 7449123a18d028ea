"""Vector segments: one small exact live segment, many immutable IVF segments.

Why segments: an IVF index takes appends, but rewriting a million-vector index to disk on every
snapshot is impossible. Sealed segments are written once and only referenced by later
generations; the live segment (bounded by `seal_chunks`) is persisted as a base plus one small
delta per generation (indexer/live_store.py), so a generation costs its change, not the live rows.
Deletes in sealed segments are tombstones applied at search time with a faiss ID selector.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

faiss.omp_set_num_threads(1)  # queries are small; threads are better spent on embedding


def search_preassigned(
    index: faiss.IndexIVF,
    queries: np.ndarray,
    k: int,
    assigned: tuple[np.ndarray, np.ndarray],
    params: faiss.SearchParametersIVF,
) -> tuple[np.ndarray, np.ndarray]:
    """Scan only the lists a shared quantizer chose for `queries` (lists, their scores);
    `params.nprobe` must be the number of columns of the assignment."""
    lists, coarse = assigned
    n = queries.shape[0]
    scores = np.empty((n, k), dtype=np.float32)
    ids = np.empty((n, k), dtype=np.int64)
    index.search_preassigned_c(  # type: ignore[attr-defined]
        n,
        faiss.swig_ptr(queries),
        k,
        faiss.swig_ptr(lists),
        faiss.swig_ptr(coarse),
        faiss.swig_ptr(scores),
        faiss.swig_ptr(ids),
        False,
        params,
    )
    return scores, ids


class LiveSegment:
    """Exact inner-product search over appended vectors; every append is searchable at once.

    Rows live in capacity-doubling buffers, so an append costs amortized O(its rows) instead of
    copying the whole segment per document; a delete moves the last row into the hole (two
    position updates), so it never renumbers the segment. Only the filled prefix is searched.

    Once the index has a quantizer the rows are also held in its lists (`use_lists`): a query
    then scans the nprobe lists it was assigned to, not all up to `seal_chunks` rows (0.8 ms per
    query at 8,192 x 384, measured; the whole budget at 1M chunks is 3 ms). Appends to faiss'
    inverted lists are amortized O(1); the buffers stay the source of truth (save, seal).

    Persistence (indexer/live_store.py): `chain` names the files (a base, then deltas) whose
    rows these rows were when last persisted; `_added` / `_removed` journal what changed since
    (O(1) per row), so the next generation writes only those rows and ids.
    """

    def __init__(self, dimension: int, capacity: int = 64) -> None:
        self.dimension = dimension
        self._ids = np.zeros(capacity, dtype=np.int64)
        self._vectors = np.zeros((capacity, dimension), dtype=np.float32)
        self._count = 0
        self._position: dict[int, int] = {}
        self._lists: faiss.IndexIVFFlat | None = None
        self.quantizer: faiss.Index | None = None  # the one `_lists` was assigned with
        # The persisted files these rows equal, plus the journal since (live_store.LiveChain).
        self.chain: object | None = None
        self._added: set[int] = set()  # ids added since `chain` (still present)
        self._removed: set[int] = set()  # ids of `chain` removed since

    def __len__(self) -> int:
        return self._count

    @property
    def nlist(self) -> int:
        """Lists of the quantizer the rows are assigned with (0: searched flat)."""
        return int(self._lists.nlist) if self._lists is not None else 0

    def lists_for(self, quantizer: faiss.Index, nlist: int) -> faiss.IndexIVFFlat:
        """The rows assigned to `quantizer`'s lists, for `use_lists` (this segment is unchanged)."""
        lists = faiss.IndexIVFFlat(quantizer, self.dimension, nlist, faiss.METRIC_INNER_PRODUCT)
        lists.is_trained = True  # trained for the whole index
        if self._count:
            lists.add_with_ids(np.ascontiguousarray(self.vectors), self.ids)
        return lists

    def use_lists(self, lists: faiss.IndexIVFFlat, quantizer: faiss.Index) -> None:
        if int(lists.ntotal) != self._count:
            raise ValueError(f"lists hold {lists.ntotal} rows, the live segment {self._count}")
        self._lists, self.quantizer = lists, quantizer

    def assign(self, quantizer: faiss.Index, nlist: int) -> None:
        """Hold the rows in `quantizer`'s lists too. Costs rows x nlist dot products (0.6 s for
        8,192 rows at 4,096 lists), so a loader calls it before taking the index's lock."""
        self.use_lists(self.lists_for(quantizer, nlist), quantizer)

    @property
    def ids(self) -> np.ndarray:
        return self._ids[: self._count]

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors[: self._count]

    def _reserve(self, needed: int) -> None:
        capacity = self._ids.shape[0]
        if needed <= capacity:
            return
        capacity = max(needed, 2 * capacity, 64)
        ids = np.zeros(capacity, dtype=np.int64)
        vectors = np.zeros((capacity, self.dimension), dtype=np.float32)
        ids[: self._count] = self._ids[: self._count]
        vectors[: self._count] = self._vectors[: self._count]
        self._ids, self._vectors = ids, vectors

    def add(self, ids: np.ndarray, vectors: np.ndarray, assigned: np.ndarray | None = None) -> None:
        """`assigned`: each row's list in the current quantizer, computed by the caller before
        it took the index's lock (`assign_rows`), so the lock is not held for the dot products."""
        n = int(ids.shape[0])
        if n == 0:
            return
        base = self._count
        self._reserve(base + n)
        self._ids[base : base + n] = ids
        self._vectors[base : base + n] = vectors
        self._count = base + n
        listed = ids.tolist()
        for offset, chunk_id in enumerate(listed):
            self._position[chunk_id] = base + offset
        self._added.update(listed)
        if self._lists is not None:
            x = np.ascontiguousarray(vectors, dtype=np.float32)
            xids = np.ascontiguousarray(ids, dtype=np.int64)
            if assigned is None:
                self._lists.add_with_ids(x, xids)
            else:
                lists = np.ascontiguousarray(assigned, dtype=np.int64)
                if lists.shape != (n,):
                    raise ValueError(f"{lists.shape[0]} list assignments for {n} rows")
                self._lists.add_core(
                    n, faiss.swig_ptr(x), faiss.swig_ptr(xids), faiss.swig_ptr(lists)
                )

    def assign_rows(self, vectors: np.ndarray) -> np.ndarray | None:
        """The list of each row in the quantizer this segment is held in (None: searched flat)."""
        if self.quantizer is None or self._lists is None or not len(vectors):
            return None
        _, lists = self.quantizer.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)
        return np.ascontiguousarray(lists.reshape(-1), dtype=np.int64)

    def remove(self, ids: set[int]) -> int:
        removed = 0
        gone: list[int] = []
        for chunk_id in ids:
            position = self._position.pop(chunk_id, None)
            if position is None:
                continue
            gone.append(chunk_id)
            if chunk_id in self._added:
                self._added.discard(chunk_id)  # never persisted: nothing to record
            else:
                self._removed.add(chunk_id)
            last = self._count - 1
            if position != last:
                moved = int(self._ids[last])
                self._ids[position] = moved
                self._vectors[position] = self._vectors[last]
                self._position[moved] = position
            self._count = last
            removed += 1
        if self._lists is not None and gone:
            doomed = np.asarray(gone, dtype=np.int64)
            # one pass over the lists per call (O(live rows)), not per id
            self._lists.remove_ids(faiss.IDSelectorBatch(len(doomed), faiss.swig_ptr(doomed)))
        return removed

    def contains(self, chunk_id: int) -> bool:
        return chunk_id in self._position

    def vector(self, chunk_id: int) -> np.ndarray:
        return self._vectors[self._position[chunk_id]].copy()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = self._count
        if n == 0 or k <= 0:
            empty = np.zeros((queries.shape[0], 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        # faiss' own single-threaded scan, not numpy's BLAS: a 1-row GEMM there wakes OpenBLAS
        # worker threads, which on a busy 2-core machine cost ~10 ms per query (measured).
        scores, rows = faiss.knn(
            np.ascontiguousarray(queries, dtype=np.float32),
            self._vectors[:n],
            min(k, n),
            metric=faiss.METRIC_INNER_PRODUCT,
        )
        return scores, self._ids[:n][rows]

    def search_assigned(
        self,
        queries: np.ndarray,
        k: int,
        assigned: tuple[np.ndarray, np.ndarray],
        params: faiss.SearchParametersIVF,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scan the assigned lists (requires `use_lists` with the quantizer that assigned)."""
        if self._lists is None:
            raise ValueError("the live segment has no lists; search() scans it flat")
        return search_preassigned(self._lists, queries, k, assigned, params)

    # -- persistence journal (indexer/live_store.py) -------------------------------------
    def journal(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids added since `chain`, in row order of their positions; ids of `chain` removed)."""
        added = np.fromiter(self._added, dtype=np.int64, count=len(self._added))
        if len(added):
            positions = np.fromiter(
                (self._position[i] for i in added.tolist()), dtype=np.int64, count=len(added)
            )
            added = added[np.argsort(positions, kind="stable")]
        removed = np.fromiter(sorted(self._removed), dtype=np.int64, count=len(self._removed))
        return added, removed

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Copies of the vectors of present `ids`."""
        positions = np.fromiter(
            (self._position[i] for i in ids.tolist()), dtype=np.int64, count=len(ids)
        )
        return self._vectors[positions].copy()

    def persisted(self, chain: object, added: np.ndarray, removed: np.ndarray) -> None:
        """`chain` now holds the rows; `added`/`removed` (a `journal()` taken when they were
        written) leave the journal. A row added then and removed since stays a removal."""
        listed = added.tolist()
        self._added.difference_update(listed)
        self._removed.difference_update(removed.tolist())
        self._removed.update(i for i in listed if i not in self._position)
        self.chain = chain

    def adopt_chain(self, chain: object) -> None:
        """These rows are exactly `chain`'s (just loaded from it): the journal starts empty."""
        self._added.clear()
        self._removed.clear()
        self.chain = chain

    def clean(self) -> bool:
        """Nothing changed since `chain` was persisted (or loaded)."""
        return self.chain is not None and not self._added and not self._removed

    def save(self, path: Path) -> None:
        """The whole segment as one file (the layout before deltas; tests and tools)."""
        with path.open("wb") as handle:
            np.savez(handle, ids=self.ids, vectors=self.vectors)

    @classmethod
    def load(cls, path: Path, dimension: int) -> LiveSegment:
        """A whole-segment file (`save`, and `GEN/live.npz` of generations before deltas)."""
        with np.load(path) as data:
            ids, vectors = data["ids"], data["vectors"]
            segment = cls(dimension, capacity=max(64, int(ids.shape[0])))
            segment.add(ids, vectors)
        return segment


class SealedSegment:
    """An immutable IVF segment assigned with the index's shared coarse quantizer: IVF-flat
    here, IVF-PQ with exact re-ranking in indexer/vector_codec.py (PQSegment)."""

    def __init__(self, name: str, index: faiss.IndexIVF) -> None:
        self.name = name
        self.index = index
        if isinstance(index, faiss.IndexIVFFlat):  # reconstruct(); PQ reads its full vectors
            self.index.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
        self._sizes = self._list_sizes()
        self._ids = self._all_ids()

    @classmethod
    def build(
        cls,
        name: str,
        quantizer: faiss.IndexFlatIP,
        nlist: int,
        ids: np.ndarray,
        vectors: np.ndarray,
    ) -> SealedSegment:
        ivf = faiss.IndexIVFFlat(quantizer, quantizer.d, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.is_trained = True  # the quantizer is trained for the whole index
        ivf.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
        return cls(name, ivf)

    @classmethod
    def merge(
        cls,
        name: str,
        quantizer: faiss.IndexFlatIP,
        sources: list[SealedSegment],
        dead: np.ndarray,
    ) -> SealedSegment:
        """One segment holding the alive vectors of `sources`, copied list by list.

        The sources share `quantizer`, so no vector is re-assigned: merging costs a copy of
        the vectors, not a pass through the quantizer.
        """
        nlist = sources[0].index.nlist
        ivf = faiss.IndexIVFFlat(quantizer, quantizer.d, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.is_trained = True
        parts = []
        for source in sources:
            if source.index.nlist != nlist:
                raise ValueError(f"{source.name} has {source.index.nlist} lists, not {nlist}")
            ids, vectors = source.contents()
            keep = ~np.isin(ids, dead) if len(dead) else np.ones(len(ids), dtype=bool)
            offsets = np.concatenate([[0], np.cumsum(source._sizes)])
            parts.append((ids, vectors, keep, offsets))
        invlists = ivf.invlists
        assert invlists is not None
        total = 0
        for list_no in range(nlist):
            id_parts, vector_parts = [], []
            for ids, vectors, keep, offsets in parts:
                lo, hi = int(offsets[list_no]), int(offsets[list_no + 1])
                if hi > lo:
                    mask = keep[lo:hi]
                    id_parts.append(ids[lo:hi][mask])
                    vector_parts.append(vectors[lo:hi][mask])
            if not id_parts:
                continue
            list_ids = np.ascontiguousarray(np.concatenate(id_parts), dtype=np.int64)
            if not len(list_ids):
                continue
            codes = np.ascontiguousarray(np.concatenate(vector_parts), dtype=np.float32)
            invlists.add_entries(
                list_no, len(list_ids), faiss.swig_ptr(list_ids), faiss.swig_ptr(codes.view(np.uint8))
            )
            total += len(list_ids)
        ivf.ntotal = total
        return cls(name, ivf)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def ids(self) -> np.ndarray:
        return self._ids

    def list_sizes(self) -> np.ndarray:
        return self._sizes

    def _list_sizes(self) -> np.ndarray:
        invlists = self.index.invlists
        assert invlists is not None
        return np.fromiter(
            (invlists.list_size(i) for i in range(self.index.nlist)),
            dtype=np.int64,
            count=self.index.nlist,
        )

    def _all_ids(self) -> np.ndarray:
        invlists = self.index.invlists
        assert invlists is not None
        parts = []
        for list_no in np.flatnonzero(self._sizes).tolist():
            size = int(self._sizes[list_no])
            parts.append(faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy())
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) in list order (the order of `ids`), copied out of the inverted lists."""
        invlists = self.index.invlists
        assert invlists is not None
        d = self.index.d
        vectors = np.empty((len(self._ids), d), dtype=np.float32)
        at = 0
        for list_no in np.flatnonzero(self._sizes).tolist():
            size = int(self._sizes[list_no])
            codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), size * d * 4)
            vectors[at : at + size] = codes.view(np.float32).reshape(size, d)
            at += size
        return self._ids, vectors

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """One reconstruct_batch call (a filtered search gathers up to ~2,000 vectors: per id,
        SWIG's call overhead was 4x the copy)."""
        if not len(ids):
            return np.zeros((0, self.index.d), dtype=np.float32)
        return self.index.reconstruct_batch(np.ascontiguousarray(ids, dtype=np.int64))

    def search(
        self, queries: np.ndarray, k: int, nprobe: int, exclude: faiss.IDSelector | None
    ) -> tuple[np.ndarray, np.ndarray]:
        params = faiss.SearchParametersIVF()
        params.nprobe = min(nprobe, self.index.nlist)
        if exclude is not None:
            params.sel = exclude
        scores, ids = self.index.search(queries, k, params=params)
        return scores, ids

    @staticmethod
    def assigned_params(nprobe: int, exclude: faiss.IDSelector | None) -> faiss.SearchParametersIVF:
        """Parameters for `search_assigned`, built once per query for all segments."""
        params = faiss.SearchParametersIVF()
        params.nprobe = nprobe
        if exclude is not None:
            params.sel = exclude
        return params

    def search_assigned(
        self,
        queries: np.ndarray,
        k: int,
        assigned: tuple[np.ndarray, np.ndarray],
        params: faiss.SearchParametersIVF,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scan only the lists the shared quantizer chose for `queries` (lists, their scores);
        `params.nprobe` must be the number of columns of the assignment."""
        return search_preassigned(self.index, queries, k, assigned, params)

    def save(self, path: Path) -> None:
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, name: str, path: Path) -> SealedSegment:
        index = faiss.read_index(str(path))
        if not isinstance(index, faiss.IndexIVFFlat):
            raise ValueError(f"{path} is not an IVF-flat segment")
        return cls(name, index)
