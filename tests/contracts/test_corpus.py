"""One corpus line format for `produce` and `build`: the lines they used to disagree on, read the
same way by the shared parser and by both of its callers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from contracts.corpus import (
    CorpusLine,
    LineError,
    SkippedLines,
    corpus_line,
    corpus_lines,
    json_objects,
)
from contracts.fields import MAX_VERSION
from indexer.beir import read_corpus
from producers.corpus import read_events

HUGE_TEXT = "word " * 1_000_000  # a 5 MB document is large, not malformed

LINES = [
    b'{"_id": "a", "title": "A", "text": "alpha", "version": 3, "metadata": {"src": "x"}}',
    b'{"_id": "no-text", "title": "only a title"}',  # 2
    b'{"title": "no id", "text": "x"}',  # 3
    b"[1, 2, 3]",  # 4
    b'{"_id": 17, "text": "numeric ids are BEIR-legal"}',
    json.dumps({"_id": "huge", "text": HUGE_TEXT}).encode(),
    b'{"_id": "e", "text": "caf\xe9"}',  # 7: Latin-1, not UTF-8
    b'{"_id": "empty", "text": ""}',  # an empty document is legal
    b'{"_id": "null-text", "text": null}',  # 9
    b'{"_id": "int", "text": "x", "version": ' + b"9" * 5000 + b"}",  # 10: beyond the parser
    b'{"_id": "big", "text": "x", "version": ' + str(MAX_VERSION + 1).encode() + b"}",  # 11
    b'{"_id": true, "text": "x"}',  # 12
    b"",  # blank lines are not errors
    b'{"_id": "untitled", "text": "no title", "title": null}',
]
GOOD = ["a", "17", "huge", "empty", "untitled"]
BAD = {
    2: "'text' is missing",
    3: "'_id' is missing",
    4: "not a JSON object",
    7: "not valid UTF-8",
    9: "'text' is missing",
    10: "cannot be parsed",
    11: "signed 64-bit",
    12: "'_id' must be a non-empty string or an integer",
}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b"\n".join(LINES) + b"\n")
    return path


def _assert_skipped(skipped: SkippedLines) -> None:
    reasons = dict(skipped.lines)
    assert sorted(reasons) == sorted(BAD), skipped.summary(limit=20)
    for line_no, expected in BAD.items():
        assert expected in reasons[line_no], (line_no, reasons[line_no])
    assert skipped.summary(limit=1).startswith(f"{len(BAD)} line(s) skipped: line 2: 'text' is missing")


def test_the_parser_reads_each_line_once_for_everyone(corpus: Path) -> None:
    skipped = SkippedLines()
    with corpus.open("rb") as handle:
        lines = dict(corpus_lines(handle, skipped))
    _assert_skipped(skipped)
    assert [line.doc_id for line in lines.values()] == GOOD
    assert lines[1] == CorpusLine("a", "A", "alpha", 3, {"src": "x"})
    assert lines[5] == CorpusLine("17", "", "numeric ids are BEIR-legal", None, {})
    assert lines[6].text == HUGE_TEXT
    assert lines[8].text == "" and lines[14].title == ""


def test_produce_and_build_agree_on_every_line(corpus: Path) -> None:
    produced, built = SkippedLines(), SkippedLines()
    before = time.time_ns()
    events = list(read_events(corpus, produced))
    documents = list(read_corpus(corpus, built, default_version=7))
    _assert_skipped(produced)
    _assert_skipped(built)
    assert produced.lines == built.lines
    assert [e.doc_id for e in events] == [d.doc_id for d in documents] == GOOD
    for event, document in zip(events, documents, strict=True):
        assert (event.title, event.text, event.metadata) == (
            document.title,
            document.text,
            document.metadata,
        )
    # the version policy stays with each caller: a given version is kept by both; without
    # one, produce stamps the clock and build gives its default
    assert events[0].version == documents[0].version == 3
    assert all(e.version >= before for e in events[1:])
    assert all(d.version == 7 for d in documents[1:])


def test_a_field_error_names_the_field() -> None:
    cases: list[tuple[dict[str, object], str]] = [
        ({"_id": "", "text": "x"}, "'_id' must be a non-empty string"),
        ({"_id": ["a"], "text": "x"}, "'_id' must be a non-empty string"),
        ({"_id": "a", "text": 5}, "'text' must be a string (got int)"),
        ({"_id": "a", "text": "x", "title": 5}, "'title' must be a string (got int)"),
        ({"_id": "a", "text": "x", "version": "7"}, "'version' must be a non-negative integer"),
        ({"_id": "a", "text": "x", "version": -1}, "'version' must be a non-negative integer"),
        ({"_id": "a", "text": "x", "version": True}, "'version' must be a non-negative integer"),
        ({"_id": "a", "text": "x", "metadata": "m"}, "'metadata' must be a JSON object (got str)"),
    ]
    for row, reason in cases:
        with pytest.raises(LineError, match=reason.replace("(", r"\(").replace(")", r"\)")):
            corpus_line(row)


def test_doc_id_is_the_alias_of_id_and_metadata_passes_through() -> None:
    line = corpus_line({"doc_id": "x", "text": "t", "metadata": {"nested": {"a": [1, 2]}}})
    assert line == CorpusLine("x", "", "t", None, {"nested": {"a": [1, 2]}})
    assert corpus_line({"_id": "x", "text": "t", "version": MAX_VERSION}).version == MAX_VERSION


def test_json_objects_reports_every_kind_of_unreadable_line() -> None:
    skipped = SkippedLines()
    rows = list(json_objects([b'{"ok": 1}', b"{broken", b'"a string"', b"  \n", b"\xff"], skipped))
    assert rows == [(1, {"ok": 1})]
    assert [n for n, _ in skipped.lines] == [2, 3, 5]
    assert "not valid JSON" in skipped.lines[0][1]
    assert "not a JSON object (got str)" in skipped.lines[1][1]
    assert "not valid UTF-8" in skipped.lines[2][1]
