"""Read a BEIR-format corpus (one JSON object a line) as upsert events.

The line format and its checks are contracts.corpus's, shared with `semsearch build`; what is
added here is the producer's version policy: documents without a version get
`time.time_ns()` (see contracts.events), so re-publishing a file makes its lines the newest.
A line the event schema refuses (an id with control characters, an oversized document) is
skipped with its line number, like a line the format refuses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from contracts.corpus import SkippedLines, corpus_lines
from contracts.errors import SemsearchError
from contracts.events import EventError, UpsertEvent


def read_events(path: Path, skipped: SkippedLines) -> Iterator[UpsertEvent]:
    """Yield one upsert per good line; bad lines go to `skipped` (never raised)."""
    if not path.is_file():
        raise SemsearchError(f"{path} does not exist or is not a file; pass a BEIR corpus.jsonl")
    with path.open("rb") as handle:
        for line_no, line in corpus_lines(handle, skipped):
            try:
                yield UpsertEvent.build(
                    doc_id=line.doc_id,
                    title=line.title,
                    text=line.text,
                    version=line.version,
                    metadata=line.metadata,
                )
            except EventError as exc:
                skipped.add(line_no, exc.reason)
