"""``revoke(terminate=True)`` on the asyncio pool: the task stops, only REVOKED is ever stored, and
no failure hook, ``task_failure`` handler or errback runs (as on the thread pools and prefork)."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from celeriac import Celery, signals, states
from celeriac.contrib.testing import start_worker
from celeriac.exceptions import Terminated
from celeriac.worker.job import Job, JobResult
from celeriac.worker.pools.asyncio_pool import AsyncioPool
from celeriac.worker.pools.base import PoolOptions
from celeriac.worker.worker import Worker

from support.waiting import wait_for


@dataclass
class Seen:
    """Everything observable about the tasks of one test."""

    stored: list[tuple[str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    postrun: list[tuple[str, str]] = field(default_factory=list)
    errbacks: list[str] = field(default_factory=list)
    started: set[str] = field(default_factory=set)
    stopped_by: dict[str, str] = field(default_factory=dict)

    def states_of(self, task_id: str) -> list[str]:
        return [state for stored_id, state in self.stored if stored_id == task_id]


@pytest.fixture
def seen(app: Celery, monkeypatch: pytest.MonkeyPatch) -> Iterator[Seen]:
    seen = Seen()
    backend = app.backend
    assert backend is not None
    store_result = backend.store_result

    def recording_store_result(task_id: str, result: Any, state: str, *a: Any, **kw: Any) -> Any:
        seen.stored.append((task_id, state))
        return store_result(task_id, result, state, *a, **kw)

    monkeypatch.setattr(backend, "store_result", recording_store_result)

    def on_failure(sender: Any = None, task_id: Any = None, **_: Any) -> None:
        seen.failures.append(str(task_id))

    def on_postrun(sender: Any = None, task_id: Any = None, state: Any = None, **_: Any) -> None:
        seen.postrun.append((str(task_id), str(state)))

    signals.task_failure.connect(on_failure)
    signals.task_postrun.connect(on_postrun)
    try:
        yield seen
    finally:
        signals.task_failure.disconnect(on_failure)
        signals.task_postrun.disconnect(on_postrun)


@dataclass
class Tasks:
    nap: Any
    spin: Any
    boom: Any
    errback_id: Any
    errback_full: Any
    release: threading.Event


@pytest.fixture
def tasks(app: Celery, seen: Seen) -> Iterator[Tasks]:
    release = threading.Event()

    @app.task(name="term.nap")
    async def nap(seconds: float) -> str:
        seen.started.add(str(nap.request.id))
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            seen.stopped_by[str(nap.request.id)] = "CancelledError"
            raise
        return "slept"

    @app.task(name="term.spin")
    def spin(seconds: float) -> str:
        seen.started.add(str(spin.request.id))
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline and not release.is_set():
                time.sleep(0.02)
        except BaseException as exc:
            seen.stopped_by[str(spin.request.id)] = type(exc).__name__
            raise
        return "spun"

    @app.task(name="term.boom")
    async def boom() -> None:
        await asyncio.sleep(0)
        raise ValueError("kaboom")

    @app.task(name="term.errback_id")
    def errback_id(task_id: str) -> None:
        seen.errbacks.append(task_id)

    @app.task(name="term.errback_full")
    def errback_full(request: Any, exc: Any, traceback: Any) -> None:
        seen.errbacks.append(str(request.id))

    try:
        yield Tasks(nap, spin, boom, errback_id, errback_full, release)
    finally:
        release.set()  # a sync task that was not stopped must not hold the worker's shutdown


def terminate_running(
    app: Celery, worker: Worker, seen: Seen, task: Any, *args: Any, **options: Any
) -> str:
    """Start *task*, revoke it with terminate once it runs, and wait until it is REVOKED."""
    link_error = [app.tasks["term.errback_id"].s(), app.tasks["term.errback_full"].s()]
    result = task.apply_async(args, link_error=link_error, **options)
    wait_for(lambda: result.id in seen.started, timeout=10, what="the task to start")
    replies = app.control.revoke(result.id, terminate=True, reply=True, timeout=5, limit=1)
    assert replies == [{worker.hostname: {"ok": f"terminate: {result.id}"}}]
    wait_for(lambda: result.id in seen.stopped_by, timeout=5, what="the task to stop")
    wait_for(lambda: app.AsyncResult(result.id).state == states.REVOKED, timeout=5, what="REVOKED")
    consumer = worker.consumer
    assert consumer is not None
    wait_for(lambda: not consumer.active, timeout=5, what="the job to leave the pool")
    return str(result.id)


def assert_only_revoked(seen: Seen, task_id: str) -> None:
    # A one-argument errback would be a new task message: give it time to run if it was sent.
    time.sleep(0.3)
    assert seen.states_of(task_id) == [states.REVOKED]
    assert seen.failures == []
    assert seen.errbacks == []
    assert (task_id, states.FAILURE) not in seen.postrun


def test_terminate_async_task_stores_only_revoked(app: Celery, seen: Seen, tasks: Tasks) -> None:
    with start_worker(app, pool="asyncio", concurrency=2) as worker:
        task_id = terminate_running(app, worker, seen, tasks.nap, 30)
        assert seen.stopped_by[task_id] == "CancelledError"
        assert_only_revoked(seen, task_id)
        assert (task_id, states.REVOKED) in seen.postrun
        # The slot is free again and the pool still runs tasks.
        assert tasks.nap.delay(0.01).get(timeout=10) == "slept"


def test_terminate_async_task_with_time_limits(app: Celery, seen: Seen, tasks: Tasks) -> None:
    with start_worker(app, pool="asyncio", concurrency=2) as worker:
        task_id = terminate_running(
            app, worker, seen, tasks.nap, 30, soft_time_limit=20, time_limit=25
        )
        assert seen.stopped_by[task_id] == "CancelledError"
        assert_only_revoked(seen, task_id)


def test_terminate_sync_task_stores_only_revoked(app: Celery, seen: Seen, tasks: Tasks) -> None:
    with start_worker(app, pool="asyncio", concurrency=2) as worker:
        try:
            task_id = terminate_running(app, worker, seen, tasks.spin, 30)
        finally:
            tasks.release.set()  # if it was not stopped, the worker would wait for it
        assert seen.stopped_by[task_id] == Terminated.__name__
        assert_only_revoked(seen, task_id)
        assert (task_id, states.REVOKED) in seen.postrun
        assert tasks.spin.delay(0.01).get(timeout=10) == "spun"


@pytest.mark.parametrize("name", ["term.nap", "term.spin"])
def test_terminate_before_the_job_starts(app: Celery, seen: Seen, tasks: Tasks, name: str) -> None:
    """A job the pool took but has not started yet never starts."""

    async def submit_and_terminate() -> JobResult:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[JobResult] = loop.create_future()
        pool = AsyncioPool(
            app,
            PoolOptions(concurrency=2, hostname="term@host"),
            lambda job, pid: None,
            lambda job, result: done.set_result(result),
        )
        await pool.start(loop)
        try:
            # Hold the pool's loop so that the terminate arrives before the job can start.
            gate = threading.Event()
            assert pool._task_loop is not None
            pool._task_loop.call_soon_threadsafe(gate.wait, 5.0)
            job = Job("term-early", name, [30], {}, {}, {}, {}, {}, "term@host")
            pool.submit(job)
            assert pool.terminate_job(job.id, signal.SIGTERM)
            gate.set()
            return await asyncio.wait_for(done, 10)
        finally:
            await pool.stop(graceful=True)

    result = asyncio.run(submit_and_terminate())
    assert result.state == states.REVOKED
    assert seen.started == set()
    assert seen.stored == [] and seen.failures == [] and seen.postrun == []


def test_failing_async_task_still_fails(app: Celery, seen: Seen, tasks: Tasks) -> None:
    with start_worker(app, pool="asyncio", concurrency=2):
        result = tasks.boom.apply_async(link_error=[tasks.errback_id.s()])
        with pytest.raises(ValueError, match="kaboom"):
            result.get(timeout=10)
        wait_for(lambda: seen.errbacks == [result.id], timeout=5, what="the errback")
    assert seen.states_of(result.id) == [states.FAILURE]
    assert seen.failures == [result.id]
    assert (result.id, states.FAILURE) in seen.postrun
