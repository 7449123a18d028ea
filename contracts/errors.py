"""Errors that tell the operator what went wrong and how to fix it."""

from __future__ import annotations


class SemsearchError(Exception):
    """Base class: every expected failure of semsearch is one of these."""


class InvalidDocumentError(SemsearchError):
    """A document cannot be indexed as given (empty, too large, bad field)."""


class InvalidQueryError(SemsearchError):
    """A query cannot be answered as given (empty, too long, bad k or mode)."""


class ModelMismatchError(SemsearchError):
    """The loaded embedding model is not the one the index was built with."""


class SnapshotError(SemsearchError):
    """A snapshot is missing, incomplete or fails its checksums."""


class GenerationCollectedError(SnapshotError):
    """The generation a reader just loaded was garbage-collected before it could pin it (the
    writer moved on): loading again finds a newer one."""


class IndexNotFoundError(SemsearchError):
    """No index exists under the given id or directory."""


class InvalidIndexIdError(IndexNotFoundError):
    """A value that is not an index id: from a request, a CLI flag or the Redis pointer.

    An IndexNotFoundError because no index can exist under it; its own type because a
    malformed id is someone's input error (or tampering), not a missing build.
    """


class BrokerError(SemsearchError):
    """Kafka cannot be reached or started, or a topic cannot be created."""
