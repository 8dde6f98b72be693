"""Package surfaces loaded on first use, so that `masklab --help` and the data commands (prep, verify,
pmi) never import torch: a package's `__init__` names its public names and the module of each."""
from __future__ import annotations

import importlib
import sys
from typing import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """-> a module-level `__getattr__` for `package`: the first lookup of a public name imports
    `package.<exports[name]>`; the value is then cached on the package, so later lookups (every
    kernel call in a model) are plain attributes."""
    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
