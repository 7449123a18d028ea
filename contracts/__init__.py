"""The ground floor: contracts every stage imports (errors, ids, offsets, events, settings); imports nothing of ours."""

from typing import TYPE_CHECKING

# mypy and IDEs read the real imports; the interpreter imports a name's module on first use.
if TYPE_CHECKING:
    from contracts.corpus import CorpusLine, LineError, SkippedLines, corpus_lines, json_objects
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
        new_version,
    )
    from contracts.ids import validate_index_id
    from contracts.offsets import Offsets, copy_offsets
    from contracts.pointer import Pointer, PointerError, describe_url
    from contracts.settings import VECTOR_CODECS, Settings, SettingsError
    from contracts.storable import unstorable
    from contracts.topics import ensure_topics, topic_layout
else:
    from contracts._exports import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "contracts.corpus": (
                "CorpusLine",
                "LineError",
                "SkippedLines",
                "corpus_lines",
                "json_objects",
            ),
            "contracts.documents": ("MAX_DOC_ID_CHARS", "Change", "Deletion", "Document"),
            "contracts.errors": (
                "BrokerError",
                "IndexNotFoundError",
                "InvalidDocumentError",
                "InvalidIndexIdError",
                "InvalidQueryError",
                "ModelMismatchError",
                "SemsearchError",
                "SnapshotError",
            ),
            "contracts.events": (
                "ControlEvent",
                "DeleteEvent",
                "DocEvent",
                "EventError",
                "Flip",
                "GateReportEvent",
                "ModelUpgrade",
                "Rollback",
                "UpsertEvent",
                "control_event",
                "decode_control_event",
                "decode_doc_event",
                "encode_control_event",
                "encode_doc_event",
                "new_version",
            ),
            "contracts.ids": ("validate_index_id",),
            "contracts.offsets": ("Offsets", "copy_offsets"),
            "contracts.pointer": ("Pointer", "PointerError", "describe_url"),
            "contracts.settings": ("VECTOR_CODECS", "Settings", "SettingsError"),
            "contracts.storable": ("unstorable",),
            "contracts.topics": ("ensure_topics", "topic_layout"),
        },
    )

__all__ = [
    "MAX_DOC_ID_CHARS",
    "VECTOR_CODECS",
    "BrokerError",
    "Change",
    "ControlEvent",
    "CorpusLine",
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
    "LineError",
    "ModelMismatchError",
    "ModelUpgrade",
    "Offsets",
    "Pointer",
    "PointerError",
    "Rollback",
    "SemsearchError",
    "Settings",
    "SettingsError",
    "SkippedLines",
    "SnapshotError",
    "UpsertEvent",
    "control_event",
    "copy_offsets",
    "corpus_lines",
    "decode_control_event",
    "decode_doc_event",
    "describe_url",
    "encode_control_event",
    "encode_doc_event",
    "ensure_topics",
    "json_objects",
    "new_version",
    "topic_layout",
    "unstorable",
    "validate_index_id",
]
