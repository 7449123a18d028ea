"""The yardstick of the throughput benches: the bare model over the same chunk texts."""

from __future__ import annotations

import time

from indexer.model import EmbeddingModel


def raw_encode(model: EmbeddingModel, texts: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one plain SentenceTransformer.encode over all chunk texts, with the
    batch size the indexer uses.

    CPU time of this process is reported beside wall time because on a shared machine other
    processes stretch wall time far more than they stretch the work this process does.
    """
    started, cpu = time.perf_counter(), time.process_time()
    model._model.encode(
        texts, batch_size=model.batch_size, convert_to_numpy=True, show_progress_bar=False
    )
    return time.perf_counter() - started, time.process_time() - cpu
