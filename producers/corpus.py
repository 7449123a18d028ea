"""Read a BEIR-format corpus (one JSON object a line) as upsert events.

Lines: `_id`, `title`, `text`, optional integer `version` and object `metadata`. A broken line is
recorded with its number and why, and skipped: one bad line must not stop a million-line
publish, and the user needs the line number to fix the file. Documents without a version get
`time.time_ns()` (see contracts.events), so re-publishing a file makes its lines the newest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from contracts.errors import SemsearchError
from contracts.events import EventError, UpsertEvent


@dataclass
class SkippedLines:
    """Lines that could not be turned into events, with why."""

    lines: list[tuple[int, str]] = field(default_factory=list)

    def add(self, line_no: int, reason: str) -> None:
        self.lines.append((line_no, reason))

    def __len__(self) -> int:
        return len(self.lines)

    def summary(self, limit: int = 5) -> str:
        shown = "; ".join(f"line {n}: {reason}" for n, reason in self.lines[:limit])
        more = f" (+{len(self.lines) - limit} more)" if len(self.lines) > limit else ""
        return f"{len(self.lines)} line(s) skipped: {shown}{more}"


def _event(row: dict[str, object]) -> UpsertEvent:
    if "_id" not in row and "doc_id" not in row:
        raise EventError("'_id' is missing")
    doc_id = row.get("_id", row.get("doc_id"))
    return UpsertEvent.build(
        doc_id=doc_id,
        title=row.get("title") or "",
        text=row.get("text"),
        version=row.get("version"),
        metadata=row.get("metadata"),
    )


def read_events(path: Path, skipped: SkippedLines) -> Iterator[UpsertEvent]:
    """Yield one upsert per good line; bad lines go to `skipped` (never raised)."""
    if not path.is_file():
        raise SemsearchError(f"{path} does not exist or is not a file; pass a BEIR corpus.jsonl")
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
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
            try:
                yield _event(row)
            except EventError as exc:
                skipped.add(line_no, exc.reason)
