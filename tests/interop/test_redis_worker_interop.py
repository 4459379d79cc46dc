"""Mixed fleets on one Redis: a Celery client's tasks run on a celeriac worker and a celeriac
client's tasks on a Celery worker, and each side reads the other's results."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from support.servers import redis_url_or_skip
from support.workerproc import Project, running, stop

pytestmark = [pytest.mark.redis, pytest.mark.interop, pytest.mark.slow]
DB = 6

CELERY_PROJECT = """
import os, time
from celery import Celery

app = Celery("cproj", broker=os.environ["T_BROKER"], backend=os.environ["T_BACKEND"])
app.conf.result_extended = True
LOG = os.environ["T_LOG"]


def record(tag):
    with open(LOG, "a") as fh:
        fh.write(f"{tag} {os.getpid()}\\n")


@app.task(name="proj.add")
def add(x, y):
    return x + y


@app.task(name="proj.mark")
def mark(tag):
    record(tag)
    return tag


@app.task(name="proj.boom")
def boom(text):
    raise ValueError(text)


@app.task(name="proj.retry_twice", bind=True, max_retries=3)
def retry_twice(self, tag):
    record(f"try:{tag}:{self.request.retries}:{time.time()}")
    if self.request.retries < 2:
        raise self.retry(countdown=0.5)
    return "ok"
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = redis_url_or_skip()
    url = f"{base}/{DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    root = tmp_path_factory.mktemp("interop")
    project = Project(root, broker=url, backend=url, T_EXTENDED="1")
    (root / "cproj.py").write_text(textwrap.dedent(CELERY_PROJECT))
    celeriac_app = project.app  # sets the T_* variables both projects read
    sys.path.insert(0, str(root))
    import cproj  # type: ignore[import-not-found]

    try:
        yield {"project": project, "celeriac": celeriac_app, "celery": cproj.app, "root": root}
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("cproj", None)
        cproj.app.close()
        client.flushdb()
        client.close()


@pytest.fixture(scope="module")
def celery_worker(env: dict[str, Any]) -> Iterator[subprocess.Popen[bytes]]:
    project: Project = env["project"]
    args = ["-P", "threads", "-c", "2", "-Q", "celery,email", "-n", "celeryside@%h"]
    with running(
        [sys.executable, "-m", "celery", "-A", "cproj", "worker", "-l", "info", *args],
        cwd=env["root"],
        env=project.env,
        log_path=env["root"] / "celery-worker.log",
    ) as proc:
        yield proc


def _run_scenarios(client: Any, reader: Any, other_reader: Any, project: Project) -> None:
    """Send through *client*'s app, check results through both apps' AsyncResult."""
    send = client.send_task
    r = send("proj.add", args=[2, 3])
    assert r.get(timeout=30) == 5
    assert other_reader.AsyncResult(r.id).get(timeout=30) == 5
    extended = reader.AsyncResult(r.id)
    extended.get(timeout=30)
    assert extended.name == "proj.add"
    assert list(extended.args) == [2, 3]
    assert extended.queue == "celery"
    assert extended.worker

    r = send("proj.add", kwargs={"x": 1, "y": 2})
    assert other_reader.AsyncResult(r.id).get(timeout=30) == 3

    started = time.time()
    r = send("proj.mark", args=["countdown"], countdown=1.5)
    assert reader.AsyncResult(r.id).get(timeout=30) == "countdown"
    assert time.time() - started >= 1.4

    r = send("proj.mark", args=["routed"], queue="email", priority=5)
    assert other_reader.AsyncResult(r.id).get(timeout=30) == "routed"

    past = datetime.now(UTC) - timedelta(seconds=5)
    r = send("proj.mark", args=["expired"], expires=past)
    with pytest.raises(Exception) as info:
        other_reader.AsyncResult(r.id).get(timeout=30)
    assert "revoked" in repr(info.value).lower() or "Revoked" in type(info.value).__name__
    assert "expired" not in project.executions()

    r = send("proj.retry_twice", args=["rt"])
    assert reader.AsyncResult(r.id).get(timeout=30) == "ok"

    r = send("proj.boom", args=["kaboom"])
    with pytest.raises(ValueError, match="kaboom"):
        other_reader.AsyncResult(r.id).get(timeout=30)
    failed = reader.AsyncResult(r.id)
    with pytest.raises(ValueError):
        failed.get(timeout=30)
    assert "ValueError: kaboom" in (failed.traceback or "")


def test_celery_client_to_celeriac_worker(env: dict[str, Any]) -> None:
    project: Project = env["project"]
    with project.worker("-P", "threads", "-c", "2", "-Q", "celery,email"):
        _run_scenarios(env["celery"], env["celeriac"], env["celeriac"], project)


def test_celeriac_client_to_celery_worker(
    env: dict[str, Any], celery_worker: subprocess.Popen[bytes]
) -> None:
    _run_scenarios(env["celeriac"], env["celeriac"], env["celery"], env["project"])
    stop(celery_worker)
