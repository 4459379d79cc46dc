"""Flower (test-only dependency) watching a celeriac worker on Redis (DB 13): the worker is listed
online and its tasks appear, checked through Flower's HTTP API. Flower and the worker are started
by PID and stopped in finally."""

from __future__ import annotations

import json
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from support.background import background
from support.redisserver import free_port
from support.servers import port_open, redis_url_or_skip
from support.waiting import wait_for
from support.workerproc import Project

pytest.importorskip("flower")
pytestmark = [pytest.mark.redis, pytest.mark.interop, pytest.mark.slow]
DB = 13

#: Flower runs on Celery: it only needs an app pointing at the same broker.
FLOWER_APP = """
import os
from celery import Celery

app = Celery("flowerapp", broker=os.environ["T_BROKER"], backend=os.environ["T_BROKER"])
"""


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    url = f"{redis_url_or_skip()}/{DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    (tmp_path / "flowerapp.py").write_text(textwrap.dedent(FLOWER_APP))
    try:
        yield Project(tmp_path, broker=url, backend=url, FLOWER_UNAUTHENTICATED_API="true")
    finally:
        client.flushdb()
        client.close()


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return json.loads(resp.read())


def test_flower_lists_a_celeriac_worker_and_its_tasks(project: Project) -> None:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "flowerapp",
        "flower",
        f"--port={port}",
        "--address=127.0.0.1",
        "--inspect_timeout=3000",
    ]
    log = project.root / "flower.log"
    with background(cmd, project.root, project.env, log) as flower:
        wait_for(
            lambda: port_open("127.0.0.1", port, 0.2) or flower.poll() is not None,
            timeout=30,
            what="flower listening",
        )
        assert flower.poll() is None, log.read_text()
        with project.worker("-P", "threads", "-c", "2", "-E", "-n", "flw@%h"):
            app = project.app
            ok = app.send_task("proj.add", [20, 22])
            bad = app.send_task("proj.boom", ["kaboom"])
            assert ok.get(timeout=15) == 42
            bad.get(timeout=15, propagate=False)

            def online() -> str | None:
                status = _get(port, "/api/workers?status=1")
                return next(
                    (n for n, alive in status.items() if n.startswith("flw@") and alive), None
                )

            node = wait_for(online, timeout=20, what="flower shows the worker online")
            # A refresh joins an inspection already running (Flower's own one at start, sent
            # before the worker existed), so ask again until the worker is in the answer.
            workers = wait_for(
                lambda: (w := _get(port, "/api/workers?refresh=1")) and node in w and w,
                timeout=20,
                what="flower inspects the worker",
            )
            assert "proj.add" in workers[node]["registered"]
            assert workers[node]["stats"]["pool"]["max-concurrency"] == 2

            def tasks() -> dict[str, Any] | None:
                seen = _get(port, "/api/tasks")
                done = (
                    seen.get(ok.id, {}).get("state") == "SUCCESS"
                    and seen.get(bad.id, {}).get("state") == "FAILURE"
                )
                return seen if done else None

            seen = wait_for(tasks, timeout=20, what="flower shows the tasks")
            assert seen[ok.id]["name"] == "proj.add"
            assert seen[ok.id]["worker"] == node
            assert seen[ok.id]["result"] == "42"
            assert "kaboom" in seen[bad.id]["exception"]
