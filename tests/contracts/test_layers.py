"""The import direction: contracts at the bottom, the stages above it, the composition on top.

Floors, lowest first: contracts; indexer and producers; consumers and query_api; semsearch (the
composition and the CLI); bench (it drives all of them, nothing imports it). consumers may
import producers: the migration service publishes its control and gate events with the
producers' Publisher, in the data flow's direction (producers -> Kafka -> consumers).
Walks every module's imports (function-level ones included: a lazy import is still a
dependency) and fails on one that climbs. A new exception belongs in KNOWN with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = ("contracts", "producers", "consumers", "indexer", "query_api", "semsearch", "bench")

# package -> the packages of ours it must never import
FORBIDDEN: dict[str, set[str]] = {
    "contracts": set(OURS) - {"contracts"},
    "indexer": {"producers", "consumers", "query_api", "semsearch", "bench"},
    "producers": {"consumers", "indexer", "query_api", "semsearch", "bench"},
    "query_api": {"producers", "consumers", "semsearch", "bench"},
    "consumers": {"query_api", "semsearch", "bench"},
    "semsearch": {"bench"},
}
# (importing module, imported package): why it is tolerated for now.
KNOWN: dict[tuple[str, str], str] = {}


def _imports(path: Path) -> set[str]:
    """Top-level packages of ours that `path` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: relative import; write it absolute (one way to read)")
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        else:
            continue
        found.update(name.split(".")[0] for name in names if name.split(".")[0] in OURS)
    return found


def _modules() -> list[tuple[str, Path]]:
    return [
        (".".join(path.relative_to(ROOT).with_suffix("").parts), path)
        for package in OURS
        for path in sorted((ROOT / package).rglob("*.py"))
    ]


def test_every_package_is_walked() -> None:
    assert {name.split(".")[0] for name, _ in _modules()} == set(OURS)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_upward_import(package: str) -> None:
    climbing = [
        f"{module} imports {target}"
        for module, path in _modules()
        if module.split(".")[0] == package
        for target in sorted(_imports(path) & FORBIDDEN[package])
        if (module, target) not in KNOWN
    ]
    assert not climbing, "imports against the layering:\n" + "\n".join(climbing)


def test_the_package_graph_is_acyclic() -> None:
    edges: dict[str, set[str]] = {package: set() for package in OURS}
    for module, path in _modules():
        package = module.split(".")[0]
        edges[package] |= {t for t in _imports(path) if t != package and (module, t) not in KNOWN}
    done: set[str] = set()

    def visit(package: str, trail: tuple[str, ...]) -> None:
        assert package not in trail, "import cycle: " + " -> ".join((*trail, package))
        if package in done:
            return
        for target in sorted(edges[package]):
            visit(target, (*trail, package))
        done.add(package)

    for package in OURS:
        visit(package, ())


def test_known_exceptions_are_still_needed() -> None:
    stale = [key for key in KNOWN if key[1] not in _imports(ROOT / (key[0].replace(".", "/") + ".py"))]
    assert not stale, f"remove these from KNOWN, the import is gone: {stale}"
