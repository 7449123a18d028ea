"""The document table: which version of each document the index holds, and its chunks.

It is the index's source of truth for everything but vectors: search results are resolved through
it, the lexical index is rebuilt from it, and a model migration re-embeds from it instead of
replaying the whole topic.

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
import json
import logging
import re
import sqlite3
import sys
import threading
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from indexer.errors import SnapshotError

# Longest doc_id accepted anywhere (events, the index): ids travel in every search hit and key.
MAX_DOC_ID_CHARS = 512


@dataclass(frozen=True)
class Document:
    """A document as it arrives from a source: the unit of upsert."""

    doc_id: str
    title: str
    text: str
    version: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def full_text(self) -> str:
        """Title and body as one stream: the title belongs to the first chunk."""
        if self.title and self.text:
            return f"{self.title}\n\n{self.text}"
        return self.title or self.text


@dataclass(frozen=True)
class Deletion:
    """A request to remove a document. `version=None` is a tombstone: delete whatever is held."""

    doc_id: str
    version: int | None = None


Change = Document | Deletion


@dataclass(frozen=True)
class ChunkRecord:
    """One chunk: its vector id, where its text lies in the document, and its content hash."""

    chunk_id: int
    start: int
    end: int
    content_hash: str


@dataclass(frozen=True)
class DocumentRecord:
    """What the index holds for one live document."""

    doc_id: str
    version: int
    title: str
    text: str
    metadata: dict[str, Any]
    chunks: tuple[ChunkRecord, ...]

    @property
    def full_text(self) -> str:
        return Document(self.doc_id, self.title, self.text).full_text

    def chunk_text(self, chunk: ChunkRecord) -> str:
        return self.full_text[chunk.start : chunk.end]

    def to_json(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id,
            "version": self.version,
            "title": self.title,
            "text": self.text,
            "metadata": self.metadata,
            "chunks": [[c.chunk_id, c.start, c.end, c.content_hash] for c in self.chunks],
        }

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> DocumentRecord:
        return cls(
            doc_id=row["doc_id"],
            version=int(row["version"]),
            title=row["title"],
            text=row["text"],
            metadata=row.get("metadata") or {},
            chunks=tuple(ChunkRecord(int(c[0]), int(c[1]), int(c[2]), c[3]) for c in row["chunks"]),
        )


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

    def scan(self, generation: int) -> Iterator[tuple[str, int, np.ndarray]]:
        """(doc_id, version, chunk ids) of every document visible at `generation`, streamed."""
        last = 0
        while True:
            rows = self._query(
                "SELECT rowid, doc_id, version, chunk_ids FROM docs WHERE rowid > :last AND "
                f"{_VISIBLE} ORDER BY rowid LIMIT {_PAGE_ROWS * 8}",
                {"last": last, "g": generation},
            )
            if not rows:
                return
            for _rowid, doc_id, version, chunk_ids in rows:
                yield doc_id, int(version), np.frombuffer(chunk_ids, dtype=np.int64)
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


_UNKNOWN: Any = object()


class DocumentTable:
    """doc_id → live record, plus the versions of deleted documents.

    Deleted versions are remembered so that a late, older upsert cannot resurrect a document
    (replays and out-of-order delivery change nothing).

    Records are held in RAM only until the next generation commits them (`pending`); after that
    they are read from the store at the table's generation. A table with no store (a fresh index)
    holds everything pending.
    """

    def __init__(self) -> None:
        self._slot: dict[str, int] = {}
        self._ids: list[str | None] = []
        self._versions = array("q")
        self._free: list[int] = []
        self._chunk_owner = np.full(1024, -1, dtype=np.int32)
        self._chunks = 0
        self._deleted: dict[str, int] = {}
        # Changed since `generation`: the record, or None for a document no longer live.
        self._pending: dict[str, DocumentRecord | None] = {}
        self.store: DocumentStore | None = None
        self.generation: int | None = None
        self._committing: dict[str, DocumentRecord | None] = {}

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._slot

    def __iter__(self) -> Iterator[DocumentRecord]:
        """Every live record: the pending ones, then the store's, streamed (never all in RAM)."""
        pending = dict(self._pending)
        for record in pending.values():
            if record is not None:
                yield record
        if self.store is None or self.generation is None:
            return
        for record in self.store.records(self.generation):
            if record.doc_id not in pending:
                yield record

    # -- RAM maps -------------------------------------------------------------------------
    def _ensure_chunks(self, chunk_id: int) -> None:
        if chunk_id >= self._chunk_owner.shape[0]:
            size = max(chunk_id + 1, self._chunk_owner.shape[0] * 2)
            grown = np.full(size, -1, dtype=np.int32)
            grown[: self._chunk_owner.shape[0]] = self._chunk_owner
            self._chunk_owner = grown

    def _link(self, doc_id: str, version: int, chunk_ids: Iterable[int]) -> None:
        slot = self._slot.get(doc_id)
        if slot is None:
            if self._free:
                slot = self._free.pop()
                self._ids[slot] = doc_id
                self._versions[slot] = version
            else:
                slot = len(self._ids)
                self._ids.append(doc_id)
                self._versions.append(version)
            self._slot[doc_id] = slot
        else:
            self._versions[slot] = version
        ids = np.asarray(
            chunk_ids if isinstance(chunk_ids, np.ndarray) else list(chunk_ids), dtype=np.int64
        )
        if ids.size:
            self._ensure_chunks(int(ids.max()))
            self._chunks += int(np.count_nonzero(self._chunk_owner[ids] != slot))
            self._chunk_owner[ids] = slot

    def _bulk_link(self, rows: Iterable[tuple[str, int, np.ndarray]]) -> None:
        """`_link` for a fresh table, vectorized: one owner-array assignment for all chunks
        (a restart at 1M chunks must not pay numpy's per-call overhead per document)."""
        assert not self._slot
        parts: list[np.ndarray] = []
        counts = array("q")
        for doc_id, version, chunk_ids in rows:
            self._slot[doc_id] = len(self._ids)
            self._ids.append(doc_id)
            self._versions.append(version)
            parts.append(chunk_ids)
            counts.append(chunk_ids.shape[0])
        if not parts:
            return
        ids = np.concatenate(parts)
        if ids.size:
            slots = np.repeat(
                np.arange(len(parts), dtype=np.int32), np.frombuffer(counts, np.int64)
            )
            self._ensure_chunks(int(ids.max()))
            self._chunk_owner[ids] = slots
            self._chunks = int(np.unique(ids).size)

    def _unlink(self, doc_id: str, chunk_ids: Iterable[int]) -> None:
        slot = self._slot.pop(doc_id, None)
        if slot is None:
            return
        ids = np.asarray(list(chunk_ids), dtype=np.int64)
        ids = ids[ids < self._chunk_owner.shape[0]]
        mine = ids[self._chunk_owner[ids] == slot]
        self._chunk_owner[mine] = -1
        self._chunks -= int(mine.size)
        self._ids[slot] = None
        self._free.append(slot)

    def ram_bytes(self) -> int:
        """Approximate bytes the RAM maps take (the bench divides it by the chunk count)."""
        ids = sum(sys.getsizeof(d) for d in self._slot)
        return (
            self._chunk_owner.nbytes
            + self._versions.itemsize * len(self._versions)
            + sys.getsizeof(self._slot)
            + sys.getsizeof(self._ids)
            + ids
            + sys.getsizeof(self._deleted)
        )

    # -- reading --------------------------------------------------------------------------
    def get(self, doc_id: str) -> DocumentRecord | None:
        if doc_id in self._pending:
            return self._pending[doc_id]
        if doc_id not in self._slot or self.store is None or self.generation is None:
            return None
        return self.store.fetch([doc_id], self.generation).get(doc_id)

    def get_many(self, doc_ids: Iterable[str]) -> dict[str, DocumentRecord]:
        """Records of `doc_ids` that are live, in one store query (the k hits of a search)."""
        found: dict[str, DocumentRecord] = {}
        wanted = []
        for doc_id in doc_ids:
            if doc_id in self._pending:
                record = self._pending[doc_id]
                if record is not None:
                    found[doc_id] = record
            elif doc_id in self._slot:
                wanted.append(doc_id)
        if wanted and self.store is not None and self.generation is not None:
            found.update(self.store.fetch(wanted, self.generation))
        return found

    def held_version(self, doc_id: str) -> int | None:
        """The newest version seen for a document, live or deleted."""
        slot = self._slot.get(doc_id)
        if slot is not None:
            return int(self._versions[slot])
        return self._deleted.get(doc_id)

    def is_stale(self, doc_id: str, version: int) -> bool:
        held = self.held_version(doc_id)
        return held is not None and version <= held

    def owner_id(self, chunk_id: int) -> str | None:
        """The doc id a vector id belongs to, from RAM (the per-candidate path of a search)."""
        if chunk_id < 0 or chunk_id >= self._chunk_owner.shape[0]:
            return None
        slot = int(self._chunk_owner[chunk_id])
        return None if slot < 0 else self._ids[slot]

    def owner(self, chunk_id: int) -> tuple[DocumentRecord, ChunkRecord] | None:
        """The document and chunk a vector id belongs to, if it is still live."""
        doc_id = self.owner_id(chunk_id)
        record = self.get(doc_id) if doc_id is not None else None
        if record is None:
            return None
        chunk = next((c for c in record.chunks if c.chunk_id == chunk_id), None)
        return None if chunk is None else (record, chunk)

    @property
    def chunk_count(self) -> int:
        return self._chunks

    @property
    def deleted_versions(self) -> dict[str, int]:
        return dict(self._deleted)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    # -- writing --------------------------------------------------------------------------
    def put(self, record: DocumentRecord, previous: Any = _UNKNOWN) -> DocumentRecord | None:
        """Make `record` live. `previous` (what `get` returned, if the caller has it) saves a
        store read."""
        if previous is _UNKNOWN:
            previous = self.get(record.doc_id)
        if previous is not None:
            self._unlink(previous.doc_id, (c.chunk_id for c in previous.chunks))
        self._link(record.doc_id, record.version, (c.chunk_id for c in record.chunks))
        self._deleted.pop(record.doc_id, None)
        self._pending[record.doc_id] = record
        return previous

    def remove(
        self, doc_id: str, version: int | None, previous: Any = _UNKNOWN
    ) -> DocumentRecord | None:
        if previous is _UNKNOWN:
            previous = self.get(doc_id)
        if previous is not None:
            self._unlink(doc_id, (c.chunk_id for c in previous.chunks))
        held = previous.version if previous is not None else self._deleted.get(doc_id)
        candidates = [v for v in (held, version) if v is not None]
        self._deleted[doc_id] = max(candidates) if candidates else 0
        self._pending[doc_id] = None
        return previous

    # -- persistence ----------------------------------------------------------------------
    def stats(self, generation: int) -> StoreStats:
        return StoreStats(generation, len(self._slot), self._chunks, len(self._deleted))

    def commit(self, store: DocumentStore, generation: int, previous: int) -> StoreStats:
        """Write generation `generation` into `store` in one transaction; O(changed documents)
        when this table follows `store` at the newest manifest's generation `previous`.

        The table is not moved to the new generation here: `committed` does that once the
        manifest is published (a failed publish leaves the table as it was, pending included).
        """
        stats = self.stats(generation)
        pending = dict(self._pending)
        follows = store.same_file(self.store) and self.generation is not None
        if follows and self.generation != previous:
            # Loaded from an older generation (the newest manifest was unreadable): the rows
            # committed since then are undone by writing this table's state for those ids.
            assert self.generation is not None
            behind = store.changed_ids(self.generation, previous) - pending.keys()
            held = store.fetch(behind, self.generation)
            for doc_id in behind:
                pending[doc_id] = held.get(doc_id)
        if follows:
            upserts = [r for r in pending.values() if r is not None]
            removed = [d for d, r in pending.items() if r is None and d not in self._deleted]
            deleted = {
                d: self._deleted[d] for d, r in pending.items() if r is None and d in self._deleted
            }
            store.commit(generation, previous, upserts, removed, deleted, stats)
        else:
            store.commit(
                generation, previous, iter(self), [], dict(self._deleted), stats, replace_all=True
            )
        self._committing = pending
        return stats

    def committed(self, store: DocumentStore, generation: int) -> None:
        """The manifest of `generation` is published: follow `store` there, drop what it holds."""
        written, self._committing = self._committing, {}
        if not store.same_file(self.store):
            self.store = store
        self.generation = generation
        for doc_id, record in written.items():
            if doc_id in self._pending and self._pending[doc_id] is record:
                del self._pending[doc_id]

    @classmethod
    def open(
        cls, store: DocumentStore, generation: int, expected: dict[str, Any] | None
    ) -> DocumentTable:
        """The table at `generation`: RAM maps built from (doc_id, version, chunk ids) only."""
        table = cls()
        stats = store.stats(generation)
        if stats is None:
            raise SnapshotError(
                f"{store.path} does not contain generation {generation} (its newest commit was "
                "lost or rolled back): load an older generation, or rebuild the index "
                "(`semsearch build`) or re-consume it (`semsearch index`)"
            )
        table._bulk_link(store.scan(generation))
        table._deleted = store.deleted(generation)
        found = table.stats(generation)
        if found != stats or (
            expected is not None
            and (expected.get("documents"), expected.get("chunks"))
            != (found.documents, found.chunks)
        ):
            raise store.corrupt(
                ValueError(
                    f"generation {generation} should hold {stats.documents} documents / "
                    f"{stats.chunks} chunks, found {found.documents} / {found.chunks}"
                )
            )
        table.store = store
        table.generation = generation
        return table

    def delta(self, store: DocumentStore, generation: int) -> StoreChanges | None:
        """The rows that changed between this table's generation and a newer `generation`
        (reads only: the caller applies them under its lock with `apply_delta`), or None when no
        delta can be had (pending changes, another store, the old generation was collected) and
        the table must be reopened in full."""
        old = self.generation
        if old is None or self._pending or not store.same_file(self.store):
            return None
        if generation == old:
            return StoreChanges([], [], {}, set())
        oldest = store.oldest_generation()
        if generation < old or oldest is None or oldest > old:
            return None
        if store.stats(generation) is None:
            raise SnapshotError(
                f"{store.path} does not contain generation {generation}; rebuild the index "
                "(`semsearch build`) or re-consume it (`semsearch index`)"
            )
        return store.changes(old, generation)

    def apply_delta(self, changes: StoreChanges, generation: int) -> None:
        for record in changes.ended:
            self._unlink(record.doc_id, (c.chunk_id for c in record.chunks))
        for record in changes.added:
            self._link(record.doc_id, record.version, (c.chunk_id for c in record.chunks))
        for doc_id in changes.undeleted:
            self._deleted.pop(doc_id, None)
        self._deleted.update(changes.deleted)
        self.generation = generation

    # -- format 1 (gen-*/documents.jsonl) -------------------------------------------------
    def dump(self, out: TextIO) -> None:
        """Write one JSON line per document (format 1; an export, not the storage format)."""
        for record in self:
            row = record.to_json()
            try:
                out.write(json.dumps(row, ensure_ascii=False))
            except UnicodeEncodeError:
                out.write(json.dumps(row, ensure_ascii=True))
            out.write("\n")
        out.write(json.dumps({"deleted": self._deleted}))
        out.write("\n")

    @classmethod
    def load(cls, path: Path) -> DocumentTable:
        """A format-1 documents.jsonl, all pending: the next generation writes it to the store."""
        table = cls()
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                if "deleted" in row and "doc_id" not in row:
                    table._deleted.update({k: int(v) for k, v in row["deleted"].items()})
                else:
                    table.put(DocumentRecord.from_json(row), previous=None)
        for doc_id in table._deleted:
            table._pending.setdefault(doc_id, None)
        return table
