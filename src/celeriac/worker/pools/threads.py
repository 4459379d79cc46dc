"""Thread pools: ``threads`` (N threads) and ``solo`` (one thread).

Unlike Celery's solo pool, ``solo`` runs its one task on a thread of its own, so the worker keeps
answering control commands and sending heartbeats while a task runs.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celeriac.exceptions import Terminated, TimeLimitExceeded
from celeriac.worker.job import Job, JobResult, fail_job, run_job
from celeriac.worker.limits import ThreadLimits
from celeriac.worker.pools.base import Pool


class ThreadPool(Pool):
    """Runs each job on one of ``concurrency`` threads; ``async def`` tasks get a thread's loop."""

    name = "threads"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._executor: ThreadPoolExecutor | None = None
        self._running = 0
        self._lock = threading.Lock()
        self._limits = ThreadLimits()
        self._idle = asyncio.Event()

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="celeriac-task")
        self._idle.set()

    @property
    def free_slots(self) -> int:
        return self.concurrency - self._running

    def submit(self, job: Job) -> None:
        assert self._executor is not None
        self._running += 1
        self._idle.clear()
        self._executor.submit(self._run, job)

    def _run(self, job: Job) -> None:
        self.call_on_loop(self.on_start, job, os.getpid())
        try:
            with self._limits.guard(job.id, job.soft_time_limit, job.time_limit, TimeLimitExceeded):
                result = run_job(self.app, job)
        except TimeLimitExceeded as exc:
            result = fail_job(self.app, job, exc)
        except BaseException as exc:  # Terminated or a bug in the worker itself
            result = fail_job(self.app, job, exc)
        self.call_on_loop(self._finished, job, result)

    def _finished(self, job: Job, result: JobResult) -> None:
        self._running -= 1
        if self._running == 0:
            self._idle.set()
        self.on_done(job, result)

    async def stop(self, graceful: bool) -> None:
        if graceful:
            await self._idle.wait()
        if self._executor is not None:
            self._executor.shutdown(wait=graceful, cancel_futures=True)

    def terminate_job(self, job_id: str, signum: int) -> bool:
        return self._limits.interrupt(job_id, Terminated)

    def grow(self, n: int = 1) -> None:
        super().grow(n)
        if self._executor is not None:
            self._executor._max_workers = self.concurrency  # the executor reads it per submit

    def info(self) -> dict[str, Any]:
        return {**super().info(), "running": self._running}


class SoloPool(ThreadPool):
    """One task at a time (``-P solo``)."""

    name = "solo"

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.options.concurrency = 1
        await super().start(loop)
