"""Helpers shared by the workflow primitives."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from celeriac.canvas import Signature, signature_from_dict
from celeriac.protocol.task import new_task_id

if TYPE_CHECKING:
    from celeriac.app.base import Celery


def new_id() -> str:
    return new_task_id()


def as_signature(value: Any, app: Celery | None = None) -> Signature[Any, Any]:
    """*value* as a Signature object: dicts from the wire become the right subclass."""
    if isinstance(value, Signature):
        return value
    if isinstance(value, dict):
        return signature_from_dict(value, app=app)
    raise TypeError(
        f"expected a signature (task.s(...)) or its dict form, got {type(value).__name__}: "
        f"{value!r}"
    )


def as_list(value: Any) -> list[Any]:
    """None → [], one item → [item], a list or tuple → a list (signatures are dicts: one item)."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def app_of(tasks: Iterable[Any], app: Celery | None) -> Celery | None:
    """The app given, else the first task's app."""
    if app is not None:
        return app
    for task in tasks:
        found = getattr(task, "_app", None)
        if found is not None:
            return found  # type: ignore[no-any-return]
    return None


def chunked(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    """*items* in lists of *n* (the last may be shorter)."""
    if n < 1:
        raise ValueError(f"chunk size must be a positive integer, got {n!r}")
    part: list[Any] = []
    for item in items:
        part.append(item)
        if len(part) == n:
            yield part
            part = []
    if part:
        yield part


def is_eager(app: Celery) -> bool:
    return bool(app.conf.task_always_eager)
