"""Is the model at hand the model an index was built with? Fingerprint first, then canaries.

Every process that embeds for an index (indexer, API, migrator) asks this before its first
embedding and periodically after; "no" means refuse, never "search anyway".
"""

from __future__ import annotations

import logging
from typing import Any

from contracts.errors import ModelMismatchError
from indexer.canaries import CanaryComparison, CanaryProbe, compare
from indexer.model import EmbeddingModel

log = logging.getLogger(__name__)


def describe_recorded(recorded: dict[str, Any]) -> str:
    fingerprint = str(recorded.get("fingerprint", "?"))
    return f"{recorded.get('name', '?')} (fingerprint {fingerprint[:12]}, from {recorded.get('source', '?')})"


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
