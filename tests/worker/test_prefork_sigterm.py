"""SIGTERM sent to prefork pool processes (systemd's ``KillMode=control-group`` signals every
process): the running task finishes, and the task queued behind it in that process is not lost."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from celeriac import states

from support.waiting import wait_for
from support.workerproc import Project, count, pid_of

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def test_sigterm_to_pool_process_runs_the_queued_task_elsewhere(project: Project) -> None:
    app = project.app
    with project.worker("-P", "prefork", "-c", "1") as worker:
        running = app.tasks["proj.slow_early"].delay("running", 2.0)
        queued = app.tasks["proj.mark"].delay("queued")
        wait_for(lambda: "start:running" in project.executions(), timeout=20)
        # Both are in the process (default queue depth 2): one runs, one waits behind it.
        victim = pid_of(project, "start:running")
        os.kill(victim, signal.SIGTERM)
        assert running.get(timeout=20) == "running"
        assert queued.get(timeout=20) == "queued"
        assert queued.state == states.SUCCESS
        assert pid_of(project, "queued") != victim  # run by the replacement process
        # The signal was the pool process's alone: the worker did not start shutting down.
        assert b"shutdown" not in Path(worker.log_path).read_bytes()  # type: ignore[attr-defined]
    runs = project.executions()
    assert count(runs, "end:running") == 1
    assert count(runs, "queued") == 1


def test_sigterm_to_every_process_gives_the_queued_task_back(project: Project) -> None:
    app = project.app
    with project.worker("-P", "prefork", "-c", "1") as worker:
        running = app.tasks["proj.slow_early"].delay("running", 2.0)
        queued = app.tasks["proj.mark"].delay("queued")
        wait_for(lambda: "start:running" in project.executions(), timeout=20)
        os.kill(pid_of(project, "start:running"), signal.SIGTERM)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    assert running.get(timeout=5) == "running"
    assert queued.state == states.PENDING  # given back to the broker, not failed
    assert "queued" not in project.executions()
    with project.worker("-P", "prefork", "-c", "1"):
        assert queued.get(timeout=20) == "queued"
    runs = project.executions()
    assert count(runs, "end:running") == 1
    assert count(runs, "queued") == 1
