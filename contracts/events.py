"""The wire format of every event semsearch puts on Kafka, shared by producers and consumers.

One module owns the schema so that the producer can never write what the consumer cannot read:
both sides build and parse events only through these dataclasses.

`docs` topic — key = doc_id (so every event of one document lands in one partition, in order),
value = JSON ``{"op": "upsert"|"delete", "doc_id", "version", "title", "text", "metadata"}``;
a null value is a Kafka tombstone and deletes whatever version the index holds.

`version` is an integer that grows with every change of one document (a source sequence number
or a timestamp); the index ignores anything not newer than what it holds, which is what makes
replays, duplicates and out-of-order delivery harmless. A producer that is given no version
stamps `time.time_ns()`.

`control` topic — value = JSON ``{"type": ..., ...}``; kinds register themselves with
`@control_event("type-name")`, so later kinds (gate reports, pointer flips) extend the schema
without touching the decoder.
"""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from contracts.documents import MAX_DOC_ID_CHARS, Deletion, Document
from contracts.errors import SemsearchError
from contracts.storable import MAX_NESTING, unstorable

UPSERT = "upsert"
DELETE = "delete"
CONTROL_KEY = b"control"
# Versions are stored and compared as signed 64-bit integers by most consumers of the topic.
MAX_VERSION = 2**63 - 1


class EventError(SemsearchError, ValueError):
    """An event does not follow the schema; `reason` says which field and why (for the DLQ)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def new_version() -> int:
    """A version for producers that have none: nanoseconds grow faster than any edit rate."""
    return time.time_ns()


def _check_storable(value: object, where: str) -> None:
    problem = unstorable(value, where)
    if problem:
        raise EventError(problem)


# -- field checks ---------------------------------------------------------------------------
def _doc_id(value: object, name: str = "'doc_id'") -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise EventError(f"{name} must be a non-empty string")
    if len(value) > MAX_DOC_ID_CHARS:
        raise EventError(
            f"{name} is {len(value)} characters, over the {MAX_DOC_ID_CHARS}-character limit; use a "
            "shorter id (e.g. a hash of the long one, with the long one in metadata)"
        )
    _check_storable(value, name)
    control = next((i for i, c in enumerate(value) if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        raise EventError(
            f"{name} contains the control character U+{ord(value[control]):04X} at character {control}; "
            "ids must be printable - strip newlines, tabs and NULs upstream"
        )
    return value


def _version(value: object, *, required: bool) -> int | None:
    if value is None:
        if required:
            raise EventError("'version' is missing; every upsert needs an integer version")
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise EventError(f"'version' must be a non-negative integer (got {value!r})")
    if value > MAX_VERSION:
        raise EventError(f"'version' must fit in a signed 64-bit integer (at most {MAX_VERSION}; got {value})")
    return value


def _string(row: Mapping[str, Any], name: str, *, required: bool) -> str:
    value = row.get(name)
    if value is None:
        if required:
            raise EventError(f"'{name}' is missing")
        return ""
    if not isinstance(value, str):
        raise EventError(f"'{name}' must be a string (got {type(value).__name__})")
    return value


def _metadata(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EventError(f"'metadata' must be a JSON object (got {type(value).__name__})")
    return value


def _json_object(raw: bytes | str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise EventError(f"value is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EventError(f"value is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise EventError(
            f"value nests too deeply to parse; fields may nest at most {MAX_NESTING} levels - flatten it"
        ) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise EventError(f"value cannot be parsed: {exc}") from None
    if not isinstance(row, dict):
        raise EventError(f"value must be a JSON object (got {type(row).__name__})")
    return row


def _key(key: bytes | str | None) -> str | None:
    if key is None:
        return None
    try:
        text = key.decode("utf-8") if isinstance(key, bytes) else key
    except UnicodeDecodeError:
        raise EventError("key is not UTF-8; the key must be the doc_id") from None
    _check_storable(text, "the key")
    return text


# -- document events ------------------------------------------------------------------------
@dataclass(frozen=True)
class UpsertEvent:
    """Create or replace a document."""

    doc_id: str
    version: int
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        doc_id: object,
        title: object = "",
        text: object = None,
        version: object = None,
        metadata: object = None,
    ) -> UpsertEvent:
        """Validated construction from loose input (a corpus line); no version = `new_version()`."""
        row = {"title": title, "text": text}
        checked = _version(version, required=False)
        event = cls(
            doc_id=_doc_id(doc_id),
            version=new_version() if checked is None else checked,
            title=_string(row, "title", required=False),
            text=_string(row, "text", required=True),
            metadata=_metadata(metadata),
        )
        check_doc_event(event)
        return event

    def to_change(self) -> Document:
        return Document(self.doc_id, self.title, self.text, self.version, dict(self.metadata))

    def to_json(self) -> dict[str, Any]:
        return {
            "op": UPSERT,
            "doc_id": self.doc_id,
            "version": self.version,
            "title": self.title,
            "text": self.text,
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class DeleteEvent:
    """Remove a document. `version=None` (a Kafka tombstone) deletes whatever is held."""

    doc_id: str
    version: int | None = None

    @property
    def is_tombstone(self) -> bool:
        return self.version is None

    def to_change(self) -> Deletion:
        return Deletion(self.doc_id, self.version)

    def to_json(self) -> dict[str, Any]:
        return {"op": DELETE, "doc_id": self.doc_id, "version": self.version}


DocEvent = UpsertEvent | DeleteEvent


def check_doc_event(event: DocEvent) -> None:
    """Raise EventError for what the consumer would dead-letter: producers never publish it."""
    _doc_id(event.doc_id)
    _version(event.version, required=isinstance(event, UpsertEvent))
    if isinstance(event, UpsertEvent):
        for name in ("title", "text"):
            value = getattr(event, name)
            if not isinstance(value, str):
                raise EventError(f"'{name}' must be a string (got {type(value).__name__})")
            _check_storable(value, f"'{name}'")
        _check_storable(_metadata(event.metadata), "'metadata'")


def encode_doc_event(event: DocEvent) -> tuple[bytes, bytes | None]:
    """(key, value) for the `docs` topic; a versionless delete becomes a real Kafka tombstone.

    Raises EventError for an event the consumer would refuse (see `check_doc_event`).
    """
    check_doc_event(event)
    key = event.doc_id.encode("utf-8")
    if isinstance(event, DeleteEvent) and event.is_tombstone:
        return key, None
    body = json.dumps(event.to_json(), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return key, body.encode("utf-8")


def decode_doc_event(key: bytes | str | None, value: bytes | str | None) -> DocEvent:
    """Parse one `docs` record; raises EventError with the reason it cannot be indexed."""
    key_id = _key(key)
    if value is None:
        if key_id is None or not key_id.strip():
            raise EventError("tombstone (null value) without a key; the key must be the doc_id")
        return DeleteEvent(_doc_id(key_id, "the key of a tombstone"), None)
    row = _json_object(value)
    for name, item in row.items():
        _check_storable(name, "a field name")
        _check_storable(item, f"'{name}'")
    op = row.get("op")
    if op is None:
        raise EventError("'op' is missing; it must be 'upsert' or 'delete'")
    if op not in (UPSERT, DELETE):
        raise EventError(f"'op' must be 'upsert' or 'delete' (got {op!r})")
    if "doc_id" not in row:
        raise EventError("'doc_id' is missing")
    doc_id = _doc_id(row["doc_id"])
    if key_id is None:
        # Kafka partitions by key: without it, versions of one document scatter over partitions
        # (so over shards, and out of order), which no consumer can repair.
        raise EventError(
            f"the record has no key; publish with key = doc_id ({doc_id!r}) so that every version "
            "of a document lands in the same partition, in order"
        )
    if key_id != doc_id:
        raise EventError(
            f"key {key_id!r} differs from doc_id {doc_id!r}; publish with key = doc_id so that "
            "every version of a document lands in the same partition, in order"
        )
    if op == DELETE:
        return DeleteEvent(doc_id, _version(row.get("version"), required=False))
    return UpsertEvent(
        doc_id=doc_id,
        version=_version(row.get("version"), required=True) or 0,
        title=_string(row, "title", required=False),
        text=_string(row, "text", required=True),
        metadata=_metadata(row.get("metadata")),
    )


# -- control events -------------------------------------------------------------------------
@dataclass(frozen=True)
class ControlEvent:
    """Base of every `control` kind; subclasses are plain dataclasses of JSON-able fields."""

    TYPE: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        body = {f.name: getattr(self, f.name) for f in fields(self)}
        return {"type": self.TYPE, **body}

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> ControlEvent:
        known = {f.name: f for f in fields(cls)}
        required = [n for n, f in known.items() if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in row]
        if missing:
            raise EventError(f"control event {cls.TYPE!r} is missing {', '.join(map(repr, missing))}")
        try:
            return cls(**{k: v for k, v in row.items() if k in known})
        except (TypeError, ValueError) as exc:
            raise EventError(f"control event {cls.TYPE!r}: {exc}") from None


_CONTROL_KINDS: dict[str, type[ControlEvent]] = {}
C = TypeVar("C", bound=type[ControlEvent])


def control_event(type_name: str) -> Callable[[C], C]:
    """Register a control kind under its wire `type` (kinds added later call this too)."""

    def register(cls: C) -> C:
        if type_name in _CONTROL_KINDS and _CONTROL_KINDS[type_name] is not cls:
            raise ValueError(f"control event type {type_name!r} is registered twice")
        cls.TYPE = type_name
        _CONTROL_KINDS[type_name] = cls
        return cls

    return register


def control_kinds() -> tuple[str, ...]:
    return tuple(sorted(_CONTROL_KINDS))


@control_event("model-upgrade")
@dataclass(frozen=True)
class ModelUpgrade(ControlEvent):
    """Build a shadow index with `model` (a local model directory or registered name)."""

    model: str
    requested_at: float = field(default_factory=time.time)
    reason: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise EventError("'model' must name a model directory or registered model")


@control_event("rollback")
@dataclass(frozen=True)
class Rollback(ControlEvent):
    """Point serving back at the previous index (or at `to_index` when given)."""

    to_index: str | None = None
    requested_at: float = field(default_factory=time.time)


@control_event("gate-report")
@dataclass(frozen=True)
class GateReportEvent(ControlEvent):
    """The validation gate's verdict on a shadow index, published whether it passed or not."""

    index_id: str
    passed: bool
    reason: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


@control_event("flip")
@dataclass(frozen=True)
class Flip(ControlEvent):
    """The active-index pointer moved from `from_index` to `to_index`."""

    from_index: str | None
    to_index: str
    at: float = field(default_factory=time.time)


def encode_control_event(event: ControlEvent) -> tuple[bytes, bytes]:
    if not event.TYPE or _CONTROL_KINDS.get(event.TYPE) is not type(event):
        raise EventError(f"{type(event).__name__} is not a registered control event kind")
    return CONTROL_KEY, json.dumps(event.to_json(), ensure_ascii=False).encode("utf-8")


def decode_control_event(value: bytes | str | None) -> ControlEvent:
    """Parse one `control` record; unknown kinds raise EventError naming the known ones."""
    if value is None:
        raise EventError("control event has no value")
    row = _json_object(value)
    kind = row.get("type")
    cls = _CONTROL_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise EventError(f"unknown control event type {kind!r}; known: {', '.join(control_kinds())}")
    body = {k: v for k, v in row.items() if k != "type"}
    return cls.from_json(body)
