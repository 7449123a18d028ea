"""Set algebra on sorted, duplicate-free integer arrays (document slots).

Why arrays and not Python sets: a filter matching half of 447k documents is a set of 223k
Python ints, built and copied per query (~20 ms); as a sorted int64 array the same answer is
1.8 MB that numpy intersects by binary search and unions through a bit mask, in C.
Every function takes and returns sorted unique int64 arrays; none mutates its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# More values than this: a mask over the set's range beats binary search (measured at 447k
# slots: 223k against 447k, 21 ms searching, 2 ms through a mask).
_MASK_FROM = 16_384
EMPTY = np.zeros(0, np.int64)
EMPTY.flags.writeable = False


def member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Which of `values` are in `sorted_set`: binary search, O(len(values) log len(set)), or
    for many values a mask over the set's range, O(len(values) + range)."""
    if not sorted_set.shape[0] or not values.shape[0]:
        return np.zeros(values.shape[0], dtype=bool)
    if values.shape[0] > _MASK_FROM:
        low, high = int(sorted_set[0]), int(sorted_set[-1])
        mask = np.zeros(high - low + 1, dtype=bool)
        mask[sorted_set - low] = True
        inside = (values >= low) & (values <= high)
        found_mask = np.zeros(values.shape[0], dtype=bool)
        found_mask[inside] = mask[values[inside] - low]
        return found_mask
    where = np.searchsorted(sorted_set, values)
    np.minimum(where, sorted_set.shape[0] - 1, out=where)
    found: np.ndarray = sorted_set[where] == values
    return found


def intersect(sets: Sequence[np.ndarray]) -> np.ndarray:
    """Smallest first: each step costs the running answer's size times a log."""
    if not sets:
        return EMPTY
    ordered = sorted(sets, key=lambda s: s.shape[0])
    result = ordered[0]
    for other in ordered[1:]:
        if not result.shape[0]:
            break
        result = result[member(result, other)]
    return result


def subtract(base: np.ndarray, removed: Sequence[np.ndarray]) -> np.ndarray:
    for other in removed:
        if not base.shape[0]:
            break
        if other.shape[0]:
            base = base[~member(base, other)]
    return base


def union(sets: Sequence[np.ndarray], universe: int) -> np.ndarray:
    """`universe` bounds the values (slots < universe): a big union goes through a bit mask,
    O(total + universe / 8), instead of sorting the concatenation."""
    parts = [s for s in sets if s.shape[0]]
    if not parts:
        return EMPTY
    if len(parts) == 1:
        return parts[0]
    total = sum(p.shape[0] for p in parts)
    if total * 16 < universe:
        return np.unique(np.concatenate(parts))
    mask = np.zeros(universe, dtype=bool)
    for part in parts:
        mask[part] = True
    return np.flatnonzero(mask).astype(np.int64, copy=False)


def from_ints(values: Sequence[int] | set[int]) -> np.ndarray:
    array = np.fromiter(values, dtype=np.int64, count=len(values))
    array.sort()
    return array
