"""``xmap``, ``xstarmap`` and ``chunks``: one task applied to many arguments, in few messages.

``xmap``/``xstarmap`` send one message to the built-in ``celery.map``/``celery.starmap`` task,
which calls the task function in a loop in the worker. ``chunks`` splits the arguments into parts
of *n* and sends a group of ``xstarmap`` messages, one per part. The names and the dict forms are
Celery's (including ``subtask_type`` null: on the wire they are plain ``celery.*`` task
signatures), so either side of the wire can run them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from celeriac.canvas import SIGNATURE_TYPES, Signature
from celeriac.workflows._common import as_signature, chunked, is_eager
from celeriac.workflows.group import group

if TYPE_CHECKING:
    from celeriac.app.base import Celery
    from celeriac.result import GroupResult


class _basemap(Signature[Any, list[Any]]):
    _task_name = ""

    def __init__(
        self, task: Any, it: Iterable[Any], app: Celery | None = None, **options: Any
    ) -> None:
        sig = as_signature(task, app)
        super().__init__(
            self._task_name,
            (),
            {"task": sig, "it": list(it)},
            options,
            subtask_type=None,
            immutable=True,
            app=app or sig._app,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], app: Celery | None = None) -> _basemap:
        kwargs = data.get("kwargs") or {}
        return cls(
            kwargs["task"], kwargs.get("it") or (), app=app, **dict(data.get("options") or {})
        )

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        route_name: str | None = None,
        **options: Any,
    ) -> Any:
        # The map task's own arguments are fixed (it is immutable); options still merge.
        task = self.app.tasks[self._task_name]
        merged = {**self.options, **options}
        return task.apply_async((), self.kwargs, **merged)


class xmap(_basemap):
    """``task.map(items)``: one message; the worker returns ``[task(x) for x in items]``."""

    _task_name = "celery.map"


class xstarmap(_basemap):
    """``task.starmap(items)``: one message; the worker returns ``[task(*x) for x in items]``."""

    _task_name = "celery.starmap"


class chunks(Signature[Any, list[Any]]):
    """``task.chunks(items, n)``: a group of ``xstarmap`` messages of *n* argument tuples each."""

    def __init__(
        self, task: Any, it: Iterable[Any], n: int, app: Celery | None = None, **options: Any
    ) -> None:
        sig = as_signature(task, app)
        super().__init__(
            "celery.chunks",
            (),
            {"task": sig, "it": list(it), "n": n},
            options,
            subtask_type=None,
            immutable=True,
            app=app or sig._app,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], app: Celery | None = None) -> chunks:
        kwargs = data.get("kwargs") or {}
        return cls(
            kwargs["task"],
            kwargs.get("it") or (),
            kwargs["n"],
            app=app,
            **dict(data.get("options") or {}),
        )

    def group(self) -> group:
        """The group of ``xstarmap`` signatures this runs as."""
        kwargs = self.kwargs
        task = as_signature(kwargs["task"], self._app)
        parts = [xstarmap(task, part, app=self._app) for part in chunked(kwargs["it"], kwargs["n"])]
        return group(
            parts, app=self._app, **{k: v for k, v in self.options.items() if k == "task_id"}
        )

    def apply_async(  # type: ignore[override]
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        route_name: str | None = None,
        **options: Any,
    ) -> GroupResult:
        merged = {k: v for k, v in {**self.options, **options}.items() if k != "task_id"}
        if is_eager(self.app):
            return self.group().apply(**merged)
        return self.group().apply_async(**merged)

    def apply(  # type: ignore[override]
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> GroupResult:
        return self.group().apply(**options)

    def __call__(self, **options: Any) -> GroupResult:
        return self.apply_async(**options)


# Celery 5.7 writes these with subtask_type null; dicts naming the type are read too.
SIGNATURE_TYPES["xmap"] = xmap
SIGNATURE_TYPES["xstarmap"] = xstarmap
SIGNATURE_TYPES["chunks"] = chunks
