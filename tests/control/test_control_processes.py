"""Remote control with real worker processes: revoke (before run, with terminate), inspect across
two workers, mingle to a worker started later, --statedb across restarts. SQLite broker unless
the test says Redis (DB 12)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from support.servers import redis_url_or_skip
from support.waiting import wait_for
from support.workerproc import Project

pytestmark = pytest.mark.slow
REDIS_DB = 12


#: A task that sleeps in short steps: a thread can only be interrupted between Python
#: instructions, so a thread pool stops it at once (a single long C-level sleep would finish
#: first; a prefork child is signalled and stops either way).
NAPPER = """

@app.task
def napper(tag, seconds):
    record(f"start:{tag}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    record(f"end:{tag}")
    return tag
"""


def _with_napper(project: Project) -> Project:
    with open(project.root / "proj.py", "a") as fh:
        fh.write(NAPPER)
    return project


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return _with_napper(Project(tmp_path))


@pytest.fixture
def redis_project(tmp_path: Path) -> Iterator[Project]:
    url = f"{redis_url_or_skip()}/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield _with_napper(Project(tmp_path, broker=url, backend=url))
    finally:
        client.flushdb()
        client.close()


def _state(app: Any, task_id: str) -> str:
    return str(app.AsyncResult(task_id).state)


def _started(project: Project, tag: str) -> bool:
    return f"start:{tag}" in project.executions()


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_revoke_with_terminate_stops_the_running_task(project: Project, pool: str) -> None:
    app = project.app
    with project.worker("-P", pool, "-c", "1", "-E"):
        result = app.send_task("proj.napper", ["t", 30])
        wait_for(lambda: _started(project, "t"), timeout=15, what="task started")
        replies = app.control.revoke(result.id, terminate=True, signal="SIGTERM", reply=True)
        assert replies and "terminate:" in next(iter(replies[0].values()))["ok"]
        wait_for(lambda: _state(app, result.id) == "REVOKED", timeout=10, what="REVOKED")
        # The worker is still serving, and the stopped task never finished.
        assert app.send_task("proj.add", [2, 3]).get(timeout=15) == 5
        assert "end:t" not in project.executions()
        assert result.id in app.control.inspect(timeout=1).revoked()[_one(app)]


def _one(app: Any) -> str:
    replies = app.control.inspect(timeout=1).ping()
    assert replies and len(replies) == 1, replies
    return str(next(iter(replies)))


def test_revoke_before_run_never_runs(project: Project) -> None:
    app = project.app
    with project.worker("-P", "threads", "-c", "1"):
        held = app.send_task("proj.mark", ["eta"], countdown=2)
        busy = app.send_task("proj.slow_early", ["busy", 1.5])
        queued = app.send_task("proj.mark", ["queued"])  # waits behind the busy task
        wait_for(lambda: _started(project, "busy"), timeout=15, what="busy task started")
        app.control.revoke([held.id, queued.id])
        wait_for(lambda: _state(app, held.id) == "REVOKED", timeout=10, what="eta REVOKED")
        wait_for(lambda: _state(app, queued.id) == "REVOKED", timeout=10, what="queued REVOKED")
        busy.get(timeout=15)
        assert app.send_task("proj.mark", ["after"]).get(timeout=15) == "after"
    assert "eta" not in project.executions()
    assert "queued" not in project.executions()


def test_inspect_answers_from_two_workers(project: Project) -> None:
    app = project.app
    with (
        project.worker("-P", "threads", "-c", "2", "-n", "w1@%h"),
        project.worker("-P", "threads", "-c", "2", "-n", "w2@%h"),
    ):
        inspect = app.control.inspect(timeout=1.5)
        pings = inspect.ping()
        nodes = sorted(pings)
        assert [n.split("@")[0] for n in nodes] == ["w1", "w2"]
        assert all(v == {"ok": "pong"} for v in pings.values())
        running = [app.send_task("proj.slow_early", [f"s{i}", 3]) for i in range(2)]
        wait_for(
            lambda: _started(project, "s0") and _started(project, "s1"),
            timeout=15,
            what="both started",
        )
        active = inspect.active()
        ids = {t["id"] for tasks in active.values() for t in tasks}
        assert ids == {r.id for r in running}
        task = next(t for tasks in active.values() for t in tasks)
        assert task["name"] == "proj.slow_early" and task["acknowledged"] is True
        assert set(task["delivery_info"]) == {"exchange", "routing_key", "priority", "redelivered"}
        stats = inspect.stats()
        assert set(stats) == set(nodes)
        assert {
            "total",
            "pid",
            "clock",
            "uptime",
            "pool",
            "broker",
            "prefetch_count",
            "rusage",
        } <= set(stats[nodes[0]])
        assert "proj.add" in inspect.registered()[nodes[0]]
        assert inspect.active_queues()[nodes[1]][0]["name"] == "celery"
        only = app.control.inspect(destination=[nodes[0]], timeout=1.5).ping()
        assert list(only) == [nodes[0]]
        single = app.control.inspect(destination=nodes[1], timeout=1.5).ping()
        assert single == {"ok": "pong"}
        glob = app.control.inspect(pattern="w2@*", matcher="glob", timeout=1.5).ping()
        assert list(glob) == [nodes[1]]
        for r in running:
            r.get(timeout=15)


def test_mingle_shares_revoked_ids_with_a_worker_started_later(project: Project) -> None:
    app = project.app
    task_id = "mingle-revoked-1"
    with project.worker("-P", "threads", "-Q", "other", "-n", "a@%h"):
        app.control.revoke(task_id)
        wait_for(
            lambda: (
                task_id in (app.control.inspect(timeout=1).revoked() or {}).get(_node(app, "a"), [])
            ),
            timeout=10,
            what="a knows the revoked id",
        )
        with project.worker("-P", "threads", "-n", "b@%h"):
            revoked = app.control.inspect(timeout=1).revoked()
            assert task_id in revoked[_node(app, "b")]
            result = app.send_task("proj.mark", ["mingled"], task_id=task_id)
            wait_for(lambda: _state(app, result.id) == "REVOKED", timeout=10, what="REVOKED")
            assert app.send_task("proj.mark", ["next"]).get(timeout=15) == "next"
    assert "mingled" not in project.executions()


def _node(app: Any, name: str) -> str:
    pings = app.control.inspect(timeout=1).ping() or {}
    return next(n for n in pings if n.startswith(f"{name}@"))


def test_statedb_keeps_revoked_ids_across_a_restart(project: Project) -> None:
    app = project.app
    statedb = str(project.root / "worker.state")
    task_id = "statedb-revoked-1"
    with project.worker("-P", "threads", "--statedb", statedb):
        app.control.revoke(task_id, reply=True)
    assert task_id in Path(statedb).read_text()
    with project.worker("-P", "threads", "--statedb", statedb, "--without-mingle"):
        assert task_id in app.control.inspect(timeout=1).revoked()[_one(app)]
        result = app.send_task("proj.mark", ["persisted"], task_id=task_id)
        wait_for(lambda: _state(app, result.id) == "REVOKED", timeout=10, what="REVOKED")
        assert app.send_task("proj.mark", ["next"]).get(timeout=15) == "next"
    assert "persisted" not in project.executions()


@pytest.mark.redis
@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_redis_revoke_terminate_and_inspect(redis_project: Project, pool: str) -> None:
    project = redis_project
    app = project.app
    with project.worker("-P", pool, "-c", "1"):
        assert app.control.inspect(timeout=1).ping()
        result = app.send_task("proj.napper", ["r", 30])
        wait_for(lambda: _started(project, "r"), timeout=15, what="task started")
        active = app.control.inspect(timeout=1).active()
        assert [t["id"] for t in next(iter(active.values()))] == [result.id]
        result.revoke(terminate=True)
        wait_for(lambda: _state(app, result.id) == "REVOKED", timeout=10, what="REVOKED")
        held = app.send_task("proj.mark", ["late"], countdown=2)
        held.revoke()
        wait_for(lambda: _state(app, held.id) == "REVOKED", timeout=10, what="REVOKED")
        assert app.send_task("proj.add", [1, 1]).get(timeout=15) == 2
    assert "late" not in project.executions()
    assert "end:r" not in project.executions()
