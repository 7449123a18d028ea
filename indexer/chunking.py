"""Token-window chunking with the model's own tokenizer.

Counting tokens with anything but the embedding model's tokenizer is how chunks end up silently
truncated at the model's max_seq_length: the tail of every long chunk would never be embedded.
Windows therefore hold at most `max_seq_length - special tokens` model tokens, cut on word
boundaries, and overlap so that a sentence split across windows is still whole in one of them.

Cost (ingest must reach 1,000 chunks/s at 1M chunks, embedding excluded): the model tokenizer
runs at a few microseconds per token here, so tokenizing a document once and re-tokenizing every
window to verify it (the original algorithm) cost more than the rest of ingest together. Both are
avoided where they provably change nothing, and the boundaries stay exactly the original ones
(the embedding cache is keyed by their content hash; `tests/indexer/test_chunking_equivalence.py`
runs the original algorithm beside this one):

- For a WordPiece pipeline with BERT normalization and pre-tokenization (the pinned model's),
  every normalization and splitting rule is local to a run of non-space characters and an ASCII
  space always ends a word and yields no token. A text's tokens are therefore the tokens of its
  space-separated fragments, shifted; fragments repeat (Zipf), so each is tokenized once per
  process (`_FragmentTokens`) and only unseen fragments reach the tokenizer, in one batch call.
- Re-tokenizing a window that starts and ends on word boundaries yields exactly its tokens under
  that pipeline (each word is tokenized on its own), so only windows cut inside a word (a word
  longer than the window) are re-tokenized, all of a batch's in one call.
- Any other tokenizer takes the generic path: each text tokenized once and every window verified,
  as before, but batched.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain
from operator import itemgetter
from typing import Any

# Fragments remembered per chunker (~250 B each); cleared when full, so memory stays bounded
# whatever the vocabulary of the corpus.
_FRAGMENT_CACHE_ENTRIES = 1 << 17


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


# A fragment's tokens: count, then per token its character start/end and word id, relative to
# the fragment.
_Fragment = tuple[int, tuple[int, ...], tuple[int, ...], tuple[int | None, ...]]


_count_of = itemgetter(0)


class _Tokens:
    """A text's tokens as character offsets and word ids (only what windowing reads)."""

    total: int

    def start(self, i: int) -> int:
        raise NotImplementedError

    def end(self, i: int) -> int:
        raise NotImplementedError

    def word(self, i: int) -> object:
        raise NotImplementedError


class _FlatTokens(_Tokens):
    def __init__(self, offsets: list[tuple[int, int]], word_ids: list[int | None]) -> None:
        self.offsets = offsets
        self.word_ids = word_ids
        self.total = len(offsets)

    def start(self, i: int) -> int:
        return self.offsets[i][0]

    def end(self, i: int) -> int:
        return self.offsets[i][1]

    def word(self, i: int) -> object:
        return self.word_ids[i]


class _FragmentTokens(_Tokens):
    """Tokens of a text as its space-separated fragments' tokens; looked up only where needed.

    Building flat per-token lists would cost Python work per token; windowing reads a handful of
    tokens per window, so token i is located by bisecting the fragments' cumulative counts.
    """

    def __init__(self, fragments: list[_Fragment], lengths: list[int]) -> None:
        self.fragments = fragments
        self.first_token = list(accumulate(map(_count_of, fragments), initial=0))
        self.first_char = list(accumulate(lengths, initial=0))
        self.total = self.first_token[-1]

    def _locate(self, i: int) -> tuple[int, int]:
        f = bisect_right(self.first_token, i) - 1
        return f, i - self.first_token[f]

    def start(self, i: int) -> int:
        f, local = self._locate(i)
        return self.first_char[f] + f + self.fragments[f][1][local]  # + f: the spaces before

    def end(self, i: int) -> int:
        f, local = self._locate(i)
        return self.first_char[f] + f + self.fragments[f][2][local]

    def word(self, i: int) -> object:
        f, local = self._locate(i)
        word = self.fragments[f][3][local]
        return None if word is None else (f, word)  # words never span fragments


def _private_backend(tokenizer: Any) -> Any | None:
    """A copy of the fast tokenizer's Rust backend, with no truncation and no padding.

    The shared backend carries whatever truncation/padding the last model call set (the HF
    wrapper re-sets it on every call); a private copy is deterministic and thread-safe to use.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def _splits_on_spaces(backend: Any) -> bool:
    """True for the pipelines whose tokens decompose over ASCII spaces (see the module doc)."""
    if backend is None:
        return False
    spec = json.loads(backend.to_str())
    normalizer = spec.get("normalizer")
    pre_tokenizer = spec.get("pre_tokenizer")
    model = spec.get("model") or {}
    added = spec.get("added_tokens") or []
    return (
        (normalizer is None or normalizer.get("type") == "BertNormalizer")
        and pre_tokenizer is not None
        and pre_tokenizer.get("type") == "BertPreTokenizer"
        and model.get("type") == "WordPiece"
        # An added token that strips or contains whitespace would reach across a space.
        and all(
            not t.get("lstrip") and not t.get("rstrip") and not any(c.isspace() for c in t["content"])
            for t in added
        )
    )


class Chunker:
    """Splits text into overlapping windows of model tokens."""

    def __init__(self, tokenizer: Any, max_seq_length: int, window: int = 256, overlap: int = 32):
        special = tokenizer.num_special_tokens_to_add(pair=False)
        self.tokenizer = tokenizer
        self.window = max(8, min(window, max_seq_length - special))
        self.overlap = min(overlap, self.window // 2)
        self.max_tokens = max_seq_length - special
        self._backend = _private_backend(tokenizer)
        self._by_fragments = _splits_on_spaces(self._backend)
        self._fragments: dict[str, _Fragment] = {}

    def split(self, text: str) -> list[Chunk]:
        return self.split_many([text])[0]

    def split_many(self, texts: Sequence[str]) -> list[list[Chunk]]:
        """Chunks of each text; one tokenizer call for the whole batch, not one per window."""
        result: list[list[Chunk]] = [[] for _ in texts]
        live = [i for i, text in enumerate(texts) if text.strip()]
        # Texts come back as soon as their tokens are known (most need no tokenizer call at all),
        # so each is windowed while its fragments are still in the CPU cache.
        pending: list[tuple[int, _Tokens, int, int, int]] = []  # text, tokens, position, span
        for i, toks in self._tokenize(texts, live):
            text = texts[i]
            for position, start, end, exact in self._windows(toks):
                if exact:
                    result[i].append(self._chunk(text, toks, position, start, end))
                else:
                    pending.append((i, toks, position, start, end))
        reordered = {i for i, *_ in pending}
        while pending:  # rare: a window cut inside a word, or a tokenizer we cannot reason about
            pieces = [texts[i][t.start(start) : t.end(end - 1)] for i, t, _, start, end in pending]
            retry: list[tuple[int, _Tokens, int, int, int]] = []
            for (i, toks, position, start, end), count in zip(
                pending, self._count(pieces), strict=True
            ):
                # Re-tokenizing a slice can differ at its edges; shrink until the model sees it all.
                if count <= self.max_tokens or end - start <= 1:
                    result[i].append(self._chunk(texts[i], toks, position, start, end))
                else:
                    retry.append((i, toks, position, start, end - max(1, count - self.max_tokens)))
            pending = retry
        for i in reordered:
            result[i].sort(key=lambda c: c.position)
        return result

    def _windows(self, toks: _Tokens) -> list[tuple[int, int, int, bool]]:
        """(position, start token, end token, provably exact) of each window, in order."""
        windows: list[tuple[int, int, int, bool]] = []
        total = toks.total
        start = 0
        while start < total:
            end = min(start + self.window, total)
            if end < total:
                end = self._word_boundary_before(toks, start, end)
            windows.append((len(windows), start, end, self._exact(toks, start, end)))
            if end >= total:
                break
            next_start = max(end - self.overlap, start + 1)
            start = self._word_start(toks, next_start, floor=start + 1)
        return windows

    def _exact(self, toks: _Tokens, start: int, end: int) -> bool:
        """Whether re-tokenizing the window's text provably gives back its `end - start` tokens."""
        if not self._by_fragments or end - start > self.max_tokens:
            return False
        for inside, outside in ((start, start - 1), (end - 1, end)):
            if 0 <= outside < toks.total:
                word = toks.word(inside)
                if word is None or word == toks.word(outside):
                    return False
        return True

    @staticmethod
    def _chunk(text: str, toks: _Tokens, position: int, start: int, end: int) -> Chunk:
        char_start, char_end = toks.start(start), toks.end(end - 1)
        piece = text[char_start:char_end]
        return Chunk(position, char_start, char_end, piece, content_hash(piece))

    def _tokenize(self, texts: Sequence[str], live: list[int]) -> Iterator[tuple[int, _Tokens]]:
        """(index, tokens) of each text in `live`, in any order."""
        if self._by_fragments:
            yield from self._tokenize_by_fragments(texts, live)
            return
        if self._backend is not None:
            encodings = self._backend.encode_batch([texts[i] for i in live], add_special_tokens=False)
            for i, e in zip(live, encodings, strict=True):
                yield i, _FlatTokens(list(e.offsets), list(e.word_ids))
            return
        for i in live:  # a slow (Python) tokenizer: what the HF wrapper gives, one by one
            encoding = self.tokenizer(
                texts[i],
                add_special_tokens=False,
                return_offsets_mapping=True,
                return_attention_mask=False,
                truncation=False,
                verbose=False,
            )
            offsets = list(encoding["offset_mapping"])
            words = encoding.word_ids() if hasattr(encoding, "word_ids") else [None] * len(offsets)
            yield i, _FlatTokens(offsets, list(words))

    def _tokenize_by_fragments(
        self, texts: Sequence[str], live: list[int]
    ) -> Iterator[tuple[int, _Tokens]]:
        backend = self._backend
        assert backend is not None  # _by_fragments implies a fast tokenizer
        known = self._fragments
        lookup = known.get
        waiting: list[tuple[int, list[str]]] = []
        for i in live:
            fragments = texts[i].split(" ")
            # C-level, one dict probe per fragment: this runs for every fragment of every text.
            entries = list(map(lookup, fragments))
            if None not in entries:
                yield i, _FragmentTokens(entries, list(map(len, fragments)))  # type: ignore[arg-type]
            else:
                waiting.append((i, fragments))
        if not waiting:
            return
        every = set(chain.from_iterable(fragments for _, fragments in waiting))
        unseen = every.difference(known)
        if len(known) + len(unseen) > _FRAGMENT_CACHE_ENTRIES:
            known.clear()  # texts already yielded hold their fragments' entries themselves
            unseen = every
        ordered = list(unseen)
        for fragment, e in zip(
            ordered, backend.encode_batch(ordered, add_special_tokens=False), strict=True
        ):
            offsets = e.offsets
            starts, ends = zip(*offsets, strict=True) if offsets else ((), ())
            known[fragment] = (len(offsets), starts, ends, tuple(e.word_ids))
        get = known.__getitem__
        for i, fragments in waiting:
            yield i, _FragmentTokens(list(map(get, fragments)), list(map(len, fragments)))

    def _count(self, pieces: list[str]) -> list[int]:
        if self._backend is not None:
            return [
                len(e.ids) for e in self._backend.encode_batch(pieces, add_special_tokens=False)
            ]
        return [
            len(self.tokenizer(p, add_special_tokens=False, verbose=False)["input_ids"])
            for p in pieces
        ]

    @staticmethod
    def _word_boundary_before(toks: _Tokens, start: int, end: int) -> int:
        """Move `end` back so the window does not cut a word, unless the word fills it."""
        cut = end
        while cut > start + 1:
            word = toks.word(cut)
            if word is None or word != toks.word(cut - 1):
                break
            cut -= 1
        return cut if cut > start + 1 else end

    @staticmethod
    def _word_start(toks: _Tokens, index: int, floor: int) -> int:
        while index > floor:
            word = toks.word(index)
            if word is None or word != toks.word(index - 1):
                break
            index -= 1
        return index
