"""Canary sentences: the behavioural half of "is this the model that built the index?".

A fingerprint catches changed files; it cannot catch a library upgrade that tokenizes the same
files differently (the 3 AM incident). Canaries are embedded by every process that embeds for an
index and compared with the reference vectors stored in its manifest. They are deliberately
varied: a lowercase sentence barely moves when lowercasing breaks (cosine 0.93), while
identifiers, capitals and numbers move a lot (0.81), so one sentence is not enough.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

# The seed's rule: below this cosine the model is a different model.
FAIL_BELOW = 0.95
# Below this something changed that deserves a look even though search still works.
WARN_BELOW = 0.999

CANARY_SENTENCES: tuple[str, ...] = (
    "the cat sat quietly on the warm kitchen floor",
    "Invoice INV-2024-00917 for ACME GmbH is overdue since 03/11/2024.",
    "SKU 48-ZX-7731B ships from warehouse DE-MUC-02 within 2 business days.",
    "What is the p53 tumour suppressor's role in DNA-damage repair?",
    "ERROR 0x80070005: Access is denied (code=E_ACCESSDENIED) at C:\\Windows\\System32.",
    "Prix: 1.299,00 EUR — Lieferung nach München, Österreich & Zürich!",
    "COVID-19 mRNA vaccines (BNT162b2, mRNA-1273) reduced hospitalisation by 89% [95% CI 85-92].",
    (
        "Large language models are trained on web-scale corpora. Retrieval systems index those "
        "documents by splitting them into passages, embedding each passage into a dense vector, "
        "and storing the vectors in an approximate nearest-neighbour structure such as an "
        "inverted file index with a coarse quantizer; at query time the query is embedded with "
        "the same model and the closest passages are returned, which is why the query model and "
        "the document model must be exactly the same model, tokenizer and pooling included, or "
        "the similarity scores silently lose their meaning."
    ),
)


class _Encoder(Protocol):
    def encode_queries(self, texts: list[str]) -> np.ndarray: ...

    @property
    def tokenizer(self) -> Any: ...


@dataclass(frozen=True)
class CanaryProbe:
    """Reference embeddings of the canaries plus a hash of their token ids."""

    sentences: tuple[str, ...]
    vectors: np.ndarray
    token_ids_sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "sentences": list(self.sentences),
            "vectors": [[round(float(x), 7) for x in row] for row in self.vectors],
            "token_ids_sha256": self.token_ids_sha256,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CanaryProbe:
        return cls(
            sentences=tuple(data["sentences"]),
            vectors=np.asarray(data["vectors"], dtype=np.float32),
            token_ids_sha256=str(data["token_ids_sha256"]),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json()) + "\n")

    @classmethod
    def load(cls, path: Path) -> CanaryProbe:
        return cls.from_json(json.loads(path.read_text()))


@dataclass(frozen=True)
class CanaryComparison:
    """Per-canary cosine between a reference probe and the model at hand."""

    cosines: tuple[float, ...]
    tokenization_matches: bool

    @property
    def minimum(self) -> float:
        return min(self.cosines) if self.cosines else 1.0

    @property
    def failed(self) -> bool:
        return self.minimum < FAIL_BELOW or not self.tokenization_matches

    @property
    def warn(self) -> bool:
        return self.minimum < WARN_BELOW

    def explain(self) -> str:
        worst = int(np.argmin(self.cosines)) if self.cosines else -1
        parts = [f"lowest canary cosine {self.minimum:.4f} (canary #{worst}; fail < {FAIL_BELOW})"]
        if not self.tokenization_matches:
            parts.append("the tokenizer splits the canaries into different token ids")
        return "; ".join(parts)


def token_ids_digest(tokenizer: Any, sentences: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for sentence in sentences:
        ids = tokenizer(sentence, add_special_tokens=True)["input_ids"]
        digest.update(json.dumps(list(ids)).encode())
    return digest.hexdigest()


def probe(model: _Encoder, sentences: tuple[str, ...] = CANARY_SENTENCES) -> CanaryProbe:
    """Embed the canaries with the query path (the path that must match at search time)."""
    vectors = np.asarray(model.encode_queries(list(sentences)), dtype=np.float32)
    return CanaryProbe(sentences, vectors, token_ids_digest(model.tokenizer, sentences))


def compare(reference: CanaryProbe, model: _Encoder) -> CanaryComparison:
    current = probe(model, reference.sentences)
    if current.vectors.shape != reference.vectors.shape:
        return CanaryComparison(tuple(0.0 for _ in reference.sentences), False)
    ref = reference.vectors / np.maximum(
        np.linalg.norm(reference.vectors, axis=1, keepdims=True), 1e-12
    )
    cur = current.vectors / np.maximum(
        np.linalg.norm(current.vectors, axis=1, keepdims=True), 1e-12
    )
    cosines = tuple(float(x) for x in np.sum(ref * cur, axis=1))
    return CanaryComparison(cosines, current.token_ids_sha256 == reference.token_ids_sha256)
