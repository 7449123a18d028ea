"""The index: one model's vector space plus BM25 over the same chunks, behind a small verb set.

apply (upsert/delete batches) · search · get · count. Everything that embeds goes through
`apply`, which embeds all new chunks of a batch in one model call and takes nothing from the
model that the embedding cache already holds.
"""

from __future__ import annotations

import json
import math
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from contracts.documents import MAX_DOC_ID_CHARS, Change, Deletion, Document
from contracts.errors import InvalidDocumentError, InvalidQueryError
from contracts.storable import unstorable
from indexer._rwlock import ReadWriteLock
from indexer.analyzer import identifiers, is_record_key
from indexer.canaries import CanaryProbe, probe
from indexer.chunking import Chunk, Chunker
from indexer.config import IndexConfig, IndexSettings
from indexer.document_store import HitRecord
from indexer.document_table import Allowed, DocumentTable
from indexer.documents import ChunkRecord, DocumentRecord
from indexer.embedding_cache import EmbeddingCache
from indexer.filters import And, Compare, Filter, Member, Or, parse
from indexer.fusion import MODES, FusionWeights, promote, reciprocal_rank_fusion
from indexer.lexical import LexicalIndex
from indexer.model import EmbeddingModel
from indexer.vector_index import VectorIndex
from indexer.vector_maintenance import BackgroundMaintenance

SNIPPET_CHARS = 300
# Characters of a chunk normalized for its snippet when that suffices (snippet_of).
_SNIPPET_PREFIX = SNIPPET_CHARS + SNIPPET_CHARS // 2
# How many chunk candidates each leg retrieves per requested document: documents have several
# chunks, and fusion needs depth beyond k to be useful.
CANDIDATE_DEPTH = 100
# vector and bm25 modes ask their leg for this many chunks per document wanted (then deeper if
# they hold fewer than k documents): fusion needs CANDIDATE_DEPTH, one leg's ranking its top k.
SINGLE_LEG_CHUNKS_PER_DOC = 3
# Most chunks an identifier term may be in and still be promoted (Index._identifier_matches).
PROMOTE_MAX_CHUNKS = 1000
SHORT_QUERY_WORDS = 4  # up to this many words, a query with an identifier is a look-up


def snippet_of(text: str) -> str:
    """`text` with whitespace runs collapsed, cut to SNIPPET_CHARS (an ellipsis marks the cut).

    Only a prefix is normalized when that decides the result: a chunk is ~1,000 characters and
    splitting all of it into words was the largest cost of a query's ten snippets. The prefix's
    last word may be cut short, so it is dropped; the words before it are exactly the text's
    first words, and if they already reach the cut the rest cannot change the snippet.
    """
    if len(text) > _SNIPPET_PREFIX:
        words = text[:_SNIPPET_PREFIX].split()[:-1]
        head = " ".join(words)
        if len(head) >= SNIPPET_CHARS:
            return head[: SNIPPET_CHARS - 1].rstrip() + "…"
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1].rstrip() + "…"


def _by_score(docs: dict[str, tuple[int, float]]) -> list[tuple[str, tuple[int, float]]]:
    """A leg's documents by best chunk score, ties in candidate order (sorted is stable)."""
    return sorted(docs.items(), key=lambda kv: -kv[1][1])


@dataclass(frozen=True)
class SearchHit:
    doc_id: str
    score: float
    similarity: float | None
    title: str
    snippet: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IndexCounts:
    documents: int
    chunks: int
    sealed_segments: int
    live_chunks: int
    deleted_chunks: int


@dataclass
class ApplyReport:
    upserted: int = 0
    deleted: int = 0
    stale: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    # The changes behind `rejected`, in the same order: the consumer dead-letters their events.
    rejected_changes: list[Document] = field(default_factory=list)
    chunks_embedded: int = 0
    chunks_cached: int = 0
    embed_seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.upserted or self.deleted)

    def add(self, other: ApplyReport) -> ApplyReport:
        """Fold `other` into this report (one batch applied in several calls, a bootstrap or
        a build applied batch by batch): counts and times add up, rejections are appended."""
        self.upserted += other.upserted
        self.deleted += other.deleted
        self.stale += other.stale
        self.rejected.extend(other.rejected)
        self.rejected_changes.extend(other.rejected_changes)
        self.chunks_embedded += other.chunks_embedded
        self.chunks_cached += other.chunks_cached
        self.embed_seconds += other.embed_seconds
        return self


def _utf8_size(text: str) -> int:
    """Bytes of `text` in UTF-8 without encoding it when it is ASCII (one C scan)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class Index:
    """Vectors, BM25 and the document table of one model, kept consistent with each other."""

    def __init__(
        self,
        model: EmbeddingModel,
        settings: IndexSettings,
        cache: EmbeddingCache | None = None,
        canaries: CanaryProbe | None = None,
    ) -> None:
        self.model = model
        self.config = IndexConfig.of(settings)
        settings = self.config
        self.cache = cache
        self.index_id = model.index_id
        self.chunker = Chunker(
            model.tokenizer,
            model.info.max_seq_length,
            settings.chunk_tokens,
            settings.chunk_overlap,
        )
        self.documents = DocumentTable()
        self.vectors = VectorIndex(
            model.dimension,
            nprobe=settings.nprobe,
            seal_chunks=settings.seal_chunks,
            codec=settings.vector_codec,
        )
        if settings.background_maintenance:
            self.vectors.background = BackgroundMaintenance(self.vectors)
        self.lexical = LexicalIndex()
        self.next_chunk_id = 0
        self.canaries = canaries if canaries is not None else probe(model)
        self.lock = ReadWriteLock()
        self.fusion = FusionWeights()

    @classmethod
    def create(
        cls, model: EmbeddingModel, settings: IndexSettings, cache: EmbeddingCache | None = None
    ) -> Index:
        return cls(model, settings, cache)

    # -- writing --------------------------------------------------------------------------
    def validate_document(self, doc: Document) -> None:
        """Raise InvalidDocumentError for anything that must not enter the index."""
        if not isinstance(doc.doc_id, str) or not doc.doc_id.strip():
            raise InvalidDocumentError("doc_id must be a non-empty string")
        if len(doc.doc_id) > MAX_DOC_ID_CHARS:
            raise InvalidDocumentError(f"doc_id is longer than {MAX_DOC_ID_CHARS} characters")
        if not doc.doc_id.isprintable() and any(unicodedata.category(c) == "Cc" for c in doc.doc_id):
            raise InvalidDocumentError("doc_id contains control characters")
        if not isinstance(doc.version, int) or isinstance(doc.version, bool) or doc.version < 0:
            raise InvalidDocumentError("version must be a non-negative integer")
        if not isinstance(doc.title, str) or not isinstance(doc.text, str):
            raise InvalidDocumentError("title and text must be strings")
        # Defence in depth (the event decoder refuses these first): a lone surrogate breaks the
        # tokenizer and every snapshot write; NaN/Infinity is not JSON.
        for value, where in ((doc.doc_id, "doc_id"), (doc.title, "title"), (doc.text, "text")):
            problem = unstorable(value, where)
            if problem:
                raise InvalidDocumentError(f"document {doc.doc_id!r}: {problem}")
        size = _utf8_size(doc.title) + _utf8_size(doc.text)
        if size > self.config.max_doc_bytes:
            raise InvalidDocumentError(
                f"document {doc.doc_id!r} is {size} bytes, over the {self.config.max_doc_bytes}-byte "
                "limit; split it upstream or raise SEMSEARCH_MAX_DOC_BYTES"
            )
        if (not doc.title or doc.title.isspace()) and (not doc.text or doc.text.isspace()):
            raise InvalidDocumentError(f"document {doc.doc_id!r} has no text to index")
        if not isinstance(doc.metadata, dict):
            raise InvalidDocumentError(f"metadata of {doc.doc_id!r} must be a JSON object")
        problem = unstorable(doc.metadata, "metadata")
        if problem:
            raise InvalidDocumentError(f"metadata of {doc.doc_id!r} is not JSON-serializable: {problem}")
        # Metadata is stored (and returned with every hit) beside the text: it counts too.
        if doc.metadata:
            size += len(json.dumps(doc.metadata, ensure_ascii=False).encode("utf-8"))
            if size > self.config.max_doc_bytes:
                raise InvalidDocumentError(
                    f"document {doc.doc_id!r} with its metadata is {size} bytes, over the "
                    f"{self.config.max_doc_bytes}-byte limit; move bulky metadata out of the "
                    "event or raise SEMSEARCH_MAX_DOC_BYTES"
                )

    def apply(self, changes: Sequence[Change]) -> ApplyReport:
        """Apply a batch in order; stale versions and duplicates are ignored, not re-applied."""
        report = ApplyReport()
        final: dict[str, Change] = {}
        # Newest version seen per document in this batch: a tombstone keeps it, so a replayed
        # upsert after the tombstone stays stale (as it would if applied one event at a time).
        seen: dict[str, int] = {}
        for change in changes:
            held = self.documents.held_version(change.doc_id)
            if change.doc_id in seen:
                held = seen[change.doc_id] if held is None else max(held, seen[change.doc_id])
            if isinstance(change, Deletion):
                if change.version is not None and held is not None and change.version <= held:
                    report.stale += 1
                    continue
                version = change.version if change.version is not None else held
                final[change.doc_id] = Deletion(change.doc_id, version)
                if version is not None:
                    seen[change.doc_id] = version
                continue
            if held is not None and change.version <= held:
                report.stale += 1
                continue
            try:
                self.validate_document(change)
            except InvalidDocumentError as exc:
                report.rejected.append((change.doc_id, str(exc)))
                report.rejected_changes.append(change)
                continue
            final[change.doc_id] = change
            seen[change.doc_id] = change.version

        upserts = [c for c in final.values() if isinstance(c, Document)]
        chunked = dict(
            zip(
                (doc.doc_id for doc in upserts),
                self.chunker.split_many([doc.full_text for doc in upserts]),
                strict=True,
            )
        )
        vectors, unembeddable = self._embed(
            [chunk for chunks in chunked.values() for chunk in chunks], report
        )
        if unembeddable:
            # Only the documents owning a chunk the model cannot embed are refused; the rest of
            # the batch goes on (the consumer dead-letters the refused ones). The document keeps
            # the version it held before - as if this event had been rejected at validation.
            for doc in upserts:
                if any(c.content_hash in unembeddable for c in chunked[doc.doc_id]):
                    del final[doc.doc_id]
                    del chunked[doc.doc_id]
                    report.rejected.append(
                        (
                            doc.doc_id,
                            f"the model produced NaN/inf embeddings for document {doc.doc_id!r}; "
                            "it was not indexed - check the text (unusual characters or length) "
                            "or the model, then republish it",
                        )
                    )
                    report.rejected_changes.append(doc)

        with self.lock.writing():
            first_chunk_id = self.next_chunk_id
            inserted: list[np.ndarray] = []  # the new chunks' vectors, in chunk id order
            for change in final.values():
                if isinstance(change, Deletion):
                    if self._remove(change.doc_id, change.version):
                        report.deleted += 1
                    continue
                previous = self.documents.get(change.doc_id)
                self._remove_chunks(previous)
                chunks = chunked[change.doc_id]
                self._insert(change, chunks, previous)
                inserted.extend([vectors[c.content_hash] for c in chunks])
                report.upserted += 1
            if inserted:
                # One append for the batch: chunk ids are consecutive and never reused, so the
                # vectors of every document go in together (numpy's per-call cost, once).
                self.vectors.add(
                    np.arange(first_chunk_id, self.next_chunk_id, dtype=np.int64),
                    np.vstack(inserted),
                )
        self.maintain()
        return report

    def maintain(self) -> None:
        """Seal, merge and retrain vector segments as due, in the index's only writer thread
        (`apply` calls it; an idle writer too, to install finished background jobs). Computed
        outside the write lock (readers keep searching) and swapped in under it."""
        self.vectors.maintain(self.lock.writing)

    def _embed(
        self, chunks: list[Chunk], report: ApplyReport
    ) -> tuple[dict[str, np.ndarray], set[str]]:
        """Vectors by content hash, and the hashes the model gave non-finite vectors.

        Non-finite vectors are never cached nor returned: a NaN in faiss poisons every search
        that touches it, and a cached one would be served again after the text is fixed upstream.
        """
        fingerprint = self.model.info.fingerprint
        wanted = list(dict.fromkeys(c.content_hash for c in chunks))
        found = self.cache.get_many(fingerprint, wanted, self.model.dimension) if self.cache else {}
        missing_hashes = [h for h in wanted if h not in found]
        missing = set(missing_hashes)
        report.chunks_cached += sum(1 for c in chunks if c.content_hash not in missing)
        unembeddable: set[str] = set()
        if missing_hashes:
            text_of = {c.content_hash: c.text for c in chunks}
            started = time.perf_counter()
            embedded = self.model.encode_documents([text_of[h] for h in missing_hashes])
            report.embed_seconds += time.perf_counter() - started
            report.chunks_embedded += len(missing_hashes)
            finite = np.isfinite(embedded).all(axis=1)
            fresh = {h: v for h, v, ok in zip(missing_hashes, embedded, finite, strict=True) if ok}
            unembeddable = {h for h, ok in zip(missing_hashes, finite, strict=True) if not ok}
            if self.cache and fresh:
                self.cache.put_many(fingerprint, fresh.items())
            found.update(fresh)
        return found, unembeddable

    def _insert(
        self, doc: Document, chunks: list[Chunk], previous: DocumentRecord | None
    ) -> None:
        """BM25 and the document table; the caller appends the vectors (one call per batch)."""
        first = self.next_chunk_id
        records = tuple(
            ChunkRecord(first + offset, chunk.start, chunk.end, chunk.content_hash)
            for offset, chunk in enumerate(chunks)
        )
        self.next_chunk_id += len(records)
        add = self.lexical.add
        for record, chunk in zip(records, chunks, strict=True):
            add(record.chunk_id, chunk.text)
        self.documents.put(
            DocumentRecord(doc.doc_id, doc.version, doc.title, doc.text, dict(doc.metadata), records),
            previous=previous,
        )

    def _remove_chunks(self, record: DocumentRecord | None) -> None:
        if record is None:
            return
        self.vectors.remove({c.chunk_id for c in record.chunks})
        for chunk in record.chunks:
            self.lexical.remove(chunk.chunk_id)  # no text needed: nothing is re-analyzed

    def _remove(self, doc_id: str, version: int | None) -> bool:
        record = self.documents.get(doc_id)
        self._remove_chunks(record)
        self.documents.remove(doc_id, version, previous=record)
        return record is not None

    def settle(self) -> None:
        """Wait for background vector maintenance until nothing is due (a build's end, benches):
        the index then holds the segments a synchronous writer would have."""
        if self.vectors.background is not None:
            self.vectors.background.settle(self.lock.writing)

    def stop_maintenance(self) -> None:
        """Stop the maintenance worker after its running job, before the writer gives up the
        index directory; a result not installed is dropped (its rows are still in the index)."""
        if self.vectors.background is not None:
            self.vectors.background.close()

    def compact(self) -> None:
        with self.lock.writing():
            self.vectors.compact()
            self.lexical.compact()

    # -- reading --------------------------------------------------------------------------
    def get(self, doc_id: str) -> DocumentRecord | None:
        return self.documents.get(doc_id)

    def count(self) -> IndexCounts:
        return IndexCounts(
            documents=len(self.documents),
            chunks=self.documents.chunk_count,
            sealed_segments=len(self.vectors.sealed),
            live_chunks=len(self.vectors.live),
            deleted_chunks=len(self.vectors.tombstones),
        )

    def search(
        self,
        query: str,
        *,
        k: int = 10,
        mode: str = "hybrid",
        min_score: float | None = None,
        fusion: FusionWeights | None = None,
        where: Filter | dict[str, Any] | None = None,
    ) -> list[SearchHit]:
        """Documents ranked by `mode`; `min_score` is a cosine cutoff (a BM25 cutoff in bm25 mode).

        `fusion` (hybrid mode only; default `self.fusion`) weighs the legs and sets RRF's k.
        `where`: a metadata filter (indexer/filters.py, a `where` object or its parsed tree).
        It is applied inside each leg (only matching chunks are candidates), so k hits come back
        whenever k matching documents match the query.
        """
        self._check_query(query, k, mode, min_score)
        condition = where if isinstance(where, Compare | Member | And | Or) else parse(where)
        query_vector = self.model.encode_queries([query])[0] if mode != "bm25" else None
        with self.lock.reading():
            allowed = self.documents.allowed(condition) if condition is not None else None
            if allowed is not None and not allowed:
                return []
            return self._search(query, query_vector, k, mode, min_score, fusion, allowed)

    def search_many(
        self,
        queries: Sequence[str],
        *,
        k: int = 10,
        mode: str = "hybrid",
        min_score: float | None = None,
        fusion: FusionWeights | None = None,
        vectors: np.ndarray | None = None,
        where: Filter | dict[str, Any] | None = None,
    ) -> list[list[SearchHit]]:
        """`search` of each query, the queries embedded in one model call.

        For evaluation over hundreds of held-out queries: one batched model call costs about
        what a few single ones do, and `vectors` (this model's `encode_queries` of `queries`)
        lets one evaluation of several modes embed them once. Each query takes the read lock
        on its own, so a writer waits for one query, not for the batch.
        """
        for query in queries:
            self._check_query(query, k, mode, min_score)
        condition = where if isinstance(where, Compare | Member | And | Or) else parse(where)
        if vectors is not None and vectors.shape != (len(queries), self.model.dimension):
            raise ValueError(
                f"vectors must be {len(queries)} x {self.model.dimension}, one per query "
                f"(got {vectors.shape})"
            )
        if mode == "bm25" or not queries:
            vectors = None
        elif vectors is None:
            vectors = self.model.encode_queries(list(queries))
        results: list[list[SearchHit]] = []
        for i, query in enumerate(queries):
            with self.lock.reading():
                qvec = vectors[i] if vectors is not None else None
                allowed = self.documents.allowed(condition) if condition is not None else None
                if allowed is not None and not allowed:
                    results.append([])
                    continue
                results.append(self._search(query, qvec, k, mode, min_score, fusion, allowed))
        return results

    def _search(
        self,
        query: str,
        qvec: np.ndarray | None,
        k: int,
        mode: str,
        min_score: float | None,
        fusion: FusionWeights | None = None,
        allowed: Allowed | None = None,
    ) -> list[SearchHit]:
        depth = max(CANDIDATE_DEPTH, 3 * k)
        within = allowed.chunk_ids if allowed is not None else None  # the filter's chunks
        vector_docs: dict[str, tuple[int, float]] = {}
        lexical_docs: dict[str, tuple[int, float]] = {}
        if mode == "hybrid":
            if qvec is not None:
                vector_docs = self._best_per_doc(self.vectors.search(qvec, depth, within))
            lexical_docs = self._best_per_doc(self.lexical.search(query, depth, within))
        elif mode == "vector" and qvec is not None:
            vector_docs = self._top_docs(lambda n: self.vectors.search(qvec, n, within), k)
        elif mode == "bm25":
            lexical_docs = self._top_docs(lambda n: self.lexical.search(query, n, within), k)

        if mode == "vector":
            scored = [(doc_id, best[1]) for doc_id, best in _by_score(vector_docs)]
            exact: set[str] = set()
        elif mode == "bm25":
            scored = [(doc_id, best[1]) for doc_id, best in _by_score(lexical_docs)]
            exact = set()
        else:
            weights = fusion or self.fusion
            fused = reciprocal_rank_fusion(
                [
                    ([d for d, _ in _by_score(vector_docs)], weights.vector),
                    ([d for d, _ in _by_score(lexical_docs)], weights.lexical),
                ],
                k=weights.k,
            )
            matches = self._identifier_matches(query)
            if allowed is not None:  # promoted documents pass the filter too
                matches = {d: n for d, n in matches.items() if self.documents.admits(allowed, d)}
            scored = promote(fused, matches)
            exact = set(matches)
        return self._hits(scored, qvec, k, mode, min_score, vector_docs, lexical_docs, exact)

    def _hits(
        self,
        scored: list[tuple[str, float]],
        qvec: np.ndarray | None,
        k: int,
        mode: str,
        min_score: float | None,
        vector_docs: dict[str, tuple[int, float]],
        lexical_docs: dict[str, tuple[int, float]],
        exact: set[str],
    ) -> list[SearchHit]:
        """The first k ranked documents that are live (and pass `min_score`), as hits.

        Title, text and metadata live in the document store: read for the hits only, k rows in
        one query first (all a query needs unless min_score or deletions skip some), then
        growing batches. A row is not turned into a DocumentRecord (HitRecord: only the shown
        chunk's span is located).
        """
        hits: list[SearchHit] = []
        position, size = 0, k
        while position < len(scored) and len(hits) < k:
            batch = scored[position : position + size]
            position += len(batch)
            size = max(2 * size, 16)
            records = self.documents.hits([doc_id for doc_id, _ in batch])
            best = self._best_chunks(records, qvec, vector_docs)
            for doc_id, score in batch:
                record = records.get(doc_id)
                if record is None:
                    continue
                best_chunk, similarity = best[doc_id]
                if mode == "bm25" and doc_id in lexical_docs:
                    best_chunk = lexical_docs[doc_id][0]
                if min_score is not None and doc_id not in exact:
                    value = score if mode == "bm25" else similarity
                    if value is None or value < min_score:
                        continue
                hits.append(
                    SearchHit(
                        doc_id,
                        float(score),
                        similarity,
                        record.title,
                        self._snippet(record, best_chunk),
                        record.metadata,
                    )
                )
                if len(hits) == k:
                    break
        return hits

    def _top_docs(
        self, leg: Callable[[int], list[tuple[int, float]]], k: int
    ) -> dict[str, tuple[int, float]]:
        """A single-leg mode's k best documents, each with its best chunk: from as few chunks
        as hold k distinct documents (the lexical kernel prunes harder, and fewer owners are
        looked up, the smaller the depth), deeper only when they do not. The same documents as
        at CANDIDATE_DEPTH: a document ranks by its best chunk, so the first k distinct owners of
        the chunk ranking are the top k (an IVF probe's top n is a prefix of its top m > n);
        fewer chunks than asked means the leg had no more.
        """
        depth = SINGLE_LEG_CHUNKS_PER_DOC * k
        while True:
            chunk_hits = leg(depth)
            docs = self._best_per_doc(chunk_hits)
            if len(docs) >= k or len(chunk_hits) < depth:
                return docs
            depth *= 4

    def _best_per_doc(self, chunk_hits: list[tuple[int, float]]) -> dict[str, tuple[int, float]]:
        """Each document's best chunk among a leg's candidates; owners resolved in one gather."""
        if not chunk_hits:
            return {}
        owners = self.documents.owner_ids([chunk_id for chunk_id, _ in chunk_hits])
        best: dict[str, tuple[int, float]] = {}
        for doc_id, (chunk_id, score) in zip(owners, chunk_hits, strict=True):
            if doc_id is None:
                continue
            held = best.get(doc_id)
            if held is None or score > held[1]:
                best[doc_id] = (chunk_id, score)
        return best

    def _identifier_matches(self, query: str) -> dict[str, int]:
        """Documents holding identifiers of the query: doc id -> how many distinct ones.

        Found from the lexical leg's exact-identifier postings (`#...` terms), not from the
        legs' top candidates, so a match is promoted even where neither leg ranked it; a
        metadata filter restricts this set like any other candidate set. O(postings of the
        query's identifiers): they name one thing each and are rare. A term in more than
        PROMOTE_MAX_CHUNKS chunks is a topic ("COVID-19"), not a key: it ranks as a word.
        A query of up to SHORT_QUERY_WORDS words is taken to be a look-up, and every
        identifier in it is promoted ("APOE4"); in a longer one only record keys are
        (`analyzer.is_record_key`: "what happened with order ORD-85461-WR").
        """
        terms = identifiers(query)
        if len(query.split()) > SHORT_QUERY_WORDS:
            terms = [t for t in terms if is_record_key(t)]
        counts: dict[str, int] = {}
        for term in dict.fromkeys(terms):
            chunk_ids = self.lexical.rare_term_chunks(term, PROMOTE_MAX_CHUNKS)
            if chunk_ids is None or not chunk_ids.shape[0]:
                continue
            for doc_id in set(self.documents.owner_ids(chunk_ids)):
                if doc_id is not None:
                    counts[doc_id] = counts.get(doc_id, 0) + 1
        return counts

    def _best_chunks(
        self,
        records: dict[str, HitRecord],
        qvec: np.ndarray | None,
        vector_docs: dict[str, tuple[int, float]],
    ) -> dict[str, tuple[int | None, float | None]]:
        """(best chunk id, its cosine) of each document about to be shown.

        The vector leg's candidates know theirs. The others (BM25-only documents in hybrid mode)
        are scored exactly over all their chunks: their vectors are read in one `vectors_of`
        call for the whole batch, not one call per document.
        """
        best: dict[str, tuple[int | None, float | None]] = {}
        if qvec is None:
            for doc_id, record in records.items():
                ids = record.chunk_ids
                best[doc_id] = (int(ids[0]) if len(ids) else None), None
            return best
        unknown: list[str] = []
        for doc_id in records:
            known = vector_docs.get(doc_id)
            if known is not None:
                best[doc_id] = known
            else:
                unknown.append(doc_id)
        if not unknown:
            return best
        chunk_ids = {d: records[d].chunk_ids.tolist() for d in unknown}
        vectors = self.vectors.vectors_of([c for d in unknown for c in chunk_ids[d]])
        for doc_id in unknown:
            top: tuple[int | None, float | None] = (None, None)
            for chunk_id in chunk_ids[doc_id]:
                vector = vectors.get(chunk_id)
                if vector is None:
                    continue
                similarity = float(vector @ qvec)
                if top[1] is None or similarity > top[1]:
                    top = (chunk_id, similarity)
            best[doc_id] = top
        return best

    def _snippet(self, record: HitRecord, chunk_id: int | None) -> str:
        text = record.chunk_text(chunk_id)
        if text is None:
            text = record.full_text
        return snippet_of(text)

    @staticmethod
    def _check_query(query: str, k: int, mode: str, min_score: float | None) -> None:
        if not isinstance(query, str) or not query.strip():
            raise InvalidQueryError("the query is empty; pass some text to search for")
        reason = unstorable(query, "the query")
        if reason is not None:  # a lone surrogate reaches the tokenizer as a TypeError
            raise InvalidQueryError(reason)
        if mode not in MODES:
            raise InvalidQueryError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        if not isinstance(k, int) or k <= 0:
            raise InvalidQueryError(f"k must be a positive integer (got {k!r})")
        if min_score is not None and not math.isfinite(min_score):
            raise InvalidQueryError("min_score must be a finite number")
