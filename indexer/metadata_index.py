"""The metadata index: (field, value) -> document slots, so a filter costs what it matches.

A search with a `where` filter (indexer/filters.py) must not read every document's metadata:
at 1M chunks that is a SQLite scan and a JSON parse per document per query. Instead each
top-level metadata field keeps an inverted index from value to the slots (DocumentTable's
dense document numbers) holding it, maintained on every put/remove of a document (O(its
fields)), and each field's numeric values are also kept sorted, so a range is two binary
searches plus the postings it covers.

Evaluation works on Python sets of slots and never materialises a complement until the end:
$ne/$nin/negated branches travel as "everything except S", $and subtracts them from its
positive part, so {"lang": "en", "year": {"$ne": 2020}} costs |en| + |2020|, not the corpus.
Only a filter whose answer is itself a complement (a bare $ne) pays O(live documents).

Persistence: the values are the documents' metadata, already written per change in the
document store (indexer/document_store.py), so a generation costs what changed; the index is
rebuilt from the metadata column when a table is opened (the same streamed pass that builds
the chunk-owner map; JSON parsing ~2 us a document) and follows a reader's deltas.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from typing import Any

from indexer.filters import And, Compare, Filter, Member, Or, Scalar, value_key

Key = tuple[str, Scalar]


def _entries(metadata: Mapping[str, Any]) -> list[tuple[str, Key]]:
    """(field, key) pairs a document is indexed under: scalars, and each scalar of a list."""
    entries: list[tuple[str, Key]] = []
    for field, value in metadata.items():
        if isinstance(value, list):
            seen: set[Key] = set()
            for item in value:
                if item is None or isinstance(item, str | bool | int | float):
                    key = value_key(item)
                    if key not in seen:
                        seen.add(key)
                        entries.append((field, key))
        elif value is None or isinstance(value, str | bool | int | float):
            entries.append((field, value_key(value)))
    return entries


class _Field:
    """One field: value key -> slots, and its distinct numbers in order (for ranges)."""

    __slots__ = ("numbers", "postings")

    def __init__(self) -> None:
        self.postings: dict[Key, set[int]] = {}
        self.numbers: list[float | int] = []

    def add(self, key: Key, slot: int) -> None:
        slots = self.postings.get(key)
        if slots is None:
            slots = self.postings[key] = set()
            number = key[1]
            if isinstance(number, int | float) and key[0] == "n":
                bisect.insort(self.numbers, number)
        slots.add(slot)

    def discard(self, key: Key, slot: int) -> None:
        slots = self.postings.get(key)
        if slots is None:
            return
        slots.discard(slot)
        if not slots:
            del self.postings[key]
            number = key[1]
            if isinstance(number, int | float) and key[0] == "n":
                at = bisect.bisect_left(self.numbers, number)
                if at < len(self.numbers) and self.numbers[at] == number:
                    del self.numbers[at]

    def range(self, op: str, bound: float | int) -> set[int]:
        numbers = self.numbers
        if op == "$gt":
            values = numbers[bisect.bisect_right(numbers, bound) :]
        elif op == "$gte":
            values = numbers[bisect.bisect_left(numbers, bound) :]
        elif op == "$lt":
            values = numbers[: bisect.bisect_left(numbers, bound)]
        else:
            values = numbers[: bisect.bisect_right(numbers, bound)]
        postings = self.postings
        if len(values) == 1:
            return set(postings[("n", values[0])])
        return set().union(*(postings[("n", v)] for v in values))


# A partial answer: (slots, negated); negated means "every live slot except these".
_Answer = tuple[set[int], bool]


class MetadataIndex:
    """Inverted index of top-level metadata values, by document slot."""

    def __init__(self) -> None:
        self._fields: dict[str, _Field] = {}
        self._entries: dict[int, list[tuple[str, Key]]] = {}  # slot -> what to unindex

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, slot: int, metadata: Mapping[str, Any]) -> None:
        """Index `slot` (replacing whatever it was indexed under)."""
        if slot in self._entries:
            self.remove(slot)
        entries = _entries(metadata)
        self._entries[slot] = entries
        fields = self._fields
        for name, key in entries:
            field = fields.get(name)
            if field is None:
                field = fields[name] = _Field()
            field.add(key, slot)

    def add_many(self, rows: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
        for slot, metadata in rows:
            self.add(slot, metadata)

    def remove(self, slot: int) -> None:
        entries = self._entries.pop(slot, None)
        if entries is None:
            return
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
    def evaluate(self, node: Filter) -> set[int]:
        """The slots of the live documents that pass `node` (a fresh set the caller may own)."""
        slots, negated = self._answer(node)
        if negated:
            # Every live slot is in `_entries` (empty metadata: an empty list), so documents
            # without the field pass $ne/$nin.
            return {slot for slot in self._entries if slot not in slots}
        return slots

    def _leaf(self, node: Compare | Member) -> _Answer:
        field = self._fields.get(node.field)
        if isinstance(node, Member):
            if field is None:
                return set(), node.negate
            found: set[int] = set()
            for value in node.values:
                slots = field.postings.get(value_key(value))
                if slots:
                    found |= slots
            return found, node.negate
        if node.op in ("$eq", "$ne"):
            slots = field.postings.get(value_key(node.value)) if field is not None else None
            return (set(slots) if slots else set()), node.op == "$ne"
        if field is None:
            return set(), False
        assert isinstance(node.value, int | float)
        return field.range(node.op, node.value), False

    def _answer(self, node: Filter) -> _Answer:
        if isinstance(node, Compare | Member):
            return self._leaf(node)
        answers = [self._answer(child) for child in node.children]
        positives = [s for s, negated in answers if not negated]
        negatives = [s for s, negated in answers if negated]
        if isinstance(node, And):
            if positives:
                positives.sort(key=len)
                result = positives[0]
                for other in positives[1:]:
                    if not result:
                        break
                    result = result & other
                for other in negatives:
                    if not result:
                        break
                    result = result - other
                return result, False
            # Only negations: everything except their union.
            return set().union(*negatives), True
        assert isinstance(node, Or)
        if not negatives:
            return set().union(*positives), False
        # OR(P..., not N...) = not (intersection(N) - union(P)).
        negatives.sort(key=len)
        excluded = negatives[0]
        for other in negatives[1:]:
            excluded = excluded & other
        if positives:
            excluded = excluded - set().union(*positives)
        return excluded, True
