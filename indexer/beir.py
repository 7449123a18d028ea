"""Readers for BEIR-format files (corpus.jsonl, queries.jsonl, qrels.tsv).

Real corpora contain broken lines; a reader that crashes on line 3,000,001 wastes an hour of
embedding. Bad lines are reported with their line number and skipped, never guessed at. The
corpus line format is contracts.corpus's, the same `semsearch produce` reads; a build gives
lines without a version `default_version`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from contracts.corpus import SkippedLines, corpus_lines, json_objects
from contracts.documents import Document
from contracts.errors import SemsearchError


def _open(path: Path) -> IO[bytes]:
    if not path.is_file():
        raise SemsearchError(f"{path} does not exist or is not a file")
    return path.open("rb")


def read_corpus(path: Path, skipped: SkippedLines, default_version: int = 0) -> Iterator[Document]:
    with _open(path) as handle:
        for _, line in corpus_lines(handle, skipped):
            version = default_version if line.version is None else line.version
            yield Document(line.doc_id, line.title, line.text, version, line.metadata)


def read_queries(path: Path) -> dict[str, str]:
    problems = SkippedLines()
    queries = {}
    with _open(path) as handle:
        for line_no, row in json_objects(handle, problems):
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
