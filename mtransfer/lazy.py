"""Names a package loads on first use (PEP 562), so importing it does not import torch and every module up front."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_attributes(package: str, names: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__``: ``name`` is imported from ``names[name]`` (a module path) on first use and kept in
    ``namespace`` (the package's ``globals()``), so later lookups are plain attribute reads."""

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
