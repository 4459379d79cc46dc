"""How many jobs wait where: the prefork pool's per-process queues and the prefetch window."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from celeriac import Celery
from celeriac.contrib.testing import start_worker
from celeriac.worker.job import Job, JobResult
from celeriac.worker.pools.base import PoolOptions
from celeriac.worker.pools.prefork import MAX_SHORT_DEPTH, SHORT_TASK, PreforkPool, _Child

from support.waiting import wait_for


def _job(name: str, i: int = 0) -> Job:
    return Job(f"{name}-{i}", name, [], {}, {}, {}, {}, {}, "h")


def _pool(depth: int) -> tuple[PreforkPool, _Child]:
    options = PoolOptions(concurrency=1, hostname="h", process_queue_depth=depth)
    pool = PreforkPool(Celery("q", broker="memory://queueing"), options, _noop, _noop)
    process = type("FakeProcess", (), {"pid": 4242})()
    child = _Child(process=process, conn=None, waiting=lambda: False, starts=_Count())  # type: ignore[arg-type]
    pool._children.append(child)
    return pool, child


class _Count:
    """Stands in for the start count a pool process shares with the supervisor."""

    def __init__(self) -> None:
        self.value = 0


def _noop(*args: Any) -> None:
    pass


def _fill(pool: PreforkPool, child: _Child, name: str) -> int:
    """Queue jobs of *name* in *child* while the pool has room; return how many it took."""
    taken = 0
    while pool._room(child) > 0:
        child.jobs.append(_job(name, taken))
        taken += 1
    return taken


def test_unknown_task_queues_at_most_two_jobs_in_a_process() -> None:
    pool, child = _pool(depth=2)
    assert _fill(pool, child, "t.new") == 2


def test_short_tasks_queue_deeper() -> None:
    pool, child = _pool(depth=2)
    pool._runtime.add("t.short", SHORT_TASK / 10)
    assert _fill(pool, child, "t.short") == MAX_SHORT_DEPTH


def test_a_long_job_closes_the_queue_behind_it() -> None:
    pool, child = _pool(depth=2)
    pool._runtime.add("t.short", SHORT_TASK / 10)
    pool._runtime.add("t.long", 5.0)
    child.jobs.extend([_job("t.short", 1), _job("t.short", 2), _job("t.long")])
    assert pool._room(child) == 0
    child.jobs.clear()
    child.jobs.extend([_job("t.short", 1), _job("t.unknown")])  # no history: not short
    assert pool._room(child) == 0


def test_fair_scheduling_queues_one_job_even_when_short() -> None:
    pool, child = _pool(depth=1)
    pool._runtime.add("t.short", SHORT_TASK / 10)
    assert _fill(pool, child, "t.short") == 1


def test_run_times_are_learned_from_results() -> None:
    pool, child = _pool(depth=2)
    job = _job("t.learn")
    child.jobs.append(job)
    child.started = 1
    pool._job_finished(child, JobResult(job.id, "SUCCESS", runtime=0.0001))
    assert pool._runtime.short(job)
    assert _fill(pool, child, "t.learn") == MAX_SHORT_DEPTH


def test_results_of_jobs_never_started_are_refused() -> None:
    pool, child = _pool(depth=2)
    child.jobs.append(_job("t.x"))
    pool._job_finished(child, JobResult("t.x-0", "SUCCESS"))  # no start was reported
    assert len(child.jobs) == 1


@pytest.mark.parametrize("acks_late", [False, True])
def test_the_prefetch_window_counts_unacked_tasks(app: Celery, acks_late: bool) -> None:
    """As with Celery's prefetch count, the window bounds unacked messages. With a window of one
    and the first task running: acked when it started, it leaves the window and the worker
    reserves the second; acked late, it keeps its place and the second stays in the broker."""
    release = threading.Event()

    @app.task(acks_late=acks_late)
    def hold() -> str:
        release.wait(10)
        return "held"

    first = hold.delay()
    second = hold.delay()
    left = 1 if acks_late else 0
    with start_worker(app, pool="threads", concurrency=1, prefetch_multiplier=1):
        wait_for(lambda: app.transport.queue_length("celery") == left, timeout=10)
        threading.Event().wait(0.5)
        assert app.transport.queue_length("celery") == left
        assert not second.ready()
        release.set()
        assert first.get(timeout=10) == "held"
        assert second.get(timeout=10) == "held"


class _Timer:
    """Stands in for the hard time limit's timer handle."""

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def test_a_late_result_does_not_cancel_the_next_jobs_hard_limit() -> None:
    """A process may start its next job before the previous result is reported (results are
    written behind): that result must leave the running job's hard time limit alone."""
    pool, child = _pool(depth=2)
    first, second = _job("t.a", 1), _job("t.a", 2)
    child.jobs.extend([first, second])
    child.started = 2  # both started; the first ended, its result still on the way
    timer = _Timer()
    child.hard_timer = timer  # type: ignore[assignment]
    pool._job_finished(child, JobResult(first.id, "SUCCESS"))
    assert not timer.cancelled and child.hard_timer is timer
    pool._job_finished(child, JobResult(second.id, "SUCCESS"))
    assert timer.cancelled and child.hard_timer is None


def test_starts_counted_in_shared_memory_are_taken_in() -> None:
    """A process says nothing on its pipe when it starts a short job with more queued behind
    it; the supervisor's periodic look at the count it keeps finds the job started (and acks
    it early) even if the job then runs long."""
    started: list[str] = []
    options = PoolOptions(concurrency=1, hostname="h", process_queue_depth=2)
    pool = PreforkPool(
        Celery("q", broker="memory://queueing"),
        options,
        lambda job, pid: started.append(job.id),
        _noop,
    )
    count = _Count()
    process = type("FakeProcess", (), {"pid": 4242})()
    child = _Child(process=process, conn=None, waiting=lambda: False, starts=count)  # type: ignore[arg-type]
    pool._children.append(child)
    pool.loop = loop = asyncio.new_event_loop()  # holds the next look's timer; never run
    first, second, third = _job("t.s", 1), _job("t.s", 2), _job("t.s", 3)
    child.jobs.extend([first, second, third])
    count.value = 2
    pool._check_starts()
    assert started == [first.id, second.id] and child.started == 2
    pool._job_finished(child, JobResult(first.id, "SUCCESS"))
    pool._check_starts()  # nothing new: the count includes the finished job
    assert started == [first.id, second.id] and child.started == 1
    count.value = 3
    pool._job_finished(child, JobResult(second.id, "SUCCESS"))
    pool._job_finished(child, JobResult(third.id, "SUCCESS"))  # its result implies its start
    assert started == [first.id, second.id, third.id] and not child.jobs
    loop.close()


def test_a_hard_limit_spares_the_process_once_its_job_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job with a time limit ended and a short job started after it without a word on the
    pipe: when the first job's hard limit comes due, the count shows it is no longer running,
    so the process (running the other job) is not killed."""
    killed: list[int] = []
    monkeypatch.setattr(
        "celeriac.worker.pools.prefork.os.kill", lambda pid, sig: killed.append(pid)
    )
    pool, child = _pool(depth=2)
    child.process.is_alive = lambda: True  # type: ignore[attr-defined]
    pool.loop = loop = asyncio.new_event_loop()  # holds the next look's timer; never run
    limited, short = _job("t.limited"), _job("t.short")
    limited.time_limit = 1.0
    child.jobs.extend([limited, short])
    child.started = 1
    child.starts.value = 2  # the short job started; the limited one's result is still held
    pool._hard_limit(child, limited)
    assert killed == [] and child.started == 2
    pool._hard_limit(child, short)  # the job that does run is still stopped at its limit
    assert killed == [4242]
    loop.close()
