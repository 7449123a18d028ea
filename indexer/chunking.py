"""Token-window chunking with the model's own tokenizer.

Counting tokens with anything but the embedding model's tokenizer is how chunks end up silently
truncated at the model's max_seq_length: the tail of every long chunk would never be embedded.
Windows therefore hold at most `max_seq_length - special tokens` model tokens, cut on word
boundaries, and overlap so that a sentence split across windows is still whole in one of them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Chunk:
    """A window of a document's full text, as character offsets into it."""

    position: int
    start: int
    end: int
    text: str
    content_hash: str


def content_hash(text: str) -> str:
    """Hash that keys the embedding cache: same text, same model -> same vector."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


class Chunker:
    """Splits text into overlapping windows of model tokens."""

    def __init__(self, tokenizer: Any, max_seq_length: int, window: int = 256, overlap: int = 32):
        special = tokenizer.num_special_tokens_to_add(pair=False)
        self.tokenizer = tokenizer
        self.window = max(8, min(window, max_seq_length - special))
        self.overlap = min(overlap, self.window // 2)
        self.max_tokens = max_seq_length - special

    def split(self, text: str) -> list[Chunk]:
        if not text.strip():
            return []
        encoding = self.tokenizer(
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
        chunks: list[Chunk] = []
        start = 0
        while start < total:
            end = min(start + self.window, total)
            if end < total:
                end = self._word_boundary_before(word_ids, start, end)
            chunk = self._make_chunk(text, offsets, start, end, len(chunks))
            chunks.append(chunk)
            if end >= total:
                break
            next_start = max(end - self.overlap, start + 1)
            start = self._word_start(word_ids, next_start, floor=start + 1)
        return chunks

    def _make_chunk(
        self, text: str, offsets: list[tuple[int, int]], start: int, end: int, position: int
    ) -> Chunk:
        # Re-tokenizing a slice can differ at its edges; shrink until the model sees all of it.
        while True:
            char_start, char_end = offsets[start][0], offsets[end - 1][1]
            piece = text[char_start:char_end]
            count = len(self.tokenizer(piece, add_special_tokens=False, verbose=False)["input_ids"])
            if count <= self.max_tokens or end - start <= 1:
                return Chunk(position, char_start, char_end, piece, content_hash(piece))
            end -= max(1, count - self.max_tokens)

    @staticmethod
    def _word_boundary_before(word_ids: list[int | None], start: int, end: int) -> int:
        """Move `end` back so the window does not cut a word, unless the word fills it."""
        cut = end
        while cut > start + 1 and word_ids[cut] is not None and word_ids[cut] == word_ids[cut - 1]:
            cut -= 1
        return cut if cut > start + 1 else end

    @staticmethod
    def _word_start(word_ids: list[int | None], index: int, floor: int) -> int:
        while (
            index > floor and word_ids[index] is not None and word_ids[index] == word_ids[index - 1]
        ):
            index -= 1
        return index
