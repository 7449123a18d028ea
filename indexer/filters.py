"""Metadata filters: Chroma's `where` language, parsed and validated into a typed tree.

    {"lang": "en"}                                   equality (membership for a list value)
    {"year": {"$gte": 2020}}                         $eq $ne $gt $gte $lt $lte
    {"tags": {"$in": ["a", "b"]}}                    $in $nin (a list value: any element)
    {"$and": [{...}, {...}]}   {"$or": [{...}]}      combinations
    {"lang": "en", "year": {"$gt": 1, "$lt": 9}}     several keys in one object: all must hold

Semantics, kept deliberately simple so that every operator can be answered from an inverted
index (indexer/metadata_index.py) in time proportional to what matches:
- a document's list value holds each of its elements: {"tags": "a"} and {"tags": {"$in":
  ["a"]}} match a document whose `tags` contains "a"; nested objects are stored and returned,
  never matched;
- numbers compare as numbers (1 == 1.0), booleans are not numbers (true != 1); range operators
  take a number;
- $ne and $nin are the negations of $eq and $in: they also match documents without the field.
Everything else is refused with an InvalidFilterError naming the operator or field, before any
search runs: an unknown operator, an operand of the wrong type, a filter deeper than MAX_DEPTH,
an $in list longer than MAX_IN_VALUES, more than MAX_CLAUSES conditions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from contracts.errors import InvalidQueryError

MAX_DEPTH = 16
MAX_IN_VALUES = 10_000
MAX_CLAUSES = 1_024

Scalar = str | int | float | bool | None
CompareOp = Literal["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"]
COMPARE_OPS: tuple[str, ...] = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
RANGE_OPS: tuple[str, ...] = ("$gt", "$gte", "$lt", "$lte")
MEMBER_OPS: tuple[str, ...] = ("$in", "$nin")
LOGICAL_OPS: tuple[str, ...] = ("$and", "$or")


class InvalidFilterError(InvalidQueryError):
    """A `where` filter that cannot be evaluated; the message names the operator or field."""


@dataclass(frozen=True)
class Compare:
    field: str
    op: CompareOp
    value: Scalar


@dataclass(frozen=True)
class Member:
    field: str
    values: tuple[Scalar, ...]
    negate: bool  # $nin


@dataclass(frozen=True)
class And:
    children: tuple[Filter, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Filter, ...]


Filter = Compare | Member | And | Or


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _scalar(value: object, op: str, field: str) -> Scalar:
    if value is None or isinstance(value, str | bool):
        return value
    if _is_number(value):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidFilterError(f"{op} on {field!r}: {value!r} is not a finite number")
        return value  # type: ignore[return-value]
    raise InvalidFilterError(
        f"{op} on {field!r} takes a string, number, boolean or null, not {type(value).__name__} "
        f"({_show(value)})"
    )


def _show(value: object) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


class _Parser:
    def __init__(self) -> None:
        self.clauses = 0

    def _count(self) -> None:
        self.clauses += 1
        if self.clauses > MAX_CLAUSES:
            raise InvalidFilterError(
                f"the filter has more than {MAX_CLAUSES} conditions; use $in for long value lists"
            )

    def node(self, where: object, depth: int) -> Filter:
        if depth > MAX_DEPTH:
            raise InvalidFilterError(f"the filter is nested deeper than {MAX_DEPTH} levels")
        if not isinstance(where, Mapping):
            raise InvalidFilterError(
                f"a filter is a JSON object such as {{\"lang\": \"en\"}}, not {_show(where)}"
            )
        if not where:
            raise InvalidFilterError("an empty object is not a condition (inside $and/$or)")
        parts: list[Filter] = []
        for key, value in where.items():
            if not isinstance(key, str) or not key:
                raise InvalidFilterError(f"a field name must be a non-empty string, not {key!r}")
            if key in LOGICAL_OPS:
                parts.append(self.logical(key, value, depth))
            elif key.startswith("$"):
                raise InvalidFilterError(
                    f"unknown operator {key!r} at the top of a condition; use $and or $or there, "
                    "or a field name"
                )
            else:
                parts.extend(self.field(key, value, depth))
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def logical(self, op: str, value: object, depth: int) -> Filter:
        if not isinstance(value, list) or not value:
            raise InvalidFilterError(f"{op} takes a non-empty list of conditions, not {_show(value)}")
        children = tuple(self.node(child, depth + 1) for child in value)
        return And(children) if op == "$and" else Or(children)

    def field(self, name: str, value: object, depth: int) -> list[Filter]:
        if not isinstance(value, Mapping):
            self._count()
            return [Compare(name, "$eq", _scalar(value, "$eq", name))]
        if depth + 1 > MAX_DEPTH:
            raise InvalidFilterError(f"the filter is nested deeper than {MAX_DEPTH} levels")
        if not value:
            raise InvalidFilterError(f"the condition on {name!r} is an empty object; give an operator")
        parts: list[Filter] = []
        for op, operand in value.items():
            self._count()
            if op in COMPARE_OPS:
                scalar = _scalar(operand, op, name)
                if op in RANGE_OPS and not _is_number(scalar):
                    raise InvalidFilterError(
                        f"{op} on {name!r} takes a number, not {_show(operand)}"
                    )
                parts.append(Compare(name, op, scalar))
            elif op in MEMBER_OPS:
                if not isinstance(operand, list):
                    raise InvalidFilterError(f"{op} on {name!r} takes a list, not {_show(operand)}")
                if len(operand) > MAX_IN_VALUES:
                    raise InvalidFilterError(
                        f"{op} on {name!r} has {len(operand)} values, over the limit of "
                        f"{MAX_IN_VALUES}"
                    )
                values = tuple(_scalar(v, op, name) for v in operand)
                parts.append(Member(name, values, negate=op == "$nin"))
            elif isinstance(op, str) and op.startswith("$"):
                raise InvalidFilterError(
                    f"unknown operator {op!r} on {name!r}; use one of "
                    f"{', '.join(COMPARE_OPS + MEMBER_OPS)}"
                )
            else:
                raise InvalidFilterError(
                    f"the condition on {name!r} must be a value or an {{operator: value}} object; "
                    f"{op!r} is not an operator (nested fields are not filterable)"
                )
        return parts


def parse(where: object) -> Filter | None:
    """The filter tree of a `where` object (None for no filter: None or {})."""
    if where is None or (isinstance(where, Mapping) and not where):
        return None
    return _Parser().node(where, 1)


def parse_json(text: str) -> Filter | None:
    """`parse` of a JSON string (the GET query parameter and the CLI flag)."""
    try:
        where = json.loads(text)
    except RecursionError:
        raise InvalidFilterError(f"the filter is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise InvalidFilterError(f"where is not valid JSON ({exc})") from None
    return parse(where)


def depth_of(where: object) -> int:
    """Nesting depth of a JSON value without recursion (the API checks before parsing)."""
    deepest, stack = 0, [(where, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH + 2:
            return depth
        if isinstance(value, Mapping):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return deepest


def to_json(node: Filter) -> dict[str, Any]:
    """The tree back as a `where` object (logs, the bench's brute force)."""
    if isinstance(node, Compare):
        return {node.field: {node.op: node.value}}
    if isinstance(node, Member):
        return {node.field: {"$nin" if node.negate else "$in": list(node.values)}}
    key = "$and" if isinstance(node, And) else "$or"
    return {key: [to_json(child) for child in node.children]}


def matches(node: Filter, metadata: Mapping[str, Any]) -> bool:
    """Whether one document's metadata passes: the reference semantics (tests, bench brute
    force); searches use the inverted index instead."""
    if isinstance(node, And):
        return all(matches(child, metadata) for child in node.children)
    if isinstance(node, Or):
        return any(matches(child, metadata) for child in node.children)
    held = metadata.get(node.field, _MISSING)
    values = [v for v in held if _indexable(v)] if isinstance(held, list) else (
        [held] if _indexable(held) else []
    )
    keys = {value_key(v) for v in values}
    if isinstance(node, Member):
        found = any(value_key(v) in keys for v in node.values)
        return found != node.negate
    if node.op in ("$eq", "$ne"):
        return (value_key(node.value) in keys) == (node.op == "$eq")
    bound = node.value
    assert _is_number(bound)
    numbers = [v for v in values if _is_number(v)]
    if node.op == "$gt":
        return any(v > bound for v in numbers)
    if node.op == "$gte":
        return any(v >= bound for v in numbers)
    if node.op == "$lt":
        return any(v < bound for v in numbers)
    return any(v <= bound for v in numbers)


_MISSING = object()


def _indexable(value: object) -> bool:
    return value is None or isinstance(value, str | bool | int | float)


def value_key(value: Scalar) -> tuple[str, Scalar]:
    """The index key of a scalar: a kind tag keeps true apart from 1 (Python's True == 1);
    ints and floats share one kind, so 1 and 1.0 are one key (they hash alike)."""
    if value is None:
        return ("z", None)
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, str):
        return ("s", value)
    return ("n", value)
