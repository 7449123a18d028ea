"""The checks of a document's loose JSON fields, shared by the corpus reader and the event decoder.

A corpus line and a Kafka event carry the same fields and must be refused for the same things in
the same words; each check raises the caller's exception (LineError for a corpus line,
EventError for an event) with a message that names the field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# Versions are compared as signed 64-bit integers downstream (Kafka headers, the document table).
MAX_VERSION = 2**63 - 1

FieldError = Callable[[str], Exception]


def string_field(row: Mapping[str, Any], name: str, *, required: bool, error: FieldError) -> str:
    """`row[name]` as a string; absent (or null) is "" where not `required`."""
    value = row.get(name)
    if value is None:
        if required:
            raise error(f"'{name}' is missing")
        return ""
    if not isinstance(value, str):
        raise error(f"'{name}' must be a string (got {type(value).__name__})")
    return value


def version_field(value: object, *, required: bool, error: FieldError) -> int | None:
    """A version: a non-negative integer that fits in 64 signed bits (booleans are not)."""
    if value is None:
        if required:
            raise error("'version' is missing; every upsert needs an integer version")
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise error(f"'version' must be a non-negative integer (got {value!r:.60})")
    if value > MAX_VERSION:
        raise error(f"'version' must fit in a signed 64-bit integer (at most {MAX_VERSION}; got {value!r:.60})")
    return value


def metadata_field(value: object, *, error: FieldError) -> dict[str, Any]:
    """Metadata: a JSON object; absent (or null) is empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise error(f"'metadata' must be a JSON object (got {type(value).__name__})")
    return value
