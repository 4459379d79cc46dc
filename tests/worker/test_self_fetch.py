"""Prefork pool processes fetching their own tasks from Redis (``pools.self_fetch``): each task
runs once, what needs the worker's process is handed to it, and a process's death, a warm
shutdown, a revoke, a recycle and a short visibility timeout lose and repeat nothing."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from celeriac import states
from celeriac.exceptions import TaskRevokedError, WorkerLostError

from support.servers import clean_redis_db
from support.waiting import wait_for
from support.workerproc import Project, count, pid_of

pytestmark = [pytest.mark.redis, pytest.mark.slow]
DB = 1


@pytest.fixture
def url() -> Iterator[str]:
    with clean_redis_db(DB) as url:
        yield url


@pytest.fixture
def client(url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(url)
    yield c
    c.close()


@pytest.fixture
def project(tmp_path: Path, url: str) -> Project:
    return Project(tmp_path, broker=url, backend=url, T_VT="60")


def _stats(project: Project) -> dict[str, Any]:
    replies = wait_for(lambda: project.app.control.inspect(timeout=2).stats(), timeout=15)
    [stats] = replies.values()
    return stats  # type: ignore[no-any-return]


def _no_leases(client: redis.Redis) -> bool:
    return client.hlen("unacked") == 0 and client.zcard("unacked_index") == 0


def test_plain_tasks_run_once_in_the_pool_processes(project: Project, client: redis.Redis) -> None:
    app = project.app
    mark = app.tasks["proj.mark"]
    with project.worker("-P", "prefork", "-c", "2") as worker:
        stats = _stats(project)
        assert stats["pool"]["self-fetching"] is True
        results = [mark.delay(f"t{i}") for i in range(300)]
        assert [r.get(timeout=30) for r in results] == [f"t{i}" for i in range(300)]
        wait_for(lambda: _no_leases(client), timeout=10, what="every lease acked")
        wait_for(
            lambda: _stats(project)["total"].get("proj.mark") == 300,
            timeout=10,
            what="the pool processes' counts in stats",
        )
        pool_pids = set(_stats(project)["pool"]["processes"])
    runs = project.executions()
    assert all(count(runs, f"t{i}") == 1 for i in range(300))
    pids = {int(line.split()[1]) for line in project.log.read_text().splitlines()}
    assert pids <= pool_pids and worker.pid not in pids


def test_tasks_that_need_the_worker_are_handed_to_it(project: Project, client: redis.Redis) -> None:
    app = project.app
    mark = app.tasks["proj.mark"]
    revoked_id = "revoked-before-it-came"
    with project.worker("-P", "prefork", "-c", "2"):
        app.control.revoke(revoked_id)
        sent = time.monotonic()
        eta = mark.apply_async(("eta",), countdown=1.5)
        expired = mark.apply_async(("expired",), expires=datetime.now(UTC) - timedelta(seconds=5))
        late = app.tasks["proj.slow_late"].delay("late", 0.1)
        soft = app.tasks["proj.soft_limited"].delay()
        revoked = mark.apply_async(("revoked",), task_id=revoked_id)
        unknown = app.send_task("proj.not_a_task", args=[1])
        plain = mark.delay("plain")
        assert plain.get(timeout=20) == "plain"
        assert late.get(timeout=20) == "late"
        assert soft.get(timeout=20) == "soft limit caught"
        assert eta.get(timeout=20) == "eta"
        assert time.monotonic() - sent >= 1.4
        wait_for(lambda: expired.state == states.REVOKED, timeout=10, what="expired revoked")
        wait_for(lambda: revoked.state == states.REVOKED, timeout=10, what="revoked")
        dead = wait_for(lambda: app.transport.dead_letters(), timeout=10, what="dead letter")
        assert [d.message.headers.get("id") for d in dead] == [unknown.id]
        assert "proj.not_a_task" in dead[0].reason
        assert _stats(project)["pool"]["self-fetching"] is True
        wait_for(lambda: _no_leases(client), timeout=10, what="every lease settled")
    runs = project.executions()
    assert "expired" not in runs and "revoked" not in runs
    assert count(runs, "eta") == 1 and count(runs, "end:late") == 1


def test_a_killed_pool_process_loses_its_task_and_gives_back_the_rest(
    project: Project, client: redis.Redis
) -> None:
    app = project.app
    # Queued before the worker starts: its one process fetches all four at once.
    long = app.tasks["proj.slow_early"].delay("long", 30)
    queued = [app.tasks["proj.mark"].delay(f"q{i}") for i in range(3)]
    with project.worker("-P", "prefork", "-c", "1"):
        wait_for(lambda: "start:long" in project.executions(), timeout=20)
        assert client.llen("celery") == 0  # the three wait in the process's batch
        os.kill(pid_of(project, "start:long"), signal.SIGKILL)
        with pytest.raises(WorkerLostError):
            long.get(timeout=20)
        assert [r.get(timeout=20) for r in queued] == ["q0", "q1", "q2"]
        wait_for(lambda: _no_leases(client), timeout=10, what="every lease settled")
    runs = project.executions()
    assert count(runs, "start:long") == 1 and "end:long" not in runs
    assert all(count(runs, f"q{i}") == 1 for i in range(3))
    assert pid_of(project, "q0") != pid_of(project, "start:long")


def test_warm_shutdown_gives_back_what_did_not_start(project: Project, client: redis.Redis) -> None:
    app = project.app
    slow = app.tasks["proj.slow_early"]
    results = [slow.delay(f"s{i}", 0.3) for i in range(30)]
    with project.worker("-P", "prefork", "-c", "2") as worker:
        wait_for(lambda: len(project.executions()) >= 4, timeout=20)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    runs = project.executions()
    started = [r for r in runs if r.startswith("start:")]
    assert len([r for r in runs if r.startswith("end:")]) == len(started)  # each finished
    assert _no_leases(client)
    assert client.llen("celery") == 30 - len(started)
    with project.worker("-P", "prefork", "-c", "2"):
        assert [r.get(timeout=30) for r in results] == [f"s{i}" for i in range(30)]
    runs = project.executions()
    assert all(count(runs, f"start:s{i}") == 1 for i in range(30))


def test_revoke_with_terminate_stops_a_self_fetched_task(project: Project) -> None:
    app = project.app
    with project.worker("-P", "prefork", "-c", "1"):
        task = app.tasks["proj.slow_early"].delay("term", 30)
        wait_for(lambda: "start:term" in project.executions(), timeout=20)
        active = wait_for(lambda: _active_ids(project), timeout=10, what="inspect active")
        assert task.id in active
        app.control.revoke(task.id, terminate=True)
        with pytest.raises(TaskRevokedError):
            task.get(timeout=20)
        assert task.state == states.REVOKED
        assert app.tasks["proj.mark"].delay("after").get(timeout=20) == "after"
    assert "end:term" not in project.executions()


def _active_ids(project: Project) -> list[str]:
    replies = project.app.control.inspect(timeout=2).active() or {}
    return [r["id"] for requests in replies.values() for r in requests]


def test_max_tasks_per_child_recycles_processes_without_losing_tasks(project: Project) -> None:
    app = project.app
    results = [app.tasks["proj.mark"].delay(f"m{i}") for i in range(12)]
    with project.worker("-P", "prefork", "-c", "1", "--max-tasks-per-child", "3"):
        assert [r.get(timeout=30) for r in results] == [f"m{i}" for i in range(12)]
    runs = project.executions()
    assert all(count(runs, f"m{i}") == 1 for i in range(12))
    pids = [int(line.split()[1]) for line in project.log.read_text().splitlines()]
    assert len(set(pids)) == 4
    assert all(pids.count(p) == 3 for p in set(pids))


def test_leases_of_a_held_batch_are_renewed(tmp_path: Path, url: str) -> None:
    project = Project(tmp_path, broker=url, backend=url, T_VT="2")
    app = project.app
    long = app.tasks["proj.slow_early"].delay("long", 5)
    queued = [app.tasks["proj.mark"].delay(f"q{i}") for i in range(3)]
    with project.worker("-P", "prefork", "-c", "1"), project.worker("-P", "prefork", "-c", "1"):
        assert long.get(timeout=30) == "long"
        assert [r.get(timeout=30) for r in queued] == ["q0", "q1", "q2"]
        time.sleep(1.0)  # a restored copy would run now
    runs = project.executions()
    assert count(runs, "start:long") == 1
    assert all(count(runs, f"q{i}") == 1 for i in range(3))


def test_turning_task_events_on_hands_fetching_back_to_the_worker(project: Project) -> None:
    app = project.app
    mark = app.tasks["proj.mark"]
    with project.worker("-P", "prefork", "-c", "2"):
        assert mark.delay("before").get(timeout=20) == "before"
        app.control.enable_events()
        wait_for(
            lambda: _stats(project)["pool"]["self-fetching"] is False,
            timeout=10,
            what="fetching handed back",
        )
        results = [mark.delay(f"e{i}") for i in range(50)]
        assert [r.get(timeout=30) for r in results] == [f"e{i}" for i in range(50)]
    runs = project.executions()
    assert all(count(runs, f"e{i}") == 1 for i in range(50))


def test_a_task_for_the_worker_goes_to_a_process_that_waits(project: Project) -> None:
    app = project.app
    # Sent first, it goes to the first process told to fetch: the one the worker would pick
    # first were it not running `long`.
    long = app.tasks["proj.slow_early"].delay("long", 20)
    with project.worker("-P", "prefork", "-c", "2"):
        wait_for(lambda: "start:long" in project.executions(), timeout=20)
        busy = pid_of(project, "start:long")
        for i in range(3):
            # Due soon: the worker holds it, then sends it to the process not running `long`.
            eta = app.tasks["proj.mark"].apply_async((f"eta{i}",), countdown=0.2)
            assert eta.get(timeout=5) == f"eta{i}"
            assert pid_of(project, f"eta{i}") != busy
        long.revoke(terminate=True)


def test_a_process_waiting_for_messages_is_woken_for_the_workers_task(project: Project) -> None:
    app = project.app
    with project.worker("-P", "prefork", "-c", "1"):
        assert app.tasks["proj.mark"].delay("warm-up").get(timeout=20) == "warm-up"
        for i in range(5):
            time.sleep(0.3)  # the process waits in BRPOP (up to half a second per call)
            sent = time.monotonic()
            eta = app.tasks["proj.mark"].apply_async((f"eta{i}",), countdown=0.2)
            assert eta.get(timeout=5) == f"eta{i}"
            # Without the wake-up it would wait out its BRPOP, often longer than this.
            assert time.monotonic() - sent < 0.2 + 0.25


def test_results_in_another_database_of_the_broker_redis(
    tmp_path: Path, url: str, client: redis.Redis
) -> None:
    # The results go out with the fetches, on the broker's connections, in their own database.
    with clean_redis_db(5) as results_url:
        project = Project(tmp_path, broker=url, backend=results_url, T_VT="60")
        results = redis.Redis.from_url(results_url)
        try:
            mark = project.app.tasks["proj.mark"]
            with project.worker("-P", "prefork", "-c", "2"):
                assert _stats(project)["pool"]["self-fetching"] is True
                for round_ in range(3):  # fetching goes on in the broker's database
                    sent = [mark.delay(f"r{round_}-{i}") for i in range(100)]
                    assert [r.get(timeout=30) for r in sent] == [
                        f"r{round_}-{i}" for i in range(100)
                    ]
            metas = results.keys("celery-task-meta-*")
            assert len(metas) == 300
            assert all(0 < results.ttl(k) <= 86400 for k in metas[:20])
            assert client.keys("celery-task-meta-*") == []
            assert _no_leases(client)
        finally:
            results.close()
