"""Readers for BEIR-format files (corpus.jsonl, queries.jsonl, qrels.tsv).

Real corpora contain broken lines; a reader that crashes on line 3,000,001 wastes an hour of
embedding. Bad lines are reported with their line number and skipped, never guessed at.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contracts.documents import Document
from contracts.errors import SemsearchError


@dataclass
class ReadProblems:
    """Lines that could not be used, with why; reported to the user after reading."""

    problems: list[tuple[int, str]] = field(default_factory=list)

    def add(self, line_no: int, reason: str) -> None:
        self.problems.append((line_no, reason))

    def __len__(self) -> int:
        return len(self.problems)

    def summary(self, limit: int = 5) -> str:
        shown = "; ".join(f"line {n}: {r}" for n, r in self.problems[:limit])
        more = f" (+{len(self.problems) - limit} more)" if len(self.problems) > limit else ""
        return f"{len(self.problems)} line(s) skipped: {shown}{more}"


def _json_lines(path: Path, problems: ReadProblems) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise SemsearchError(f"{path} does not exist or is not a file")
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.add(line_no, f"not valid UTF-8 ({exc.reason} at byte {exc.start})")
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.add(line_no, f"not valid JSON ({exc.msg})")
                continue
            except (RecursionError, ValueError) as exc:  # nesting or integers beyond the parser
                problems.add(line_no, f"cannot be parsed ({type(exc).__name__}: {str(exc)[:120]})")
                continue
            if not isinstance(row, dict):
                problems.add(line_no, "not a JSON object")
                continue
            yield line_no, row


def document_from_row(row: dict[str, Any], default_version: int) -> Document:
    """One corpus object → Document; raises ValueError naming the bad field."""
    doc_id = row.get("_id", row.get("doc_id"))
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)
    if not isinstance(doc_id, str) or not doc_id.strip():
        raise ValueError("missing or empty '_id'")
    title = row.get("title") or ""
    text = row.get("text") or ""
    if not isinstance(title, str) or not isinstance(text, str):
        raise ValueError("'title' and 'text' must be strings")
    version = row.get("version", default_version)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ValueError("'version' must be a non-negative integer")
    metadata = row.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValueError("'metadata' must be an object")
    return Document(doc_id, title, text, version, metadata)


def read_corpus(path: Path, problems: ReadProblems, default_version: int = 0) -> Iterator[Document]:
    for line_no, row in _json_lines(path, problems):
        try:
            yield document_from_row(row, default_version)
        except ValueError as exc:
            problems.add(line_no, str(exc))


def read_queries(path: Path) -> dict[str, str]:
    problems = ReadProblems()
    queries = {}
    for line_no, row in _json_lines(path, problems):
        qid, text = row.get("_id"), row.get("text")
        if not isinstance(qid, str | int) or not isinstance(text, str) or not text.strip():
            problems.add(line_no, "a query needs '_id' and non-empty 'text'")
            continue
        queries[str(qid)] = text
    if not queries:
        raise SemsearchError(f"{path} holds no usable queries ({problems.summary()})")
    return queries


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """query id → {doc id: relevance}; the header line is optional."""
    if not path.is_file():
        raise SemsearchError(f"{path} does not exist or is not a file")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as handle:
        for row in csv.reader(handle, delimiter="\t"):
            if len(row) < 3 or row[0] == "query-id":
                continue
            try:
                score = int(row[2])
            except ValueError:
                continue
            qrels.setdefault(row[0], {})[row[1]] = score
    if not qrels:
        raise SemsearchError(
            f"{path} holds no relevance judgements (expected query-id, corpus-id, score)"
        )
    return qrels
