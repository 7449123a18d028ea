"""Offline upgrade targets for migration tests: legitimate variants of the bundled MiniLM.

A real second model (all-mpnet-base-v2) is ~9x slower to embed on two cores, too slow for unit
tests. A copy of MiniLM with one output-shaping config changed is a genuinely different model to
semsearch (another fingerprint, another index id) while costing nothing to "download": the
90 MB weights are symlinked, only the small JSON files are copied and edited.

- `max_seq_length=128`: nearly the same space on short texts, a fine *upgrade* target that the
  gate should pass.
- `pooling="cls"`: clearly worse retrieval (MiniLM was trained for mean pooling), which the
  gate must reject.
- `do_lower_case=False`: the 3 AM incident - same name, same weights, a tokenizer that stopped
  lowercasing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from indexer.model import bundled_model_path

# Files bigger than this are symlinked (the weights); everything else is copied so it can be edited.
_SYMLINK_ABOVE_BYTES = 1_000_000
_POOLING_FLAGS = {
    "mean": "pooling_mode_mean_tokens",
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
}


def _edit_json(path: Path, **changes: object) -> None:
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config, indent=2))


def make_variant(
    root: Path,
    name: str,
    *,
    max_seq_length: int | None = None,
    pooling: str | None = None,
    do_lower_case: bool | None = None,
    card_name: str | None = None,
) -> Path:
    """Copy the bundled MiniLM to `root/name` with the given configs changed; returns the dir.

    `card_name` writes `semsearch_model.json` so the variant reports that model name (the
    incident case: "all-MiniLM-L6-v2", yet a different tokenizer). Idempotent per (root, name).
    """
    source = bundled_model_path()
    target = root / name
    if target.is_dir():
        return target
    staging = root / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    for path in source.rglob("*"):
        dest = staging / path.relative_to(source)
        if path.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.stat().st_size > _SYMLINK_ABOVE_BYTES:
            dest.symlink_to(path.resolve())
        else:
            shutil.copy(path, dest)
    if max_seq_length is not None:
        _edit_json(staging / "sentence_bert_config.json", max_seq_length=max_seq_length)
    if pooling is not None:
        if pooling not in _POOLING_FLAGS:
            raise ValueError(f"pooling must be one of {sorted(_POOLING_FLAGS)}")
        flags = {flag: flag == _POOLING_FLAGS[pooling] for flag in _POOLING_FLAGS.values()}
        _edit_json(staging / "1_Pooling" / "config.json", **flags)
    if do_lower_case is not None:
        # transformers honours tokenizer_config.json over tokenizer.json's normalizer: this
        # one flag is the whole incident (measured: canary cosines down to 0.33).
        _edit_json(staging / "tokenizer_config.json", do_lower_case=do_lower_case)
    if card_name is not None:
        (staging / "semsearch_model.json").write_text(json.dumps({"name": card_name}))
    staging.rename(target)
    return target


def upgrade_variant(root: Path) -> Path:
    """A different but equally good model: MiniLM with max_seq_length 128."""
    return make_variant(root, "minilm-l6-msl128", max_seq_length=128)


def worse_variant(root: Path) -> Path:
    """A clearly worse model: MiniLM read out with CLS pooling instead of mean pooling."""
    return make_variant(root, "minilm-l6-cls", pooling="cls")


def incident_variant(root: Path) -> Path:
    """The 3 AM incident: the same model name whose tokenizer no longer lowercases."""
    return make_variant(
        root,
        "all-minilm-l6-v2-cased",
        do_lower_case=False,
        card_name="sentence-transformers/all-MiniLM-L6-v2",
    )


def static_variant(root: Path, dimension: int = 64) -> Path:
    """A static-embedding model like model2vec's tokenlearn exports: averaged token vectors,
    no attention, 64 dimensions (MiniLM's input embeddings, truncated). Clearly worse, and
    without a Hugging Face tokenizer or a finite max_seq_length: semsearch must refuse it."""
    target = root / f"minilm-static-{dimension}"
    if target.is_dir():
        return target
    import tokenizers
    from safetensors.numpy import load_file
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    source = bundled_model_path()
    weights = load_file(str(source / "model.safetensors"))["embeddings.word_embeddings.weight"]
    tokenizer = tokenizers.Tokenizer.from_file(str(source / "tokenizer.json"))
    module = StaticEmbedding(tokenizer, embedding_weights=weights[:, :dimension].copy())
    SentenceTransformer(modules=[module], device="cpu").save(str(target))
    return target
