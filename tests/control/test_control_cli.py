"""``celeriac inspect``, ``control``, ``status`` and ``events`` in-process (memory broker, the
current app), checking Celery 5's output shapes and exit codes."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from celeriac import Celery
from celeriac.cli.events import dump_line, render
from celeriac.cli.main import celeriac
from celeriac.contrib.testing import start_worker
from celeriac.events.state import State
from celeriac.worker.worker import Worker

from support.background import background
from support.waiting import wait_for
from support.workerproc import Project


@pytest.fixture
def worker(app: Celery, monkeypatch: pytest.MonkeyPatch) -> Iterator[Worker]:
    for name in ("CELERIAC_APP", "CELERY_APP"):
        monkeypatch.delenv(name, raising=False)

    @app.task(name="ctl.add")
    def add(x: int, y: int) -> int:
        return x + y

    with start_worker(app, pool="threads", hostname="cli@host") as w:
        yield w


def invoke(*args: str) -> Result:
    return CliRunner().invoke(celeriac, ["--no-color", *args], catch_exceptions=False)


def test_inspect_ping_text_and_json(worker: Worker) -> None:
    out = invoke("inspect", "ping", "-d", "cli@host")
    assert out.exit_code == 0, out.output
    assert "->  cli@host: OK" in out.output and "pong" in out.output
    assert "1 node online." in out.output
    out = invoke("inspect", "registered", "-d", "cli@host", "--json")
    assert "ctl.add" in json.loads(out.output)["cli@host"]
    out = invoke("inspect", "query_task", "a", "b", "-d", "cli@host", "-j")
    assert json.loads(out.output) == {"cli@host": {}}
    out = invoke("inspect", "active", "-d", "cli@host")
    assert "- empty -" in out.output


def test_inspect_errors(worker: Worker) -> None:
    out = invoke("inspect", "nope")
    assert out.exit_code == 2 and "Available inspect commands" in out.output
    out = invoke("inspect", "ping", "extra")
    assert out.exit_code == 2 and "takes arguments" in out.output
    out = invoke("inspect", "ping", "-d", "nobody@host", "-t", "0.2")
    assert out.exit_code == 69 and "No nodes replied" in out.output
    out = invoke("inspect", "--list")
    assert "query_task [id1 [id2 [... [idN]]]]" in out.output


def test_control_commands(app: Celery, worker: Worker) -> None:
    out = invoke("control", "rate_limit", "ctl.add", "10/m", "-d", "cli@host")
    assert out.exit_code == 0, out.output
    assert "new rate limit set successfully" in out.output
    assert app.tasks["ctl.add"].rate_limit == "10/m"
    out = invoke("control", "revoke", "id1", "id2", "-d", "cli@host", "--json")
    (reply,) = json.loads(out.output)
    assert "flagged as revoked" in reply["cli@host"]["ok"]
    assert {"id1", "id2"} <= set(worker.state.revoked)
    out = invoke("control", "terminate", "KILL", "id3", "-d", "cli@host")
    assert "terminate: tasks unknown" in out.output
    out = invoke("control", "pool_grow", "notanumber")
    assert out.exit_code == 2
    out = invoke("control", "time_limit", "nope", "1", "-d", "cli@host")
    assert "ERROR" in out.output and "unknown task" in out.output
    assert "revoke_by_stamped_headers" in invoke("control", "--list").output


def test_status(worker: Worker) -> None:
    out = invoke("status", "-d", "cli@host")
    assert out.exit_code == 0
    assert "cli@host: OK" in out.output and "1 node online." in out.output
    assert "pong" not in out.output


def test_events_dump_prints_events(app: Celery, worker: Worker) -> None:
    lines: list[str] = []
    receiver = app.events.Receiver()
    stop_at = time.monotonic() + 10

    def dump() -> None:
        with receiver:
            for event in receiver.itercapture(timeout=10):
                lines.append(dump_line(event))
                if "worker-heartbeat" in lines[-1] or time.monotonic() > stop_at:
                    return

    thread = threading.Thread(target=dump)
    thread.start()
    thread.join(15)
    assert any("cli@host [worker-heartbeat]" in line and '"freq": 2.0' in line for line in lines)


def test_live_view_render() -> None:
    state = State()
    now = time.time()
    state.event(
        {
            "type": "worker-heartbeat",
            "hostname": "w1@h",
            "freq": 2.0,
            "timestamp": now,
            "active": 1,
            "processed": 5,
        }
    )
    state.event(
        {
            "type": "task-failed",
            "uuid": "u1",
            "hostname": "w1@h",
            "timestamp": now,
            "exception": "ValueError('x')",
        }
    )
    state.event({"type": "task-succeeded", "uuid": "u2", "hostname": "w1@h", "timestamp": now})
    screen = render(state, _plain(), now=now + 1)
    assert "ONLINE  w1@h" in screen and "heartbeat   1.0s ago" in screen
    assert "SUCCESS      0.10/s        1" in screen
    assert "[u1] on w1@h: ValueError('x')" in screen


def _plain():  # type: ignore[no-untyped-def]
    from celeriac.cli.base import CLIContext

    return CLIContext(no_color=True)


@pytest.mark.slow
def test_events_command_dump_and_live_view_in_processes(tmp_path: Path) -> None:
    project = Project(tmp_path)
    cmd = [sys.executable, "-m", "celeriac", "--no-color", "-A", "proj", "events"]
    with project.worker("-P", "threads", "-E", "-n", "ev@%h"):
        dump_log, live_log = tmp_path / "dump.log", tmp_path / "live.log"
        with (
            background([*cmd, "--dump"], tmp_path, project.env, dump_log),
            background([*cmd, "-F", "0.5"], tmp_path, project.env, live_log),
        ):
            wait_for(
                lambda: b"[worker-heartbeat]" in dump_log.read_bytes(),
                timeout=15,
                what="a heartbeat in the dump",
            )
            project.app.send_task("proj.add", [1, 2]).get(timeout=15)
            wait_for(
                lambda: b"[task-succeeded]" in dump_log.read_bytes(),
                timeout=15,
                what="task events in the dump",
            )
            wait_for(
                lambda: (
                    b"ONLINE  ev@" in live_log.read_bytes() and b"SUCCESS " in live_log.read_bytes()
                ),
                timeout=15,
                what="live view",
            )
    assert b'"result": "3"' in dump_log.read_bytes()
