"""The embedding-stability check CI runs: canary vectors committed in the repo must reproduce."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

import indexer
from indexer.canaries import CANARY_SENTENCES, FAIL_BELOW, WARN_BELOW, CanaryProbe, compare, probe
from indexer.model import EmbeddingModel

REFERENCE = Path(indexer.__file__).parent / "canaries" / "all-minilm-l6-v2.json"


def test_committed_canaries_reproduce(model: EmbeddingModel) -> None:
    reference = CanaryProbe.load(REFERENCE)
    assert reference.sentences == CANARY_SENTENCES
    comparison = compare(reference, model)
    assert comparison.tokenization_matches, (
        "the tokenizer splits the canaries differently than at commit time"
    )
    assert comparison.minimum >= FAIL_BELOW, comparison.explain()
    if comparison.minimum < WARN_BELOW:
        warnings.warn(f"embedding drift: {comparison.explain()}", stacklevel=1)


def test_canaries_are_varied() -> None:
    text = " ".join(CANARY_SENTENCES)
    assert any(c.isupper() for c in text) and any(c.isdigit() for c in text)
    assert any(len(s) > 400 for s in CANARY_SENTENCES)
    assert any("-" in s and any(c.isdigit() for c in s) for s in CANARY_SENTENCES)


def test_a_different_space_fails(model: EmbeddingModel) -> None:
    reference = probe(model)
    rotated = CanaryProbe(
        reference.sentences, np.roll(reference.vectors, 1, axis=0), reference.token_ids_sha256
    )
    assert compare(rotated, model).failed
    retokenized = CanaryProbe(reference.sentences, reference.vectors, "0" * 64)
    assert compare(retokenized, model).failed
    assert not compare(reference, model).failed
