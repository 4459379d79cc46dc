"""Real beat and worker processes on SQLite and Redis: cadence, failover, restart, idle CPU.

Executions are counted by a worker process (the ``proj.mark`` task appends a line to a file);
sends are read from the beats' logs, where each names its entry's due time: a due time sent
twice would be a double send.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from support.waiting import wait_for
from support.workerproc import Project, kill_tree, stop

REDIS_DB = 8
SEND = re.compile(r"Sending due task (\S+) \(\S+\) due=(\S+)")


@pytest.fixture(params=["sqlite", "redis"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Project:
    broker = None
    if request.param == "redis":
        import redis

        base = request.getfixturevalue("redis_server")
        redis.Redis.from_url(f"{base}/{REDIS_DB}").flushdb()
        broker = f"{base}/{REDIS_DB}"
    return Project(tmp_path, broker=broker, T_BACKEND="")


def configure(project: Project, every: float) -> None:
    (project.root / "beatconf.py").write_text(
        f"beat_schedule = {{'tick': {{'task': 'proj.mark', 'schedule': {every!r}, "
        "'args': ('beat',)}}\n"
    )


@contextmanager
def beat(project: Project, *args: str, name: str = "beat") -> Iterator[subprocess.Popen[bytes]]:
    """``celeriac -A proj --config beatconf beat -l info ARGS``; stopped by PID at the end."""
    log = project.root / f"{name}.log"
    out = open(log, "ab")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celeriac",
            "-A",
            "proj",
            "--config",
            "beatconf",
            "beat",
            "-l",
            "info",
            *args,
        ],
        cwd=project.root,
        env=project.env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    proc.log_path = log  # type: ignore[attr-defined]
    try:
        wait_for(
            lambda: b"beat: Starting" in log.read_bytes() or proc.poll() is not None,
            timeout=20,
            what=f"{name} started",
        )
        assert proc.poll() is None, log.read_text()
        yield proc
    finally:
        if proc.poll() is None:
            stop(proc, timeout=10)
        out.close()


def sends(project: Project) -> list[tuple[str, str]]:
    """Every (entry, due time) any beat of the project logged as sent."""
    found: list[tuple[str, str]] = []
    for log in sorted(project.root.glob("beat*.log")):
        found.extend(SEND.findall(log.read_text()))
    return found


def executions(project: Project) -> int:
    return project.executions().count("beat")


def leading(proc: subprocess.Popen[bytes]) -> bool:
    return b"beat: Leading" in Path(proc.log_path).read_bytes()  # type: ignore[attr-defined]


def assert_no_double_send(project: Project) -> None:
    sent = sends(project)
    assert len(sent) == len(set(sent)), f"a due time was sent twice: {sent}"


def test_one_second_interval_runs_about_n_times_in_n_seconds(project: Project) -> None:
    configure(project, 1.0)
    with project.worker("-P", "threads", "-c", "2"):
        with beat(project):
            wait_for(lambda: executions(project) >= 1, timeout=15, what="first run")
            start = time.monotonic()
            wait_for(lambda: time.monotonic() - start >= 5.0, timeout=10, interval=0.1)
        elapsed = time.monotonic() - start
        # Every send is executed once by the worker (delivery latency does not matter here).
        wait_for(
            lambda: executions(project) == len(sends(project)),
            timeout=10,
            what="every send executed",
        )
    ran = executions(project)
    assert 5 <= ran <= elapsed + 2, (ran, elapsed)
    stamps = [time_of(due) for _, due in sends(project)]
    assert all(abs(b - a - 1.0) < 1e-3 for a, b in itertools.pairwise(stamps)), stamps
    assert_no_double_send(project)


def test_standby_takes_over_when_the_leader_is_killed(project: Project) -> None:
    configure(project, 1.0)
    ttl = 1.5
    with ExitStack() as stack:
        stack.enter_context(project.worker("-P", "threads", "-c", "2"))
        first = stack.enter_context(beat(project, "--lock-timeout", str(ttl), name="beat-a"))
        wait_for(lambda: leading(first), timeout=10, what="beat-a leads")
        second = stack.enter_context(beat(project, "--lock-timeout", str(ttl), name="beat-b"))
        wait_for(
            lambda: b"Standing by" in Path(second.log_path).read_bytes(),  # type: ignore[attr-defined]
            timeout=10,
            what="beat-b stands by",
        )
        wait_for(lambda: executions(project) >= 3, timeout=15, what="runs under beat-a")
        before = len(sends(project))
        os.kill(first.pid, signal.SIGKILL)
        first.wait(5)
        killed_at = time.monotonic()
        wait_for(lambda: leading(second), timeout=10, what="beat-b takes over")
        took = time.monotonic() - killed_at
        assert took <= ttl + 2.0, took
        wait_for(lambda: len(sends(project)) >= before + 3, timeout=10, what="runs under beat-b")
        wait_for(
            lambda: executions(project) == len(sends(project)),
            timeout=10,
            what="every send executed",
        )
    assert_no_double_send(project)
    # At most one interval's worth of runs lost: the missed ones are sent once on takeover.
    stamps = sorted(time_of(due) for _, due in sends(project))
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert max(gaps) <= ttl + 2.0, gaps


def time_of(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def test_restart_neither_repeats_nor_skips(project: Project) -> None:
    configure(project, 2.0)
    with project.worker("-P", "threads", "-c", "2"):
        with beat(project, name="beat-1"):
            wait_for(lambda: len(sends(project)) >= 2, timeout=15, what="two runs")
        sent_before = sends(project)
        # Restart at once: the last run is not sent again.
        with beat(project, name="beat-2") as again:
            wait_for(lambda: leading(again), timeout=10, what="beat-2 leads")
            wait_for(
                lambda: len(sends(project)) >= len(sent_before) + 1, timeout=10, what="next run"
            )
            assert sends(project)[: len(sent_before)] == sent_before
        last = time_of(sends(project)[-1][1])
        # Down for more than two intervals: one catch-up run at the next start.
        wait_for(lambda: time.time() > last + 5.0, timeout=10, interval=0.1)
        count = len(sends(project))
        with beat(project, name="beat-3") as third:
            wait_for(lambda: len(sends(project)) > count, timeout=5, what="catch-up run")
            assert b"sending one (beat_catch_up=once)" in Path(third.log_path).read_bytes()  # type: ignore[attr-defined]
        wait_for(
            lambda: executions(project) == len(sends(project)),
            timeout=10,
            what="every send executed",
        )
    assert_no_double_send(project)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_idle_beat_uses_almost_no_cpu(project: Project) -> None:
    configure(project, 3600.0)
    with beat(project) as proc:
        wait_for(lambda: leading(proc), timeout=10, what="beat leads")
        time.sleep(0.5)  # let start-up work finish before measuring
        before = cpu_seconds(proc.pid)
        started = time.monotonic()
        wait_for(lambda: time.monotonic() - started >= 3.0, timeout=10, interval=0.25)
        used = cpu_seconds(proc.pid) - before
    assert used <= 0.06, f"beat used {used:.3f}s of CPU in 3s while idle"


def test_worker_with_embedded_beat(project: Project) -> None:
    configure(project, 1.0)
    project.env["CELERIAC_CONFIG_MODULE"] = "beatconf"
    log = project.root / "worker-b.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celeriac",
                "-A",
                "proj",
                "worker",
                "-B",
                "-l",
                "info",
                "-P",
                "threads",
                "-c",
                "2",
            ],
            cwd=project.root,
            env=project.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: executions(project) >= 2, timeout=20, what="runs from worker -B")
            assert b"in production run 'celeriac beat'" in log.read_bytes()
        finally:
            if stop(proc, timeout=15) is None:
                kill_tree(proc.pid)
