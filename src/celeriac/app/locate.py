"""Finding the app from ``-A``/``--app``, the way Celery's command line does."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeriac.app.base import Celery


class AppNotFound(ImportError):
    """``-A`` named no importable app; the message says what was tried."""


def _is_app(value: Any) -> bool:
    from celeriac.app.base import Celery

    return isinstance(value, Celery)


def _from_module(module: ModuleType) -> Celery | None:
    for attr in ("app", "celery"):
        value = getattr(module, attr, None)
        if _is_app(value):
            return value  # type: ignore[no-any-return]
        if isinstance(value, ModuleType):
            found = _from_module(value)
            if found is not None:
                return found
    apps = [v for v in vars(module).values() if _is_app(v)]
    return apps[0] if len(apps) == 1 else None


def find_app(spec: str) -> Celery:
    """Resolve ``proj``, ``proj.celery``, ``proj.celery:app`` or ``proj.celery.app``.

    Looks for the ``app`` or ``celery`` attribute of a module, then a package's ``celery``
    submodule, as Celery does. The current directory is importable, as with ``celery -A``.
    """
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = spec.partition(":")
    if attr:
        return _from_attribute(spec, module_name, attr)
    return _search(spec, module_name)


def _from_attribute(spec: str, module_name: str, attr: str) -> Celery:
    """``module:attr.path``; a factory function is called to make the app."""
    value: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        value = getattr(value, part)
    if callable(value) and not _is_app(value):
        value = value()
    if not _is_app(value):
        raise AppNotFound(f"{spec!r} is not a celeriac app (it is {type(value).__name__})")
    return value  # type: ignore[no-any-return]


def _search(spec: str, module_name: str) -> Celery:
    """``proj``, ``proj.celery`` or ``proj.celery.app`` without an explicit attribute."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name or "." not in module_name:
            raise
        parent, _, last = module_name.rpartition(".")
        value = getattr(importlib.import_module(parent), last, None)
        if _is_app(value):
            return value  # type: ignore[return-value]
        raise
    found = _from_module(module)
    if found is None and hasattr(module, "__path__"):
        try:
            found = _from_module(importlib.import_module(f"{module_name}.celery"))
        except ModuleNotFoundError as exc:
            if exc.name != f"{module_name}.celery":
                raise
    if found is None:
        raise AppNotFound(
            f"Could not find a celeriac app in {spec!r}: looked for the attributes 'app' and "
            f"'celery' of {module_name!r} and the module {module_name + '.celery'!r}. "
            "Name it explicitly, e.g. -A proj.celery:app"
        )
    return found
