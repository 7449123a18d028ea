"""Where the benches find their data and write their results, and how they read the first N
documents of a BEIR corpus (every bench measures on a prefix of SciFact)."""

from __future__ import annotations

from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np

from contracts.corpus import SkippedLines
from contracts.documents import Document
from contracts.events import UpsertEvent
from indexer.beir import read_corpus
from producers.corpus import read_events

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "scifact"
RESULTS = REPO / "bench" / "results"


def load_documents(corpus: Path, limit: int) -> list[Document]:
    """The first `limit` readable documents, as `semsearch build` reads them."""
    skipped = SkippedLines()
    docs = list(islice(read_corpus(corpus, skipped), limit))
    if not docs:
        raise SystemExit(f"{corpus} holds no readable documents ({skipped.summary()})")
    return docs


def load_events(corpus: Path, limit: int) -> list[UpsertEvent]:
    """The first `limit` publishable lines, as `semsearch produce` reads them."""
    return list(islice(read_events(corpus, SkippedLines()), limit))


def word_counts(corpus: Path) -> tuple[list[str], np.ndarray]:
    """The corpus's whitespace words, most frequent first, and their counts: the unigram
    distribution synthetic corpora are drawn from."""
    counts: Counter[str] = Counter()
    for doc in read_corpus(corpus, SkippedLines()):
        counts.update(doc.full_text.split())
    words, freq = zip(*counts.most_common(), strict=True)
    return list(words), np.asarray(freq, dtype=np.float64)
