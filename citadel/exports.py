"""Lazy package surfaces: a room's package names its public objects without importing every
module behind them, so importing the registry does not load qdrant-client (about a second)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def lazy_exports(package: str, names: dict[str, str], modules: tuple[str, ...] = ()) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package`` that imports ``name`` from its submodule
    ``names[name]`` on first use and keeps it on the package; the submodules in ``modules`` are
    public as a whole (``package.bluegreen``)."""

    def __getattr__(name: str) -> object:
        submodule = names.get(name)
        if name in modules:
            value: object = importlib.import_module(f"{package}.{name}")
        elif submodule is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        else:
            value = getattr(importlib.import_module(f"{package}.{submodule}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
