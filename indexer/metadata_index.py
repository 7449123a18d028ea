"""The metadata index: (field, value) -> document slots, so a filter costs what it matches.

A search with a `where` filter (indexer/filters.py) must not read every document's metadata:
at 1M chunks that is a SQLite scan and a JSON parse per document per query. Instead each
top-level metadata field keeps an inverted index from value to the slots (DocumentTable's
dense document numbers) holding it, maintained on every put/remove of a document (O(its
fields)), and each field's numeric values are also kept sorted, so a range is two binary
searches plus the postings it covers.

Postings are sorted int64 arrays (indexer/slot_sets.py does the algebra in numpy) with small
add/remove deltas as Python sets, folded into the array the next time a filter reads it: a
change costs O(1), a read costs what the key holds. A filter matching half of 447k documents
was ~20 ms of Python set copies per query; as arrays it is a few ms.

Evaluation never materialises a complement until the end: $ne/$nin/negated branches travel as
"everything except S", $and subtracts them from its positive part, so
{"lang": "en", "year": {"$ne": 2020}} costs |en| + |2020|, not the corpus. Only a filter whose
answer is itself a complement (a bare $ne) pays O(live documents).

Persistence: the values are the documents' metadata, already written per change in the
document store (indexer/document_store.py), so a generation costs what changed; the index is
rebuilt from the metadata column when a table is opened (`add_bulk`: one pass collecting
(key, slot) pairs, then one argsort, no per-key Python sets) and follows a reader's deltas.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from indexer import slot_sets
from indexer.filters import And, Compare, Filter, Member, Or, Scalar, value_key

Key = tuple[str, Scalar]
_ScalarTypes = (str, bool, int, float)


def _entries(metadata: Mapping[str, Any]) -> list[tuple[str, Key]]:
    """(field, key) pairs a document is indexed under: scalars, and each scalar of a list."""
    entries: list[tuple[str, Key]] = []
    for field, value in metadata.items():
        if isinstance(value, list):
            seen: set[Key] = set()
            for item in value:
                if item is None or isinstance(item, _ScalarTypes):
                    key = value_key(item)
                    if key not in seen:
                        seen.add(key)
                        entries.append((field, key))
        elif value is None or isinstance(value, _ScalarTypes):
            entries.append((field, value_key(value)))
    return entries


def _number(key: Key) -> int | float | None:
    """The number a key stands for (ranges walk them in order), None for other kinds."""
    kind, value = key
    return value if kind == "n" and isinstance(value, int | float) else None


class _Postings:
    """The slots of one (field, value): a sorted array plus deltas since it was last read.

    Writers (under the index's write lock) mutate the deltas; readers (concurrent, under the
    read lock) fold them into a new array and publish it as one tuple assignment, so a reader
    sees either the old (array, added, removed) or the new one, never a mix.
    """

    __slots__ = ("state",)

    def __init__(self, base: np.ndarray = slot_sets.EMPTY) -> None:
        # (sorted slots, added: not in them, removed: a subset of them)
        self.state: tuple[np.ndarray, set[int], set[int]] = (base, set(), set())

    def __len__(self) -> int:
        base, added, removed = self.state
        return int(base.shape[0]) - len(removed) + len(added)

    def add(self, slot: int) -> None:
        _, added, removed = self.state
        if slot in removed:
            removed.discard(slot)
        else:
            added.add(slot)

    def discard(self, slot: int) -> None:
        """`slot` must be held (the index only discards what it recorded for the slot)."""
        _, added, removed = self.state
        if slot in added:
            added.discard(slot)
        else:
            removed.add(slot)

    def slots(self) -> np.ndarray:
        base, added, removed = self.state
        if not added and not removed:
            return base
        if removed:
            base = base[~slot_sets.member(base, slot_sets.from_ints(removed))]
        if added:
            base = np.union1d(base, slot_sets.from_ints(added))
        base.flags.writeable = False
        self.state = (base, set(), set())
        return base


class _Field:
    """One field: value key -> postings, and its distinct numbers in order (for ranges)."""

    __slots__ = ("numbers", "postings")

    def __init__(self) -> None:
        self.postings: dict[Key, _Postings] = {}
        self.numbers: list[float | int] = []

    def add(self, key: Key, slot: int) -> None:
        postings = self.postings.get(key)
        if postings is None:
            postings = self.postings[key] = _Postings()
            number = _number(key)
            if number is not None:
                bisect.insort(self.numbers, number)
        postings.add(slot)

    def discard(self, key: Key, slot: int) -> None:
        postings = self.postings.get(key)
        if postings is None:
            return
        postings.discard(slot)
        if not len(postings):
            del self.postings[key]
            number = _number(key)
            if number is not None:
                at = bisect.bisect_left(self.numbers, number)
                if at < len(self.numbers) and self.numbers[at] == number:
                    del self.numbers[at]

    def range(self, op: str, bound: float | int) -> list[np.ndarray]:
        numbers = self.numbers
        if op == "$gt":
            values = numbers[bisect.bisect_right(numbers, bound) :]
        elif op == "$gte":
            values = numbers[bisect.bisect_left(numbers, bound) :]
        elif op == "$lt":
            values = numbers[: bisect.bisect_left(numbers, bound)]
        else:
            values = numbers[: bisect.bisect_right(numbers, bound)]
        return [self.postings[("n", v)].slots() for v in values]


# A partial answer: (sorted slots, negated); negated means "every live slot except these".
_Answer = tuple[np.ndarray, bool]


class MetadataIndex:
    """Inverted index of top-level metadata values, by document slot."""

    def __init__(self) -> None:
        self._fields: dict[str, _Field] = {}
        self._entries: dict[int, list[tuple[str, Key]]] = {}  # slot -> what to unindex
        self._bulk: list[tuple[str, Key]] = []  # add_bulk's keys, by number
        self._bulk_starts = np.zeros(1, np.int64)  # slot -> its run in _bulk_keys
        self._bulk_keys = np.zeros(0, np.int32)
        self._indexed = np.zeros(0, dtype=bool)  # slot -> indexed (a live document)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def _mark(self, slot: int, indexed: bool) -> None:
        if slot >= self._indexed.shape[0]:
            grown = np.zeros(max(slot + 1, 2 * self._indexed.shape[0]), dtype=bool)
            grown[: self._indexed.shape[0]] = self._indexed
            self._indexed = grown
        self._count += int(indexed) - int(self._indexed[slot])
        self._indexed[slot] = indexed

    def _indexed_under(self, slot: int) -> list[tuple[str, Key]]:
        entries = self._entries.get(slot)
        if entries is not None:
            return entries
        if slot + 1 < self._bulk_starts.shape[0]:
            run = self._bulk_keys[self._bulk_starts[slot] : self._bulk_starts[slot + 1]]
            return [self._bulk[k] for k in run.tolist()]
        return []

    def add(self, slot: int, metadata: Mapping[str, Any]) -> None:
        """Index `slot` (replacing whatever it was indexed under)."""
        if slot < self._indexed.shape[0] and self._indexed[slot]:
            self.remove(slot)
        entries = _entries(metadata)
        self._entries[slot] = entries
        self._mark(slot, True)
        fields = self._fields
        for name, key in entries:
            field = fields.get(name)
            if field is None:
                field = fields[name] = _Field()
            field.add(key, slot)

    def add_many(self, rows: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
        for slot, metadata in rows:
            self.add(slot, metadata)

    def add_bulk(self, slots: int, rows: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
        """An empty index filled with slots 0 .. slots - 1 (those not in `rows` have no
        metadata), `rows` in increasing slot order: what opening a table does at 1M chunks."""
        if self._count or self._fields:
            raise ValueError("add_bulk fills an empty MetadataIndex; use add for changes")
        numbers: dict[tuple[str, Key], int] = {}
        keys: list[tuple[str, Key]] = []
        key_ids = array("i")
        owners = array("q")
        per_slot = np.zeros(slots, np.int64)
        for slot, metadata in rows:
            entries = _entries(metadata)
            per_slot[slot] = len(entries)
            for entry in entries:
                number = numbers.get(entry)
                if number is None:
                    number = numbers[entry] = len(keys)
                    keys.append(entry)
                key_ids.append(number)
                owners.append(slot)
        self._indexed = np.ones(slots, dtype=bool)
        self._count = slots
        self._bulk = keys
        self._bulk_starts = np.zeros(slots + 1, np.int64)
        np.cumsum(per_slot, out=self._bulk_starts[1:])
        self._bulk_keys = np.frombuffer(key_ids, np.int32).copy()
        by_key = np.argsort(self._bulk_keys, kind="stable")  # slots stay sorted within a key
        grouped = np.frombuffer(owners, np.int64)[by_key]
        bounds = np.zeros(len(keys) + 1, np.int64)
        np.cumsum(np.bincount(self._bulk_keys, minlength=len(keys)), out=bounds[1:])
        for key_id, (name, key) in enumerate(keys):
            field = self._fields.get(name)
            if field is None:
                field = self._fields[name] = _Field()
            run = grouped[bounds[key_id] : bounds[key_id + 1]].copy()
            run.flags.writeable = False
            field.postings[key] = _Postings(run)
            value = _number(key)
            if value is not None:
                field.numbers.append(value)
        for field in self._fields.values():
            field.numbers.sort()

    def remove(self, slot: int) -> None:
        if slot >= self._indexed.shape[0] or not self._indexed[slot]:
            return
        entries = self._indexed_under(slot)
        self._entries.pop(slot, None)
        self._mark(slot, False)
        for name, key in entries:
            field = self._fields.get(name)
            if field is not None:
                field.discard(key, slot)
                if not field.postings:
                    del self._fields[name]

    def fields(self) -> dict[str, int]:
        """Distinct indexed values per field (diagnostics, tests)."""
        return {name: len(f.postings) for name, f in self._fields.items()}

    # -- evaluation -----------------------------------------------------------------------
    def evaluate_slots(self, node: Filter) -> np.ndarray:
        """The sorted slots of the live documents that pass `node` (read-only: may be shared)."""
        slots, negated = self._answer(node)
        if negated:
            # Every live slot is indexed (empty metadata included), so documents without the
            # field pass $ne/$nin.
            passing = self._indexed.copy()
            passing[slots] = False
            return np.flatnonzero(passing).astype(np.int64, copy=False)
        return slots

    def evaluate(self, node: Filter) -> set[int]:
        """`evaluate_slots` as a set (tests, small answers)."""
        return set(self.evaluate_slots(node).tolist())

    def _leaf(self, node: Compare | Member) -> _Answer:
        field = self._fields.get(node.field)
        if isinstance(node, Member):
            if field is None:
                return slot_sets.EMPTY, node.negate
            found = []
            for value in node.values:
                postings = field.postings.get(value_key(value))
                if postings is not None:
                    found.append(postings.slots())
            return slot_sets.union(found, self._indexed.shape[0]), node.negate
        if node.op in ("$eq", "$ne"):
            postings = field.postings.get(value_key(node.value)) if field is not None else None
            slots = postings.slots() if postings is not None else slot_sets.EMPTY
            return slots, node.op == "$ne"
        if field is None:
            return slot_sets.EMPTY, False
        assert isinstance(node.value, int | float)
        return slot_sets.union(field.range(node.op, node.value), self._indexed.shape[0]), False

    def _answer(self, node: Filter) -> _Answer:
        if isinstance(node, Compare | Member):
            return self._leaf(node)
        answers = [self._answer(child) for child in node.children]
        positives = [s for s, negated in answers if not negated]
        negatives = [s for s, negated in answers if negated]
        universe = self._indexed.shape[0]
        if isinstance(node, And):
            if positives:
                return slot_sets.subtract(slot_sets.intersect(positives), negatives), False
            # Only negations: everything except their union.
            return slot_sets.union(negatives, universe), True
        assert isinstance(node, Or)
        if not negatives:
            return slot_sets.union(positives, universe), False
        # OR(P..., not N...) = not (intersection(N) - union(P)).
        excluded = slot_sets.intersect(negatives)
        if positives:
            excluded = slot_sets.subtract(excluded, [slot_sets.union(positives, universe)])
        return excluded, True
