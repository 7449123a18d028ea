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

Both are pydantic dataclasses in discriminated unions (on `op` and on `type`), whose JSON
schemas are published in docs/schemas/ (`python -m contracts.publish`). Constructing an event
in code only checks types; everything hostile input can carry (lone surrogates, NaN, ids that
are not printable, versions beyond 64 bits) is checked when decoding (validation context
`wire`) and again before encoding (`check_doc_event`), with a reason that says how to fix it.
"""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import field, fields
from functools import cache
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union

from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass

from contracts.documents import MAX_DOC_ID_CHARS, Deletion, Document
from contracts.errors import SemsearchError
from contracts.fields import MAX_VERSION, metadata_field, string_field, version_field
from contracts.storable import MAX_NESTING, unstorable

UPSERT = "upsert"
DELETE = "delete"
CONTROL_KEY = b"control"


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
_WIRE = "wire"  # validation context: decoding a record from the topic (untrusted input)
_CONFIG = ConfigDict(extra="ignore")  # fields of newer producers are ignored, not fatal


def _on_wire(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and bool(info.context.get(_WIRE))


DocId = Annotated[
    str,
    Field(
        description="The document's id; also the record key (one partition per document). "
        "Printable, no control characters.",
        json_schema_extra={"minLength": 1, "maxLength": MAX_DOC_ID_CHARS},
    ),
]
Version = Annotated[
    int,
    Field(
        description="Grows with every change of one document; the index ignores anything not "
        "newer than what it holds.",
        json_schema_extra={"minimum": 0, "maximum": MAX_VERSION},
    ),
]


@dataclass(frozen=True, config=_CONFIG)
class UpsertEvent:
    """Create or replace a document."""

    doc_id: DocId
    version: Version
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    op: Literal["upsert"] = "upsert"

    @model_validator(mode="before")
    @classmethod
    def _absent_is_empty(cls, data: Any, info: ValidationInfo) -> Any:
        """On the wire `title` is optional (null = absent = empty)."""
        if _on_wire(info) and isinstance(data, dict) and data.get("title") is None:
            data = {**data, "title": ""}
        return data

    @field_validator("doc_id", mode="before")
    @classmethod
    def _wire_doc_id(cls, value: Any, info: ValidationInfo) -> Any:
        return _doc_id(value) if _on_wire(info) else value

    @field_validator("version", mode="before")
    @classmethod
    def _wire_version(cls, value: Any, info: ValidationInfo) -> Any:
        return version_field(value, required=True, error=EventError) if _on_wire(info) else value

    @field_validator("text", mode="before")
    @classmethod
    def _wire_text(cls, value: Any, info: ValidationInfo) -> Any:
        return string_field({"text": value}, "text", required=True, error=EventError) if _on_wire(info) else value

    @field_validator("title", mode="before")
    @classmethod
    def _wire_title(cls, value: Any, info: ValidationInfo) -> Any:
        return string_field({"title": value}, "title", required=False, error=EventError) if _on_wire(info) else value

    @field_validator("metadata", mode="before")
    @classmethod
    def _wire_metadata(cls, value: Any, info: ValidationInfo) -> Any:
        return metadata_field(value, error=EventError) if _on_wire(info) else value

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
        checked = version_field(version, required=False, error=EventError)
        held = metadata_field(metadata, error=EventError)
        _check_storable(held, "'metadata'")  # before the type check: it says how to fix it
        event = cls(
            doc_id=_doc_id(doc_id),
            version=new_version() if checked is None else checked,
            title=string_field(row, "title", required=False, error=EventError),
            text=string_field(row, "text", required=True, error=EventError),
            metadata=held,
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


@dataclass(frozen=True, config=_CONFIG)
class DeleteEvent:
    """Remove a document. `version=None` (a Kafka tombstone) deletes whatever is held."""

    doc_id: DocId
    version: Version | None = None
    op: Literal["delete"] = "delete"

    @field_validator("doc_id", mode="before")
    @classmethod
    def _wire_doc_id(cls, value: Any, info: ValidationInfo) -> Any:
        return _doc_id(value) if _on_wire(info) else value

    @field_validator("version", mode="before")
    @classmethod
    def _wire_version(cls, value: Any, info: ValidationInfo) -> Any:
        return version_field(value, required=False, error=EventError) if _on_wire(info) else value

    @property
    def is_tombstone(self) -> bool:
        return self.version is None

    def to_change(self) -> Deletion:
        return Deletion(self.doc_id, self.version)

    def to_json(self) -> dict[str, Any]:
        return {"op": DELETE, "doc_id": self.doc_id, "version": self.version}


DocEvent = UpsertEvent | DeleteEvent
# The JSON value of a `docs` record, told apart by `op`.
DocMessage = Annotated[DocEvent, Field(discriminator="op")]
_DOC_MESSAGE: TypeAdapter[DocEvent] = TypeAdapter(DocMessage)


def _doc_problem(exc: ValidationError, row: Mapping[str, Any]) -> EventError:
    """The first problem of a decoded `docs` value, said as the DLQ reason."""
    error = exc.errors()[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, EventError):
        return cause
    kind = error["type"]
    if kind == "union_tag_not_found":
        return EventError("'op' is missing; it must be 'upsert' or 'delete'")
    if kind == "union_tag_invalid":
        return EventError(f"'op' must be 'upsert' or 'delete' (got {row.get('op')!r})")
    name = str(error["loc"][-1]) if error["loc"] else "value"
    if kind == "missing" and name == "version":
        return EventError("'version' is missing; every upsert needs an integer version")
    if kind == "missing":
        return EventError(f"'{name}' is missing")
    return EventError(f"'{name}' {error['msg'][0].lower()}{error['msg'][1:]} (got {error.get('input')!r})")


def check_doc_event(event: DocEvent) -> None:
    """Raise EventError for what the consumer would dead-letter: producers never publish it."""
    _doc_id(event.doc_id)
    version_field(event.version, required=isinstance(event, UpsertEvent), error=EventError)
    if isinstance(event, UpsertEvent):
        for name in ("title", "text"):
            value = getattr(event, name)
            if not isinstance(value, str):
                raise EventError(f"'{name}' must be a string (got {type(value).__name__})")
            _check_storable(value, f"'{name}'")
        _check_storable(metadata_field(event.metadata, error=EventError), "'metadata'")


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
    try:
        event = _DOC_MESSAGE.validate_python(row, context={_WIRE: True})
    except ValidationError as exc:
        raise _doc_problem(exc, row) from None
    if key_id is None:
        # Kafka partitions by key: without it, versions of one document scatter over partitions
        # (so over shards, and out of order), which no consumer can repair.
        raise EventError(
            f"the record has no key; publish with key = doc_id ({event.doc_id!r}) so that every "
            "version of a document lands in the same partition, in order"
        )
    if key_id != event.doc_id:
        raise EventError(
            f"key {key_id!r} differs from doc_id {event.doc_id!r}; publish with key = doc_id so that "
            "every version of a document lands in the same partition, in order"
        )
    return event


# -- control events -------------------------------------------------------------------------
@dataclass(frozen=True, config=_CONFIG)
class ControlEvent:
    """Base of every `control` kind; subclasses are pydantic dataclasses of JSON-able fields."""

    TYPE: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        body = {f.name: getattr(self, f.name) for f in fields(self)}
        return {"type": self.TYPE, **body}


_CONTROL_KINDS: dict[str, type[ControlEvent]] = {}
C = TypeVar("C", bound=type)  # pydantic types decorated dataclasses as type[PydanticDataclass]


def control_event(type_name: str) -> Callable[[C], C]:
    """Register a control kind under its wire `type` (kinds added later call this too)."""

    def register(cls: C) -> C:
        if not issubclass(cls, ControlEvent):
            raise TypeError(f"{cls.__name__} must subclass ControlEvent")
        if type_name in _CONTROL_KINDS and _CONTROL_KINDS[type_name] is not cls:
            raise ValueError(f"control event type {type_name!r} is registered twice")
        cls.TYPE = type_name
        _CONTROL_KINDS[type_name] = cls
        _control_message.cache_clear()
        validated_init = cls.__init__

        def __init__(self: ControlEvent, *args: Any, **kwargs: Any) -> None:
            """Construction in code fails like decoding does: with an EventError."""
            try:
                validated_init(self, *args, **kwargs)
            except ValidationError as exc:
                raise _control_problem(type_name, exc) from None

        cls.__init__ = __init__  # type: ignore[assignment]
        return cls

    return register


def control_kinds() -> tuple[str, ...]:
    return tuple(sorted(_CONTROL_KINDS))


def _type_of(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "TYPE", None)
    return kind if isinstance(kind, str) else None


@cache
def _control_message() -> TypeAdapter[ControlEvent]:
    """The registered kinds as one union told apart by `type` (rebuilt when a kind registers)."""
    members = tuple(Annotated[cls, Tag(name)] for name, cls in sorted(_CONTROL_KINDS.items()))
    union: Any = Annotated[Union[members], Discriminator(_type_of)]  # noqa: UP007
    return TypeAdapter(union)


def _control_problem(kind: str, exc: ValidationError) -> EventError:
    errors = exc.errors()
    cause = (errors[0].get("ctx") or {}).get("error")
    if isinstance(cause, EventError):
        return cause
    missing = [str(e["loc"][-1]) for e in errors if e["type"] == "missing" and e["loc"]]
    if missing:
        return EventError(f"control event {kind!r} is missing {', '.join(map(repr, missing))}")
    error = errors[0]
    where = f"'{error['loc'][-1]}' " if error["loc"] else ""
    return EventError(f"control event {kind!r}: {where}{error['msg']} (got {error.get('input')!r})")


@control_event("model-upgrade")
@dataclass(frozen=True, config=_CONFIG)
class ModelUpgrade(ControlEvent):
    """Build a shadow index with `model` (a local model directory or registered name)."""

    model: str
    requested_at: float = field(default_factory=time.time)
    reason: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise EventError("'model' must name a model directory or registered model")


@control_event("rollback")
@dataclass(frozen=True, config=_CONFIG)
class Rollback(ControlEvent):
    """Point serving back at the previous index (or at `to_index` when given)."""

    to_index: str | None = None
    requested_at: float = field(default_factory=time.time)


@control_event("gate-report")
@dataclass(frozen=True, config=_CONFIG)
class GateReportEvent(ControlEvent):
    """The validation gate's verdict on a shadow index, published whether it passed or not."""

    index_id: str
    passed: bool
    reason: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


@control_event("flip")
@dataclass(frozen=True, config=_CONFIG)
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
    if not isinstance(kind, str) or kind not in _CONTROL_KINDS:
        raise EventError(f"unknown control event type {kind!r}; known: {', '.join(control_kinds())}")
    try:
        return _control_message().validate_python(row)
    except ValidationError as exc:
        raise _control_problem(kind, exc) from None


# What docs/schemas/control.schema.json publishes (kinds registered later are not part of it).
PUBLISHED_CONTROL_EVENTS: tuple[type[ControlEvent], ...] = (ModelUpgrade, Rollback, GateReportEvent, Flip)


def doc_event_schema() -> dict[str, Any]:
    """JSON schema of a `docs` record's value (a null value, the tombstone, is not JSON)."""
    schema = _DOC_MESSAGE.json_schema()
    # The wire differs from construction in code in two places: `op` is required (it tells
    # the kinds apart) and a missing `title` is empty.
    for body in schema["$defs"].values():
        body["required"] = ["op", *body["required"]]
    upsert = schema["$defs"]["UpsertEvent"]
    upsert["required"].remove("title")
    upsert["properties"]["title"]["default"] = ""
    schema["title"] = "semsearch docs event"
    schema["description"] = "The value of a record on the `docs` topic; the key is the doc_id."
    return schema


def control_event_schema(kinds: tuple[type[ControlEvent], ...] = PUBLISHED_CONTROL_EVENTS) -> dict[str, Any]:
    """JSON schema of a `control` record's value: one of `kinds`, told apart by `type`."""
    defs: dict[str, Any] = {}
    for cls in kinds:
        body = TypeAdapter(cls).json_schema()
        body["properties"] = {"type": {"const": cls.TYPE, "type": "string"}, **body.get("properties", {})}
        body["required"] = ["type", *body.get("required", [])]
        defs[cls.__name__] = body
    return {
        "title": "semsearch control event",
        "description": "The value of a record on the `control` topic (key b'control').",
        "$defs": defs,
        "oneOf": [{"$ref": f"#/$defs/{cls.__name__}"} for cls in kinds],
        "discriminator": {
            "propertyName": "type",
            "mapping": {cls.TYPE: f"#/$defs/{cls.__name__}" for cls in kinds},
        },
    }
