"""``"package.module:attr"`` specs: the user's own model, data, loss or optimizer, by name.

A study file names the user's code as ``"package.module:factory"``. The study file's own folder
is searched first, so code that sits next to the study file imports from any working directory
without ``PYTHONPATH``. Every failure names the spec, the module, the folders searched and the
fix.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import sys
from pathlib import Path
from typing import Any

_logger = logging.getLogger(__name__)


def is_spec(value: object) -> bool:
    """Whether ``value`` looks like ``"package.module:attr"``.

    Example:
        >>> is_spec("mylib.data:make"), is_spec("mlp")
        (True, False)
    """
    return isinstance(value, str) and ":" in value


def import_object(spec: str, what: str, *, folder: str | Path | None = None) -> Any:
    """Import the callable named by ``spec``.

    Args:
        spec: ``"package.module:attr"`` (``attr`` may be dotted: ``"mod:Class.build"``).
        what: What it is for, in messages: ``"[data] name"``, say.
        folder: A folder to search first (the study file's).

    Raises:
        ValueError: If the spec is malformed, the module cannot be imported, it has no such
            attribute, or the attribute is not callable.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr or ":" in attr:
        raise ValueError(f"{what} must be 'package.module:name', but got name={spec!r}.")
    if folder is not None:
        folder = str(Path(folder).resolve())
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and module_name.startswith(err.name):
            where = " (searched sys.path"
            if folder is not None:
                where = f" (searched the study file's folder {folder}, then sys.path"
            raise ValueError(
                f"{what} {spec!r}: {err}{where}). "
                "Put the module next to the study file, install its package, or add its "
                "folder to PYTHONPATH."
            ) from err
        raise ValueError(f"{what} {spec!r}: importing {module_name!r} failed: {err}.") from err
    except Exception as err:  # any failure inside the user's module
        cause = f"{type(err).__name__}: {err}".splitlines()[0]
        raise ValueError(f"{what} {spec!r}: cannot import {module_name!r} ({cause}).") from err
    try:
        obj = functools.reduce(getattr, attr.split("."), module)
    except AttributeError as err:
        raise ValueError(f"{what} {spec!r}: {module_name!r} has no attribute {attr!r}.") from err
    if not callable(obj):
        raise ValueError(
            f"{what} {spec!r}: {attr!r} must be callable, but it is a {type(obj).__name__}."
        )
    _logger.debug("Imported %s %r from %s.", what, spec, getattr(module, "__file__", "?"))
    return obj


def call_mismatch(factory: Any, **kwargs: Any) -> str | None:
    """Why ``factory(**kwargs)`` cannot bind its arguments, before it is called; ``None`` if
    it can, or if its signature cannot be read (then the call itself tells).

    Example:
        >>> def make(width=8): ...
        >>> call_mismatch(make, input_shape=(40,), width=4)
        "got an unexpected keyword argument 'input_shape'"
    """
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or a C callable
        return None
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        return str(err)
    return None
