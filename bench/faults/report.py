"""The fault table on stdout and the JSON result file, with the machine and its load: on a
shared 2-core machine every recovery time depends on what else was running."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.faults.row import Row
from bench.reporting import command, machine, print_table, write_json


def print_rows(rows: list[Row], quick: bool) -> None:
    print_table(
        "faults" + (" (--quick)" if quick else ""),
        ["fault", "events acknowledged", "lost", "duplicated chunks", "failed queries", "seconds to recover", "verdict"],
        [r.cells() for r in rows],
    )


def write_result(
    path: Path,
    argv: list[str] | None,
    quick: bool,
    load_start: tuple[float, float, float],
    names: list[str],
    rows: list[Row],
    work: Path,
) -> dict[str, Any]:
    """Writes the result file; returns its payload (`passed` decides the exit status)."""
    payload = {
        "command": command("faults", argv),
        "quick": quick,
        "machine": machine(load_start),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "rows": {name: asdict(row) for name, row in zip(names, rows, strict=False)},
        "passed": all(r.passed for r in rows),
        "work_dir": str(work),
    }
    write_json(path, payload)
    return payload
