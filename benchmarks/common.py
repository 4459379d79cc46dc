"""Shared helpers for the benchmarks: temp projects, worker processes, timing, ratio tables."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")

CELERIAC_APP = """
import os
from celeriac import Celery
app = Celery("bench", broker=os.environ["B_BROKER"], backend=os.environ.get("B_BACKEND") or None)
app.conf.worker_hijack_root_logger = True

@app.task(name="bench.noop")
def noop(i=0):
    return i

@app.task(name="bench.noop_ignored", ignore_result=True)
def noop_ignored(i=0):
    return i
"""

CELERY_APP = """
import os
from celery import Celery
app = Celery("bench", broker=os.environ["B_BROKER"], backend=os.environ.get("B_BACKEND") or None)

@app.task(name="bench.noop")
def noop(i=0):
    return i

@app.task(name="bench.noop_ignored", ignore_result=True)
def noop_ignored(i=0):
    return i
"""


def project_dir() -> Path:
    root = Path(tempfile.mkdtemp(prefix="celeriac-bench-"))
    (root / "celeriac_bench.py").write_text(textwrap.dedent(CELERIAC_APP))
    (root / "celery_bench.py").write_text(textwrap.dedent(CELERY_APP))
    sys.path.insert(0, str(root))
    return root


def env_for(broker: str, backend: str | None) -> dict[str, str]:
    env = {**os.environ, "B_BROKER": broker, "B_BACKEND": backend or ""}
    os.environ.update({"B_BROKER": broker, "B_BACKEND": backend or ""})
    return env


@contextmanager
def worker(
    kind: str, root: Path, env: dict[str, str], *args: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a celeriac or Celery worker (prefork, 2 processes unless told) and stop it by PID."""
    module = "celeriac_bench" if kind == "celeriac" else "celery_bench"
    tool = "celeriac" if kind == "celeriac" else "celery"
    cmd = [sys.executable, "-m", tool, "-A", module, "worker", "-l", "warning", *args]
    with open(root / f"{kind}-worker.log", "ab") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def table(title: str, rows: list[tuple[str, float, str]], baseline: float | None = None) -> None:
    """Print rows of (name, value, unit); with a baseline, each row's ratio to it."""
    print(f"\n== {title}")
    for name, value, unit in rows:
        ratio = f"  x{value / baseline:.2f}" if baseline else ""
        print(f"  {name:<48} {value:>12,.1f} {unit}{ratio}")
