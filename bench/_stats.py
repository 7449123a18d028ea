"""Latency statistics every bench reports the same way, so figures of different benches compare."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linearly interpolated; NaN for no samples rather than a crash
    in the middle of a long run."""
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


def timed(fn: Callable[[Any], object], items: list[Any], warmup: int = 10) -> list[float]:
    """Milliseconds of `fn(item)` per item, one at a time, after a few untimed calls (first calls
    pay for lazy initialisation and allocator growth)."""
    for item in items[:warmup]:
        fn(item)
    samples = []
    for item in items:
        started = time.perf_counter()
        fn(item)
        samples.append((time.perf_counter() - started) * 1000.0)
    return samples


def timed_with_cpu(
    fn: Callable[[Any], object], items: list[Any], warmup: int = 10
) -> tuple[list[float], list[float]]:
    """`timed`, plus the calling thread's CPU milliseconds per item: a wall-clock tail that the
    CPU time lacks is the machine (preemption, page faults), not the code."""
    for item in items[:warmup]:
        fn(item)
    wall, cpu = [], []
    for item in items:
        started, started_cpu = time.perf_counter(), time.thread_time()
        fn(item)
        wall.append((time.perf_counter() - started) * 1000.0)
        cpu.append((time.thread_time() - started_cpu) * 1000.0)
    return wall, cpu
