"""One reading of a BEIR corpus line, shared by `semsearch produce` and `semsearch build`.

The same file must mean the same documents whichever way it enters the system, so the line
format is decided here once: `_id` (or `doc_id`) required, a non-empty string or an integer
(written as its decimal string, as BEIR datasets with numeric ids expect); `title` optional;
`text` required, a string (BEIR lines always carry it; an empty string is a legal empty
document, a missing one is a mistake worth reporting); `version` optional, a non-negative
integer that fits the signed 64 bits every store of versions uses; `metadata` optional, an
object passed through as it is. What a line without a version gets is the caller's policy.

A broken line is recorded with its number and why, and skipped: one bad line must not stop a
million-line run, and the user needs the line number to fix the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from contracts.fields import metadata_field, string_field, version_field


@dataclass
class SkippedLines:
    """Lines that could not be used, with why; reported to the user after reading."""

    lines: list[tuple[int, str]] = field(default_factory=list)

    def add(self, line_no: int, reason: str) -> None:
        self.lines.append((line_no, reason))

    def __len__(self) -> int:
        return len(self.lines)

    def summary(self, limit: int = 5) -> str:
        shown = "; ".join(f"line {n}: {reason}" for n, reason in self.lines[:limit])
        more = f" (+{len(self.lines) - limit} more)" if len(self.lines) > limit else ""
        return f"{len(self.lines)} line(s) skipped: {shown}{more}"


class LineError(ValueError):
    """A corpus line does not follow the format; `reason` names the field and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class CorpusLine:
    """The fields of one valid line; `version` is None where the line carries none."""

    doc_id: str
    title: str
    text: str
    version: int | None
    metadata: dict[str, Any]


def json_objects(
    lines: Iterable[bytes], skipped: SkippedLines
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every line that is one JSON object; blank lines are not errors,
    anything else goes to `skipped` (never raised)."""
    for line_no, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            skipped.add(line_no, f"not valid UTF-8 ({exc.reason} at byte {exc.start})")
            continue
        except json.JSONDecodeError as exc:
            skipped.add(line_no, f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        except (RecursionError, ValueError) as exc:  # nesting or integers beyond the parser
            skipped.add(line_no, f"cannot be parsed ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        if not isinstance(row, dict):
            skipped.add(line_no, f"not a JSON object (got {type(row).__name__})")
            continue
        yield line_no, row


def corpus_line(row: dict[str, Any]) -> CorpusLine:
    """The fields of one corpus object; raises LineError naming the first bad field."""
    return CorpusLine(
        doc_id=_doc_id(row),
        title=string_field(row, "title", required=False, error=LineError),
        text=string_field(row, "text", required=True, error=LineError),
        version=version_field(row.get("version"), required=False, error=LineError),
        metadata=metadata_field(row.get("metadata"), error=LineError),
    )


def corpus_lines(lines: Iterable[bytes], skipped: SkippedLines) -> Iterator[tuple[int, CorpusLine]]:
    """(line number, fields) for every valid line of a corpus file opened in binary mode."""
    for line_no, row in json_objects(lines, skipped):
        try:
            yield line_no, corpus_line(row)
        except LineError as exc:
            skipped.add(line_no, exc.reason)


def _doc_id(row: dict[str, Any]) -> str:
    if "_id" not in row and "doc_id" not in row:
        raise LineError("'_id' is missing")
    value = row["_id"] if "_id" in row else row["doc_id"]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise LineError(f"'_id' must be a non-empty string or an integer (got {value!r:.60})")
    return value
