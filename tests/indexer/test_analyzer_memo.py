"""The memoized analyzer gives exactly the terms of the original one.

`analyze` now looks terms up per space-separated fragment (see `_FragmentTerms`); BM25 parity and
persisted lexical segments depend on every term staying the same, so the original per-text
algorithm is kept here as the reference and compared on all of SciFact and on hostile text.
"""

from __future__ import annotations

import pytest
from scifact_sample import scifact_rows

from indexer import analyzer
from indexer.analyzer import _PART, _TOKEN, STOPWORDS, _stemmer, analyze, is_identifier

HOSTILE = [
    "",
    "   ",
    "ΣΊΣΥΦΟΣ ΣΑΣ ΟΔΟΣ. ΟΔΟΣ,ΟΔΟΣ Σ ΣΣ aΣ Σa",  # final sigma depends on context
    "İSTANBUL İi ǅ ǈ ß ẞ ﬁnance Ångström",
    "INV-2024-00917 sku48zx B07XJ8C8F5 123456 12345 a_b-c.d:e#f -x- _y_ a--b a..b",
    "x\u00a0y\u3000z a\u200bb tab\tsep new\nline  double  spaces ",
    "汉字没有空格 日本語のテキスト emoji 😀🎉 e\u0301 combining",
    "The the THE of OF in and AND running runs ran",
]


def _reference(text: str) -> list[str]:
    """`analyze` before the memo (commit e2ded07)."""
    terms: list[str] = []
    stem = _stemmer().stemWord
    for match in _TOKEN.finditer(text.lower()):
        token = match.group()
        if is_identifier(token):
            terms.append(f"#{token}")
        for part in _PART.findall(token):
            if part not in STOPWORDS:
                terms.append(stem(part))
    return terms


def test_scifact_terms_are_identical() -> None:
    compared = 0
    for row in scifact_rows():
        for text in (row.get("title", ""), row.get("text", "")):
            assert analyze(text) == _reference(text), text[:80]
            compared += 1
    assert compared == 2 * len(scifact_rows()) >= 600


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_terms_are_identical(text: str) -> None:
    assert analyze(text) == _reference(text)
    assert analyze(text) == _reference(text)  # memoized the second time


def test_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analyzer, "_TERMS_MAX", 10)
    for i in range(100):
        assert analyze(f"w{i} x{i} y{i}") == _reference(f"w{i} x{i} y{i}")
    assert len(analyzer._TERMS) <= 10 + 3
