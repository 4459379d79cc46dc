"""Remote control across implementations on one Redis (DB 15): Celery's ``celery inspect`` and
``celery control`` against a celeriac worker, and ``celeriac inspect`` against a Celery worker.

celery is a test-only dependency here. Every process is started by PID and stopped in finally.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.background import background
from support.servers import clean_redis_db
from support.waiting import wait_for
from support.workerproc import Project

pytest.importorskip("celery")
pytestmark = [pytest.mark.redis, pytest.mark.interop, pytest.mark.slow]
DB = 15
CELERY = [sys.executable, "-m", "celery"]
CELERIAC = [sys.executable, "-m", "celeriac"]

#: The Celery side: same task names as the celeriac project where it matters.
CELERY_APP = """
import os, time
from celery import Celery

app = Celery("celmod", broker=os.environ["T_BROKER"], backend=os.environ["T_BROKER"])


@app.task(name="celmod.sleepy")
def sleepy(seconds):
    time.sleep(seconds)
    return seconds
"""


@pytest.fixture
def redis_url() -> Iterator[str]:
    with clean_redis_db(DB) as url:
        yield url


@pytest.fixture
def project(tmp_path: Path, redis_url: str) -> Project:
    (tmp_path / "celmod.py").write_text(textwrap.dedent(CELERY_APP))
    return Project(tmp_path, broker=redis_url, backend=redis_url)


def run(project: Project, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        cwd=project.root,
        env=project.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_celery_inspect_and_control_against_a_celeriac_worker(project: Project) -> None:
    app = project.app
    with project.worker("-P", "threads", "-c", "2", "-n", "cel1@%h"):
        out = run(project, *CELERY, "-A", "celmod", "inspect", "ping", "--json")
        assert out.returncode == 0, out.stderr
        replies = json.loads(out.stdout.strip().splitlines()[0])
        node = next(iter(replies))
        assert node.startswith("cel1@") and replies[node] == {"ok": "pong"}

        out = run(project, *CELERY, "-A", "celmod", "inspect", "stats", "--json")
        assert out.returncode == 0, out.stderr
        stats = json.loads(out.stdout.strip().splitlines()[0])[node]
        assert stats["pool"]["max-concurrency"] == 2

        held = app.send_task("proj.mark", ["celery-revoked"], countdown=3)
        out = run(project, *CELERY, "-A", "celmod", "control", "revoke", held.id)
        assert out.returncode == 0, out.stderr
        assert "flagged as revoked" in out.stdout
        wait_for(lambda: app.AsyncResult(held.id).state == "REVOKED", timeout=10, what="REVOKED")
        assert held.id in app.control.inspect(timeout=1).revoked()[node]
        assert app.send_task("proj.add", [2, 2]).get(timeout=15) == 4
    assert "celery-revoked" not in project.executions()


def test_celeriac_inspect_against_a_celery_worker(project: Project) -> None:
    cmd = [
        *CELERY,
        "-A",
        "celmod",
        "worker",
        "-P",
        "threads",
        "-c",
        "2",
        "-n",
        "celw@%h",
        "-l",
        "info",
        "--without-gossip",
    ]
    log = project.root / "celery-worker.log"
    with background(cmd, project.root, project.env, log) as proc:
        wait_for(
            lambda: b"ready." in log.read_bytes() or proc.poll() is not None,
            timeout=30,
            what="celery worker ready",
        )
        assert proc.poll() is None, log.read_text()
        out = run(project, *CELERIAC, "-A", "proj", "inspect", "ping", "--json")
        assert out.returncode == 0, out.stderr
        replies = json.loads(out.stdout)
        node = next(iter(replies))
        assert node.startswith("celw@") and replies[node] == {"ok": "pong"}

        out = run(project, *CELERIAC, "-A", "proj", "inspect", "ping")
        assert "celw@" in out.stdout and "1 node online." in out.stdout

        app = project.app
        result = app.send_task("celmod.sleepy", [4])

        def running() -> bool:
            active = app.control.inspect(timeout=1).active() or {}
            return any(t["id"] == result.id for t in active.get(node, []))

        wait_for(running, timeout=15, what="the Celery worker reports the task active")
        out = run(project, *CELERIAC, "-A", "proj", "inspect", "active", "--json")
        assert out.returncode == 0, out.stderr
        active = json.loads(out.stdout)[node]
        assert active[0]["id"] == result.id and active[0]["name"] == "celmod.sleepy"
        assert result.get(timeout=15) == 4
        out = run(project, *CELERIAC, "-A", "proj", "status")
        assert out.returncode == 0 and "1 node online." in out.stdout


def test_no_worker_answers_exits_69(project: Project) -> None:
    started = time.monotonic()
    out = run(project, *CELERIAC, "-A", "proj", "inspect", "ping", "-t", "0.3")
    assert out.returncode == 69
    assert "No nodes replied" in out.stderr
    assert time.monotonic() - started < 30
