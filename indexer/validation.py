"""The validation gate: may a shadow index (new model) replace the live one?

A model migration is only safe if the new index holds exactly the same documents as the one it
replaces, holds them as sane vectors of its own model, and retrieves at least about as well.
Every check here answers one of those questions with a number, and the report says which failed
and why in words an operator can act on. The gate knows nothing of Kafka or Redis: the caller
(the migrator) brings both indexes to the same Kafka offsets first, so "same documents" is a
plain comparison of the two document tables.

Checks, in order (all run, so one report lists every problem):
- documents: the same doc ids at the same versions as the live index (counts alone would
  let one missing and one extra document cancel out);
- vectors: every chunk has a vector, none NaN/inf, all of the model's dimension, unit length;
- canaries: the shadow's model still reproduces the canary vectors in the shadow's manifest
  (the model that built it is the model that will serve it);
- quality: nDCG@10 and recall@10 on a held-out labelled set, vector mode (hybrid would let BM25
  hide a worse model), not worse than live by more than `tolerance`;
- latency: p99 of a few searches on the shadow under a bound.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from contracts.errors import ModelMismatchError
from contracts.offsets import Offsets
from indexer.canaries import CANARY_SENTENCES, CanaryProbe, compare
from indexer.compatibility import ensure_compatible
from indexer.evaluation import Quality, evaluate
from indexer.index import Index
from indexer.snapshots.manifest import Manifest

DEFAULT_TOLERANCE = 0.02
DEFAULT_P99_MS = 1000.0
LATENCY_QUERIES = 20
# How many differing doc ids a report names; the counts say how many there are in all.
_SHOWN = 5
_NORM_SLACK = 1e-3


@dataclass(frozen=True)
class Check:
    """One question of the gate and its answer."""

    name: str
    passed: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class GateReport:
    """The verdict, JSON-serializable: stored in the shadow manifest and published on control."""

    shadow_index_id: str
    live_index_id: str
    passed: bool
    reasons: list[str]
    checks: list[Check]
    tolerance: float
    offsets: dict[str, dict[str, int]] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)

    def check(self, name: str) -> Check:
        for item in self.checks:
            if item.name == name:
                return item
        raise KeyError(name)

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        why = "; ".join(self.reasons) if self.reasons else "; ".join(c.detail for c in self.checks)
        return f"gate {verdict} for {self.shadow_index_id} (vs {self.live_index_id}): {why}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["checks"] = [asdict(c) for c in self.checks]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GateReport:
        body = dict(data)
        body["checks"] = [Check(**c) for c in body.get("checks", [])]
        return cls(**body)


def _json_offsets(offsets: Offsets | None) -> dict[str, dict[str, int]]:
    return {t: {str(p): int(o) for p, o in parts.items()} for t, parts in (offsets or {}).items()}


def check_offsets(shadow: Offsets | None, live: Offsets | None) -> Check:
    """Documents can only be compared at the same point of the stream."""
    if shadow is None or live is None:
        return Check("offsets", True, "offsets not given; the caller vouches they are equal")
    if _json_offsets(shadow) == _json_offsets(live):
        return Check("offsets", True, "both indexes contain the stream up to the same offsets")
    return Check(
        "offsets",
        False,
        f"the indexes were compared at different stream positions (shadow {_json_offsets(shadow)}, "
        f"live {_json_offsets(live)}); stop both at the same offsets before gating",
        {"shadow": _json_offsets(shadow), "live": _json_offsets(live)},
    )


def check_documents(shadow: Index, live: Index) -> Check:
    """Same doc ids at the same versions; chunk counts may differ (another tokenizer)."""
    with shadow.lock.reading():
        ours = {r.doc_id: r.version for r in shadow.documents}
        shadow_chunks = shadow.documents.chunk_count
    with live.lock.reading():
        theirs = {r.doc_id: r.version for r in live.documents}
        live_chunks = live.documents.chunk_count
    missing = sorted(set(theirs) - set(ours))
    extra = sorted(set(ours) - set(theirs))
    stale = sorted(d for d in set(ours) & set(theirs) if ours[d] != theirs[d])
    data = {
        "shadow_documents": len(ours),
        "live_documents": len(theirs),
        "shadow_chunks": shadow_chunks,
        "live_chunks": live_chunks,
        "missing": len(missing),
        "extra": len(extra),
        "version_mismatch": len(stale),
    }
    if not (missing or extra or stale):
        return Check("documents", True, f"{len(ours)} documents at the same versions as live", data)
    problems = []
    if missing:
        problems.append(f"{len(missing)} live documents missing (e.g. {missing[:_SHOWN]})")
    if extra:
        problems.append(f"{len(extra)} documents not in live (e.g. {extra[:_SHOWN]})")
    if stale:
        problems.append(f"{len(stale)} at another version (e.g. {stale[:_SHOWN]})")
    return Check(
        "documents",
        False,
        f"shadow holds {len(ours)} documents, live {len(theirs)}: " + ", ".join(problems),
        data,
    )


def check_vectors(shadow: Index) -> Check:
    """Every chunk has one finite, unit-length vector of the model's dimension."""
    dimension = shadow.model.dimension
    with shadow.lock.reading():
        chunk_ids = [c.chunk_id for record in shadow.documents for c in record.chunks]
        found = shadow.vectors.vectors_of(chunk_ids)
        index_dimension = shadow.vectors.dimension
    data: dict[str, Any] = {"chunks": len(chunk_ids), "vectors": len(found), "dimension": dimension}
    if index_dimension != dimension:
        return Check(
            "vectors",
            False,
            f"the vector index has dimension {index_dimension} but the model {dimension}",
            data,
        )
    if len(found) != len(chunk_ids):
        return Check(
            "vectors",
            False,
            f"{len(chunk_ids) - len(found)} of {len(chunk_ids)} chunks have no vector",
            data,
        )
    if not found:
        return Check("vectors", True, "no chunks", data)
    matrix = np.vstack(list(found.values()))
    if matrix.shape[1] != dimension:
        return Check(
            "vectors",
            False,
            f"vectors have dimension {matrix.shape[1]}, expected {dimension}",
            data,
        )
    bad = int((~np.isfinite(matrix).all(axis=1)).sum())
    data["non_finite"] = bad
    if bad:
        return Check("vectors", False, f"{bad} vectors contain NaN or inf", data)
    norms = np.linalg.norm(matrix, axis=1)
    off = int((np.abs(norms - 1.0) > _NORM_SLACK).sum())
    data["not_unit_length"] = off
    if off:
        return Check("vectors", False, f"{off} vectors are not unit length (cosine breaks)", data)
    return Check(
        "vectors", True, f"{len(found)} finite unit vectors of dimension {dimension}", data
    )


def check_canaries(shadow: Index, manifest: Manifest | None = None) -> Check:
    """The model that will serve the shadow still embeds like the model that built it."""
    if manifest is not None:
        try:
            comparison = ensure_compatible(
                shadow.model,
                manifest.model,
                CanaryProbe.from_json(manifest.canaries),
                shadow.index_id,
            )
        except ModelMismatchError as exc:
            return Check("canaries", False, str(exc))
    else:
        comparison = compare(shadow.canaries, shadow.model)
        if comparison.failed:
            return Check("canaries", False, f"canaries unstable: {comparison.explain()}")
    return Check(
        "canaries",
        True,
        f"canaries stable (lowest cosine {comparison.minimum:.4f})",
        {"min_cosine": round(comparison.minimum, 6)},
    )


def _searcher(index: Index, mode: str) -> Any:
    def search(query: str, k: int) -> list[str]:
        return [hit.doc_id for hit in index.search(query, k=k, mode=mode)]

    return search


def check_quality(
    shadow: Index,
    live: Index,
    queries: Mapping[str, str] | None,
    qrels: Mapping[str, Mapping[str, int]] | None,
    tolerance: float,
    mode: str = "vector",
) -> Check:
    """nDCG@10 and recall@10 of the shadow may trail live's by at most `tolerance`."""
    if not queries or not qrels:
        return Check(
            "quality",
            False,
            "no held-out labelled queries: set SEMSEARCH_VALIDATION_QUERIES and "
            "SEMSEARCH_VALIDATION_QRELS (BEIR queries.jsonl / qrels.tsv); a model is never "
            "promoted without measuring it",
        )
    try:
        ours = evaluate(_searcher(shadow, mode), queries, qrels)
        theirs = evaluate(_searcher(live, mode), queries, qrels)
    except ValueError as exc:
        return Check("quality", False, f"held-out set unusable: {exc}")
    data = {
        "mode": mode,
        "shadow": ours.to_json(),
        "live": theirs.to_json(),
        "tolerance": tolerance,
    }
    drops = _drops(ours, theirs)
    failed = [
        f"{name} {new:.4f} vs live {old:.4f}" for name, new, old in drops if old - new > tolerance
    ]
    text = ", ".join(f"{name} {new:.4f} (live {old:.4f})" for name, new, old in drops)
    if failed:
        return Check(
            "quality",
            False,
            f"retrieval got worse by more than {tolerance} on {ours.queries} held-out queries: "
            + "; ".join(failed),
            data,
        )
    return Check("quality", True, f"{text} on {ours.queries} held-out queries", data)


def _drops(ours: Quality, theirs: Quality) -> list[tuple[str, float, float]]:
    return [
        ("nDCG@10", ours.ndcg_at_10, theirs.ndcg_at_10),
        ("recall@10", ours.recall_at_10, theirs.recall_at_10),
    ]


def _p99_ms(index: Index, queries: Sequence[str]) -> float:
    index.search(queries[0], k=10, mode="hybrid")  # warm-up: first call pays lazy init
    timings = []
    for query in queries:
        started = time.perf_counter()
        index.search(query, k=10, mode="hybrid")
        timings.append((time.perf_counter() - started) * 1000.0)
    return float(np.percentile(timings, 99))


def check_latency(
    shadow: Index,
    live: Index,
    queries: Sequence[str],
    p99_bound_ms: float,
    samples: int = LATENCY_QUERIES,
) -> Check:
    """A smoke test, not a benchmark: catches a model far too slow to serve on this hardware."""
    sample = [q for q in queries if q.strip()][:samples] or list(CANARY_SENTENCES)[:samples]
    shadow_p99 = _p99_ms(shadow, sample)
    live_p99 = _p99_ms(live, sample)
    data = {
        "queries": len(sample),
        "shadow_p99_ms": round(shadow_p99, 3),
        "live_p99_ms": round(live_p99, 3),
        "bound_ms": p99_bound_ms,
    }
    detail = f"p99 {shadow_p99:.1f} ms over {len(sample)} hybrid searches (live {live_p99:.1f} ms)"
    if not math.isfinite(shadow_p99) or shadow_p99 > p99_bound_ms:
        return Check(
            "latency",
            False,
            f"{detail}, over the {p99_bound_ms:.0f} ms bound; serve it on faster hardware or "
            "raise SEMSEARCH_GATE_P99_MS",
            data,
        )
    return Check("latency", True, f"{detail}, under {p99_bound_ms:.0f} ms", data)


def unusable_model(model: str, live_index_id: str, error: BaseException) -> GateReport:
    """The verdict on a model directory that loads into sentence-transformers but cannot build
    a semsearch index at all (e.g. a static model2vec export without an HF tokenizer): it is
    rejected before any document is embedded, and the report says what broke."""
    name = re.sub(r"[^a-z0-9]+", "-", Path(model).name.lower()).strip("-") or "model"
    detail = (
        f"{model} cannot serve as a semsearch embedding model ({type(error).__name__}: {error}); "
        "it needs a sentence-transformers text model with a Hugging Face tokenizer and a finite "
        "max_seq_length"
    )
    return GateReport(
        shadow_index_id=f"{name[:40]}-unusable",
        live_index_id=live_index_id,
        passed=False,
        reasons=[f"model: {detail}"],
        checks=[Check("model", False, detail)],
        tolerance=DEFAULT_TOLERANCE,
    )


def validate_shadow(
    shadow: Index,
    live: Index,
    *,
    queries: Mapping[str, str] | None,
    qrels: Mapping[str, Mapping[str, int]] | None,
    tolerance: float = DEFAULT_TOLERANCE,
    shadow_manifest: Manifest | None = None,
    shadow_offsets: Offsets | None = None,
    live_offsets: Offsets | None = None,
    p99_bound_ms: float = DEFAULT_P99_MS,
    latency_samples: int = LATENCY_QUERIES,
    mode: str = "vector",
) -> GateReport:
    """Run every check on two indexes at the same stream offsets; never raises for a bad shadow."""
    checks = [
        check_offsets(shadow_offsets, live_offsets),
        check_documents(shadow, live),
        check_vectors(shadow),
        check_canaries(shadow, shadow_manifest),
        check_quality(shadow, live, queries, qrels, tolerance, mode),
        check_latency(shadow, live, list((queries or {}).values()), p99_bound_ms, latency_samples),
    ]
    reasons = [f"{c.name}: {c.detail}" for c in checks if not c.passed]
    return GateReport(
        shadow_index_id=shadow.index_id,
        live_index_id=live.index_id,
        passed=not reasons,
        reasons=reasons,
        checks=checks,
        tolerance=tolerance,
        offsets=_json_offsets(shadow_offsets if shadow_offsets is not None else live_offsets),
    )
