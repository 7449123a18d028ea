"""What a fault cost: acknowledged upserts not served at the end (lost), chunks beyond a clean
chunking of the final documents (duplicated), and seconds until everything acknowledged is
served again (recovery). Read through the API and from the newest loadable snapshot, read-only."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import httpx

from bench.faults.load import Acks
from bench.faults.row import Row
from bench.faults.stack import Stack
from bench.ingest import chunk_texts
from contracts.events import UpsertEvent
from indexer.snapshots import SnapshotStore


def served_version(stack: Stack, doc_id: str) -> int | None:
    try:
        response = stack.http.get(f"{stack.api_url}/documents/{doc_id}")
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return int(response.json()["version"])


def unserved(stack: Stack, expected: dict[str, int], doc_ids: Iterable[str] | None = None) -> list[str]:
    return [d for d in (expected if doc_ids is None else doc_ids) if served_version(stack, d) != expected[d]]


def wait_served(stack: Stack, acks: Acks, timeout_s: float, notes: list[str] | None = None) -> tuple[float | None, list[str]]:
    """Seconds until every acknowledged upsert is served at its newest version (None: not
    within `timeout_s`), and what is still missing then. Restarts a dead indexer."""
    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        expected = acks.expected()
        check = [d for d, v in expected.items() if stack.confirmed.get(d) != v]
        pending = unserved(stack, expected, check)
        missing = set(pending)
        stack.confirmed.update({d: expected[d] for d in check if d not in missing})
        if not pending:
            return time.monotonic() - started, []
        if time.monotonic() >= deadline:
            return None, pending
        if notes is not None:
            stack.ensure_indexer(notes, "while catching up")
        time.sleep(0.3)


def final_state(stack: Stack) -> dict[str, Any]:
    """Duplicated chunks etc. from the newest loadable generation, read-only."""
    try:
        index, manifest = stack.store.load(stack.model, stack.settings, fallback=True)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    surplus = 0
    twice_in_doc = 0
    owners: dict[int, int] = {}
    for record in index.documents:
        clean = chunk_texts(
            stack.model,
            stack.settings,
            [UpsertEvent(record.doc_id, record.version, record.title, record.text, record.metadata)],
        )
        surplus += max(0, len(record.chunks) - len(clean))
        texts = [record.chunk_text(c) for c in record.chunks]
        twice_in_doc += len(texts) - len(set(texts)) - (len(clean) - len(set(clean)))
        for chunk in record.chunks:
            owners[chunk.chunk_id] = owners.get(chunk.chunk_id, 0) + 1
    shared_ids = sum(n - 1 for n in owners.values() if n > 1)
    live = len(owners)
    return {
        "generation": manifest.generation,
        "documents": len(index.documents),
        "chunks": index.count().chunks,
        "surplus_chunks": surplus,
        "same_text_twice_in_doc": max(0, twice_in_doc),
        "chunk_ids_owned_twice": shared_ids,
        "vectors": len(index.vectors),
        "vectors_minus_chunks": len(index.vectors) - live,
        "duplicated": surplus + max(0, twice_in_doc) + shared_ids,
    }


def generations_state(stack: Stack) -> str:
    return ", ".join(
        f"{g}:{'ok' if _manifest_ok(stack.store, g) else 'BAD'}" for g in stack.store.generations()[-4:]
    )


def _manifest_ok(store: SnapshotStore, generation: int) -> bool:
    try:
        store.read_manifest(generation)
        return True
    except Exception:
        return False


def finish_row(row: Row, stack: Stack, acks: Acks, catch_up_s: float, fault_end: float | None) -> None:
    """Common end of a row: wait until everything acknowledged is served, then measure."""
    waited, pending = wait_served(stack, acks, catch_up_s, row.notes)
    if waited is not None and fault_end is not None:
        row.recover_s = round(time.monotonic() - fault_end, 1)
    elif waited is None:
        row.notes.append(f"{len(pending)} acknowledged docs not served after {catch_up_s:.0f} s, e.g. {pending[:3]}")
    expected = acks.expected()
    row.acknowledged = acks.count
    row.lost = len(unserved(stack, expected))
    if acks.failed:
        row.notes.append(f"{acks.failed} produce attempts not acknowledged ({acks.errors[:2]})")
    state = final_state(stack)
    row.details["final_index"] = state
    row.duplicated_chunks = state.get("duplicated")
    if "error" in state:
        row.notes.append(f"final snapshot not loadable: {state['error']}")
    row.details["generations"] = generations_state(stack)
    row.details["indexer_restarts_by_harness"] = stack.indexer_restarts

