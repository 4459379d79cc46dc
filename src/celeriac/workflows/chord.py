"""``chord``: a group (the header) whose results, once all are in, go to one more task (the body).

On the wire (as Celery 5.7): the sender records the header size (``chord_init``, Redis key
``celery-taskset-meta-<gid>.s``), then publishes the header like a group with the body in every
message's ``embed.chord``. Each finished header task adds ``[1, task_id, state, result]`` to the
chord's parts (``chord_part``); the one that completes the count publishes the body with the
results in ``group_index`` order, or stores a ``ChordError`` for it when a header task failed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from celeriac import states
from celeriac.app.context import Context
from celeriac.canvas import SIGNATURE_TYPES, Signature
from celeriac.exceptions import ChordError, ImproperlyConfigured
from celeriac.protocol.errors import exception_to_meta
from celeriac.result import EagerResult, GroupResult
from celeriac.workflows._common import app_of, as_list, as_signature, is_eager, new_id
from celeriac.workflows.group import group

if TYPE_CHECKING:
    from celeriac.app.backend import ResultBackend
    from celeriac.app.base import Celery

logger = logging.getLogger("celeriac.workflows")

#: Options that say where the chord itself belongs (an outer group or chord); they go to the body.
_MEMBERSHIP = ("group_id", "group_index", "chord")


class chord(Signature[Any, Any]):
    """``chord(header, body)``: run *header* (a group or signatures) then *body* with the list of
    their results. ``chord(header)(body)`` is the same."""

    def __init__(
        self,
        header: Any,
        body: Any = None,
        task: str = "celery.chord",
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        app: Celery | None = None,
        **options: Any,
    ) -> None:
        if (
            isinstance(header, Mapping)
            and not isinstance(header, Signature)
            and "header" in (header.get("kwargs") or {})
        ):
            raise TypeError("use chord.from_dict() to rebuild a chord from its dict form")
        head = (
            header
            if isinstance(header, group)
            else group(
                as_signature(header, app) if isinstance(header, Mapping) else header, app=app
            )
        )
        body_sig = as_signature(body, app) if body is not None else None
        super().__init__(
            task,
            args,
            {"kwargs": dict(kwargs or {}), "header": head, "body": body_sig},
            options,
            subtask_type="chord",
            app=app_of([body_sig, *head.tasks] if body_sig is not None else head.tasks, app),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], app: Celery | None = None) -> chord:
        """Rebuild a chord from its wire form (``kwargs``: ``header``, ``body``, ``kwargs``)."""
        kw = data.get("kwargs") or {}
        header = kw.get("header") or []
        if isinstance(header, Mapping):
            header = as_signature(header, app)
        sig = cls(
            header,
            kw.get("body"),
            task=data.get("task") or "celery.chord",
            args=data.get("args"),
            kwargs=kw.get("kwargs"),
            app=app,
            **dict(data.get("options") or {}),
        )
        sig["immutable"] = bool(data.get("immutable"))
        return sig

    # -- parts -----------------------------------------------------------------------------------
    @property
    def header(self) -> group:
        head = self["kwargs"]["header"]
        if not isinstance(head, group):
            head = self["kwargs"]["header"] = group(head, app=self._app)
        return head

    @property
    def tasks(self) -> list[Signature[Any, Any]]:
        return self.header.tasks

    @property
    def body(self) -> Signature[Any, Any] | None:
        body = self["kwargs"]["body"]
        if body is not None and not isinstance(body, Signature):
            body = self["kwargs"]["body"] = as_signature(body, self._app)
        return body  # type: ignore[no-any-return]

    @body.setter
    def body(self, value: Signature[Any, Any] | None) -> None:
        self["kwargs"]["body"] = value

    @property
    def id(self) -> str | None:
        body = self.body
        return body.id if body is not None else None

    def _require_body(self) -> Signature[Any, Any]:
        body = self.body
        if body is None:
            raise ValueError("this chord has no body: call it with one, chord(header)(body)")
        return body

    def link(self, callback: Signature[Any, Any]) -> Signature[Any, Any]:
        """Link *callback* to the body (it runs with the body's result)."""
        return self._require_body().link(callback)

    def link_error(self, errback: Signature[Any, Any]) -> Signature[Any, Any]:
        """Link *errback* to the body: it runs when the body fails or a header task fails."""
        return self._require_body().link_error(errback)

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        """Give the header and the body their ids now; returns the body's future result, whose
        parent is the header's GroupResult."""
        body = self._require_body()
        header = self.header
        gid = header.options.get("task_id") or new_id()
        header.options["task_id"] = gid
        self._place_body(body, group_id, group_index, chord)
        body_result = body.freeze(_id, group_id=gid, root_id=root_id)
        header_result = GroupResult(gid, [], app=self.app)
        _attach_parent(body_result, header_result)
        return body_result

    @staticmethod
    def _place_body(
        body: Signature[Any, Any], group_id: str | None, group_index: int | None, outer: Any
    ) -> None:
        # A chord inside an outer group/chord: its body's result is what the outer one counts.
        if group_id:
            body.options["group_id"] = group_id
        if group_index is not None:
            body.options["group_index"] = group_index
        if outer is not None:
            body.options["chord"] = outer

    # -- running ---------------------------------------------------------------------------------
    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        route_name: str | None = None,
        task_id: str | None = None,
        **options: Any,
    ) -> Any:
        """Send the header (one batch) and return the body's future result."""
        app = self.app
        merged = {**self.options, **options}
        if is_eager(app):
            return self.apply(args, kwargs, task_id=task_id, **merged)
        body = self._require_body().clone()
        header = self.header
        # A frozen body keeps its id: Celery's chord dicts carry the header's group id in their
        # own options.task_id, not the body's.
        task_id = body.id or task_id or merged.get("task_id")
        merged.pop("task_id", None)
        for callback in as_list(merged.pop("link", None)):
            body.link(as_signature(callback, app))
        for errback in as_list(merged.pop("link_error", None)):
            body.link_error(as_signature(errback, app))
        rest = merged.pop("chain", None)
        if rest:
            # A chord in a chain: the steps after it travel with the body.
            body.options["chain"] = list(rest)
        self._place_body(
            body,
            merged.pop("group_id", None),
            merged.pop("group_index", None),
            merged.pop("chord", None),
        )
        merged.pop("parent_id", None)  # the body's parent is the header task that completes it
        root_id = merged.get("root_id")
        header_args = [] if self.immutable else [*(args or ()), *self.args]
        header_kwargs = {**self.kwargs["kwargs"], **(kwargs or {})}
        gid = header.options.get("task_id") or new_id()
        body_result = body.freeze(task_id, group_id=gid, root_id=root_id)
        members = header.members(header_args, header_kwargs)
        backend = _backend(app)
        if not members:
            # Nothing will ever complete the count: send the body now, with no results.
            body.apply_async(([],))
            header_result = GroupResult(gid, [], app=app)
        else:
            backend.store.chord_init(gid, len(members), backend.expires)
            header_result = group(members, app=app, task_id=gid).apply_async(chord=body, **merged)
        _attach_parent(body_result, header_result)
        return body_result

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Run the header here, then the body with its results (eager mode)."""
        app = self.app
        body = self._require_body().clone()
        merged = {**self.options, **options}
        task_id = merged.pop("task_id", None) or body.id or new_id()
        for callback in as_list(merged.pop("link", None)):
            body.link(as_signature(callback, app))
        for errback in as_list(merged.pop("link_error", None)):
            body.link_error(as_signature(errback, app))
        for key in ("chain", "group_id", "group_index", "chord", "parent_id"):
            merged.pop(key, None)
        header_args = [] if self.immutable else [*(args or ()), *self.args]
        header_kwargs = {**self.kwargs["kwargs"], **(kwargs or {})}
        header_result = group(self.header.members(header_args, header_kwargs), app=app).apply()
        failed = next((r for r in header_result.results if _eager_failed(r)), None)
        if failed is not None:
            exc = ChordError(f"Dependency {failed.id} raised {failed.result!r}")
            run_errbacks(app, body, task_id, exc)
            result: Any = EagerResult(task_id, exc, states.FAILURE, name=body.task, app=app)
        else:
            result = body.apply(
                (header_result.get(propagate=False, disable_sync_subtasks=False),),
                task_id=task_id,
                **merged,
            )
        _attach_parent(result, header_result)
        return result

    def __call__(self, body: Any = None, **options: Any) -> Any:
        """``chord(header)(body)`` sends the chord with *body*."""
        sig = cast(chord, self.clone())
        if body is not None:
            sig.body = as_signature(body, self._app)
        return sig.apply_async((), {}, **options)

    def __or__(self, other: Any) -> Any:
        # chord | task extends the body; anything else becomes a chain.
        if isinstance(other, Signature) and other.subtask_type is None and self.body is not None:
            sig = cast(chord, self.clone())
            sig.body = sig._require_body() | other
            return sig
        return super().__or__(other)

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"


def _eager_failed(result: Any) -> bool:
    if isinstance(result, GroupResult):
        return any(_eager_failed(r) for r in result.results)
    return bool(result.state in states.PROPAGATE_STATES)


def _attach_parent(result: Any, parent: Any) -> None:
    """Make *parent* the parent of the first result up *result*'s parent line that has none."""
    node = result
    seen: set[int] = set()
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if getattr(node, "parent", None) is None:
            node.parent = parent
            return
        node = node.parent


def _backend(app: Celery) -> ResultBackend:
    backend = app.backend
    if backend is None:
        raise ImproperlyConfigured(
            "chords need a result backend to count the header's results: set result_backend "
            "(e.g. 'redis://localhost/1' or 'sqlite:///results.db')"
        )
    return backend


# -- worker side ---------------------------------------------------------------------------------
def frozen_ids(sig: Signature[Any, Any]) -> list[str]:
    """The ids whose results a frozen signature will produce (chain: its last task; group: every
    member; chord: its body)."""
    kind = sig.subtask_type
    if kind == "chain":
        tasks = sig.kwargs.get("tasks") or []
        return frozen_ids(as_signature(tasks[-1], sig._app)) if tasks else []
    if kind == "group":
        ids: list[str] = []
        for task in sig.kwargs.get("tasks") or []:
            ids.extend(frozen_ids(as_signature(task, sig._app)))
        return ids
    if kind == "chord":
        body = (sig.kwargs or {}).get("body")
        return frozen_ids(as_signature(body, sig._app)) if body else []
    task_id = sig.options.get("task_id")
    return [task_id] if task_id else []


def on_chord_part_return(app: Celery, request: Any, state: str, result: Any) -> None:
    """Record one finished header task; the one that completes the chord sends the body."""
    gid = getattr(request, "group", None)
    body = getattr(request, "chord", None)
    if not gid or body is None:
        return
    backend = app.backend
    if backend is None:
        logger.error("chord %s: no result backend to count its parts; the body will not run", gid)
        return
    encoded = (
        exception_to_meta(result, backend.serializer)
        if (state in states.EXCEPTION_STATES and isinstance(result, BaseException))
        else result
    )
    value = backend.encode([1, request.id, state, encoded])  # type: ignore[arg-type]
    part = (gid, str(request.id), int(request.group_index or 0), value, backend.expires)
    parent_id, root_id = request.id, request.root_id or request.id

    def complete(parts: list[bytes] | None) -> None:
        if parts is not None:
            _send_body(app, backend, gid, as_signature(body, app), parts, parent_id, root_id)

    store = backend.store
    count_behind = getattr(store, "chord_part_then", None)
    if count_behind is not None:
        # A pool process counts behind its result writes; the last part sends the body there.
        count_behind(*part, complete)
    else:
        complete(store.chord_part(*part))


def _send_body(
    app: Celery,
    backend: ResultBackend,
    gid: str,
    body_sig: Signature[Any, Any],
    parts: list[bytes],
    parent_id: str,
    root_id: str,
) -> None:
    """The chord is complete: send its body with the header's values (or fail it)."""
    try:
        try:
            values = [_unpack_part(backend, raw) for raw in parts]
        except ChordError as exc:
            chord_error_from_stack(app, body_sig, exc)
            return
        try:
            body_sig.apply_async((values,), parent_id=parent_id, root_id=root_id)
        except Exception as exc:
            logger.exception("chord %s: sending the body failed", gid)
            chord_error_from_stack(app, body_sig, ChordError(f"Callback error: {exc!r}"))
    finally:
        backend.store.chord_release(gid)


def _unpack_part(backend: ResultBackend, raw: bytes) -> Any:
    _, task_id, state, value = backend.decode(raw)
    if state in states.EXCEPTION_STATES:
        value = backend.exception_from(value)
    if state in states.PROPAGATE_STATES:
        raise ChordError(f"Dependency {task_id} raised {value!r}")
    return value


def chord_error_from_stack(app: Celery, body: Signature[Any, Any], exc: BaseException) -> None:
    """The chord cannot run its body: call the body's errbacks and store *exc* as its result
    (and as the result of any chain steps that were to follow it)."""
    ids = frozen_ids(body)
    run_errbacks(app, body, ids[0] if ids else None, exc)
    backend = app.backend
    if backend is None:
        return
    request = Context(group=body.options.get("group_id"), parent_id=body.options.get("parent_id"))
    for task_id in ids:
        backend.store_result(task_id, exc, states.FAILURE, None, request=request)
    fail_steps(app, as_list(body.options.get("chain")), exc, None)
    outer = body.options.get("chord")
    if outer is not None:
        # The body was itself a member of an outer chord: count its failure there.
        for task_id in ids:
            on_chord_part_return(
                app,
                Context(
                    id=task_id,
                    group=body.options.get("group_id"),
                    group_index=body.options.get("group_index"),
                    chord=outer,
                ),
                states.FAILURE,
                exc,
            )


def run_errbacks(
    app: Celery, sig: Signature[Any, Any], task_id: str | None, exc: BaseException
) -> None:
    """Call *sig*'s ``link_error`` signatures as a failing task's errbacks are called."""
    from celeriac.app.trace import _takes_request_exc_tb

    request = Context(
        id=task_id,
        task=sig.task,
        args=sig.args,
        kwargs=sig.kwargs,
        errbacks=sig.options.get("link_error"),
        delivery_info={},
    )
    for errback in as_list(sig.options.get("link_error")):
        eb = as_signature(errback, app)
        try:
            errback_task = app.tasks.get(eb.task)
            if errback_task is not None and _takes_request_exc_tb(errback_task):
                errback_task(request, exc, None)
            else:
                eb.apply_async((task_id,))
        except Exception:
            logger.exception("errback %r of %s failed", eb.task, task_id)


def fail_steps(app: Celery, steps: list[Any], exc: BaseException, traceback: str | None) -> None:
    """Store *exc* as the result of chain steps that will now never run, so waiting on the
    chain's result raises instead of blocking (Celery does the same)."""
    backend = app.backend
    if backend is None:
        return
    for step in steps:
        sig = as_signature(step, app)
        opts = sig.options
        ids = frozen_ids(sig)
        for task_id in ids:
            backend.store_result(
                task_id, exc, states.FAILURE, traceback, request=Context(group=opts.get("group_id"))
            )
        if opts.get("chord") is not None and sig.subtask_type is None:
            for task_id in ids:
                on_chord_part_return(
                    app,
                    Context(
                        id=task_id,
                        group=opts.get("group_id"),
                        group_index=opts.get("group_index"),
                        chord=opts["chord"],
                    ),
                    states.FAILURE,
                    exc,
                )


SIGNATURE_TYPES["chord"] = chord
