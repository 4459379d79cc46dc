"""The real command line in subprocesses: ``python -m celeriac`` / the ``celeriac`` script against a
worker started with ``celeriac -A proj worker -P threads``, over a broker processes share.

The SQLite broker (a file in tmp_path) is the one these tests are written for; the same tests run
over Redis (DB 14) as well.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_project import write_project

from celeriac import Celery
from celeriac.protocol.message import Message, Outgoing

from support.servers import redis_url_or_skip
from support.waiting import wait_for

pytestmark = pytest.mark.slow

REDIS_DB = 14
SCRIPT = Path(sys.executable).with_name("celeriac")


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@dataclass
class Project:
    root: Path
    broker: str
    backend: str | None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "CELERIAC_"))}
        env.pop("NO_COLOR", None)
        return env

    def cli(
        self, *args: str, script: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        command = [str(SCRIPT)] if script else [sys.executable, "-m", "celeriac"]
        return subprocess.run(
            [*command, "-A", "proj", *args],
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def app(self) -> Celery:
        """A client app in this process, on the same broker."""
        return Celery("client", broker=self.broker, backend=self.backend, set_as_current=False)


@pytest.fixture(params=["sqlite", "redis"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    if request.param == "sqlite":
        if not _have("celeriac.transports.sqlite"):
            pytest.skip("needs the SQLite transport (celeriac.transports.sqlite), not present yet")
        broker = f"sqlite:///{tmp_path / 'broker.db'}"
        backend = (
            f"sqlite:///{tmp_path / 'results.db'}" if _have("celeriac.backends.sqlite") else None
        )
    else:
        base = redis_url_or_skip()
        broker = f"{base}/{REDIS_DB}"
        import redis

        redis.Redis.from_url(broker).flushdb()
        backend = broker if _have("celeriac.backends.redis") else None
    write_project(tmp_path, broker, backend)
    yield Project(tmp_path, broker, backend)


@pytest.fixture
def worker(project: Project) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``celeriac -A proj worker -P threads -c 2 -l info``, stopped with SIGTERM by pid."""
    logfile = project.root / "worker.log"
    output = open(project.root / "worker.out", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celeriac",
            "-A",
            "proj",
            "worker",
            "-P",
            "threads",
            "-c",
            "2",
            "-l",
            "info",
            "-f",
            str(logfile),
            "-n",
            "cli-test@%h",
        ],
        cwd=project.root,
        env=project.env(),
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: logfile.exists() and "ready." in logfile.read_text(),
            timeout=30,
            what=f"the worker to start (output: {project.root / 'worker.out'})",
        )
        yield proc, logfile
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        output.close()


def test_banner_then_call_and_result_through_a_worker(
    project: Project, worker: tuple[subprocess.Popen[bytes], Path]
) -> None:
    _, logfile = worker
    banner = (project.root / "worker.out").read_text()
    assert "cli-test@" in banner and "proj.tasks.add" in banner and "(threads)" in banner
    if project.backend is None:
        pytest.skip("needs a result store shared across processes (not present yet)")
    sent = project.cli("call", "proj.tasks.add", "--args", "[2, 3]")
    assert sent.returncode == 0, sent.stderr
    task_id = sent.stdout.strip()
    got = project.cli("result", task_id, "--timeout", "30")
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "5"
    # The task's own log line carries its name and id (worker_task_log_format).
    wait_for(
        lambda: f"proj.tasks.add[{task_id}]: adding 2 + 3" in logfile.read_text(),
        timeout=10,
        what="the task's log line",
    )
    failed_id = project.cli("call", "proj.tasks.fail", script=True).stdout.strip()
    failed = project.cli("result", failed_id, "--timeout", "30")
    assert failed.returncode == 1
    assert "ValueError: boom" in failed.stderr
    traceback = project.cli("result", failed_id, "--traceback")
    assert "Traceback" in traceback.stdout and "ValueError: boom" in traceback.stdout


def test_purge_counts_messages(project: Project) -> None:
    assert project.cli("call", "proj.tasks.add", "--args", "[1, 1]").returncode == 0
    with project.app() as app:
        for _ in range(2):
            app.send_task("proj.tasks.add", args=[1, 1])
    result = project.cli("purge", "-f", script=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Purged 3 messages from 1 known task queue."
    assert project.cli("purge", "-f").stdout.strip() == "No messages purged from 1 queue."


def test_a_missing_app_is_exit_code_2(tmp_path: Path) -> None:
    result = Project(tmp_path, "memory://", None).cli("-A", "nothere", "call", "x", script=True)
    assert result.returncode == 2
    assert "the module 'nothere' was not found" in result.stderr
    assert "Traceback" not in result.stderr


def publish_malformed(app: Celery, task_id: str) -> None:
    message = Message(
        body=b"\x00 not a task body",
        headers={"lang": "py", "task": "proj.tasks.add", "id": task_id, "root_id": task_id},
        properties={"correlation_id": task_id, "delivery_mode": 2, "priority": 0},
        content_type="application/x-unknown",
        content_encoding="binary",
    )
    app.transport.declare(app.queue_for("celery"))
    app.transport.publish([Outgoing(message, "", "celery")])


def test_dlq_commands_after_the_worker_dead_letters(
    project: Project, worker: tuple[subprocess.Popen[bytes], Path]
) -> None:
    proc, _ = worker
    with project.app() as app:
        publish_malformed(app, "bad-1")
        publish_malformed(app, "bad-2")
        wait_for(
            lambda: len(app.transport.dead_letters()) == 2,
            timeout=30,
            what="the worker to dead-letter both malformed messages",
        )
        # Stop the worker so a requeued message is not dead-lettered again at once.
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)

        listed = project.cli("dlq", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = {row["task_id"]: row for row in json.loads(listed.stdout)}
        assert set(rows) == {"bad-1", "bad-2"}
        assert all(
            row["task"] == "proj.tasks.add" and row["queue"] == "celery" for row in rows.values()
        )
        assert all(row["reason"] for row in rows.values())
        table = project.cli("dlq", "list", script=True).stdout
        assert "bad-1" in table and "bad-2" in table

        shown = project.cli("dlq", "show", rows["bad-1"]["id"])
        assert shown.returncode == 0, shown.stderr
        assert "application/x-unknown" in shown.stdout
        assert "body (raw bytes):" in shown.stdout and "not a task body" in shown.stdout

        requeued = project.cli("dlq", "requeue", rows["bad-1"]["id"])
        assert requeued.stdout.strip() == "Requeued 1 dead-lettered message."
        assert app.transport.queue_length("celery") == 1
        purged = project.cli("dlq", "purge", rows["bad-2"]["id"], "-f")
        assert purged.stdout.strip() == "Deleted 1 dead-lettered message."
        assert json.loads(project.cli("dlq", "list", "--json").stdout) == []
