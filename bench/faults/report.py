"""The fault table on stdout and the JSON result file, with the machine and its load: on a
shared 2-core machine every recovery time depends on what else was running."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.faults.row import Row
from bench.reporting import print_table


def print_rows(rows: list[Row], quick: bool) -> None:
    print_table(
        "faults" + (" (--quick)" if quick else ""),
        ["fault", "events acknowledged", "lost", "duplicated chunks", "failed queries", "seconds to recover", "verdict"],
        [r.cells() for r in rows],
    )


def write_json(
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
        "command": " ".join(["python -m bench.faults", *(argv if argv is not None else sys.argv[1:])]),
        "quick": quick,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "rows": {name: asdict(row) for name, row in zip(names, rows, strict=False)},
        "passed": all(r.passed for r in rows),
        "work_dir": str(work),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    return payload
