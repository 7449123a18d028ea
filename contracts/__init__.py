"""The ground floor: contracts every stage imports (errors, ids, offsets, events, settings); imports nothing of ours."""

from contracts.documents import MAX_DOC_ID_CHARS, Change, Deletion, Document
from contracts.errors import (
    BrokerError,
    IndexNotFoundError,
    InvalidDocumentError,
    InvalidIndexIdError,
    InvalidQueryError,
    ModelMismatchError,
    SemsearchError,
    SnapshotError,
)
from contracts.events import (
    ControlEvent,
    DeleteEvent,
    DocEvent,
    EventError,
    Flip,
    GateReportEvent,
    ModelUpgrade,
    Rollback,
    UpsertEvent,
    control_event,
    decode_control_event,
    decode_doc_event,
    encode_control_event,
    encode_doc_event,
)
from contracts.ids import validate_index_id
from contracts.offsets import Offsets, copy_offsets
from contracts.pointer import Pointer, PointerError
from contracts.settings import Settings, SettingsError
from contracts.storable import unstorable
from contracts.topics import ensure_topics, topic_layout

__all__ = [
    "MAX_DOC_ID_CHARS",
    "BrokerError",
    "Change",
    "ControlEvent",
    "DeleteEvent",
    "Deletion",
    "DocEvent",
    "Document",
    "EventError",
    "Flip",
    "GateReportEvent",
    "IndexNotFoundError",
    "InvalidDocumentError",
    "InvalidIndexIdError",
    "InvalidQueryError",
    "ModelMismatchError",
    "ModelUpgrade",
    "Offsets",
    "Pointer",
    "PointerError",
    "Rollback",
    "SemsearchError",
    "Settings",
    "SettingsError",
    "SnapshotError",
    "UpsertEvent",
    "control_event",
    "copy_offsets",
    "decode_control_event",
    "decode_doc_event",
    "encode_control_event",
    "encode_doc_event",
    "ensure_topics",
    "topic_layout",
    "unstorable",
    "validate_index_id",
]
