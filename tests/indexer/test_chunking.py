from __future__ import annotations

import itertools

from contracts.documents import Document
from indexer.chunking import Chunker, content_hash
from indexer.model import EmbeddingModel


def _tokens(model: EmbeddingModel, text: str) -> int:
    return len(model.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_windows_fit_the_model_and_overlap(model: EmbeddingModel) -> None:
    chunker = Chunker(model.tokenizer, model.info.max_seq_length, 256, 32)
    assert chunker.window == 254  # 256 positions minus [CLS] and [SEP]
    words = [f"word{i % 97} alpha{i}" for i in range(900)]
    text = " ".join(words)
    chunks = chunker.split(text)
    assert len(chunks) > 3
    for chunk in chunks:
        assert _tokens(model, chunk.text) <= 254  # never silently truncated by the model
        assert chunk.text == text[chunk.start : chunk.end]
    for before, after in itertools.pairwise(chunks):
        assert after.start < before.end, "consecutive windows overlap"
        overlap = _tokens(model, text[after.start : before.end])
        assert 16 <= overlap <= 40
    assert chunks[0].start == 0 and chunks[-1].end == len(text)


def test_title_is_in_the_first_chunk(model: EmbeddingModel) -> None:
    doc = Document("x", "Zebrafish regeneration", "fins regrow " * 300)
    chunks = Chunker(model.tokenizer, 256).split(doc.full_text)
    assert chunks[0].text.startswith("Zebrafish regeneration")
    assert all("Zebrafish" not in c.text for c in chunks[1:])


def test_words_are_not_cut(model: EmbeddingModel) -> None:
    text = " ".join(["antidisestablishmentarianism"] * 400)
    for chunk in Chunker(model.tokenizer, 256, 64, 8).split(text):
        assert chunk.text.split()[0] == "antidisestablishmentarianism"
        assert chunk.text.split()[-1] == "antidisestablishmentarianism"


def test_ids_and_hashes_are_stable(model: EmbeddingModel) -> None:
    chunker = Chunker(model.tokenizer, 256)
    first, second = chunker.split("A short note."), chunker.split("A short note.")
    assert [c.content_hash for c in first] == [c.content_hash for c in second]
    assert first[0].content_hash == content_hash("A short note.")
    assert chunker.split("   ") == []
