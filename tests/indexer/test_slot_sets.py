"""Set algebra on sorted slot arrays: the same answers as Python sets, on both code paths
(binary search below _MASK_FROM values, a mask above; np.unique or a mask for unions)."""

from __future__ import annotations

import numpy as np
import pytest

from indexer import slot_sets
from indexer.slot_sets import EMPTY, from_ints, intersect, member, subtract, union


def _random_set(rng: np.random.Generator, size: int, universe: int) -> np.ndarray:
    return from_ints(set(rng.integers(0, universe, size=size).tolist()))


@pytest.mark.parametrize("size", [0, 1, 50, slot_sets._MASK_FROM + 500])
def test_member_intersect_subtract_union_agree_with_python_sets(size: int) -> None:
    rng = np.random.default_rng(size)
    universe = 3 * max(size, 10)
    a, b, c = (_random_set(rng, size, universe) for _ in range(3))
    sa, sb, sc = (set(x.tolist()) for x in (a, b, c))
    assert member(a, b).tolist() == [v in sb for v in a.tolist()]
    assert intersect([a, b, c]).tolist() == sorted(sa & sb & sc)
    assert subtract(a, [b, c]).tolist() == sorted(sa - sb - sc)
    assert union([a, b, c], universe).tolist() == sorted(sa | sb | sc)
    for result in (intersect([a, b]), subtract(a, [b]), union([a, b], universe)):
        assert result.dtype == np.int64


def test_values_outside_the_set_range_are_not_members() -> None:
    values = np.arange(-5, slot_sets._MASK_FROM + 10, dtype=np.int64)  # the mask path
    inside = from_ints([3, 7, 100])
    assert np.flatnonzero(member(values, inside)).tolist() == [8, 12, 105]


def test_empty_inputs_and_inputs_left_unchanged() -> None:
    a = from_ints([1, 2, 3])
    kept = a.copy()
    assert intersect([]).shape == (0,) and union([EMPTY, EMPTY], 10).shape == (0,)
    assert intersect([a, EMPTY]).shape == (0,) and subtract(a, [EMPTY]).tolist() == [1, 2, 3]
    assert union([a], 10) is a  # one part: returned as is, never copied
    assert a.tolist() == kept.tolist()
