"""The ``celery.*`` tasks every app has, under Celery's names so messages interoperate.

``celery.map``, ``celery.starmap`` and ``celery.chunks`` run the mapping primitives;
``celery.accumulate`` is the body ``Task.replace`` gives a replacing group; ``celery.group``,
``celery.chord`` and ``celery.chain`` run canvas objects sent as tasks (rare, kept for old senders).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celeriac.app import base as app_base
from celeriac.result import result_from_tuple
from celeriac.workflows._common import as_signature, chunked

if TYPE_CHECKING:
    from celeriac.app.base import Celery
    from celeriac.task import Task


def _map(app: Celery) -> Callable[..., Any]:
    def map_task(task: Any, it: Any) -> list[Any]:
        # As Celery: the task's function is called directly; the signature's partial args and
        # options are not used.
        fun = as_signature(task, app).type
        return [fun(item) for item in it]

    return map_task


def _starmap(app: Celery) -> Callable[..., Any]:
    def starmap_task(task: Any, it: Any) -> list[Any]:
        fun = as_signature(task, app).type
        return [fun(*item) for item in it]

    return starmap_task


def _chunks(app: Celery) -> Callable[..., Any]:
    def chunks_task(task: Any, it: Any, n: int) -> Any:
        from celeriac.workflows.group import group
        from celeriac.workflows.mapping import xstarmap

        sig = as_signature(task, app)
        parts = group([xstarmap(sig, part, app=app) for part in chunked(it, n)], app=app)
        return parts.apply_async().as_tuple()

    return chunks_task


def _accumulate(app: Celery) -> Callable[..., Any]:
    def accumulate_task(*args: Any, **kwargs: Any) -> Any:
        index = kwargs.get("index")
        return args[index] if index is not None else list(args)

    return accumulate_task


def _group(app: Celery) -> Callable[..., Any]:
    def group_task(
        tasks: Any, result: Any, group_id: str, partial_args: Any, add_to_parent: bool = True
    ) -> Any:
        with app.publish_batch():
            for index, task in enumerate(tasks):
                as_signature(task, app).apply_async(
                    partial_args or (),
                    group_id=group_id,
                    group_index=index,
                    add_to_parent=False,
                )
        return result_from_tuple(result, app).as_tuple()

    return group_task


def _chord(app: Celery) -> Callable[..., Any]:
    def chord_task(
        header: Any,
        body: Any,
        partial_args: Any = (),
        interval: Any = None,
        countdown: Any = 1,
        max_retries: Any = None,
        eager: bool = False,
        **kwargs: Any,
    ) -> Any:
        from celeriac.workflows.chord import chord

        tasks = header
        if isinstance(header, dict):
            tasks = header.get("kwargs", {}).get("tasks", header)
        result = chord(list(tasks), body, app=app).apply_async(partial_args or (), **kwargs)
        return result.id

    return chord_task


def _chain(app: Celery) -> Callable[..., Any]:
    def chain_task(*args: Any, **kwargs: Any) -> None:
        # Celery keeps this name for compatibility; chains travel in embed.chain instead.
        return None

    return chain_task


BUILTINS: dict[str, tuple[Callable[[Celery], Callable[..., Any]], dict[str, Any]]] = {
    "celery.map": (_map, {}),
    "celery.starmap": (_starmap, {}),
    "celery.chunks": (_chunks, {}),
    "celery.accumulate": (_accumulate, {}),
    "celery.group": (_group, {}),
    "celery.chord": (_chord, {}),
    "celery.chain": (_chain, {}),
}


def _constructor(name: str) -> Callable[[Celery], Task[Any, Any]]:
    make, options = BUILTINS[name]

    def construct(app: Celery) -> Task[Any, Any]:
        fun = make(app)
        fun.__module__ = "celery"
        return app._task_from_fun(fun, name=name, typing=False, **options)

    return construct


def install() -> None:
    """Register the built-in tasks in every app, present and future (once per process)."""
    with app_base._state_lock:
        if getattr(app_base, "_celeriac_canvas_builtins", False):
            return
        app_base._celeriac_canvas_builtins = True  # type: ignore[attr-defined]
        for name in BUILTINS:
            construct = _constructor(name)
            app_base._shared_constructors.append(construct)
            for app in list(app_base._apps):
                construct(app)
