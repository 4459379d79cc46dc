"""The ``asyncio`` pool: up to ``concurrency`` tasks at once on one event loop in a thread.

``async def`` tasks run natively on that loop; a sync task runs on a helper thread so it never
blocks the others. Time limits cancel the asyncio task: at the soft limit the task sees
``CancelledError`` (it may clean up), and the outcome is ``SoftTimeLimitExceeded``; at the hard
limit it is cancelled again and fails with ``TimeLimitExceeded``.

``revoke(terminate=True)`` cancels an ``async def`` task with :data:`TERMINATE_MESSAGE`, which the
tracer records as :class:`~celeriac.exceptions.Terminated`, and raises ``Terminated`` in the
helper thread of a sync task, as the thread pools do: either way the job ends as REVOKED, with no
FAILURE stored and no failure hooks run.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celeriac.app.trace import TERMINATE_MESSAGE
from celeriac.exceptions import SoftTimeLimitExceeded, Terminated, TimeLimitExceeded
from celeriac.worker.job import Job, JobResult, fail_job, run_job, run_job_async
from celeriac.worker.limits import ThreadLimits
from celeriac.worker.pools.base import Pool


class AsyncioPool(Pool):
    """See the module docstring."""

    name = "asyncio"
    native_async = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._task_loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sync_executor: ThreadPoolExecutor | None = None
        # Submitted and not finished yet, on the worker's loop.
        self._jobs: set[str] = set()
        # On the task loop: each job's task, an async job's traced call, and the terminated jobs.
        self._tasks: dict[str, asyncio.Task[JobResult]] = {}
        self._work: dict[str, asyncio.Future[JobResult]] = {}
        self._terminated: set[str] = set()
        self._running = 0
        self._idle = asyncio.Event()
        self._limits = ThreadLimits()

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        ready = threading.Event()
        self._sync_executor = ThreadPoolExecutor(
            self.concurrency, thread_name_prefix="celeriac-sync"
        )

        def serve() -> None:
            self._task_loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._task_loop)
            ready.set()
            self._task_loop.run_forever()
            self._task_loop.close()

        self._thread = threading.Thread(target=serve, name="celeriac-asyncio-pool", daemon=True)
        self._thread.start()
        await asyncio.get_running_loop().run_in_executor(None, ready.wait)
        self._idle.set()

    @property
    def free_slots(self) -> int:
        return self.concurrency - self._running

    def submit(self, job: Job) -> None:
        assert self._task_loop is not None
        self._running += 1
        self._idle.clear()
        self._jobs.add(job.id)
        self._task_loop.call_soon_threadsafe(self._spawn, job)

    def _spawn(self, job: Job) -> None:
        task = asyncio.ensure_future(self._run(job))
        self._tasks[job.id] = task

    async def _run(self, job: Job) -> JobResult:
        self.call_on_loop(self.on_start, job, os.getpid())
        try:
            result = await self._limited(job)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and job.id in self._terminated:
                exc = Terminated()  # the task replaced the terminating cancellation with its own
            result = fail_job(self.app, job, exc)
        finally:
            self._tasks.pop(job.id, None)
            self._work.pop(job.id, None)
            self._terminated.discard(job.id)
        self.call_on_loop(self._finished, job, result)
        return result

    async def _limited(self, job: Job) -> JobResult:
        task = self.app.tasks[job.name]
        if not (inspect.iscoroutinefunction(task.run) or task._is_async):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._sync_executor, self._run_sync, job)
        if job.id in self._terminated:  # terminated before it started
            raise Terminated()
        work: asyncio.Future[JobResult] = asyncio.ensure_future(run_job_async(self.app, job))
        self._work[job.id] = work
        soft, hard = job.soft_time_limit, job.time_limit
        if not soft and not hard:
            return await work
        first = soft or hard
        done, _ = await asyncio.wait({work}, timeout=first)
        if done:
            return work.result()
        if soft and (not hard or soft < hard):
            work.cancel()
            remaining = (hard - soft) if hard else None
            done, _ = await asyncio.wait({work}, timeout=remaining)
            if done and not work.cancelled() and work.exception() is None:
                return work.result()
            if not done:
                work.cancel()
                return fail_job(self.app, job, TimeLimitExceeded(hard))
            return fail_job(self.app, job, SoftTimeLimitExceeded())
        work.cancel()
        return fail_job(self.app, job, TimeLimitExceeded(hard))

    def _run_sync(self, job: Job) -> JobResult:
        with self._limits.guard(job.id, job.soft_time_limit, job.time_limit, TimeLimitExceeded):
            # Checked once this thread is registered: a terminate from now on interrupts it.
            if job.id in self._terminated:
                raise Terminated()
            return run_job(self.app, job)

    def _finished(self, job: Job, result: JobResult) -> None:
        self._running -= 1
        self._jobs.discard(job.id)
        if self._running == 0:
            self._idle.set()
        self.on_done(job, result)

    async def stop(self, graceful: bool) -> None:
        if graceful:
            await self._idle.wait()
        elif self._task_loop is not None:
            for task in list(self._tasks.values()):
                self._task_loop.call_soon_threadsafe(task.cancel)
        if self._task_loop is not None:
            self._task_loop.call_soon_threadsafe(self._task_loop.stop)
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5.0)
        if self._sync_executor is not None:
            self._sync_executor.shutdown(wait=graceful, cancel_futures=True)

    def terminate_job(self, job_id: str, signum: int) -> bool:
        if job_id not in self._jobs or self._task_loop is None:
            return False
        # On the task loop, after this job's _spawn: a job that has not started yet is found too.
        self._task_loop.call_soon_threadsafe(self._terminate, job_id)
        return True

    def _terminate(self, job_id: str) -> None:
        if job_id not in self._tasks:
            return  # it ended meanwhile
        self._terminated.add(job_id)
        work = self._work.get(job_id)
        if work is not None:
            work.cancel(TERMINATE_MESSAGE)
        else:
            # A sync job on its helper thread; one not on it yet sees _terminated there.
            self._limits.interrupt(job_id, Terminated)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "running": self._running}
