"""How every bench reports: a plain table on stdout and a JSON file with the run's circumstances.

On a shared 2-core machine every figure depends on what else was running, so each result file
records the command, the machine and its load average at the start and the end of the run.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any


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


def command(bench: str, argv: list[str] | None) -> str:
    """The command line that reproduces this run (`argv` None: this process's own arguments)."""
    return " ".join([f"python -m bench.{bench}", *(argv if argv is not None else sys.argv[1:])])


def machine(load_start: tuple[float, float, float]) -> dict[str, Any]:
    """The machine and its load average over the run (`load_start`: `os.getloadavg()` at start)."""
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """The result file; values JSON has no type for (paths) are written as their str()."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
