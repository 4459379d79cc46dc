"""Running one task call with Celery's semantics: hooks, signals, results, retries, callbacks.

The same :class:`Tracer` serves eager ``apply()`` and the worker's pools; ``trace_sync`` and
``trace_async`` differ only in how the function is called, so sync and ``async def`` tasks share
every rule.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import threading
import time
import traceback as tb_module
import uuid
from collections.abc import Coroutine
from contextvars import Token
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celeriac import signals, states
from celeriac.app.context import Context, current_request, current_task_var
from celeriac.canvas import signature
from celeriac.exceptions import Ignore, Reject, Retry, Terminated
from celeriac.result import EagerResult, in_worker_task

if TYPE_CHECKING:
    from celeriac.task import Task

logger = logging.getLogger("celeriac.app.trace")

SUCCESS_LOG = "Task %s[%s] succeeded in %.6fs: %s"
FAILURE_LOG = "Task %s[%s] raised unexpected: %r"
RETRY_LOG = "Task %s[%s] retry: %s"

#: The message the asyncio pool cancels an ``async def`` task with on ``revoke(terminate=True)``:
#: :func:`trace_async` turns that cancellation into :class:`~celeriac.exceptions.Terminated`.
TERMINATE_MESSAGE = "celeriac: terminated"


class ExceptionInfo:
    """An exception with its formatted traceback (the ``einfo`` hooks receive, as in Celery)."""

    def __init__(self, exc: BaseException) -> None:
        self.exception = exc
        self.type = type(exc)
        self.tb = exc.__traceback__
        self.traceback = "".join(tb_module.format_exception(exc))

    def __str__(self) -> str:
        return self.traceback

    def __repr__(self) -> str:
        return f"<ExceptionInfo: {self.exception!r}>"


@dataclass(slots=True)
class TraceOutcome:
    """How one call ended."""

    state: str
    retval: Any
    exc: BaseException | None = None
    traceback: str | None = None
    runtime: float = 0.0
    requeue: bool = False


def maybe_list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    if isinstance(value, list | tuple) and not isinstance(value, dict):
        return list(value)
    return [value]


def run_coroutine_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run *coro* to completion from synchronous code, even inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=runner, name="celeriac-eager-async")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


class Tracer:
    """Applies Celery's rules around one task call. See the module docstring."""

    def __init__(
        self,
        task: Task[Any, Any],
        *,
        eager: bool,
        propagate: bool = False,
        hostname: str | None = None,
    ) -> None:
        self.task = task
        self.app = task.app
        self.eager = eager
        self.propagate = propagate
        self.hostname = hostname or socket.gethostname()
        self._started = 0.0
        self._token: Token[bool] | None = None
        self._request_token: Token[Context | None] | None = None
        self._task_token: Token[Any] | None = None

    # -- phases ----------------------------------------------------------------------------------
    def begin(self, request: Context, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        task = self.task
        task.push_request(request)
        self._request_token = current_request.set(request)
        self._task_token = current_task_var.set(task)
        if not self.eager:
            self._token = in_worker_task.set(True)
        self._started = time.monotonic()
        request.time_start = time.time()
        if signals.task_prerun.has_listeners():
            signals.task_prerun.send(
                sender=task, task_id=request.id, task=task, args=args, kwargs=kwargs
            )
        task.before_start(str(request.id), args, kwargs)
        if task.track_started and not self.eager and self._should_store(request):
            backend = self.app.backend
            if backend is not None:
                backend.mark_as_started(
                    str(request.id), request=request, pid=os.getpid(), hostname=self.hostname
                )

    def _should_store(self, request: Context) -> bool:
        if self.eager and not self.task.store_eager_result:
            return False
        return not (request.ignore_result or self.task.ignore_result)

    def _children(self, request: Context) -> list[Any]:
        return [child.as_tuple() for child in request.children]

    def succeed(
        self, request: Context, retval: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> TraceOutcome:
        task = self.task
        try:
            self._send_callbacks(request, retval)
            backend = self.app.backend
            if backend is not None and self._should_store(request):
                backend.store_result(
                    str(request.id),
                    retval,
                    states.SUCCESS,
                    request=request,
                    children=self._children(request),
                )
            if request.chord:
                self.app.on_chord_part_return(request, states.SUCCESS, retval)
        except Exception as exc:  # e.g. an unserializable return value
            return self.fail(request, exc, args, kwargs)
        runtime = time.monotonic() - self._started
        task.on_success(retval, str(request.id), args, kwargs)
        if signals.task_success.has_listeners():
            signals.task_success.send(sender=task, result=retval)
        if not self.eager:
            logger.info(
                SUCCESS_LOG,
                task.name,
                request.id,
                runtime,
                _short_repr(retval, task.resultrepr_maxsize),
            )
        return TraceOutcome(states.SUCCESS, retval, runtime=runtime)

    def _send_callbacks(self, request: Context, retval: Any) -> None:
        parent_id, root_id = request.id, request.root_id or request.id
        for callback in request.callbacks or ():
            sig = signature(callback, app=self.app)
            sig.apply_async((retval,), parent_id=parent_id, root_id=root_id)
        chain = request.chain
        if chain:
            chain = list(chain)
            next_step = signature(chain.pop(), app=self.app)
            next_step.apply_async((retval,), chain=chain, parent_id=parent_id, root_id=root_id)

    def fail(
        self, request: Context, exc: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> TraceOutcome:
        runtime = time.monotonic() - self._started
        if isinstance(exc, Retry):
            return self._retried(request, exc, args, kwargs, runtime)
        if isinstance(exc, Ignore):
            return TraceOutcome(states.IGNORED, exc, exc, runtime=runtime)
        if isinstance(exc, Reject):
            return TraceOutcome(states.REJECTED, exc, exc, runtime=runtime, requeue=exc.requeue)
        if isinstance(exc, Terminated) and not self.eager:
            # revoke(terminate=True) on a thread or asyncio pool: the worker stores REVOKED, so
            # no FAILURE may be visible in between and the failure hooks do not run.
            return TraceOutcome(states.REVOKED, exc, exc, runtime=runtime)
        return self._failed(request, exc, args, kwargs, runtime)

    def _retried(
        self,
        request: Context,
        retry: Retry,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        runtime: float,
    ) -> TraceOutcome:
        task = self.task
        einfo = ExceptionInfo(retry)
        reason = retry.exc if retry.exc is not None else retry
        backend = self.app.backend
        if backend is not None and not self.eager:
            backend.store_result(
                str(request.id),
                retry.exc,
                states.RETRY,
                einfo.traceback,
                request=request,
                children=self._children(request),
            )
        task.on_retry(reason, str(request.id), args, kwargs, einfo)
        if signals.task_retry.has_listeners():
            signals.task_retry.send(sender=task, request=request, reason=retry, einfo=einfo)
        if not self.eager:
            logger.info(RETRY_LOG, task.name, request.id, retry)
        return TraceOutcome(states.RETRY, retry, retry, einfo.traceback, runtime)

    def _failed(
        self,
        request: Context,
        exc: BaseException,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        runtime: float,
    ) -> TraceOutcome:
        task = self.task
        einfo = ExceptionInfo(exc)
        backend = self.app.backend
        store = self._should_store(request) or (
            task.store_errors_even_if_ignored and not self.eager
        )
        if backend is not None and store:
            try:
                backend.store_result(
                    str(request.id),
                    exc,
                    states.FAILURE,
                    einfo.traceback,
                    request=request,
                    children=self._children(request),
                )
            except Exception:
                logger.exception("Task %s[%s]: storing its failure failed", task.name, request.id)
        if request.chord:
            self.app.on_chord_part_return(request, states.FAILURE, exc)
        if request.chain and backend is not None:
            # The rest of the chain will never run: fail its results so waiters see the error.
            from celeriac.workflows import fail_steps

            try:
                fail_steps(self.app, list(request.chain), exc, einfo.traceback)
            except Exception:
                logger.exception("Task %s[%s]: failing its chain failed", task.name, request.id)
        self._call_errbacks(request, exc, einfo)
        task.on_failure(exc, str(request.id), args, kwargs, einfo)
        if signals.task_failure.has_listeners():
            signals.task_failure.send(
                sender=task,
                task_id=request.id,
                exception=exc,
                args=args,
                kwargs=kwargs,
                traceback=einfo.tb,
                einfo=einfo,
            )
        if not self.eager:
            expected = bool(task.throws) and isinstance(exc, task.throws)
            if expected:
                logger.info(FAILURE_LOG, task.name, request.id, exc)
            else:
                logger.error(FAILURE_LOG, task.name, request.id, exc, exc_info=exc)
        return TraceOutcome(states.FAILURE, exc, exc, einfo.traceback, runtime)

    def _call_errbacks(self, request: Context, exc: BaseException, einfo: ExceptionInfo) -> None:
        for errback in request.errbacks or ():
            sig = signature(errback, app=self.app)
            errback_task = self.app.tasks.get(sig.task)
            try:
                if errback_task is not None and _takes_request_exc_tb(errback_task):
                    # Celery calls (request, exc, traceback) errbacks in the failing worker.
                    errback_task(request, exc, einfo.traceback)
                else:
                    sig.apply_async(
                        (request.id,), parent_id=request.id, root_id=request.root_id or request.id
                    )
            except Exception:
                logger.exception(
                    "Task %s[%s]: errback %r failed", self.task.name, request.id, sig.task
                )

    def end(
        self, request: Context, outcome: TraceOutcome, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        task = self.task
        try:
            if outcome.state not in (states.IGNORED, states.REJECTED):
                einfo = ExceptionInfo(outcome.exc) if outcome.exc is not None else None
                task.after_return(
                    outcome.state, outcome.retval, str(request.id), args, kwargs, einfo
                )
            if signals.task_postrun.has_listeners():
                signals.task_postrun.send(
                    sender=task,
                    task_id=request.id,
                    task=task,
                    args=args,
                    kwargs=kwargs,
                    retval=outcome.retval,
                    state=outcome.state,
                )
        finally:
            task.pop_request()
            if self._request_token is not None:
                current_request.reset(self._request_token)
                self._request_token = None
            if self._task_token is not None:
                current_task_var.reset(self._task_token)
                self._task_token = None
            if self._token is not None:
                in_worker_task.reset(self._token)
                self._token = None


def _takes_request_exc_tb(task: Task[Any, Any]) -> bool:
    try:
        params = inspect.signature(task.run).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    # Celery's rule: an errback taking more than one argument is called as (request, exc, tb).
    return len(positional) > 1


def _short_repr(value: Any, limit: int) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def trace_sync(
    tracer: Tracer, request: Context, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> TraceOutcome:
    """Run a task call on this thread; a coroutine function runs on a private event loop."""
    tracer.begin(request, args, kwargs)
    outcome: TraceOutcome | None = None
    try:
        try:
            retval = tracer.task.run(*args, **kwargs)
            if inspect.iscoroutine(retval):
                retval = run_coroutine_sync(retval)
        except Exception as exc:
            outcome = tracer.fail(request, exc, args, kwargs)
        else:
            outcome = tracer.succeed(request, retval, args, kwargs)
        return outcome
    finally:
        tracer.end(request, outcome or TraceOutcome(states.FAILURE, None), args, kwargs)


async def trace_async(
    tracer: Tracer, request: Context, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> TraceOutcome:
    """Run an ``async def`` task call on the running event loop."""
    tracer.begin(request, args, kwargs)
    outcome: TraceOutcome | None = None
    try:
        try:
            retval = tracer.task.run(*args, **kwargs)
            if inspect.isawaitable(retval):
                retval = await retval
        except Exception as exc:
            outcome = tracer.fail(request, exc, args, kwargs)
        except asyncio.CancelledError as exc:
            if exc.args != (TERMINATE_MESSAGE,):
                raise  # a time limit or a worker shutdown: the pool reports it
            terminated = Terminated()
            terminated.__cause__ = exc
            outcome = tracer.fail(request, terminated, args, kwargs)
        else:
            outcome = tracer.succeed(request, retval, args, kwargs)
        return outcome
    finally:
        tracer.end(request, outcome or TraceOutcome(states.FAILURE, None), args, kwargs)


def apply_eager(
    task: Task[Any, Any],
    args: list[Any],
    kwargs: dict[str, Any],
    *,
    link: Any,
    link_error: Any,
    task_id: str | None,
    retries: int,
    throw: bool | None,
    logfile: str | None,
    loglevel: int | None,
    headers: Any,
    options: dict[str, Any],
) -> EagerResult[Any]:
    """``Task.apply``: run the task here as a worker would and wrap the outcome."""
    app = task.app
    task_id = task_id or str(uuid.uuid4())
    if throw is None:
        throw = bool(app.conf.task_eager_propagates)
    time_limit, soft_limit = options.get("time_limit"), options.get("soft_time_limit")
    request = Context(
        id=task_id,
        task=task.name,
        args=args,
        kwargs=kwargs,
        retries=retries,
        is_eager=True,
        called_directly=False,
        logfile=logfile,
        loglevel=loglevel,
        hostname=socket.gethostname(),
        callbacks=maybe_list(link),
        errbacks=maybe_list(link_error),
        headers=headers,
        ignore_result=bool(options.get("ignore_result", False)),
        delivery_info={
            "is_eager": True,
            "exchange": options.get("exchange"),
            "routing_key": options.get("routing_key"),
            "priority": options.get("priority"),
        },
        root_id=options.get("root_id") or task_id,
        parent_id=options.get("parent_id"),
        group=options.get("group_id"),
        group_index=options.get("group_index"),
        chord=options.get("chord"),
        chain=maybe_list(options.get("chain")),
        timelimit=(time_limit, soft_limit),
        properties=options,
        reply_to=options.get("reply_to"),
        correlation_id=task_id,
        shadow=options.get("shadow"),
    )
    tracer = Tracer(task, eager=True, propagate=throw)
    outcome = trace_sync(tracer, request, tuple(args), kwargs)
    if outcome.state == states.RETRY and isinstance(outcome.exc, Retry):
        sig = outcome.exc.sig
        if sig is not None:
            result: EagerResult[Any] = sig.apply(retries=retries + 1, throw=throw)
            return result
    if throw and outcome.state == states.FAILURE and outcome.exc is not None:
        raise outcome.exc
    state = states.FAILURE if outcome.state == states.REJECTED else outcome.state
    return EagerResult(
        task_id, outcome.retval, state, traceback=outcome.traceback, name=task.name, app=app
    )
