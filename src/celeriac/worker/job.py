"""A task call handed to a pool, how a pool runs it, and what comes back."""

from __future__ import annotations

import os
import resource
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.app.context import Context
from celeriac.app.trace import TraceOutcome, Tracer, trace_async, trace_sync
from celeriac.protocol.task import TaskMessage

if TYPE_CHECKING:
    from celeriac.app.base import Celery

#: Pseudo-state of a job whose pool process died under it.
WORKER_LOST = "WORKER_LOST"


@dataclass(slots=True)
class Job:
    """Everything a pool (maybe in another process) needs to run one task call."""

    id: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    embed: dict[str, Any]
    headers: dict[str, Any]
    properties: dict[str, Any]
    delivery_info: dict[str, Any]
    hostname: str
    soft_time_limit: float | None = None
    time_limit: float | None = None

    @classmethod
    def from_message(
        cls,
        msg: TaskMessage,
        delivery_info: dict[str, Any],
        hostname: str,
        soft_time_limit: float | None,
        time_limit: float | None,
    ) -> Job:
        return cls(
            msg.id,
            msg.name,
            msg.args,
            msg.kwargs,
            msg.embed,
            msg.headers,
            msg.properties,
            delivery_info,
            hostname,
            soft_time_limit,
            time_limit,
        )

    def context(self) -> Context:
        """The ``self.request`` the task sees."""
        h = self.headers
        return Context(
            id=self.id,
            task=self.name,
            args=self.args,
            kwargs=self.kwargs,
            retries=int(h.get("retries") or 0),
            is_eager=False,
            called_directly=False,
            eta=h.get("eta"),
            expires=h.get("expires"),
            hostname=self.hostname,
            delivery_info=self.delivery_info,
            reply_to=self.properties.get("reply_to"),
            correlation_id=self.properties.get("correlation_id") or self.id,
            root_id=h.get("root_id"),
            parent_id=h.get("parent_id"),
            group=h.get("group"),
            group_index=h.get("group_index"),
            chord=self.embed.get("chord"),
            chain=self.embed.get("chain"),
            callbacks=self.embed.get("callbacks"),
            errbacks=self.embed.get("errbacks"),
            timelimit=(self.time_limit, self.soft_time_limit),
            origin=h.get("origin"),
            headers=h,
            properties=self.properties,
            ignore_result=bool(h.get("ignore_result")),
            shadow=h.get("shadow"),
            stamps=h.get("stamps"),
            stamped_headers=h.get("stamped_headers"),
            replaced_task_nesting=h.get("replaced_task_nesting") or 0,
            argsrepr=h.get("argsrepr"),
            kwargsrepr=h.get("kwargsrepr"),
            worker_pid=os.getpid(),
        )


@dataclass(slots=True)
class JobResult:
    """How a job ended, small enough to cross a pipe."""

    id: str
    state: str
    runtime: float = 0.0
    requeue: bool = False
    retval_repr: str | None = None
    exc_repr: str | None = None
    traceback: str | None = None
    rss_kb: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _short(value: Any, limit: int = 1024) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def to_result(job: Job, outcome: TraceOutcome) -> JobResult:
    result = JobResult(
        job.id, outcome.state, outcome.runtime, outcome.requeue, traceback=outcome.traceback
    )
    if outcome.state == states.SUCCESS:
        result.retval_repr = _short(outcome.retval)
    elif outcome.exc is not None:
        result.exc_repr = _short(outcome.exc)
    return result


def run_job(app: Celery, job: Job) -> JobResult:
    """Run *job* on this thread (threads, solo and prefork pools)."""
    task = app.tasks[job.name]
    tracer = Tracer(task, eager=False, hostname=job.hostname)
    return to_result(job, trace_sync(tracer, job.context(), tuple(job.args), job.kwargs))


async def run_job_async(app: Celery, job: Job) -> JobResult:
    """Run an ``async def`` task's *job* on the running event loop (asyncio pool)."""
    task = app.tasks[job.name]
    tracer = Tracer(task, eager=False, hostname=job.hostname)
    return to_result(job, await trace_async(tracer, job.context(), tuple(job.args), job.kwargs))


def fail_job(app: Celery, job: Job, exc: BaseException, state: str = states.FAILURE) -> JobResult:
    """Record a failure the job itself could not record (killed pool process, hard time limit)."""
    task = app.tasks.get(job.name)
    if task is None:
        return JobResult(job.id, state, exc_repr=_short(exc))
    tracer = Tracer(task, eager=False, hostname=job.hostname or socket.gethostname())
    request = job.context()
    task.push_request(request)
    try:
        outcome = tracer.fail(request, exc, tuple(job.args), job.kwargs)
    finally:
        task.pop_request()
    return to_result(job, outcome)


def current_rss_kb() -> int:
    """This process's peak resident set size in KiB (what max_memory_per_child compares)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
