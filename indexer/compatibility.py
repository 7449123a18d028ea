"""Is the model at hand the model an index was built with? Fingerprint first, then canaries.

Every process that embeds for an index (indexer, API, migrator) asks this before its first
embedding and periodically after; "no" means refuse, never "search anyway".
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from contracts.errors import ModelMismatchError
from indexer.canaries import CanaryComparison, CanaryProbe, compare
from indexer.model import EmbeddingModel, load_model

log = logging.getLogger(__name__)


def describe_recorded(recorded: dict[str, Any]) -> str:
    fingerprint = str(recorded.get("fingerprint", "?"))
    return f"{recorded.get('name', '?')} (fingerprint {fingerprint[:12]}, from {recorded.get('source', '?')})"


def model_for_manifest(
    recorded: dict[str, Any], configured: str | Path | None, *, memory_mb: int
) -> EmbeddingModel:
    """The model an index was built with, given its manifest's `model` section: the configured
    model if its fingerprint matches, else the source the manifest recorded if that directory
    exists here and matches, else the configured one - which the load then refuses with a
    ModelMismatchError naming both models. Whatever is returned is still verified on load
    (ensure_compatible); this only picks which model to try, without trusting the recording."""
    wanted = recorded.get("fingerprint")
    model = load_model(configured, memory_mb=memory_mb)
    if model.info.fingerprint == wanted:
        return model
    source = recorded.get("source")
    if isinstance(source, str) and Path(source).is_dir():
        candidate = load_model(source, memory_mb=memory_mb)
        if candidate.info.fingerprint == wanted:
            return candidate
    return model


def ensure_compatible(
    model: EmbeddingModel, recorded: dict[str, Any], canaries: CanaryProbe, index_id: str
) -> CanaryComparison:
    """Raise ModelMismatchError naming both models unless `model` reproduces the index's space."""
    if recorded.get("fingerprint") != model.info.fingerprint:
        raise ModelMismatchError(
            f"index {index_id} was built with {describe_recorded(recorded)} but the loaded model is "
            f"{model.info.describe()}; serve this index with its own model (SEMSEARCH_MODEL) or "
            "migrate with `semsearch upgrade-model`"
        )
    comparison = compare(canaries, model)
    if comparison.failed:
        raise ModelMismatchError(
            f"index {index_id} was built with {describe_recorded(recorded)}; the loaded model "
            f"{model.info.describe()} has the same files but embeds differently: "
            f"{comparison.explain()} (library versions now {model.info.library_versions}, "
            f"at build {recorded.get('library_versions', '?')}); pin the libraries back or migrate"
        )
    if comparison.warn:
        log.warning(
            "index %s: canary drift below %.3f (%s) - same model files, slightly different numbers",
            index_id,
            0.999,
            comparison.explain(),
        )
    return comparison
