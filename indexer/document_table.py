"""DocumentTable: what the index keeps in RAM of its documents, over the SQLite store.

Only what the hot paths need per chunk and per document: chunk id -> owning document slot (an
int32 array) and doc id -> (slot, version), the versions of deleted documents (staleness
checks), and the records changed since the last generation (pending, written by the next one).
Text, titles and metadata are read from the store for the hits of a query; metadata is also
indexed by value (indexer/metadata_index.py) so that a filtered search finds its documents, and
each slot remembers its chunk ids (a first id and a count: `Index` numbers a document's chunks
consecutively), so a filter's documents become chunk ids in time proportional to them.
"""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from contracts.errors import SnapshotError
from indexer.document_store import DocumentStore, HitRecord, StoreChanges, StoreStats
from indexer.documents import ChunkRecord, DocumentRecord
from indexer.filters import Filter
from indexer.metadata_index import MetadataIndex

_UNKNOWN: Any = object()


@dataclass(frozen=True, eq=False)
class Allowed:
    """What a filter lets through, at one moment (read under the index's read lock)."""

    slots: np.ndarray  # the documents' slots, sorted (int64, read-only: may be shared)
    chunk_ids: np.ndarray  # their chunks, sorted (int64): what the legs search within

    def __len__(self) -> int:
        return int(self.slots.shape[0])

    def __contains__(self, slot: object) -> bool:
        if not isinstance(slot, int) or not self.slots.shape[0]:
            return False
        at = int(np.searchsorted(self.slots, slot))
        return at < self.slots.shape[0] and int(self.slots[at]) == slot


def _chunk_ids(record: DocumentRecord) -> range | list[int]:
    """A record's chunk ids, as a range when consecutive (they are, as `Index` numbers them)."""
    ids = [c.chunk_id for c in record.chunks]
    if ids and ids[-1] - ids[0] == len(ids) - 1 and ids == list(range(ids[0], ids[-1] + 1)):
        return range(ids[0], ids[-1] + 1)
    return ids


class DocumentTable:
    """doc_id → live record, plus the versions of deleted documents.

    Deleted versions are remembered so that a late, older upsert cannot resurrect a document
    (replays and out-of-order delivery change nothing).

    Records are held in RAM only until the next generation commits them (`pending`); after that
    they are read from the store at the table's generation. A table with no store (a fresh index)
    holds everything pending.
    """

    def __init__(self) -> None:
        self._slot: dict[str, int] = {}
        self._ids: list[str | None] = []
        self._versions = array("q")
        self._free: list[int] = []
        self._chunk_owner = np.full(1024, -1, dtype=np.int32)
        self._chunks = 0
        # Per slot: first chunk id and chunk count (-1: the ids are in `_irregular`).
        self._first = np.zeros(1024, dtype=np.int64)
        self._count = np.zeros(1024, dtype=np.int64)
        self._irregular: dict[int, np.ndarray] = {}
        self.metadata = MetadataIndex()
        self._deleted: dict[str, int] = {}
        # Changed since `generation`: the record, or None for a document no longer live.
        self._pending: dict[str, DocumentRecord | None] = {}
        self.store: DocumentStore | None = None
        self.generation: int | None = None
        self._committing: dict[str, DocumentRecord | None] = {}

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._slot

    def __iter__(self) -> Iterator[DocumentRecord]:
        """Every live record: the pending ones, then the store's, streamed (never all in RAM)."""
        pending = dict(self._pending)
        for record in pending.values():
            if record is not None:
                yield record
        if self.store is None or self.generation is None:
            return
        for record in self.store.records(self.generation):
            if record.doc_id not in pending:
                yield record

    # -- RAM maps -------------------------------------------------------------------------
    def _ensure_chunks(self, chunk_id: int) -> None:
        if chunk_id >= self._chunk_owner.shape[0]:
            size = max(chunk_id + 1, self._chunk_owner.shape[0] * 2)
            grown = np.full(size, -1, dtype=np.int32)
            grown[: self._chunk_owner.shape[0]] = self._chunk_owner
            self._chunk_owner = grown

    def _ensure_slots(self, size: int) -> None:
        if size > self._first.shape[0]:
            size = max(size, 2 * self._first.shape[0])
            for name in ("_first", "_count"):
                old = getattr(self, name)
                grown = np.zeros(size, dtype=np.int64)
                grown[: old.shape[0]] = old
                setattr(self, name, grown)

    def _set_chunks(self, slot: int, chunk_ids: range | np.ndarray) -> None:
        self._ensure_slots(slot + 1)
        self._irregular.pop(slot, None)
        if isinstance(chunk_ids, range):
            self._first[slot], self._count[slot] = chunk_ids.start, len(chunk_ids)
            return
        ids = np.asarray(chunk_ids, dtype=np.int64)
        if ids.size and int(ids[-1]) - int(ids[0]) == ids.size - 1 and (np.diff(ids) == 1).all():
            self._first[slot], self._count[slot] = int(ids[0]), ids.size
        elif not ids.size:
            self._first[slot], self._count[slot] = 0, 0
        else:
            self._first[slot], self._count[slot] = 0, -1
            self._irregular[slot] = ids.copy()

    def _link(
        self, doc_id: str, version: int, chunk_ids: Iterable[int], metadata: dict[str, Any]
    ) -> None:
        slot = self._slot.get(doc_id)
        if slot is None:
            if self._free:
                slot = self._free.pop()
                self._ids[slot] = doc_id
                self._versions[slot] = version
            else:
                slot = len(self._ids)
                self._ids.append(doc_id)
                self._versions.append(version)
            self._slot[doc_id] = slot
        else:
            self._versions[slot] = version
        self.metadata.add(slot, metadata)
        if isinstance(chunk_ids, range) and chunk_ids.step == 1:
            # The common case (`put` of freshly numbered chunks): slices, no index arrays.
            self._set_chunks(slot, chunk_ids)
            if chunk_ids:
                self._ensure_chunks(chunk_ids.stop - 1)
                owners = self._chunk_owner[chunk_ids.start : chunk_ids.stop]
                self._chunks += int(np.count_nonzero(owners != slot))
                owners[:] = slot
            return
        ids = np.asarray(
            chunk_ids if isinstance(chunk_ids, np.ndarray) else list(chunk_ids), dtype=np.int64
        )
        self._set_chunks(slot, ids)
        if ids.size:
            self._ensure_chunks(int(ids.max()))
            self._chunks += int(np.count_nonzero(self._chunk_owner[ids] != slot))
            self._chunk_owner[ids] = slot

    def _bulk_link(self, rows: Iterable[tuple[str, int, np.ndarray, dict[str, Any]]]) -> None:
        """`_link` for a fresh table, vectorized: one owner-array assignment for all chunks
        (a restart at 1M chunks must not pay numpy's per-call overhead per document)."""
        assert not self._slot
        parts: list[np.ndarray] = []
        counts = array("q")
        firsts = array("q")
        described: list[tuple[int, dict[str, Any]]] = []  # slots with metadata
        for doc_id, version, chunk_ids, metadata in rows:
            slot = len(self._ids)
            self._slot[doc_id] = slot
            self._ids.append(doc_id)
            self._versions.append(version)
            if metadata:
                described.append((slot, metadata))
            parts.append(chunk_ids)
            counts.append(chunk_ids.shape[0])
            firsts.append(int(chunk_ids[0]) if chunk_ids.shape[0] else 0)
        self.metadata.add_bulk(len(parts), described)
        if not parts:
            return
        ids = np.concatenate(parts)
        count = np.frombuffer(counts, np.int64)
        self._ensure_slots(len(parts))
        self._first[: len(parts)] = np.frombuffer(firsts, np.int64)
        self._count[: len(parts)] = count
        if ids.size:
            slots = np.repeat(np.arange(len(parts), dtype=np.int32), count)
            # Documents whose ids are not first, first + 1, ... keep them listed (`_set_chunks`).
            expected = np.repeat(self._first[: len(parts)] - (np.cumsum(count) - count), count)
            expected += np.arange(ids.size)
            for slot in np.unique(slots[ids != expected]).tolist():
                self._set_chunks(slot, parts[slot])
            self._ensure_chunks(int(ids.max()))
            self._chunk_owner[ids] = slots
            # Distinct ids, without sorting them (np.unique): the table was empty, so the
            # owned entries are exactly the ids just linked.
            self._chunks = int(np.count_nonzero(self._chunk_owner >= 0))

    def _unlink(self, doc_id: str, chunk_ids: Iterable[int]) -> None:
        slot = self._slot.pop(doc_id, None)
        if slot is None:
            return
        ids = np.asarray(list(chunk_ids), dtype=np.int64)
        ids = ids[ids < self._chunk_owner.shape[0]]
        mine = ids[self._chunk_owner[ids] == slot]
        self._chunk_owner[mine] = -1
        self._chunks -= int(mine.size)
        self.metadata.remove(slot)
        self._irregular.pop(slot, None)
        self._count[slot] = 0
        self._ids[slot] = None
        self._free.append(slot)

    def ram_bytes(self) -> int:
        """Approximate bytes the RAM maps take (the bench divides it by the chunk count)."""
        ids = sum(sys.getsizeof(d) for d in self._slot)
        return (
            self._chunk_owner.nbytes
            + self._first.nbytes
            + self._count.nbytes
            + self._versions.itemsize * len(self._versions)
            + sys.getsizeof(self._slot)
            + sys.getsizeof(self._ids)
            + ids
            + sys.getsizeof(self._deleted)
        )

    # -- reading --------------------------------------------------------------------------
    def get(self, doc_id: str) -> DocumentRecord | None:
        if doc_id in self._pending:
            return self._pending[doc_id]
        if doc_id not in self._slot or self.store is None or self.generation is None:
            return None
        return self.store.fetch([doc_id], self.generation).get(doc_id)

    def get_many(self, doc_ids: Iterable[str]) -> dict[str, DocumentRecord]:
        """Records of `doc_ids` that are live, in one store query (the k hits of a search)."""
        found: dict[str, DocumentRecord] = {}
        wanted = []
        for doc_id in doc_ids:
            if doc_id in self._pending:
                record = self._pending[doc_id]
                if record is not None:
                    found[doc_id] = record
            elif doc_id in self._slot:
                wanted.append(doc_id)
        if wanted and self.store is not None and self.generation is not None:
            found.update(self.store.fetch(wanted, self.generation))
        return found

    def hits(self, doc_ids: Sequence[str]) -> dict[str, HitRecord]:
        """What the hits of a search show of `doc_ids` (those live), in one store query: title,
        text and metadata, the chunk spans unparsed until a snippet needs one (HitRecord)."""
        found: dict[str, HitRecord] = {}
        wanted = []
        pending = self._pending
        for doc_id in doc_ids:
            if doc_id in pending:
                record = pending[doc_id]
                if record is not None:
                    found[doc_id] = HitRecord.of(record)
            elif doc_id in self._slot:
                wanted.append(doc_id)
        if wanted and self.store is not None and self.generation is not None:
            found.update(self.store.fetch_hits(wanted, self.generation))
        return found

    def held_version(self, doc_id: str) -> int | None:
        """The newest version seen for a document, live or deleted."""
        slot = self._slot.get(doc_id)
        if slot is not None:
            return int(self._versions[slot])
        return self._deleted.get(doc_id)

    def is_stale(self, doc_id: str, version: int) -> bool:
        held = self.held_version(doc_id)
        return held is not None and version <= held

    def owner_id(self, chunk_id: int) -> str | None:
        """The doc id a vector id belongs to, from RAM (the per-candidate path of a search)."""
        if chunk_id < 0 or chunk_id >= self._chunk_owner.shape[0]:
            return None
        slot = int(self._chunk_owner[chunk_id])
        return None if slot < 0 else self._ids[slot]

    def owner_ids(self, chunk_ids: Sequence[int] | np.ndarray) -> list[str | None]:
        """`owner_id` of many chunks with one gather (a search resolves ~100 candidates per leg:
        one numpy call instead of a scalar index, an int() and a bounds check per chunk)."""
        ids = np.asarray(chunk_ids, dtype=np.int64)
        owner = self._chunk_owner
        inside = (ids >= 0) & (ids < owner.shape[0])
        if inside.all():
            slots = owner[ids]
        else:
            slots = np.full(ids.shape, -1, dtype=np.int32)
            slots[inside] = owner[ids[inside]]
        names = self._ids
        return [None if slot < 0 else names[slot] for slot in slots.tolist()]

    def owner(self, chunk_id: int) -> tuple[DocumentRecord, ChunkRecord] | None:
        """The document and chunk a vector id belongs to, if it is still live."""
        doc_id = self.owner_id(chunk_id)
        record = self.get(doc_id) if doc_id is not None else None
        if record is None:
            return None
        chunk = next((c for c in record.chunks if c.chunk_id == chunk_id), None)
        return None if chunk is None else (record, chunk)

    # -- filters --------------------------------------------------------------------------
    def allowed(self, where: Filter) -> Allowed:
        """The live documents that pass `where`, and their chunk ids: O(what matches)."""
        slots = self.metadata.evaluate_slots(where)
        return Allowed(slots, self.chunks_of(slots))

    def admits(self, allowed: Allowed, doc_id: str) -> bool:
        return self._slot.get(doc_id) in allowed

    def slot_of(self, doc_id: str) -> int | None:
        return self._slot.get(doc_id)

    def chunks_of(self, slots: Iterable[int] | np.ndarray) -> np.ndarray:
        """The chunk ids of `slots`, sorted: O(their chunks), no scan of the owner map."""
        wanted = (
            slots.astype(np.int64, copy=False)
            if isinstance(slots, np.ndarray)
            else np.fromiter(slots, dtype=np.int64)
        )
        if not wanted.size:
            return np.zeros(0, np.int64)
        first, count = self._first[wanted], self._count[wanted]
        regular = count >= 0
        parts = []
        if not regular.all():
            parts = [self._irregular[s] for s in wanted[~regular].tolist()]
            first, count = first[regular], count[regular]
        total = int(count.sum())
        ids = np.repeat(first - (np.cumsum(count) - count), count) + np.arange(total)
        if parts:
            ids = np.concatenate([ids, *parts])
        ids.sort()
        return ids

    @property
    def chunk_count(self) -> int:
        return self._chunks

    @property
    def deleted_versions(self) -> dict[str, int]:
        return dict(self._deleted)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    # -- writing --------------------------------------------------------------------------
    def put(self, record: DocumentRecord, previous: Any = _UNKNOWN) -> DocumentRecord | None:
        """Make `record` live. `previous` (what `get` returned, if the caller has it) saves a
        store read."""
        if previous is _UNKNOWN:
            previous = self.get(record.doc_id)
        if previous is not None:
            self._unlink(previous.doc_id, (c.chunk_id for c in previous.chunks))
        self._link(record.doc_id, record.version, _chunk_ids(record), record.metadata)
        self._deleted.pop(record.doc_id, None)
        self._pending[record.doc_id] = record
        return previous

    def remove(
        self, doc_id: str, version: int | None, previous: Any = _UNKNOWN
    ) -> DocumentRecord | None:
        if previous is _UNKNOWN:
            previous = self.get(doc_id)
        if previous is not None:
            self._unlink(doc_id, (c.chunk_id for c in previous.chunks))
        held = previous.version if previous is not None else self._deleted.get(doc_id)
        candidates = [v for v in (held, version) if v is not None]
        self._deleted[doc_id] = max(candidates) if candidates else 0
        self._pending[doc_id] = None
        return previous

    # -- persistence ----------------------------------------------------------------------
    def stats(self, generation: int) -> StoreStats:
        return StoreStats(generation, len(self._slot), self._chunks, len(self._deleted))

    def commit(self, store: DocumentStore, generation: int, previous: int) -> StoreStats:
        """Write generation `generation` into `store` in one transaction; O(changed documents)
        when this table follows `store` at the newest manifest's generation `previous`.

        The table is not moved to the new generation here: `committed` does that once the
        manifest is published (a failed publish leaves the table as it was, pending included).
        """
        stats = self.stats(generation)
        pending = dict(self._pending)
        follows = store.same_file(self.store) and self.generation is not None
        if follows and self.generation != previous:
            # Loaded from an older generation (the newest manifest was unreadable): the rows
            # committed since then are undone by writing this table's state for those ids.
            assert self.generation is not None
            behind = store.changed_ids(self.generation, previous) - pending.keys()
            held = store.fetch(behind, self.generation)
            for doc_id in behind:
                pending[doc_id] = held.get(doc_id)
        if follows:
            upserts = [r for r in pending.values() if r is not None]
            removed = [d for d, r in pending.items() if r is None and d not in self._deleted]
            deleted = {
                d: self._deleted[d] for d, r in pending.items() if r is None and d in self._deleted
            }
            store.commit(generation, previous, upserts, removed, deleted, stats)
        else:
            store.commit(
                generation, previous, iter(self), [], dict(self._deleted), stats, replace_all=True
            )
        self._committing = pending
        return stats

    def committed(self, store: DocumentStore, generation: int) -> None:
        """The manifest of `generation` is published: follow `store` there, drop what it holds."""
        written, self._committing = self._committing, {}
        if not store.same_file(self.store):
            self.store = store
        self.generation = generation
        for doc_id, record in written.items():
            if doc_id in self._pending and self._pending[doc_id] is record:
                del self._pending[doc_id]

    @classmethod
    def open(
        cls, store: DocumentStore, generation: int, expected: dict[str, Any] | None
    ) -> DocumentTable:
        """The table at `generation`: RAM maps built from (doc_id, version, chunk ids) only."""
        table = cls()
        stats = store.stats(generation)
        if stats is None:
            raise SnapshotError(
                f"{store.path} does not contain generation {generation} (its newest commit was "
                "lost or rolled back): load an older generation, or rebuild the index "
                "(`semsearch build`) or re-consume it (`semsearch index`)"
            )
        table._bulk_link(store.scan(generation))
        table._deleted = store.deleted(generation)
        found = table.stats(generation)
        if found != stats or (
            expected is not None
            and (expected.get("documents"), expected.get("chunks"))
            != (found.documents, found.chunks)
        ):
            raise store.corrupt(
                ValueError(
                    f"generation {generation} should hold {stats.documents} documents / "
                    f"{stats.chunks} chunks, found {found.documents} / {found.chunks}"
                )
            )
        table.store = store
        table.generation = generation
        return table

    def delta(self, store: DocumentStore, generation: int) -> StoreChanges | None:
        """The rows that changed between this table's generation and a newer `generation`
        (reads only: the caller applies them under its lock with `apply_delta`), or None when no
        delta can be had (pending changes, another store, the old generation was collected) and
        the table must be reopened in full."""
        old = self.generation
        if old is None or self._pending or not store.same_file(self.store):
            return None
        if generation == old:
            return StoreChanges([], [], {}, set())
        oldest = store.oldest_generation()
        if generation < old or oldest is None or oldest > old:
            return None
        if store.stats(generation) is None:
            raise SnapshotError(
                f"{store.path} does not contain generation {generation}; rebuild the index "
                "(`semsearch build`) or re-consume it (`semsearch index`)"
            )
        return store.changes(old, generation)

    def apply_delta(self, changes: StoreChanges, generation: int) -> None:
        for record in changes.ended:
            self._unlink(record.doc_id, (c.chunk_id for c in record.chunks))
        for record in changes.added:
            self._link(
                record.doc_id, record.version, (c.chunk_id for c in record.chunks), record.metadata
            )
        for doc_id in changes.undeleted:
            self._deleted.pop(doc_id, None)
        self._deleted.update(changes.deleted)
        self.generation = generation

    # -- format 1 (gen-*/documents.jsonl) -------------------------------------------------
    def dump(self, out: TextIO) -> None:
        """Write one JSON line per document (format 1; an export, not the storage format)."""
        for record in self:
            row = record.to_json()
            try:
                out.write(json.dumps(row, ensure_ascii=False))
            except UnicodeEncodeError:
                out.write(json.dumps(row, ensure_ascii=True))
            out.write("\n")
        out.write(json.dumps({"deleted": self._deleted}))
        out.write("\n")

    @classmethod
    def load(cls, path: Path) -> DocumentTable:
        """A format-1 documents.jsonl, all pending: the next generation writes it to the store."""
        table = cls()
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                if "deleted" in row and "doc_id" not in row:
                    table._deleted.update({k: int(v) for k, v in row["deleted"].items()})
                else:
                    table.put(DocumentRecord.from_json(row), previous=None)
        for doc_id in table._deleted:
            table._pending.setdefault(doc_id, None)
        return table
