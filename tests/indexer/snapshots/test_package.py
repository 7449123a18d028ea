"""The package: what `indexer.snapshots` exported as a module it still exports, and its modules
import one way (the facade on top, names and checksums at the bottom)."""

from __future__ import annotations

import ast
from pathlib import Path

import indexer.snapshots as snapshots

PACKAGE = Path(snapshots.__file__).parent
# Bottom to top: a module imports only modules before it.
FLOORS = [
    "layout",
    "checksums",
    "manifest",
    "document_connection",
    "generations",
    "garbage",
    "lexical_merges",
    "writer",
    "repair",
    "install",
    "loader",
    "refresh",
    "store",
]


def _imported(path: Path) -> set[str]:
    """The modules of this package that `path` imports (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(
            name.split(".")[2] for name in names if name.startswith("indexer.snapshots.")
        )
    return found


def test_every_module_has_a_floor() -> None:
    assert {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"} == set(FLOORS)


def test_imports_flow_one_way() -> None:
    climbing = [
        f"{module} imports {target}"
        for floor, module in enumerate(FLOORS)
        for target in sorted(_imported(PACKAGE / f"{module}.py"))
        if target not in FLOORS[:floor]
    ]
    assert not climbing, "imports against the package's floors:\n" + "\n".join(climbing)


def test_the_names_importable_before_the_split_still_are() -> None:
    before = {
        "FORMAT_VERSION",
        "MANIFEST",
        "Manifest",
        "OnSkip",
        "RepairReport",
        "SnapshotStore",
        "SnapshotWriteError",
        "index_dir",
    }
    assert set(snapshots.__all__) == before
    assert all(getattr(snapshots, name) is not None for name in before)
    assert snapshots.FORMAT_VERSION == 2 and snapshots.MANIFEST == "manifest.json"
