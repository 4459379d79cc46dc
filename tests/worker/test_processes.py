"""The worker as users run it: real OS processes on the embedded SQLite broker."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from celeriac.exceptions import TimeLimitExceeded, WorkerLostError

from support.waiting import wait_for
from support.workerproc import Project, child_pids, count, stop

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo", "asyncio"])
def test_every_pool_runs_sync_and_async_tasks(project: Project, pool: str) -> None:
    app = project.app
    with project.worker("-P", pool, "-c", "2"):
        assert app.tasks["proj.add"].delay(2, 3).get(timeout=20) == 5
        assert app.tasks["proj.async_add"].delay(4, 5).get(timeout=20) == 9


def test_sigkill_pool_process_requeues_late_ack_task(project: Project) -> None:
    app = project.app
    with project.worker("-P", "prefork", "-c", "2") as worker:
        result = app.tasks["proj.slow_late"].delay("victim", 2.0)
        wait_for(lambda: "start:victim" in project.executions(), timeout=20)
        pids = child_pids(worker.pid)
        victim = [p for p in pids if _runs(project, p)]
        assert victim, "the pool process running the task was not found"
        os.kill(victim[0], signal.SIGKILL)
        assert result.get(timeout=30) == "victim"
        runs = project.executions()
        assert count(runs, "start:victim") == 2
        assert count(runs, "end:victim") == 1
        assert app.tasks["proj.add"].delay(1, 1).get(timeout=20) == 2  # pool replaced


def _runs(project: Project, pid: int) -> bool:
    return any(
        line.endswith(f" {pid}") and line.startswith("start:")
        for line in project.log.read_text().splitlines()
    )


def test_prefork_soft_and_hard_time_limits(project: Project) -> None:
    app = project.app
    with project.worker("-P", "prefork", "-c", "2"):
        assert app.tasks["proj.soft_limited"].delay().get(timeout=20) == "soft limit caught"
        with pytest.raises(TimeLimitExceeded):
            app.tasks["proj.hard_limited"].delay().get(timeout=20)
        assert app.tasks["proj.add"].delay(2, 2).get(timeout=20) == 4


def test_max_tasks_per_child_recycles_without_losing_tasks(project: Project) -> None:
    app = project.app
    with project.worker("-P", "prefork", "-c", "1", "--max-tasks-per-child", "3"):
        pids = [app.tasks["proj.pid"].delay().get(timeout=20) for _ in range(7)]
    assert len(set(pids)) == 3
    assert all(len([p for p in pids if p == x]) <= 3 for x in set(pids))


def test_max_memory_per_child_recycles_without_losing_tasks(project: Project) -> None:
    app = project.app
    # 1 KiB: every process is over it after its first task and is retired. A job already in
    # its pipe when the result is checked still runs there, so a process runs one or two.
    with project.worker("-P", "prefork", "-c", "1", "--max-memory-per-child", "1"):
        pids = [app.tasks["proj.pid"].delay().get(timeout=20) for _ in range(6)]
    assert len(set(pids)) >= 3
    assert all(pids.count(p) <= 2 for p in set(pids))


def test_warm_shutdown_finishes_running_and_gives_back_the_rest(project: Project) -> None:
    app = project.app
    slow = app.tasks["proj.slow_early"]
    with project.worker("-P", "prefork", "-c", "2") as worker:
        for i in range(6):
            slow.delay(f"t{i}", 1.0)
        wait_for(
            lambda: sum(1 for e in project.executions() if e.startswith("start:")) >= 2, timeout=20
        )
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    started = [e for e in project.executions() if e.startswith("start:")]
    ended = [e for e in project.executions() if e.startswith("end:")]
    assert len(started) == len(ended)  # running tasks finished
    with project.worker("-P", "prefork", "-c", "2"):
        wait_for(
            lambda: len([e for e in project.executions() if e.startswith("end:")]) == 6,
            timeout=30,
            what="all six tasks done exactly once",
        )
    runs = project.executions()
    for i in range(6):
        assert count(runs, f"end:t{i}") == 1


def test_cold_shutdown_requeues_running_late_ack_tasks(project: Project) -> None:
    app = project.app
    with project.worker("-P", "prefork", "-c", "1") as worker:
        app.tasks["proj.slow_late"].delay("cold", 3.0)
        wait_for(lambda: "start:cold" in project.executions(), timeout=20)
        worker.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    assert "end:cold" not in project.executions()
    with project.worker("-P", "prefork", "-c", "1"):
        wait_for(lambda: "end:cold" in project.executions(), timeout=30)


def test_retries_with_countdown_across_processes(project: Project) -> None:
    app = project.app
    with project.worker("-P", "prefork", "-c", "2"):
        assert app.tasks["proj.retry_twice"].delay("r").get(timeout=30) == "ok"
    tries = [
        line.split()[0] for line in project.log.read_text().splitlines() if line.startswith("try:r")
    ]
    assert [t.split(":")[2] for t in tries] == ["0", "1", "2"]
    times = [float(t.split(":")[3]) for t in tries]
    assert times[1] - times[0] >= 0.45 and times[2] - times[1] >= 0.45


def test_no_message_lost_or_duplicated_under_load(project: Project) -> None:
    app = project.app
    mark = app.tasks["proj.mark"]
    n = 2000
    with project.worker("-P", "prefork", "-c", "2"), project.worker("-P", "threads", "-c", "4"):
        results = [mark.delay(f"m{i}") for i in range(n)]
        for r in results:
            r.get(timeout=60)
    runs = project.executions()
    assert len(runs) == n
    assert len(set(runs)) == n


def test_a_short_task_that_kills_its_process_is_lost_once_and_the_rest_run(
    project: Project,
) -> None:
    """Pool processes say little about starting short tasks with more queued behind them: the
    supervisor reads a count they keep in shared memory. When such a process dies, that count
    still tells the job it ran (lost, not run again: it was acked early) from the ones queued
    behind it (run by the replacement process). Jobs before it ran; a result that was still
    waiting to be written when the process died is lost with it (WorkerLostError)."""
    app = project.app
    task = app.tasks["proj.mark_or_die"]
    with project.worker("-P", "prefork", "-c", "1"):
        for r in [task.delay(f"warm{i}") for i in range(50)]:  # now known to be short
            r.get(timeout=30)
        batch = [task.delay(f"b{i}", die=i == 10) for i in range(30)]
        outcomes = []
        for r in batch:
            try:
                outcomes.append(r.get(timeout=30))
            except WorkerLostError:
                outcomes.append("lost")
        time.sleep(0.5)  # a second run of the lost task would show up meanwhile
    assert outcomes[10] == "lost"
    assert outcomes[11:] == [f"b{i}" for i in range(11, 30)]
    assert all(outcomes[i] in (f"b{i}", "lost") for i in range(10))
    runs = [r for r in project.executions() if r.startswith("b")]
    assert sorted(runs) == sorted(f"b{i}" for i in range(30))


def test_prefork_without_a_result_backend_runs_every_task_once(tmp_path: Path) -> None:
    """No result store: a pool process reports a result together with its next start."""
    project = Project(tmp_path)
    project.env["T_BACKEND"] = ""  # no result store at all
    app = project.app
    assert app.backend is None
    mark = app.tasks["proj.mark"]
    n = 500
    with project.worker("-P", "prefork", "-c", "2") as worker:
        for i in range(n):
            mark.delay(f"nb{i}")
        wait_for(lambda: len(project.executions()) >= n, timeout=60, what="every task ran")
        time.sleep(0.5)  # a duplicate would show up meanwhile
        # A warm shutdown waits for every result: it ends at once only if all were reported.
        assert stop(worker, timeout=10) == 0
    runs = project.executions()
    assert sorted(runs) == sorted(f"nb{i}" for i in range(n))


def test_idle_worker_uses_almost_no_cpu(project: Project) -> None:
    with project.worker("-P", "prefork", "-c", "2") as worker:
        time.sleep(1.0)
        before = _cpu_seconds(worker.pid)
        time.sleep(3.0)
        used = _cpu_seconds(worker.pid) - before
    assert used < 0.3, f"idle worker used {used:.2f}s CPU in 3s"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
