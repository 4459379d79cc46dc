"""The worker on the real Redis: no re-delivery while the holder lives, recovery when it dies, and
nothing lost across a Redis restart."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from support.redisserver import RedisServer, free_port
from support.servers import redis_url_or_skip
from support.waiting import wait_for
from support.workerproc import Project, count

pytestmark = [pytest.mark.redis, pytest.mark.slow]
DB = 7


@pytest.fixture
def redis_base() -> Iterator[str]:
    base = redis_url_or_skip()
    client = redis.Redis.from_url(f"{base}/{DB}")
    client.flushdb()
    yield base
    client.flushdb()
    client.close()


@pytest.fixture
def project(tmp_path: Path, redis_base: str) -> Project:
    return Project(tmp_path, broker=f"{redis_base}/{DB}", backend=f"{redis_base}/{DB}", T_VT="3")


def test_long_task_and_countdown_run_once_with_short_visibility_timeout(project: Project) -> None:
    app = project.app
    with project.worker("-P", "threads", "-c", "2"), project.worker("-P", "threads", "-c", "2"):
        long_one = app.tasks["proj.slow_late"].delay("long", 10.0)
        delayed = app.tasks["proj.mark"].apply_async(("delayed",), countdown=10)
        assert long_one.get(timeout=40) == "long"
        assert delayed.get(timeout=40) == "delayed"
        time.sleep(4)  # past another visibility timeout: still nothing re-delivered
    runs = project.executions()
    assert count(runs, "start:long") == 1
    assert count(runs, "delayed") == 1


def test_sigkilled_worker_task_completed_by_a_new_worker(project: Project) -> None:
    app = project.app
    with project.worker("-P", "threads", "-c", "1") as first:
        result = app.tasks["proj.slow_late"].delay("orphan", 2.0)
        wait_for(lambda: "start:orphan" in project.executions(), timeout=20)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    with project.worker("-P", "threads", "-c", "1"):
        assert result.get(timeout=40) == "orphan"
    assert count(project.executions(), "end:orphan") == 1


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_redis_restart_mid_load_loses_nothing(tmp_path: Path, pool: str) -> None:
    if not os.path.exists("/usr/bin/redis-server") and not os.path.exists(
        "/usr/local/bin/redis-server"
    ):
        pytest.skip("redis-server is not installed")
    server = RedisServer(free_port(), tmp_path)
    server.start()
    try:
        url = f"redis://127.0.0.1:{server.port}/0"
        project = Project(tmp_path, broker=url, backend=url)
        app = project.app
        mark = app.tasks["proj.mark"]
        n = 20000
        concurrency = "8" if pool == "threads" else "2"
        with project.worker("-P", pool, "-c", concurrency):
            for i in range(n // 2):
                mark.delay(f"m{i}")
            wait_for(lambda: len(project.executions()) > n // 10, timeout=60)
            server.stop()
            time.sleep(1.0)
            server.start()
            for i in range(n // 2, n):
                mark.delay(f"m{i}")
            try:
                wait_for(lambda: len(set(project.executions())) >= n, timeout=240, interval=0.5)
            except AssertionError:
                missing = {f"m{i}" for i in range(n)} - set(project.executions())
                leased = redis.Redis(port=server.port).hlen("unacked")
                pytest.fail(f"{len(missing)} tasks never ran ({leased} leases left): {missing}")
        runs = project.executions()
        assert set(runs) == {f"m{i}" for i in range(n)}
    finally:
        server.stop()
