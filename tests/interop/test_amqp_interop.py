"""Mixed fleets on one RabbitMQ, results over rpc://: a Celery client's tasks run on a celeriac
worker and a celeriac client's tasks on a Celery worker (``celery worker -P threads``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from support.amqpvhost import private_vhost
from support.workerproc import Project, running

pytestmark = [pytest.mark.amqp, pytest.mark.interop, pytest.mark.slow]

CELERY_PROJECT = """
import os, time
from celery import Celery

app = Celery("cproj", broker=os.environ["T_BROKER"].replace("amqp://", "pyamqp://"),
             backend="rpc://")
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
    with private_vhost("celeriac-interop") as url:
        root = tmp_path_factory.mktemp("amqp-interop")
        project = Project(root, broker=url, backend="rpc://")
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
            celeriac_app.close()


@pytest.fixture
def celery_worker(env: dict[str, Any]) -> Iterator[subprocess.Popen[bytes]]:
    project: Project = env["project"]
    args = [
        "-P",
        "threads",
        "-c",
        "2",
        "-Q",
        "celery,email",
        "-n",
        "celeryside@%h",
        "--without-mingle",
        "--without-gossip",
    ]
    with running(
        [sys.executable, "-m", "celery", "-A", "cproj", "worker", "-l", "info", *args],
        cwd=env["root"],
        env=project.env,
        log_path=env["root"] / "celery-worker.log",
    ) as proc:
        yield proc


def _run_scenarios(app: Any, project: Project) -> None:
    """Send through *app* and read the results it gets back over rpc://."""
    send = app.send_task
    assert send("proj.add", args=[2, 3]).get(timeout=30) == 5
    assert send("proj.add", kwargs={"x": 1, "y": 2}).get(timeout=30) == 3

    many = [send("proj.add", args=[i, i]) for i in range(20)]
    assert [r.get(timeout=30) for r in many] == [2 * i for i in range(20)]

    started = time.time()
    assert send("proj.mark", args=["countdown"], countdown=1.5).get(timeout=30) == "countdown"
    assert time.time() - started >= 1.4

    assert send("proj.mark", args=["routed"], queue="email", priority=5).get(timeout=30) == (
        "routed"
    )

    past = datetime.now(UTC) - timedelta(seconds=5)
    r = send("proj.mark", args=["expired"], expires=past)
    with pytest.raises(Exception) as info:
        r.get(timeout=30)
    assert "revoked" in repr(info.value).lower() or "Revoked" in type(info.value).__name__
    assert "expired" not in project.executions()

    assert send("proj.retry_twice", args=["rt"]).get(timeout=30) == "ok"

    r = send("proj.boom", args=["kaboom"])
    with pytest.raises(ValueError, match="kaboom"):
        r.get(timeout=30)


def test_celery_client_to_celeriac_worker(env: dict[str, Any]) -> None:
    project: Project = env["project"]
    with project.worker("-P", "threads", "-c", "2", "-Q", "celery,email"):
        _run_scenarios(env["celery"], project)


def test_celeriac_client_to_celery_worker(
    env: dict[str, Any], celery_worker: subprocess.Popen[bytes]
) -> None:
    _run_scenarios(env["celeriac"], env["project"])
