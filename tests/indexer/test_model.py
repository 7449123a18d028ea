from __future__ import annotations

from pathlib import Path

import numpy as np
from migration_models import make_variant

from indexer.model import (
    BUNDLED_NAME,
    BUNDLED_REVISION,
    EmbeddingModel,
    batch_size_for,
    bundled_model_path,
    model_fingerprint,
)


def test_identity_is_recorded(model: EmbeddingModel) -> None:
    info = model.info
    assert info.name == BUNDLED_NAME
    assert info.revision == BUNDLED_REVISION
    assert len(info.fingerprint) == 64
    assert info.dimension == 384 and info.max_seq_length == 256 and info.pooling == "mean"
    assert set(info.library_versions) >= {
        "torch",
        "sentence-transformers",
        "transformers",
        "tokenizers",
    }
    assert model.index_id == f"all-minilm-l6-v2-{info.fingerprint[:12]}"


def test_fingerprint_is_stable_and_ignores_the_model_card(tmp_path: Path) -> None:
    source = bundled_model_path()
    first = model_fingerprint(source, 256, True)
    assert first == model_fingerprint(source, 256, True)
    assert first != model_fingerprint(source, 128, True)
    variant = make_variant(tmp_path, "card-only")
    (variant / "README.md").unlink()
    (variant / "README.md").write_text("a different model card")
    assert model_fingerprint(variant, 256, True) == first


def test_changed_tokenizer_config_changes_the_fingerprint(tmp_path: Path) -> None:
    variant = make_variant(tmp_path, "cased", do_lower_case=False)
    assert model_fingerprint(variant, 256, True) != model_fingerprint(
        bundled_model_path(), 256, True
    )


def test_vectors_are_normalized_and_paths_agree(model: EmbeddingModel) -> None:
    docs = model.encode_documents(["Metformin and insulin sensitivity", "Invoice INV-1"])
    queries = model.encode_queries(["Metformin and insulin sensitivity"])
    assert docs.dtype == np.float32 and docs.shape == (2, 384)
    assert np.allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)
    # all-MiniLM-L6-v2 has no query prompt: both paths embed identical text identically.
    assert float(docs[0] @ queries[0]) > 0.999
    assert model.encode_documents([]).shape == (0, 384)


def test_batch_size_follows_the_memory_budget() -> None:
    small, large = batch_size_for(64, 384, 256), batch_size_for(1024, 384, 256)
    assert small < large
    for batch, budget in ((small, 64), (large, 1024)):
        assert batch & (batch - 1) == 0  # power of two
        assert batch == 1 or 384 * 256 * batch * 4 * 16 <= 0.7 * budget * 2**20
    assert batch_size_for(1, 384, 256) == 1
