"""Which model built an index: picked from its manifest, never trusted without its fingerprint."""

from __future__ import annotations

from pathlib import Path

from migration_models import upgrade_variant

from indexer.compatibility import model_for_manifest
from indexer.model import EmbeddingModel, load_model


def test_the_configured_model_the_recorded_one_or_the_configured_one_to_be_refused(
    model: EmbeddingModel, tmp_path: Path
) -> None:
    variant = load_model(upgrade_variant(tmp_path / "models"))
    recorded = {"fingerprint": variant.info.fingerprint, "source": variant.info.source}

    assert model_for_manifest(model.info.to_json(), None, memory_mb=1024) is model
    assert model_for_manifest(recorded, None, memory_mb=1024) is variant
    # The recorded directory is gone, or holds another model now: the configured one is
    # returned, so that loading the index refuses it naming both models.
    assert model_for_manifest({**recorded, "source": str(tmp_path / "gone")}, None, memory_mb=1024) is model
    other = {"fingerprint": "0" * 64, "source": variant.info.source}
    assert model_for_manifest(other, None, memory_mb=1024) is model
