"""Every package's `__init__`: one line saying what it is, its public names, exported lazily.

The three declarations of an `__init__` (the `TYPE_CHECKING` imports mypy reads, the map the
interpreter reads, `__all__`) must name the same things; each name must be the object its
module defines; and `import <package>` alone must stay cheap: no faiss, torch or numba for a
caller that wants one exception class.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("contracts", "producers", "consumers", "indexer", "query_api", "semsearch")
PACKAGES = sorted(
    ".".join(path.parent.relative_to(ROOT).parts) for top in OURS for path in (ROOT / top).rglob("__init__.py")
)
HEAVY = (
    "confluent_kafka",
    "faiss",
    "fastapi",
    "numba",
    "numpy",
    "prometheus_client",
    "pydantic",
    "redis",
    "sentence_transformers",
    "torch",
    "transformers",
)


def _init_tree(package: str) -> ast.Module:
    path = ROOT / package.replace(".", "/") / "__init__.py"
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _declarations(package: str) -> tuple[dict[str, str], dict[str, str]]:
    """(name -> module) as the TYPE_CHECKING imports say, and as the lazy map says."""
    checking = next(
        node
        for node in _init_tree(package).body
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
    )
    typed = {
        alias.name: node.module
        for node in checking.body
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }
    call = next(
        node.value
        for node in checking.orelse
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
    )
    mapping: dict[str, tuple[str, ...]] = ast.literal_eval(call.args[1])
    lazy = {name: module for module, names in mapping.items() for name in names}
    return typed, lazy


def _defines(module: str, name: str) -> bool:
    """`name` is assigned (not imported) at the top level of `module`."""
    tree = ast.parse(Path(inspect.getfile(importlib.import_module(module))).read_text(encoding="utf-8"))
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return True
    return False


def _defined_in(defining: str, module: str, name: str) -> bool:
    """`module` itself, or a package `module` whose `__all__` re-exports `name` from inside it."""
    if defining == module:
        return True
    target = importlib.import_module(module)
    return (
        hasattr(target, "__path__")
        and name in getattr(target, "__all__", ())
        and defining.startswith(module + ".")
    )


def test_every_package_is_checked() -> None:
    assert {p.split(".")[0] for p in PACKAGES} == set(OURS)
    assert "consumers.migration" in PACKAGES


@pytest.mark.parametrize("package", PACKAGES)
def test_the_docstring_is_one_line(package: str) -> None:
    doc = importlib.import_module(package).__doc__
    assert doc and doc.strip() and "\n" not in doc.strip(), doc


@pytest.mark.parametrize("package", PACKAGES)
def test_all_the_typed_imports_and_the_lazy_map_agree(package: str) -> None:
    typed, lazy = _declarations(package)
    exported = importlib.import_module(package).__all__
    assert len(exported) == len(set(exported)), "a name twice in __all__"
    assert exported, f"{package} exports nothing"
    assert typed == lazy, "the TYPE_CHECKING imports and the lazy map differ"
    assert set(exported) == set(lazy), "__all__ and the lazy map differ"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_is_the_object_its_module_defines(package: str) -> None:
    _, lazy = _declarations(package)
    imported = importlib.import_module(package)
    for name, module in sorted(lazy.items()):
        value = getattr(imported, name)
        assert value is getattr(importlib.import_module(module), name), name
        if inspect.isclass(value) or inspect.isfunction(value):
            assert _defined_in(value.__module__, module, name), (
                f"{package}.{name} is defined in {value.__module__}, not {module}"
            )
        else:
            assert _defines(module, name), f"{name} is not defined in {module}"
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        _ = imported.no_such_name


@pytest.mark.parametrize("package", PACKAGES)
def test_dir_lists_the_exported_names(package: str) -> None:
    imported = importlib.import_module(package)
    assert set(imported.__all__) <= set(dir(imported))


@pytest.mark.parametrize("package", PACKAGES)
def test_importing_a_package_alone_imports_nothing_heavy(package: str) -> None:
    """In a fresh interpreter: only the package (and its parents) and the export mechanism."""
    probe = f"import json, sys; import {package}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY]
    assert not heavy, f"import {package} loads {heavy}"
    parents = {".".join(package.split(".")[: i + 1]) for i in range(package.count(".") + 1)}
    ours = {m for m in loaded if m.split(".")[0] in OURS}
    assert ours <= parents | {"contracts", "contracts._exports"}, sorted(ours - parents)
