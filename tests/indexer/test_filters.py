"""The `where` language: parsing into a typed tree, its errors, and the reference semantics."""

from __future__ import annotations

import json
from typing import Any

import pytest

from indexer.filters import (
    MAX_DEPTH,
    MAX_IN_VALUES,
    And,
    Compare,
    InvalidFilterError,
    Member,
    Or,
    matches,
    parse,
    parse_json,
    to_json,
)


def test_shapes_parse_to_typed_nodes() -> None:
    assert parse(None) is None and parse({}) is None
    assert parse({"lang": "en"}) == Compare("lang", "$eq", "en")
    assert parse({"year": {"$gte": 2020}}) == Compare("year", "$gte", 2020)
    assert parse({"tags": {"$in": ["a", "b"]}}) == Member("tags", ("a", "b"), negate=False)
    assert parse({"tags": {"$nin": []}}) == Member("tags", (), negate=True)
    assert parse({"$or": [{"a": 1}, {"b": {"$ne": None}}]}) == Or(
        (Compare("a", "$eq", 1), Compare("b", "$ne", None))
    )
    # several keys, several operators: all must hold
    assert parse({"a": 1, "y": {"$gt": 1, "$lt": 5}}) == And(
        (Compare("a", "$eq", 1), Compare("y", "$gt", 1), Compare("y", "$lt", 5))
    )
    where = {"$and": [{"a": {"$in": [1, "x", True, None]}}, {"$or": [{"b": {"$lte": 2.5}}]}]}
    assert parse(to_json(parse(where))) == parse(where)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("where", "names"),
    [
        ({"lang": {"$like": "e%"}}, "$like"),
        ({"$not": {"a": 1}}, "$not"),
        ({"year": {"$gt": "2020"}}, "$gt"),
        ({"year": {"$lte": True}}, "$lte"),
        ({"year": {"$lt": None}}, "$lt"),
        ({"tags": {"$in": "a"}}, "$in"),
        ({"tags": {"$nin": [["a"]]}}, "$nin"),
        ({"tags": {"$eq": ["a"]}}, "$eq"),
        ({"tags": ["a"]}, "$eq"),
        ({"meta": {"$eq": {"x": 1}}}, "$eq"),
        ({"$and": {"a": 1}}, "$and"),
        ({"$or": []}, "$or"),
        ({"$and": [1]}, "JSON object"),
        ({"meta": {"nested": 1}}, "not an operator"),
        ({"a": {}}, "empty object"),
        ([{"a": 1}], "JSON object"),
        ("lang", "JSON object"),
        ({"a": {"$gt": float("nan")}}, "finite"),
    ],
)
def test_bad_filters_name_the_problem(where: Any, names: str) -> None:
    with pytest.raises(InvalidFilterError, match=names.replace("$", r"\$")):
        parse(where)


def _nested(depth: int) -> dict[str, Any]:
    where: dict[str, Any] = {"a": 1}
    for _ in range(depth - 1):
        where = {"$and": [where]}
    return where


def test_depth_limit_is_a_clean_error() -> None:
    assert parse(_nested(MAX_DEPTH)) is not None
    for depth in (MAX_DEPTH + 1, 100, 5_000):
        with pytest.raises(InvalidFilterError, match="deeper than"):
            parse(_nested(depth))
    with pytest.raises(InvalidFilterError, match="deeper than"):
        parse_json("[" * 100_000 + "]" * 100_000)


def test_in_size_limit() -> None:
    assert len(parse({"n": {"$in": list(range(MAX_IN_VALUES))}}).values) == MAX_IN_VALUES  # type: ignore[union-attr]
    with pytest.raises(InvalidFilterError, match=r"\$in on 'n' has 10001 values"):
        parse({"n": {"$in": list(range(MAX_IN_VALUES + 1))}})


def test_parse_json_errors() -> None:
    assert parse_json('{"lang": "en"}') == Compare("lang", "$eq", "en")
    with pytest.raises(InvalidFilterError, match="not valid JSON"):
        parse_json("{lang: en}")


DOC: dict[str, Any] = {
    "lang": "en",
    "year": 2021,
    "score": 0.5,
    "draft": False,
    "owner": None,
    "tags": ["a", "b", 3, True],
    "nested": {"x": 1},
    "empty": [],
}


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"lang": "en"}, True),
        ({"lang": "de"}, False),
        ({"lang": {"$ne": "de"}}, True),
        ({"missing": {"$ne": 1}}, True),  # $ne is the negation of $eq
        ({"missing": {"$nin": [1]}}, True),
        ({"missing": 1}, False),
        ({"year": 2021.0}, True),  # numbers compare as numbers
        ({"year": {"$gt": 2020}}, True),
        ({"year": {"$gt": 2021}}, False),
        ({"year": {"$gte": 2021}}, True),
        ({"year": {"$lt": 2021}}, False),
        ({"year": {"$lte": 2021}}, True),
        ({"score": {"$lt": 1}}, True),
        ({"draft": False}, True),
        ({"draft": 0}, False),  # booleans are not numbers
        ({"owner": None}, True),
        ({"owner": {"$ne": None}}, False),
        ({"tags": "a"}, True),  # list membership
        ({"tags": {"$in": ["z", "b"]}}, True),
        ({"tags": {"$nin": ["a"]}}, False),
        ({"tags": 3}, True),
        ({"tags": True}, True),
        ({"tags": 1}, False),
        ({"tags": {"$gt": 2}}, True),  # any element in range
        ({"nested": 1}, False),  # objects are never matched
        ({"empty": {"$in": ["a"]}}, False),
        ({"$and": [{"lang": "en"}, {"year": {"$lt": 2000}}]}, False),
        ({"$or": [{"lang": "de"}, {"year": {"$lt": 2030}}]}, True),
        ({"$or": [{"lang": {"$ne": "en"}}, {"tags": "zz"}]}, False),
    ],
)
def test_reference_semantics(where: dict[str, Any], expected: bool) -> None:
    node = parse(where)
    assert node is not None
    assert matches(node, DOC) is expected
    assert json.dumps(to_json(node))
