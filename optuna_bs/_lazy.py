"""Public names that resolve on first use (PEP 562), and the module paths of the flat layout.

The package and each of its rooms list their public names, and the module each lives in, in
one table; :func:`attach` makes a name import its module when it is first read. So
``import optuna_bs``, the rules and ``optuna-bs --help`` load neither torch nor plotly.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any


def attach(
    package: str, exports: dict[str, str], submodules: Iterable[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``.

    Args:
        package: The package's ``__name__``.
        exports: Each module, relative to ``package``, and its public names, split by spaces.
        submodules: More modules that ``package.<name>`` gives without an import of their own
            (each module of ``exports`` does).
    """
    home = {name: module for module, names in exports.items() for name in names.split()}
    submodules = frozenset(submodules) | exports.keys()
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        module = home.get(name)
        if module is not None:
            value = getattr(importlib.import_module(f"{package}.{module}"), name)
        elif name in submodules:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value  # resolved once
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *home, *submodules})

    return __getattr__, __dir__, sorted(home)


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a module of the flat layout (``optuna_bs.runner``) as the module of its room
    (``optuna_bs.study.runner``), with a ``DeprecationWarning``: one release of grace."""

    def __init__(self, moved: dict[str, str]) -> None:
        self.moved = moved

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self.moved:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None  # a placeholder, which exec_module swaps for the room's module

    def exec_module(self, module) -> None:
        old = module.__spec__.name
        warnings.warn(
            f"{old} moved to {self.moved[old]}; the old path goes in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        # The import system returns what sys.modules holds once this returns: the one module,
        # under both names, its own __spec__ untouched.
        sys.modules[old] = importlib.import_module(self.moved[old])


def keep_old_paths(moved: dict[str, str]) -> None:
    """Let ``import <old>`` give ``<new>`` for each pair of ``moved``."""
    if not any(isinstance(f, _OldPaths) for f in sys.meta_path):
        sys.meta_path.append(_OldPaths(moved))
