"""The fast chunker cuts exactly where the original algorithm cut.

The embedding cache is keyed by chunk content hash: a boundary that moves by one character
re-embeds the chunk (and changes retrieval quality). `_reference_split` is the original algorithm,
frozen here (one tokenizer call per document plus one per window to verify it); the production
Chunker must agree with it on every (start, end, text, content_hash) of real and hostile text.
"""

from __future__ import annotations

from typing import Any

import pytest
from scifact_sample import scifact_rows

from contracts.documents import Document
from indexer.chunking import Chunk, Chunker, content_hash
from indexer.model import EmbeddingModel

SCIFACT_DOCS = 300


def _reference_split(
    tokenizer: Any, text: str, window: int, overlap: int, max_tokens: int
) -> list[Chunk]:
    """The chunker as it was before batching (commit e2ded07), kept verbatim in behaviour."""
    if not text.strip():
        return []
    encoding = tokenizer(
        text,
        add_special_tokens=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        truncation=False,
        verbose=False,
    )
    offsets: list[tuple[int, int]] = list(encoding["offset_mapping"])
    word_ids = encoding.word_ids() if hasattr(encoding, "word_ids") else [None] * len(offsets)
    total = len(offsets)
    if total == 0:
        return []

    def boundary_before(start: int, end: int) -> int:
        cut = end
        while cut > start + 1 and word_ids[cut] is not None and word_ids[cut] == word_ids[cut - 1]:
            cut -= 1
        return cut if cut > start + 1 else end

    def word_start(index: int, floor: int) -> int:
        while (
            index > floor and word_ids[index] is not None and word_ids[index] == word_ids[index - 1]
        ):
            index -= 1
        return index

    def make_chunk(start: int, end: int, position: int) -> Chunk:
        while True:
            char_start, char_end = offsets[start][0], offsets[end - 1][1]
            piece = text[char_start:char_end]
            count = len(tokenizer(piece, add_special_tokens=False, verbose=False)["input_ids"])
            if count <= max_tokens or end - start <= 1:
                return Chunk(position, char_start, char_end, piece, content_hash(piece))
            end -= max(1, count - max_tokens)

    chunks: list[Chunk] = []
    start = 0
    while start < total:
        end = min(start + window, total)
        if end < total:
            end = boundary_before(start, end)
        chunks.append(make_chunk(start, end, len(chunks)))
        if end >= total:
            break
        next_start = max(end - overlap, start + 1)
        start = word_start(next_start, floor=start + 1)
    return chunks


def _reference(chunker: Chunker, text: str) -> list[Chunk]:
    return _reference_split(
        chunker.tokenizer, text, chunker.window, chunker.overlap, chunker.max_tokens
    )


def _scifact_texts() -> list[str]:
    rows = scifact_rows()[:SCIFACT_DOCS]
    return [
        Document(row["_id"], row.get("title", ""), row.get("text", "")).full_text for row in rows
    ]


HOSTILE = [
    "",
    "   \n\t  ",
    "x",
    "A short note.",
    "antidisestablishmentarianism " * 300,
    "pneumonoultramicroscopicsilicovolcanoconiosis" * 40,  # one 1,800-char word: [UNK] pieces
    "abcdefghijklmnopqrstuvwxyz0123456789" * 2 + " tail words here",
    "x" * 99 + " " + "y" * 100 + " " + "z" * 101,  # around WordPiece's 100-char word limit
    "nospaces,justpunctuation;and-hyphens/and.dots" * 60,
    "(((" * 200 + ")))" * 200,
    "汉字没有空格分词的文本" * 120,  # CJK: every character is its own word
    "日本語のテキストとEnglish words mixed together。" * 60,
    "emoji 😀🎉👍🏽 family 👨‍👩‍👧‍👦 flags 🇩🇪🇫🇷 " * 80,
    "words    with     runs\n\n\n\nof\t\t\twhitespace   \u00a0\u2003 everywhere " * 60,
    "   leading and trailing spaces   " * 50,
    "café naïve résumé Ångström Σίσυφος ΣΊΣΥΦΟΣ İstanbul straße ﬁnance " * 60,
    "e\u0301 combining\u0301\u0301 marks a\u0308\u0304 after\u0300 letters " * 80,
    "control\x00chars\x07inside\u200bzero\u200dwidth\ufeffjoiners\ufffdreplacement " * 60,
    "literal [CLS] and [SEP] and [MASK] special tokens [UNK][PAD] in text " * 60,
    "numbers 3.14159 1,000,000 -42 1e-10 0x1F 192.168.0.1 INV-2024-00917 " * 80,
    "\U0001d400\U0001d401 math bold, \u0301 lone mark after a space, tab\tsep " * 80,
    " ".join(f"w{i}" + "q" * (i % 150) for i in range(400)),  # word lengths up to 150 chars
]


@pytest.fixture(scope="module")
def chunkers(model: EmbeddingModel) -> list[Chunker]:
    max_seq = model.info.max_seq_length
    return [
        Chunker(model.tokenizer, max_seq, 256, 32),  # production settings
        Chunker(model.tokenizer, max_seq, 64, 8),
        Chunker(model.tokenizer, max_seq, 16, 4),  # words longer than the window get cut
        Chunker(model.tokenizer, 20, 256, 32),  # window = max_tokens = 18: verification shrinks
    ]


def _same(chunker: Chunker, texts: list[str]) -> int:
    got = chunker.split_many(texts)
    compared = 0
    for text, chunks in zip(texts, got, strict=True):
        assert chunks == _reference(chunker, text), (chunker.window, text[:80])
        for chunk in chunks:
            assert chunk.text == text[chunk.start : chunk.end]
        compared += len(chunks)
    return compared


def test_scifact_boundaries_are_identical(model: EmbeddingModel) -> None:
    texts = _scifact_texts()
    assert len(texts) == SCIFACT_DOCS
    chunker = Chunker(model.tokenizer, model.info.max_seq_length, 256, 32)
    assert _same(chunker, texts) > SCIFACT_DOCS  # some documents have several windows
    # One document at a time (a warm fragment cache) gives the same chunks as the batch.
    assert [chunker.split(t) for t in texts[:50]] == chunker.split_many(texts[:50])


def test_scifact_with_small_windows(chunkers: list[Chunker]) -> None:
    texts = _scifact_texts()[:60]
    for chunker in chunkers[1:]:
        assert _same(chunker, texts) > len(texts)


@pytest.mark.parametrize("case", range(len(HOSTILE)))
def test_hostile_text_boundaries_are_identical(chunkers: list[Chunker], case: int) -> None:
    for chunker in chunkers:
        _same(chunker, [HOSTILE[case]])


def test_hostile_texts_in_one_batch(chunkers: list[Chunker]) -> None:
    # Mixed in one call: verification rounds of different texts must not cross.
    for chunker in chunkers:
        _same(chunker, HOSTILE + _scifact_texts()[:20])


def test_fragment_tokens_equal_whole_text_tokens(model: EmbeddingModel) -> None:
    """The premise of the fast path: a text's tokens are its space-separated fragments' tokens."""
    chunker = Chunker(model.tokenizer, model.info.max_seq_length)
    texts = [t for t in HOSTILE + _scifact_texts()[:100] if t.strip()]
    tokens = dict(chunker._tokenize(texts, list(range(len(texts)))))
    assert sorted(tokens) == list(range(len(texts)))
    for text, toks in zip(texts, (tokens[i] for i in range(len(texts))), strict=True):
        whole = model.tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, truncation=False
        )
        offsets = list(whole["offset_mapping"])
        words = whole.word_ids()
        assert toks.total == len(offsets)
        assert [(toks.start(i), toks.end(i)) for i in range(toks.total)] == offsets
        for i in range(1, toks.total):
            same_word = words[i] is not None and words[i] == words[i - 1]
            assert (toks.word(i) is not None and toks.word(i) == toks.word(i - 1)) == same_word


def test_small_fragment_cache_still_exact(
    model: EmbeddingModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("indexer.chunking._FRAGMENT_CACHE_ENTRIES", 50)
    chunker = Chunker(model.tokenizer, model.info.max_seq_length)
    texts = _scifact_texts()[:30]
    for start in range(0, len(texts), 10):
        _same(chunker, texts[start : start + 10])
        # Bounded: at most the limit plus what one batch needs (it may exceed it on its own).
        batch = {f for t in texts[start : start + 10] for f in t.split(" ")}
        assert len(chunker._fragments) <= max(50, len(batch))
