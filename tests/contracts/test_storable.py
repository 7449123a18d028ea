"""What may be stored: every JSON type passes; what json accepts but UTF-8, the tokenizer or
strict readers cannot take is refused with a reason that names the value's path."""

from __future__ import annotations

import json

import pytest

from contracts.storable import MAX_NESTING, unstorable


def test_every_json_type_is_storable() -> None:
    value = {"s": "é ü 中", "i": -3, "f": 1.5, "b": True, "n": None, "l": [1, "x", {"k": []}]}
    assert unstorable(value, "'metadata'") is None
    assert unstorable(json.loads(json.dumps(value)), "'metadata'") is None


@pytest.mark.parametrize(
    ("value", "path", "reason"),
    [
        (float("nan"), "'metadata'", "NaN or Infinity"),
        (json.loads("1e400"), "'metadata'", "NaN or Infinity"),
        ({"a": [1, json.loads('"\\ud800"')]}, "'metadata.a[1]'", "lone surrogate U+D800"),
        ({json.loads('"\\udfff"'): 1}, "a key of 'metadata'", "lone surrogate U+DFFF"),
        ({"a": {"b": b"bytes"}}, "'metadata.a.b'", "bytes, which JSON cannot hold"),
        ({1: "x"}, "'metadata'", "not a string"),
    ],
)
def test_what_json_cannot_carry_is_named_by_path(value: object, path: str, reason: str) -> None:
    problem = unstorable(value, "'metadata'")
    assert problem is not None and path in problem and reason in problem


def test_nesting_is_bounded_before_any_recursive_serializer_sees_it() -> None:
    deep: object = "leaf"
    for _ in range(MAX_NESTING):  # MAX_NESTING arrays, the field itself the first
        deep = [deep]
    assert unstorable(deep, "'metadata'") is None
    problem = unstorable([deep], "'metadata'")
    assert problem is not None and f"deeper than {MAX_NESTING} levels" in problem
    very_deep: object = []
    for _ in range(10_000):  # far past Python's recursion limit: refused, no RecursionError
        very_deep = [very_deep]
    assert unstorable(very_deep, "'metadata'") is not None
