"""celeriac: a distributed task queue with Celery 5's API and wire protocol, async-native.

Change ``celery`` to ``celeriac`` in imports; everything a Celery program uses is here under the
same names.
"""

from __future__ import annotations

from celeriac import states
from celeriac.app.base import Celery, current_app, shared_task
from celeriac.app.context import current_task_var as _current_task_var
from celeriac.canvas import Signature, maybe_signature, signature, subtask
from celeriac.protocol.entities import Exchange, Queue
from celeriac.result import AsyncResult, GroupResult, ResultSet
from celeriac.task import Task
from celeriac.workflows import chain, chord, chunks, group, xmap, xstarmap

__version__ = "0.1.0"
VERSION = (0, 1, 0)


def uuid() -> str:
    """A new task id."""
    import uuid as _uuid

    return str(_uuid.uuid4())


class _CurrentTask:
    """``celeriac.current_task``: the task running in this context (None outside tasks)."""

    def __getattr__(self, name: str) -> object:
        task = _current_task_var.get()
        if task is None:
            raise AttributeError(f"no task is running here, so current_task has no {name!r}")
        return getattr(task, name)

    def __bool__(self) -> bool:
        return _current_task_var.get() is not None

    def __repr__(self) -> str:
        return repr(_current_task_var.get())


current_task = _CurrentTask()

__all__ = [
    "AsyncResult",
    "Celery",
    "Exchange",
    "GroupResult",
    "Queue",
    "ResultSet",
    "Signature",
    "Task",
    "chain",
    "chord",
    "chunks",
    "current_app",
    "current_task",
    "group",
    "maybe_signature",
    "shared_task",
    "signature",
    "states",
    "subtask",
    "uuid",
    "xmap",
    "xstarmap",
]
