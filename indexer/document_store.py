"""The document store: every generation's documents in one SQLite file per index directory.

Storage (format 2). Documents live in one SQLite file per index directory, `documents.sqlite`
(stdlib sqlite3, WAL). Why SQLite and not a file per generation:
- a generation must cost what changed, not the corpus: SQLite writes the changed rows in one
  transaction (pages touched, appended to the WAL), where a JSON dump rewrote, hashed and fsynced
  every document every generation (1.1 GB per generation at 1M chunks);
- text cannot stay in RAM (2.5 KB/chunk budget at 1M chunks): SQLite gives random access by doc id,
  so the search path fetches title/text/metadata for the k hits only (one `IN (...)` query);
- the API process follows the writer on the same host by reading only the rows changed since its
  generation (`DocumentTable.advance`), instead of re-parsing the whole table per refresh.

MVCC by generation: a row is (doc_id, version, ..., gen_from, gen_to) and is visible at
generation G iff gen_from <= G and (gen_to IS NULL or gen_to > G). Generation N commits, in ONE
transaction, the new rows (gen_from = N), ends the rows they replace (gen_to = N), and the deleted
versions that block resurrection (table `deleted`, same visibility). The manifest stays the commit
point: it is renamed after the SQLite commit and names the store generation and its row counts.
A crash between the two leaves rows newer than the newest manifest; the writer rolls them back
(`DocumentStore.rollback_after`) before it commits again, readers never see them (they read at
their manifest's generation). GC deletes rows whose gen_to is at or below the oldest generation
kept or pinned.

Trade-offs: SQLite needs a POSIX file system with working locks on one host (WAL uses shared
memory): the writer and its readers must share a host; for scale-out every shard gets its own file
and its own writer. An object store would need the generation deltas shipped as immutable files
(Lucene-style segments); `DocumentStore.changes` is exactly such a delta, so that layout can be
exported later. A reader that serves a generation older than every generation still kept (it did
not refresh for `keep` generations) can miss the text of documents changed since; a refresh from
there reloads the table in full instead of applying a delta.

In RAM the table keeps only what the hot paths need per chunk and per document: chunk id -> owning
document slot (an int32 array indexed by chunk id) and doc id -> (slot, version), plus the versions
of deleted documents (staleness checks) and the records changed since the last generation (pending,
written by the next one).
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contracts.errors import SnapshotError
from indexer.documents import ChunkRecord, DocumentRecord

log = logging.getLogger(__name__)

STORE_FILE = "documents.sqlite"
_SURROGATE = re.compile("[\ud800-\udfff]")
_PAGE_ROWS = 512  # rows per page when streaming: the connection lock is released between pages
_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    doc_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    chunk_ids BLOB NOT NULL,
    chunks TEXT NOT NULL,
    gen_from INTEGER NOT NULL,
    gen_to INTEGER,
    title TEXT NOT NULL,
    metadata TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS docs_by_id ON docs (doc_id, gen_from);
CREATE INDEX IF NOT EXISTS docs_by_from ON docs (gen_from);
CREATE INDEX IF NOT EXISTS docs_by_to ON docs (gen_to) WHERE gen_to IS NOT NULL;
CREATE TABLE IF NOT EXISTS deleted (
    doc_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    gen_from INTEGER NOT NULL,
    gen_to INTEGER
);
CREATE INDEX IF NOT EXISTS deleted_by_id ON deleted (doc_id, gen_from);
CREATE INDEX IF NOT EXISTS deleted_by_from ON deleted (gen_from);
CREATE INDEX IF NOT EXISTS deleted_by_to ON deleted (gen_to) WHERE gen_to IS NOT NULL;
CREATE TABLE IF NOT EXISTS generations (
    gen INTEGER PRIMARY KEY,
    documents INTEGER NOT NULL,
    chunks INTEGER NOT NULL,
    deleted INTEGER NOT NULL
);
"""
# The gen_to indexes are partial: live rows (NULL) are not in them, so ending a row inserts one
# entry instead of rewriting the index page that held its NULL entry (every `gen_to > x` query
# implies IS NOT NULL, so SQLite uses them).
# Column order matters: what loading the table reads (id, version, chunk ids) comes first, so a
# full scan stays on the b-tree pages and never follows the overflow pages of long texts.
_RECORD_COLUMNS = "doc_id, version, chunk_ids, chunks, title, metadata, text"
_VISIBLE = "gen_from <= :g AND (gen_to IS NULL OR gen_to > :g)"
_HIT_COLUMNS = "doc_id, chunk_ids, chunks, title, metadata, text"


@functools.lru_cache(maxsize=64)
def _hits_sql(n: int) -> str:
    """The statement for n ids, built once per n: sqlite3 caches prepared statements by text."""
    marks = ",".join("?" * n)
    return (
        f"SELECT {_HIT_COLUMNS} FROM docs WHERE doc_id IN ({marks}) AND gen_from <= ? "
        "AND (gen_to IS NULL OR gen_to > ?)"
    )


def _storable_text(value: str) -> str:
    """Lone surrogates (refused upstream; defence in depth) become U+FFFD, one char for one:
    chunk offsets stay valid and one bad record never makes a generation fail."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        log.warning("replacing lone surrogates in a stored document field")
        return _SURROGATE.sub("\ufffd", value)
    return value


def _metadata_json(metadata: dict[str, Any]) -> str:
    text = json.dumps(metadata, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(metadata, ensure_ascii=True)  # escapes load back to the same string
    return text


def _record_row(record: DocumentRecord) -> tuple[Any, ...]:
    ids = np.fromiter((c.chunk_id for c in record.chunks), dtype=np.int64, count=len(record.chunks))
    chunks = json.dumps([[c.start, c.end, c.content_hash] for c in record.chunks])
    return (
        record.doc_id,
        record.version,
        ids.tobytes(),
        chunks,
        _storable_text(record.title),
        _metadata_json(record.metadata),
        _storable_text(record.text),
    )


def _row_record(row: tuple[Any, ...]) -> DocumentRecord:
    doc_id, version, chunk_ids, chunks, title, metadata, text = row
    ids = np.frombuffer(chunk_ids, dtype=np.int64)
    spans = json.loads(chunks)
    return DocumentRecord(
        doc_id=doc_id,
        version=int(version),
        title=title,
        text=text,
        metadata=json.loads(metadata) or {},
        chunks=tuple(
            ChunkRecord(int(i), int(s[0]), int(s[1]), s[2]) for i, s in zip(ids, spans, strict=True)
        ),
    )


@dataclass(frozen=True)
class HitRecord:
    """What a search hit shows of a document: the fields, with the chunk spans left unparsed.

    A query turns ~k rows into hits; a full DocumentRecord per row (a ChunkRecord per chunk, its
    spans JSON parsed) cost more than the SQL. Only the chunk a hit shows is ever located.
    """

    doc_id: str
    title: str
    text: str
    metadata: dict[str, Any]
    chunk_ids: np.ndarray  # int64, in document order
    spans: str | list[list[Any]]  # the row's `chunks` JSON ([start, end, hash] per chunk), or parsed

    @classmethod
    def of(cls, record: DocumentRecord) -> HitRecord:
        ids = np.fromiter((c.chunk_id for c in record.chunks), np.int64, len(record.chunks))
        spans = [[c.start, c.end, c.content_hash] for c in record.chunks]
        return cls(record.doc_id, record.title, record.text, record.metadata, ids, spans)

    @property
    def full_text(self) -> str:
        if self.title and self.text:
            return f"{self.title}\n\n{self.text}"
        return self.title or self.text

    def chunk_text(self, chunk_id: int | None) -> str | None:
        """The text of chunk `chunk_id` of this document, None if it is not one of its chunks."""
        if chunk_id is None:
            return None
        ids = self.chunk_ids.tolist()  # a few ids: a list scan beats numpy's per-call cost
        if chunk_id not in ids:
            return None
        spans = json.loads(self.spans) if isinstance(self.spans, str) else self.spans
        start, end = (int(v) for v in spans[ids.index(chunk_id)][:2])
        # Spans are offsets into full_text (title, blank line, text): a chunk of the body is
        # sliced from the text itself, without building the concatenation.
        body = len(self.title) + 2 if self.title and self.text else 0
        if body and start >= body:
            return self.text[start - body : end - body]
        return self.full_text[start:end]


def _row_hit(row: tuple[Any, ...]) -> HitRecord:
    doc_id, chunk_ids, chunks, title, metadata, text = row
    return HitRecord(
        doc_id,
        title,
        text,
        {} if metadata == "{}" else (json.loads(metadata) or {}),
        np.frombuffer(chunk_ids, dtype=np.int64),
        chunks,
    )


@dataclass(frozen=True)
class StoreStats:
    """What one generation of the store holds; recorded in the manifest and verified on load."""

    generation: int
    documents: int
    chunks: int
    deleted: int

    def to_json(self) -> dict[str, Any]:
        return {
            "file": STORE_FILE,
            "generation": self.generation,
            "documents": self.documents,
            "chunks": self.chunks,
            "deleted": self.deleted,
        }


@dataclass
class StoreChanges:
    """The rows that differ between two generations: what a reader applies to follow the writer."""

    ended: list[DocumentRecord]  # visible at the old generation, not at the new one
    added: list[DocumentRecord]  # visible at the new generation, not at the old one
    deleted: dict[str, int]  # deleted versions that became visible
    undeleted: set[str]  # doc ids whose deleted version stopped being visible


def _metadata_page(texts: Sequence[str]) -> list[dict[str, Any]]:
    """The metadata of a page of rows, parsed by one json.loads of them all as an array (4x
    faster than one call per row: a restart at 1M chunks parses ~450k of them). Each row was
    written by json.dumps, so joining them is an array of as many values; anything else (a
    damaged row) is parsed row by row, which raises for the damaged one as before."""
    wanted = [i for i, text in enumerate(texts) if text != "{}"]
    parsed: list[dict[str, Any]] = [{} for _ in texts]
    if not wanted:
        return parsed
    try:
        values = json.loads("[" + ",".join(texts[i] for i in wanted) + "]")
    except ValueError:
        values = None
    if not isinstance(values, list) or len(values) != len(wanted):
        values = [json.loads(texts[i]) for i in wanted]
    for i, value in zip(wanted, values, strict=True):
        parsed[i] = value or {}
    return parsed


class DocumentStore:
    """The SQLite file of one index directory. One writer (under the index's WriterLock), any
    number of readers; every use of the connection is serialized by a lock, so one store can
    serve the search threads and the refresh thread of a process."""

    def __init__(self, root: Path, *, writer: bool = False) -> None:
        self.path = Path(root) / STORE_FILE
        self.writer = writer
        self.rows_read = 0  # rows fetched so far: lets tests prove refresh reads only changes
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        # The search path's own connection: a refresh's delta read, a full scan or a writer's
        # commit holds `_lock` for as long as it runs (a bulk generation: hundreds of ms), and
        # a query must not wait behind it. Rows visible at a generation never change (MVCC;
        # GC respects pins), so which connection reads them makes no difference.
        self._search_lock = threading.Lock()
        self._search_conn: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"DocumentStore({self.path})"

    def same_file(self, other: DocumentStore | None) -> bool:
        return other is not None and (other is self or other.path.resolve() == self.path.resolve())

    def exists(self) -> bool:
        return self.path.is_file()

    def corrupt(self, exc: BaseException) -> SnapshotError:
        return SnapshotError(
            f"{self.path} is corrupt or truncated ({exc}); every generation of this index shares "
            "it - rebuild the index (`semsearch build`, or delete the index directory and "
            "re-consume the topic with `semsearch index`)"
        )

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        if not self.writer and not self.path.is_file():
            raise SnapshotError(
                f"{self.path} is missing: the generations of this index cannot be read; rebuild "
                "it (`semsearch build`) or re-consume it with `semsearch index`"
            )
        try:
            mode = "rwc" if self.writer else "rw"
            try:
                conn = self._open(mode)
            except sqlite3.OperationalError:
                if self.writer:
                    raise
                conn = self._open("ro")  # a read-only mount (WAL then needs its -shm file)
            if self.writer:
                conn.execute("PRAGMA journal_mode=WAL")
                # The manifest is renamed right after the commit: the commit must be on disk.
                conn.execute("PRAGMA synchronous=FULL")
                # After a checkpoint the WAL shrinks back to this: one bulk generation must not
                # leave a WAL of its size behind for good.
                conn.execute("PRAGMA journal_size_limit=16777216")
                conn.executescript(_SCHEMA)
            else:
                conn.execute("SELECT count(*) FROM generations").fetchone()
        except sqlite3.DatabaseError as exc:
            raise self.corrupt(exc) from None
        self._conn = conn
        return conn

    def _open(self, mode: str) -> sqlite3.Connection:
        return sqlite3.connect(
            f"file:{self.path}?mode={mode}",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=30.0,
        )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        with self._search_lock:
            if self._search_conn is not None:
                self._search_conn.close()
                self._search_conn = None

    def _search_query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """`_query` on the search connection (see __init__)."""
        with self._search_lock:
            try:
                conn = self._search_conn
                if conn is None:
                    with self._lock:
                        self._connect()  # the file exists, is checked and (writer) has its schema
                    try:
                        conn = self._open("rw")
                    except sqlite3.OperationalError:
                        conn = self._open("ro")
                    self._search_conn = conn
                rows = conn.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise self.corrupt(exc) from None
        self.rows_read += len(rows)
        return rows

    def _query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                rows = self._connect().execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise self.corrupt(exc) from None
        self.rows_read += len(rows)
        return rows

    # -- checks ---------------------------------------------------------------------------
    def quick_check(self) -> None:
        """SQLite's own structural check (O(file)); the writer runs it once when it opens."""
        rows = self._query("PRAGMA quick_check")
        self.rows_read -= len(rows)
        if [r[0] for r in rows] != ["ok"]:
            raise self.corrupt(ValueError("; ".join(str(r[0]) for r in rows[:3])))

    def stats(self, generation: int) -> StoreStats | None:
        rows = self._query(
            "SELECT documents, chunks, deleted FROM generations WHERE gen = ?", (generation,)
        )
        if not rows:
            return None
        return StoreStats(generation, int(rows[0][0]), int(rows[0][1]), int(rows[0][2]))

    def oldest_generation(self) -> int | None:
        rows = self._query("SELECT min(gen) FROM generations")
        return None if rows[0][0] is None else int(rows[0][0])

    # -- reading at a generation ----------------------------------------------------------
    def fetch(self, doc_ids: Iterable[str], generation: int) -> dict[str, DocumentRecord]:
        """The records of `doc_ids` visible at `generation`, in one query per 500 ids."""
        wanted = list(dict.fromkeys(doc_ids))
        found: dict[str, DocumentRecord] = {}
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = self._query(
                f"SELECT {_RECORD_COLUMNS} FROM docs WHERE doc_id IN ({marks}) AND gen_from <= ? "
                "AND (gen_to IS NULL OR gen_to > ?)",
                (*part, generation, generation),
            )
            for row in rows:
                found[row[0]] = _row_record(row)
        return found

    def fetch_hits(self, doc_ids: Sequence[str], generation: int) -> dict[str, HitRecord]:
        """`fetch` for the hits of a query: one query, no DocumentRecord built (see HitRecord)."""
        found: dict[str, HitRecord] = {}
        wanted = list(dict.fromkeys(doc_ids))
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            rows = self._search_query(_hits_sql(len(part)), (*part, generation, generation))
            for row in rows:
                found[row[0]] = _row_hit(row)
        return found

    def scan(self, generation: int) -> Iterator[tuple[str, int, np.ndarray, dict[str, Any]]]:
        """(doc_id, version, chunk ids, metadata) of every document visible at `generation`,
        streamed (metadata feeds the filters' index; it sits before the text in the row, so
        the scan still never reads a long text's overflow pages)."""
        last = 0
        while True:
            rows = self._query(
                "SELECT rowid, doc_id, version, chunk_ids, metadata FROM docs WHERE rowid > :last "
                f"AND {_VISIBLE} ORDER BY rowid LIMIT {_PAGE_ROWS * 8}",
                {"last": last, "g": generation},
            )
            if not rows:
                return
            parsed = _metadata_page([row[4] for row in rows])
            for (_rowid, doc_id, version, chunk_ids, _), metadata in zip(rows, parsed, strict=True):
                yield doc_id, int(version), np.frombuffer(chunk_ids, dtype=np.int64), metadata
            last = rows[-1][0]

    def records(self, generation: int) -> Iterator[DocumentRecord]:
        """Every record visible at `generation`, streamed page by page (text never all in RAM)."""
        last = 0
        while True:
            rows = self._query(
                f"SELECT rowid, {_RECORD_COLUMNS} FROM docs WHERE rowid > :last AND {_VISIBLE} "
                f"ORDER BY rowid LIMIT {_PAGE_ROWS}",
                {"last": last, "g": generation},
            )
            if not rows:
                return
            for row in rows:
                yield _row_record(row[1:])
            last = rows[-1][0]

    def deleted(self, generation: int) -> dict[str, int]:
        rows = self._query(
            f"SELECT doc_id, version FROM deleted WHERE {_VISIBLE}", {"g": generation}
        )
        return {doc_id: int(version) for doc_id, version in rows}

    def changes(self, old: int, new: int) -> StoreChanges:
        """The rows that differ between generations `old` < `new`: O(changes), by index."""
        params = {"old": old, "new": new}
        ended = self._query(
            f"SELECT {_RECORD_COLUMNS} FROM docs WHERE gen_to > :old AND gen_to <= :new "
            "AND gen_from <= :old",
            params,
        )
        added = self._query(
            f"SELECT {_RECORD_COLUMNS} FROM docs WHERE gen_from > :old AND gen_from <= :new "
            "AND (gen_to IS NULL OR gen_to > :new)",
            params,
        )
        deleted = self._query(
            "SELECT doc_id, version FROM deleted WHERE gen_from > :old AND gen_from <= :new "
            "AND (gen_to IS NULL OR gen_to > :new)",
            params,
        )
        undeleted = self._query(
            "SELECT doc_id FROM deleted WHERE gen_to > :old AND gen_to <= :new AND gen_from <= :old",
            params,
        )
        return StoreChanges(
            ended=[_row_record(r) for r in ended],
            added=[_row_record(r) for r in added],
            deleted={d: int(v) for d, v in deleted},
            undeleted={r[0] for r in undeleted},
        )

    def changed_ids(self, old: int, new: int) -> set[str]:
        """Doc ids whose row (live or deleted) differs between generations `old` < `new`."""
        params = {"old": old, "new": new}
        found: set[str] = set()
        for table in ("docs", "deleted"):
            rows = self._query(
                f"SELECT doc_id FROM {table} WHERE (gen_from > :old AND gen_from <= :new) OR "
                "(gen_to > :old AND gen_to <= :new)",
                params,
            )
            found.update(r[0] for r in rows)
        return found

    # -- writing (the writer only) --------------------------------------------------------
    def _write(self, work: Any) -> None:
        with self._lock:
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
                work(conn)
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
                    raise OSError(errno.ENOSPC, f"No space left on device ({exc})") from exc
                if isinstance(exc, sqlite3.OperationalError) and "disk I/O" in str(exc):
                    raise OSError(errno.EIO, str(exc)) from exc
                if isinstance(exc, sqlite3.DatabaseError):
                    raise self.corrupt(exc) from None
                raise

    @staticmethod
    def _rollback_sql(conn: sqlite3.Connection, after: int) -> None:
        for table in ("docs", "deleted"):
            conn.execute(f"DELETE FROM {table} WHERE gen_from > ?", (after,))
            conn.execute(f"UPDATE {table} SET gen_to = NULL WHERE gen_to > ?", (after,))
        conn.execute("DELETE FROM generations WHERE gen > ?", (after,))

    def rollback_after(self, generation: int) -> None:
        """Undo what a generation newer than the newest manifest committed (a crash between
        the SQLite commit and the manifest rename): readers never saw it, the writer redoes it."""
        self._write(lambda conn: self._rollback_sql(conn, generation))

    def commit(
        self,
        generation: int,
        previous: int,
        upserts: Iterable[DocumentRecord],
        removed: Iterable[str],
        deleted: dict[str, int],
        stats: StoreStats,
        *,
        replace_all: bool = False,
    ) -> None:
        """Generation `generation` in one transaction: roll back anything newer than `previous`
        (the newest manifest), end the rows of every changed document, insert the new ones."""

        def work(conn: sqlite3.Connection) -> None:
            self._rollback_sql(conn, previous)
            if replace_all:
                for table in ("docs", "deleted"):
                    conn.execute(
                        f"UPDATE {table} SET gen_to = ? WHERE gen_to IS NULL", (generation,)
                    )
            rows = []
            ended: list[tuple[int, str]] = []
            for record in upserts:
                ended.append((generation, record.doc_id))
                rows.append((*_record_row(record), generation))
            ended.extend((generation, doc_id) for doc_id in removed)
            ended.extend((generation, doc_id) for doc_id in deleted)
            if not replace_all:
                for table in ("docs", "deleted"):
                    conn.executemany(
                        f"UPDATE {table} SET gen_to = ? WHERE doc_id = ? AND gen_to IS NULL", ended
                    )
            conn.executemany(
                f"INSERT INTO docs ({_RECORD_COLUMNS}, gen_from) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.executemany(
                "INSERT INTO deleted (doc_id, version, gen_from) VALUES (?, ?, ?)",
                [(d, v, generation) for d, v in deleted.items()],
            )
            conn.execute(
                "INSERT INTO generations (gen, documents, chunks, deleted) VALUES (?, ?, ?, ?)",
                (generation, stats.documents, stats.chunks, stats.deleted),
            )

        self._write(work)

    def collect(self, oldest_kept: int) -> None:
        """Drop rows no kept or pinned generation can see (gen_to <= the oldest one)."""

        def work(conn: sqlite3.Connection) -> None:
            for table in ("docs", "deleted"):
                conn.execute(f"DELETE FROM {table} WHERE gen_to <= ?", (oldest_kept,))
            conn.execute("DELETE FROM generations WHERE gen < ?", (oldest_kept,))

        self._write(work)
