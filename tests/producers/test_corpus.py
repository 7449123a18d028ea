"""Reading a BEIR corpus into upsert events: bad lines are reported by number, never fatal."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from contracts.corpus import SkippedLines
from contracts.errors import SemsearchError
from contracts.events import UpsertEvent
from producers.corpus import read_events


def test_good_and_bad_lines(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    lines = [
        b'{"_id": "a", "title": "A", "text": "alpha", "version": 3, "metadata": {"src": "x"}}',
        b'{"_id": "b", "title": "B", "text": "beta"}',
        b"",  # blank lines are not errors
        b"{broken json",
        b'{"title": "no id", "text": "x"}',
        b'{"_id": "c", "text": "x", "version": "7"}',
        b'{"_id": "d", "text": "x", "metadata": "not an object"}',
        b"[1, 2, 3]",
        b'{"_id": "e", "text": "caf\xe9"}',
        b'{"_id": 17, "text": "numeric ids are BEIR-legal"}',
        b'{"_id": "f", "title": "only a title"}',
    ]
    corpus.write_bytes(b"\n".join(lines) + b"\n")
    skipped = SkippedLines()
    before = time.time_ns()
    events = list(read_events(corpus, skipped))

    assert [e.doc_id for e in events] == ["a", "b", "17"]
    assert events[0] == UpsertEvent("a", 3, "A", "alpha", {"src": "x"})
    assert events[1].version >= before  # no version given: stamped with the current time
    reasons = dict(skipped.lines)
    assert sorted(reasons) == [4, 5, 6, 7, 8, 9, 11]
    assert "not valid JSON" in reasons[4]
    assert "'_id' is missing" in reasons[5]
    assert "'version'" in reasons[6]
    assert "'metadata'" in reasons[7]
    assert "not a JSON object" in reasons[8]
    assert "UTF-8" in reasons[9]
    assert "'text' is missing" in reasons[11]
    assert skipped.summary(limit=2).startswith("7 line(s) skipped: line 4: ")
    assert "(+5 more)" in skipped.summary(limit=2)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SemsearchError, match="does not exist"):
        list(read_events(tmp_path / "nope.jsonl", SkippedLines()))


def test_real_scifact_lines_parse() -> None:
    corpus = Path("/work/shared/data/scifact/corpus.jsonl")
    if not corpus.is_file():  # pragma: no cover - the shared data set is part of the workspace
        pytest.fail(f"{corpus} is missing")
    skipped = SkippedLines()
    events = []
    for event in read_events(corpus, skipped):
        events.append(event)
        if len(events) == 50:
            break
    assert len(events) == 50 and not skipped
    assert all(e.text and e.doc_id for e in events)


def test_lines_beyond_the_json_parser_are_skipped_with_a_reason(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    deep = b'{"_id": "deep", "text": "x", "metadata": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    huge_int = b'{"_id": "int", "text": "x", "version": ' + b"9" * 5000 + b"}"
    good = b'{"_id": "ok", "text": "fine"}'
    corpus.write_bytes(b"\n".join([deep, huge_int, good]) + b"\n")
    skipped = SkippedLines()
    events = list(read_events(corpus, skipped))
    assert [e.doc_id for e in events] == ["ok"]
    assert [n for n, _ in skipped.lines] == [1, 2], skipped.summary()
    assert all("cannot be parsed" in reason for _, reason in skipped.lines), skipped.summary()
