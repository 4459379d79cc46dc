"""Sending a group's members quickly when they call one task the same way.

``group(add.s(i) for i in range(10_000)).apply_async()`` sends messages that differ only in id,
arguments and group index. The first member goes through ``apply_async`` as usual; the others
reuse its message (:func:`~celeriac.protocol.task.sibling_v2`). Anything that could make the
messages differ otherwise (a custom ``apply_async`` or ``shadow_name``, per-member options,
routes that look at arguments, publish signals, sent events) sends every member the usual way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celeriac import signals
from celeriac.canvas import Signature
from celeriac.protocol.message import Outgoing
from celeriac.protocol.task import json_embed, new_task_id, sibling_v2
from celeriac.result import AsyncResult
from celeriac.task import Task

if TYPE_CHECKING:
    from celeriac.app.base import Celery


def send_siblings(
    app: Celery,
    members: Sequence[Signature[Any, Any]],
    batch: list[Outgoing],
    group_id: str,
    options: Mapping[str, Any],
) -> list[AsyncResult[Any]] | None:
    """Send *members* (plain task signatures) into the open publish *batch*; None, having sent
    nothing, when they do not all call one task the same way."""
    task = _common_task(app, members, options)
    if task is None:
        return None

    def usual(sig: Signature[Any, Any], index: int) -> AsyncResult[Any]:
        return sig.apply_async(group_id=group_id, group_index=index, add_to_parent=False, **options)

    results: list[AsyncResult[Any]] = [usual(members[0], 0)]
    template = batch[-1]  # the first member's message
    embed = json_embed(template.message)
    headers, properties = template.message.headers, template.message.properties
    ignore_result = bool(headers.get("ignore_result"))
    reply_to = properties.get("reply_to") or None
    check = task.typing if task.typing is not None else app.strict_typing
    expect_reply = app._reply_expecter(ignore_result, reply_to)
    for index, sig in enumerate(members[1:], 1):
        # The signature's own list and dict: read here (checked, dumped), never kept or changed.
        args, kwargs = sig.args, sig.kwargs
        task_id = new_task_id()
        message = None
        if embed is not None:
            if check:
                task.check_arguments(args, kwargs)
            try:
                message = sibling_v2(template.message, embed, task_id, args, kwargs, index)
            except TypeError:
                message = None  # e.g. a non-string keyword: the usual path says what is wrong
        if message is None:
            results.append(usual(sig, index))
            continue
        batch.append(Outgoing(message, template.exchange, template.routing_key))
        if expect_reply is not None:
            expect_reply(task_id)
        results.append(AsyncResult(task_id, task_name=task.name, app=app))
    return results


def _common_task(
    app: Celery, members: Sequence[Signature[Any, Any]], options: Mapping[str, Any]
) -> Task[Any, Any] | None:
    """The task every member calls with no options of its own, when nothing else can make
    their messages differ; else None."""
    if len(members) < 2 or app.conf.task_send_sent_event or "task_id" in options:
        return None
    if signals.before_task_publish.has_listeners() or signals.after_task_publish.has_listeners():
        return None
    name = members[0].task
    task = app.tasks.get(name) if isinstance(name, str) else None
    if task is None or not app.router.static:
        return None
    kind = type(task)
    if kind.apply_async is not Task.apply_async or kind.shadow_name is not Task.shadow_name:
        return None
    for sig in members:
        if type(sig) is not Signature or sig.task != name or sig.options:
            return None
    return task
