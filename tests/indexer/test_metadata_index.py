"""The metadata index answers every filter exactly as the reference semantics, through updates."""

from __future__ import annotations

import random
from typing import Any

from indexer.filters import matches, parse
from indexer.metadata_index import MetadataIndex

FILTERS: list[dict[str, Any]] = [
    {"lang": "en"},
    {"lang": {"$ne": "en"}},
    {"lang": {"$in": ["de", "fr"]}},
    {"lang": {"$nin": ["de", "fr"]}},
    {"year": {"$gt": 2015}},
    {"year": {"$gte": 2015, "$lt": 2018}},
    {"year": {"$lte": 2012.5}},
    {"year": 2016.0},
    {"tags": "t1"},
    {"tags": {"$in": ["t2", 7]}},
    {"tags": {"$nin": ["t0"]}},
    {"tags": {"$gt": 5}},
    {"flag": True},
    {"flag": {"$ne": False}},
    {"owner": None},
    {"$and": [{"lang": "en"}, {"year": {"$ne": 2016}}]},
    {"$and": [{"lang": {"$ne": "en"}}, {"tags": {"$nin": ["t1"]}}]},
    {"$or": [{"lang": "de"}, {"flag": True}]},
    {"$or": [{"lang": {"$ne": "de"}}, {"tags": "t3"}]},
    {"$or": [{"lang": {"$ne": "de"}}, {"year": {"$nin": [2011, 2012]}}]},
    {"$and": [{"$or": [{"lang": "en"}, {"lang": "fr"}]}, {"year": {"$lt": 2017}}]},
    {"missing": {"$ne": 1}},
    {"missing": 1},
]


def _metadata(rng: random.Random) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if rng.random() < 0.9:
        meta["lang"] = rng.choice(["en", "de", "fr", "es"])
    if rng.random() < 0.8:
        meta["year"] = rng.choice([2010, 2011, 2012.5, 2015, 2016, 2017, 2019.0])
    if rng.random() < 0.7:
        meta["tags"] = rng.sample(["t0", "t1", "t2", "t3", 7, 3, True], rng.randint(0, 3))
    if rng.random() < 0.5:
        meta["flag"] = rng.choice([True, False, 1, 0])
    if rng.random() < 0.3:
        meta["owner"] = rng.choice([None, "ann", {"nested": 1}])
    return meta


def _check(index: MetadataIndex, docs: dict[int, dict[str, Any]]) -> None:
    for where in FILTERS:
        node = parse(where)
        assert node is not None
        expected = {slot for slot, meta in docs.items() if matches(node, meta)}
        assert index.evaluate(node) == expected, where


def _churn(
    index: MetadataIndex,
    docs: dict[int, dict[str, Any]],
    rng: random.Random,
    steps: int,
    slots: int,
    check_every: float = 0.0,
) -> None:
    """Random updates (same slot, new metadata), deletes and slot reuse, mirrored in `docs`;
    checked against brute force at random points when `check_every` > 0."""
    for _ in range(steps):
        slot = rng.randrange(slots)
        if slot in docs and rng.random() < 0.4:
            index.remove(slot)
            del docs[slot]
        else:
            docs[slot] = _metadata(rng)
            index.add(slot, docs[slot])
        if rng.random() < check_every:
            _check(index, docs)  # reads fold the deltas in; later changes start new ones


def test_index_equals_brute_force_through_updates_and_deletes() -> None:
    rng = random.Random(7)
    index = MetadataIndex()
    docs: dict[int, dict[str, Any]] = {}
    for slot in range(300):
        docs[slot] = _metadata(rng)
        index.add(slot, docs[slot])
    _check(index, docs)
    _churn(index, docs, rng, 400, 350)
    _check(index, docs)
    assert len(index) == len(docs)
    for slot in list(docs):
        index.remove(slot)
    assert index.fields() == {}
    node = parse({"lang": {"$ne": "en"}})
    assert node is not None and index.evaluate(node) == set()


def test_every_json_type_as_a_value() -> None:
    index = MetadataIndex()
    values: list[Any] = ["s", "", 0, -3, 2.5, 10**30, True, False, None, ["x", 1], {"o": 1}, []]
    for slot, value in enumerate(values):
        index.add(slot, {"v": value})
    for probe in ["s", "", 0, -3, 2.5, 10**30, True, False, None, "x", 1]:
        node = parse({"v": probe})
        assert node is not None
        expected = {s for s, v in enumerate(values) if matches(node, {"v": v})}
        assert index.evaluate(node) == expected and expected, probe
    node = parse({"v": {"$gte": 0}})
    assert node is not None
    assert index.evaluate(node) == {2, 4, 5, 9}  # 0, 2.5, 10**30, [.., 1]: not True/False


def test_large_in_list() -> None:
    index = MetadataIndex()
    for slot in range(2_000):
        index.add(slot, {"n": slot})
    node = parse({"n": {"$in": list(range(0, 3_000, 3))}})
    assert node is not None
    assert index.evaluate(node) == set(range(0, 2_000, 3))


def test_bulk_build_then_updates_equals_brute_force() -> None:
    """What opening a table does (`add_bulk`), then the changes a reader follows."""
    rng = random.Random(11)
    docs = {slot: _metadata(rng) for slot in range(400)}
    index = MetadataIndex()
    index.add_bulk(400, [(slot, meta) for slot, meta in docs.items() if meta])
    assert len(index) == 400
    _check(index, docs)
    _churn(index, docs, rng, 500, 450, check_every=0.05)
    _check(index, docs)
    assert len(index) == len(docs)


def test_bulk_build_refuses_a_filled_index() -> None:
    index = MetadataIndex()
    index.add(0, {"a": 1})
    try:
        index.add_bulk(1, [(0, {"a": 2})])
    except ValueError as error:
        assert "add_bulk" in str(error)
    else:
        raise AssertionError("add_bulk over a filled index must refuse")


def test_answers_are_sorted_arrays_shared_read_only() -> None:
    index = MetadataIndex()
    index.add_bulk(6, [(s, {"k": s % 2}) for s in range(6)])
    node = parse({"k": 1})
    assert node is not None
    slots = index.evaluate_slots(node)
    assert slots.tolist() == [1, 3, 5] and not slots.flags.writeable
