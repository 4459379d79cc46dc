"""Exceptions to and from the result-meta form Celery stores for a failed task.

A failure is stored as::

    {"exc_type": "ValueError", "exc_message": ["kaboom"], "exc_module": "builtins"}

``exc_type`` is the class's ``__qualname__``, ``exc_message`` the exception's ``args`` (each made
encodable, else replaced by its ``repr``), ``exc_module`` the class's module. Keyword-only state
of an exception is not kept; Celery does not keep it either.

Reading never imports a module: a class is looked up only in modules already loaded, and only
used if it really is an exception class. Anything else becomes a stand-in class with the same
name and module, so ``type(e).__name__`` and ``str(e)`` read as in the process that raised it.
celeriac's exceptions are written under the module Celery keeps its own in (``celery.exceptions``,
``billiard.exceptions`` or ``kombu.exceptions``), so a Celery client rebuilds its own class, and
those names are read back as celeriac's classes.
"""

from __future__ import annotations

import builtins
import functools
import pickle
import sys
from collections.abc import Callable, Mapping
from typing import Any, Final

from celeriac import exceptions as _exc
from celeriac.protocol import serialization

__all__ = [
    "exception_to_meta",
    "exception_to_python",
    "meta_to_exception",
    "prepare_exception",
    "stand_in_class",
]

# celeriac classes that exist in Celery's world, by the module Celery defines them in.
_CELERY_HOMES: Final[dict[str, tuple[type[BaseException], ...]]] = {
    "celery.exceptions": (
        _exc.CeleryError,
        _exc.ImproperlyConfigured,
        _exc.SecurityError,
        _exc.TaskPredicate,
        _exc.Retry,
        _exc.Ignore,
        _exc.Reject,
        _exc.TaskError,
        _exc.QueueNotFound,
        _exc.IncompleteStream,
        _exc.NotRegistered,
        _exc.AlreadyRegistered,
        _exc.TimeoutError,
        _exc.MaxRetriesExceededError,
        _exc.TaskRevokedError,
        _exc.InvalidTaskError,
        _exc.ChordError,
        _exc.BackendError,
        _exc.BackendGetMetaError,
        _exc.BackendStoreError,
        _exc.WorkerShutdown,
        _exc.WorkerTerminate,
    ),
    # Celery re-exports these from billiard and kombu; their __module__ is where they live.
    "billiard.exceptions": (
        _exc.SoftTimeLimitExceeded,
        _exc.TimeLimitExceeded,
        _exc.WorkerLostError,
        _exc.Terminated,
    ),
    "kombu.exceptions": (
        _exc.OperationalError,
        _exc.ContentDisallowed,
        _exc.DecodeError,
        serialization.EncodeError,
        serialization.SerializerNotInstalled,
    ),
}

# Written under: our class -> Celery's module.
_WIRE_MODULE: Final[dict[type[BaseException], str]] = {
    cls: module for module, classes in _CELERY_HOMES.items() for cls in classes
}

# Read from: (module, qualname) -> our class. celery.exceptions also re-exports the billiard
# classes and OperationalError, so those names are read from it too.
_FROM_WIRE: Final[dict[tuple[str, str], type[BaseException]]] = {
    (module, cls.__qualname__): cls for cls, module in _WIRE_MODULE.items()
}
_FROM_WIRE.update(
    (("celery.exceptions", cls.__qualname__), cls)
    for cls in (*_CELERY_HOMES["billiard.exceptions"], _exc.OperationalError)
)

# Where a stand-in lives when the meta names no module (Celery uses its backends module).
_NO_MODULE: Final = __name__


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not lose the failure being recorded
        return f"<{type(value).__qualname__} object (repr failed)>"


def _encodable(value: Any, encode: Callable[[Any], object]) -> Any:
    try:
        encode(value)
    except Exception:  # anything the serializer refuses is stored as text
        return _safe_repr(value)
    return value


def _encoder_for(serializer: str) -> Callable[[Any], object]:
    codec = serialization.serializer_for(serializer)
    if codec.dumps is None:
        return serialization.json_dumps
    return codec.dumps


def exception_to_meta(exc: BaseException, serializer: str = "json") -> dict[str, Any]:
    """Encode ``exc`` as Celery stores a failure: ``exc_type``, ``exc_message``, ``exc_module``.

    Each argument that ``serializer`` cannot encode is replaced by its ``repr``.
    """
    cls = type(exc)
    args = getattr(exc, "args", ())
    if not isinstance(args, tuple | list):
        args = (args,)
    encode = _encoder_for(serializer)
    return {
        "exc_type": getattr(cls, "__qualname__", cls.__name__),
        "exc_message": [_encodable(arg, encode) for arg in args],
        "exc_module": _WIRE_MODULE.get(cls, cls.__module__),
    }


def prepare_exception(
    exc: BaseException, serializer: str = "json"
) -> BaseException | dict[str, Any]:
    """What Celery stores as a failure's ``result`` for this serializer.

    With ``pickle`` that is the exception itself when it survives pickling (else its meta,
    which Celery clients read as well); with any other serializer it is the meta dict.
    """
    if serializer == "pickle":
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:  # not picklable (or not unpicklable): fall back to the meta form
            return exception_to_meta(exc, serializer)
        return exc
    return exception_to_meta(exc, serializer)


@functools.lru_cache(maxsize=1024)
def stand_in_class(module: str, qualname: str) -> type[Exception]:
    """An ``Exception`` subclass named like the original, one per ``(module, qualname)``."""
    name = qualname.rpartition(".")[2] or qualname
    return type(name, (Exception,), {"__module__": module, "__qualname__": qualname})


def _find_loaded_class(module: str, qualname: str) -> type[BaseException] | None:
    ours = _FROM_WIRE.get((module, qualname))
    if ours is not None:
        return ours
    # Only modules already imported: importing whatever a stored result names would let
    # whoever can write to the result store run code here.
    found: object = builtins if module == "builtins" else sys.modules.get(module)
    if found is None:
        return None
    for part in qualname.split("."):
        if not part.isidentifier() or part.startswith("__"):
            return None
        found = getattr(found, part, None)
        if found is None:
            return None
    if isinstance(found, type) and issubclass(found, BaseException):
        return found
    return None


def _instantiate(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException | None:
    try:
        return cls(*args)
    except Exception:
        pass
    # The class wants other arguments than its args (keyword-only ones, say): make the
    # instance without __init__, keeping the type, if it can still be shown as text.
    try:
        exc = cls.__new__(cls, *args)
        exc.args = args
        str(exc)
    except Exception:
        return None
    return exc


def meta_to_exception(meta: Mapping[str, Any] | BaseException) -> BaseException:
    """Rebuild the exception a failure meta describes (see the module docstring).

    An exception instance (what the pickle serializer stores) is returned as it is. Raises
    ``ValueError`` when ``meta`` has no ``exc_type`` and ``TypeError`` when it is not a mapping.
    """
    if isinstance(meta, BaseException):
        return _unwrap_pickled(meta)
    if not isinstance(meta, Mapping):
        raise TypeError(
            f"a stored failure must be an exception or a mapping with exc_type, exc_message "
            f"and exc_module; got {type(meta).__name__}: {_safe_repr(meta)[:200]}"
        )
    exc_type = meta.get("exc_type")
    if not isinstance(exc_type, str) or not exc_type:
        raise ValueError(
            f"a stored failure must name its exception class in 'exc_type'; got {dict(meta)!r}"
        )
    exc_module = meta.get("exc_module")
    message = meta.get("exc_message", "")
    args = tuple(message) if isinstance(message, list | tuple) else (message,)
    module = exc_module if isinstance(exc_module, str) and exc_module else None

    cls = _find_loaded_class(module, exc_type) if module is not None else None
    if cls is not None:
        exc = _instantiate(cls, args)
        if exc is not None:
            return exc
    return stand_in_class(module or _NO_MODULE, exc_type)(*args)


def _unwrap_pickled(exc: BaseException) -> BaseException:
    # Celery's pickle path stores exceptions it could not pickle as a wrapper carrying the
    # class's module, name and args; rebuild the original from those.
    cls_name = getattr(exc, "exc_cls_name", None)
    module = getattr(exc, "exc_module", None)
    args = getattr(exc, "exc_args", None)
    if isinstance(cls_name, str) and isinstance(module, str) and isinstance(args, tuple | list):
        return meta_to_exception(
            {"exc_type": cls_name, "exc_module": module, "exc_message": list(args)}
        )
    return exc


def exception_to_python(value: Any) -> BaseException | None:
    """Celery's name for :func:`meta_to_exception`; an empty value gives ``None``."""
    if not value:
        return None
    return meta_to_exception(value)
