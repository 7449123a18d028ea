"""Lazy package exports (PEP 562), so that `import indexer` costs nothing until a name is used.

A package's `__init__` declares its public names three ways, each for another reader: `__all__`
for `import *` and the linters, real imports under `if TYPE_CHECKING:` for mypy and IDEs, and the
map given here for the interpreter, which imports a name's module only when the name is first
read. An eager `__init__` would load faiss, torch or numba for a caller that wants one exception
class, and would tie every submodule into one import cycle through the package; tests/
test_packages.py keeps the three declarations equal.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_exports(
    package: str, exports: Mapping[str, tuple[str, ...]]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module-level `__getattr__` and `__dir__` of `package`; `exports` maps each defining
    module (absolute name) to the public names it provides."""
    where: dict[str, str] = {}
    for module, names in exports.items():
        for name in names:
            if name in where:
                raise ValueError(f"{package}: {name!r} exported from {where[name]} and {module}")
            where[name] = module

    def __getattr__(name: str) -> object:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later reads skip this hook
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__
