"""Real worker processes in tests: a project in a temp dir, started by PID, always stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from support.waiting import wait_for

PROJECT_TASKS = """
import asyncio, os, time
from celeriac import Celery

app = Celery("proj", broker=os.environ["T_BROKER"], backend=os.environ.get("T_BACKEND"))
app.conf.update(worker_hijack_root_logger=True)
if os.environ.get("T_VT"):
    app.conf.broker_transport_options = {"visibility_timeout": float(os.environ["T_VT"])}
if os.environ.get("T_EXTENDED"):
    app.conf.result_extended = True
LOG = os.environ["T_LOG"]


def record(tag):
    # One line per execution, appended atomically: tests count executions across processes.
    with open(LOG, "a") as fh:
        fh.write(f"{tag} {os.getpid()}\\n")


@app.task
def add(x, y):
    return x + y


@app.task
def mark(tag):
    record(tag)
    return tag


@app.task(acks_late=True, reject_on_worker_lost=True)
def slow_late(tag, seconds):
    record(f"start:{tag}")
    time.sleep(seconds)
    record(f"end:{tag}")
    return tag


@app.task
def mark_or_die(tag, die=False):
    record(tag)
    if die:
        os.kill(os.getpid(), 9)
    return tag


@app.task
def slow_early(tag, seconds):
    record(f"start:{tag}")
    time.sleep(seconds)
    record(f"end:{tag}")
    return tag


@app.task
def pid():
    return os.getpid()


@app.task(soft_time_limit=0.5, time_limit=5)
def soft_limited():
    from celeriac.exceptions import SoftTimeLimitExceeded
    try:
        time.sleep(10)
    except SoftTimeLimitExceeded:
        return "soft limit caught"
    return "not interrupted"


@app.task(time_limit=0.5)
def hard_limited():
    time.sleep(10)


@app.task
async def async_add(x, y):
    await asyncio.sleep(0.01)
    return x + y


@app.task(bind=True)
def boom(self, text):
    raise ValueError(text)


@app.task(bind=True, max_retries=3, retry_backoff=False)
def retry_twice(self, tag):
    record(f"try:{tag}:{self.request.retries}:{time.time()}")
    if self.request.retries < 2:
        raise self.retry(countdown=0.5)
    return "ok"
"""


class Project:
    """A temp dir with ``proj.py``, a SQLite broker and a log file counting executions."""

    def __init__(
        self, root: Path, broker: str | None = None, backend: str | None = None, **env: str
    ) -> None:
        self.root = root
        self.log = root / "executions.log"
        self.log.touch()
        (root / "proj.py").write_text(textwrap.dedent(PROJECT_TASKS))
        self.broker = broker or f"sqlite:///{root / 'broker.db'}"
        self.backend = backend or (
            f"sqlite:///{root / 'results.db'}" if self.broker.startswith("sqlite") else None
        )
        self.env = {
            **os.environ,
            "T_BROKER": self.broker,
            "T_LOG": str(self.log),
            "PYTHONPATH": str(root),
        }
        if self.backend:
            self.env["T_BACKEND"] = self.backend
        self.env.update(env)
        self._app = None

    @property
    def app(self):  # type: ignore[no-untyped-def]
        """The project's app, imported in the test process."""
        if self._app is None:
            for key in ("T_VT", "T_EXTENDED", "T_BACKEND"):
                os.environ.pop(key, None)
            os.environ.update({k: v for k, v in self.env.items() if k.startswith("T_")})
            sys.path.insert(0, str(self.root))
            sys.modules.pop("proj", None)
            import proj  # type: ignore[import-not-found]

            self._app = proj.app
            sys.path.remove(str(self.root))
        return self._app

    def executions(self) -> list[str]:
        return [line.split()[0] for line in self.log.read_text().splitlines() if line.strip()]

    @contextmanager
    def worker(self, *args: str, ready_timeout: float = 20.0) -> Iterator[subprocess.Popen[bytes]]:
        """Run ``celeriac -A proj worker ARGS`` until the block ends (SIGTERM, then SIGKILL)."""
        with running(
            [sys.executable, "-m", "celeriac", "-A", "proj", "worker", "-l", "info", *args],
            cwd=self.root,
            env=self.env,
            log_path=self.root / f"worker-{time.monotonic_ns()}.log",
            ready=b" ready.",
            timeout=ready_timeout,
        ) as proc:
            yield proc


@contextmanager
def running(
    cmd: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    log_path: Path,
    ready: bytes = b"ready.",
    timeout: float = 60.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run *cmd* (output to *log_path*) once *ready* shows in its log; stop it by PID after."""
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(
                lambda: ready in log_path.read_bytes() or proc.poll() is not None,
                timeout=timeout,
                what=f"ready in {log_path.name}",
            )
            if proc.poll() is not None:
                raise AssertionError(log_path.read_text())
            proc.log_path = str(log_path)  # type: ignore[attr-defined]
            yield proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int | None:
    """SIGTERM the worker and wait; SIGKILL it (and its children) if it does not stop."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_tree(proc.pid)
            proc.wait(5)
    return proc.returncode


def child_pids(pid: int) -> list[int]:
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return []
    return [int(p) for p in out.split()]


def kill_tree(pid: int) -> None:
    for child in child_pids(pid):
        kill_tree(child)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def pid_of(project: Project, tag: str) -> int:
    """The pid of the process that recorded *tag* first."""
    for line in project.log.read_text().splitlines():
        name, pid = line.split()
        if name == tag:
            return int(pid)
    raise AssertionError(f"{tag} not recorded")


def count(items: Sequence[str], value: str) -> int:
    return sum(1 for item in items if item == value)
