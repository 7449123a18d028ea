"""Numbers and tables every benchmark prints the same way (one copy, imported by each bench)."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def summary(samples_ms: list[float]) -> dict[str, float]:
    """n, p50, p99, mean and max of latency samples in milliseconds (the JSON shape of benches)."""
    return {
        "n": len(samples_ms),
        "p50_ms": percentile(samples_ms, 50),
        "p99_ms": percentile(samples_ms, 99),
        "mean_ms": statistics.fmean(samples_ms) if samples_ms else float("nan"),
        "max_ms": max(samples_ms) if samples_ms else float("nan"),
    }


def print_table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    """Plain fixed-width table: benches are read in terminals and CI logs, not notebooks."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print(
            "  "
            + "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))
