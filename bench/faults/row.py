"""A fault row's contract: what it is given (Context) and what it yields (Row)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.faults.load import Acks, Docs, Feed, QueryLoad
from bench.faults.stack import Stack
from indexer.model import EmbeddingModel


@dataclass
class Row:
    """One fault's result: the table's cells, plus notes and details that go to the JSON."""

    fault: str
    acknowledged: int = 0
    lost: int | None = None
    duplicated_chunks: int | None = None
    failed_queries: int = 0
    queries: int = 0
    recover_s: float | None = None
    passed: bool = False
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def cells(self) -> list[Any]:
        recover = "-" if self.recover_s is None else f"{self.recover_s:.1f}"
        return [
            self.fault,
            self.acknowledged,
            "?" if self.lost is None else self.lost,
            "?" if self.duplicated_chunks is None else self.duplicated_chunks,
            f"{self.failed_queries}/{self.queries}",
            recover,
            "PASS" if self.passed else "FAIL",
        ]


@dataclass
class Context:
    """What every row shares, loaded once per run: the model, the documents, the query thread."""

    model: EmbeddingModel
    docs: Docs
    queries: QueryLoad
    work: Path
    quick: bool
    rng: random.Random

    def scale(self, full: float, quick: float) -> float:
        return quick if self.quick else full


RowFn = Callable[[Context, Stack, Acks, Feed, Row], None]
