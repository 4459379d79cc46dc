"""``Task.replace`` and ``Task.add_to_chord``: changing a running workflow from inside a task."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celeriac.canvas import Signature
from celeriac.exceptions import Ignore, ImproperlyConfigured
from celeriac.workflows._common import as_list, as_signature
from celeriac.workflows.chain import chain
from celeriac.workflows.group import group

if TYPE_CHECKING:
    from celeriac.task import Task


def replace_task(task: Task[Any, Any], sig: Signature[Any, Any]) -> Any:
    """Replace the running call of *task* with *sig*, as Celery's ``Task.replace``.

    *sig* takes over the task's id (so results already handed out get *sig*'s result), its
    callbacks, errbacks, group/chord membership and the rest of its chain. In a worker this sends
    *sig* and raises :class:`~celeriac.exceptions.Ignore`; in eager mode it runs *sig* and
    returns its value.
    """
    request = task.request
    app = task.app
    sig = as_signature(sig, app)
    if "chord" in sig.options:
        raise ImproperlyConfigured("A signature replacing a task must not be part of a chord")
    if isinstance(sig, chain) and not sig.tasks:
        raise ImproperlyConfigured("Cannot replace with an empty chain")
    if isinstance(sig, group):
        # A group becomes a chord so that the callbacks can hang on its body.
        sig = sig | app.tasks["celery.accumulate"].s(index=0)
    for callback in as_list(request.callbacks):
        sig.link(as_signature(callback, app))
    for errback in as_list(request.errbacks):
        sig.link_error(as_signature(errback, app))
    if isinstance(sig, chain) and sig.options.get("link"):
        # Callbacks of a chain run after its last step.
        last = sig.tasks[-1]
        for callback in as_list(sig.options.pop("link")):
            last.link(as_signature(callback, app))
    sig.freeze(request.id)
    nesting = (request.replaced_task_nesting or 0) + 1
    sig.set(
        chord=request.chord,
        group_id=request.group,
        group_index=request.group_index,
        root_id=request.root_id,
        replaced_task_nesting=nesting,
    )
    for step in reversed(as_list(request.chain)):
        chain_step = as_signature(step, app)
        chain_step.set(replaced_task_nesting=nesting)
        sig = sig | chain_step
    task.on_replace(sig)
    if request.is_eager:
        return sig.apply().get(disable_sync_subtasks=False)
    sig.delay()
    raise Ignore("Replaced by new task")


def add_to_chord(task: Task[Any, Any], sig: Signature[Any, Any], lazy: bool = False) -> Any:
    """Add *sig* to the chord the running task belongs to: the body waits for it too.

    Returns its result (or, with *lazy*, the frozen signature for the caller to send).
    """
    request = task.request
    if not request.chord:
        raise ValueError("Current task is not member of any chord")
    app = task.app
    sig = as_signature(sig, app)
    sig.set(
        group_id=request.group,
        group_index=request.group_index,
        chord=request.chord,
        root_id=request.root_id,
    )
    sig.freeze()
    backend = app.backend
    if backend is None:
        raise ImproperlyConfigured("add_to_chord needs a result backend (result_backend)")
    backend.store.chord_grow(str(request.group), 1, backend.expires)
    return sig if lazy else sig.delay()
