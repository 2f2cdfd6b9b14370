"""Lazy re-exports for a package's ``__init__`` (PEP 562): ``from hpccl.erm import solve``
works, yet importing one light module of the package (its config section, say) does not
import the rest, torch included, nor tie the package's modules into import cycles."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """``exports``: {module: "name name ..."}. Returns the package's ``__getattr__``,
    ``__dir__`` and ``__all__``."""
    where = {name: module for module, names in exports.items() for name in names.split()}

    def __getattr__(name):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(where[name]), name)

    def __dir__():
        return sorted(where)

    return __getattr__, __dir__, sorted(where)
