"""The command line in-process (click's CliRunner, memory:// broker): options, errors, output."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from celeriac import signals
from celeriac.cli.main import celeriac


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(celeriac, list(args), input=input, env=env, catch_exceptions=False)


def proj_app() -> Any:
    return importlib.import_module("proj.celery").app


# -- global options ------------------------------------------------------------------------------
def test_version_and_help() -> None:
    assert run("--version").output.strip() == "0.1.0 (celeriac)"
    result = run()
    assert result.exit_code == 0
    for command in ("worker", "call", "purge", "result", "dlq"):
        assert command in result.output
    assert "--app" in run("--help").output


def test_help_of_a_subcommand_does_not_import_the_app() -> None:
    result = run("-A", "does_not_exist_anywhere", "worker", "--help")
    assert result.exit_code == 0
    assert "--concurrency" in result.output


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("nosuchproj", "the module 'nosuchproj' was not found"),
        ("proj.broken", "importing it raised RuntimeError: this module is broken on purpose"),
        ("proj.noapp", "Could not find a celeriac app in 'proj.noapp'"),
        ("proj.celery:nothing", "Expected 'module:attribute'"),
    ],
)
def test_a_missing_or_broken_app_is_a_one_paragraph_error(
    project: Callable[..., Path], spec: str, expected: str
) -> None:
    project()
    result = run("-A", spec, "call", "proj.tasks.add")
    assert result.exit_code == 2
    assert expected in result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("Error: Unable to load the celeriac app")
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("spec", ["proj", "proj.celery", "proj.celery:app"])
def test_app_discovery_forms(project: Callable[..., Path], spec: str) -> None:
    project()
    result = run("-A", spec, "call", "proj.tasks.add", "--args", "[1, 2]")
    assert result.exit_code == 0, result.output
    assert proj_app().transport.queue_length("celery") == 1


@pytest.mark.parametrize("variable", ["CELERY_APP", "CELERIAC_APP"])
def test_app_from_the_environment(project: Callable[..., Path], variable: str) -> None:
    project()
    result = run("call", "proj.tasks.add", env={variable: "proj"})
    assert result.exit_code == 0, result.output
    assert proj_app().transport.queue_length("celery") == 1


def test_workdir_is_changed_to_before_importing(
    project: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = run("--workdir", str(root), "-A", "proj", "call", "proj.tasks.add")
    assert result.exit_code == 0, result.output


def test_broker_backend_and_config_override_the_app(project: Callable[..., Path]) -> None:
    project(broker="memory://original", backend=None)
    # (unique URLs below: memory:// state is per URL in this process)
    result = run(
        "-A",
        "proj",
        "-b",
        "memory://override",
        "--result-backend",
        "memory://results",
        "--config",
        "proj.settings",
        "--loader",
        "ignored",
        "--skip-checks",
        "call",
        "proj.tasks.add",
    )
    assert result.exit_code == 0, result.output
    app = proj_app()
    assert app.conf.broker_url == "memory://override"
    assert app.conf.result_backend == "memory://results"
    assert app.conf.task_default_queue == "from-config"
    assert app.transport.queue_length("from-config") == 1


def test_bad_config_module_is_a_clear_error(project: Callable[..., Path]) -> None:
    project()
    result = run("-A", "proj", "--config", "proj.no_such_settings", "call", "x")
    assert result.exit_code == 2
    assert "--config 'proj.no_such_settings'" in result.output


# -- call -------------------------------------------------------------------------------------
def test_call_sends_with_options_and_prints_the_id(project: Callable[..., Path]) -> None:
    project()
    result = run(
        "-A",
        "proj",
        "call",
        "proj.tasks.add",
        "--args",
        "[2, 3]",
        "--kwargs",
        '{"z": 1}',
        "--queue",
        "other",
        "--countdown",
        "30",
        "--expires",
        "3600",
        "--serializer",
        "json",
    )
    assert result.exit_code == 0, result.output
    task_id = result.output.strip()
    app = proj_app()
    [delivery] = app.transport.fetch(["other"], 1, 5.0)
    headers = delivery.message.headers
    assert headers["id"] == task_id
    assert headers["task"] == "proj.tasks.add"
    assert headers["eta"] is not None and headers["expires"] is not None
    assert json.loads(delivery.message.body)[:2] == [[2, 3], {"z": 1}]


def test_call_with_an_eta(project: Callable[..., Path]) -> None:
    project()
    result = run("-A", "proj", "call", "proj.tasks.add", "--eta", "2030-01-01T00:00:00+00:00")
    assert result.exit_code == 0, result.output
    [delivery] = proj_app().transport.fetch(["celery"], 1, 5.0)
    assert delivery.message.headers["eta"].startswith("2030-01-01T00:00:00")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--args", "not json"], "is not valid JSON"),
        (["--args", '{"a": 1}'], "is not a json array"),
        (["--kwargs", "[1]"], "is not a json object"),
        (["--eta", "tomorrow"], "is not an ISO 8601 date-time"),
    ],
)
def test_call_rejects_bad_values(
    project: Callable[..., Path], args: list[str], message: str
) -> None:
    project()
    result = run("-A", "proj", "call", "proj.tasks.add", *args)
    assert result.exit_code == 2
    assert message in result.output


# -- purge ------------------------------------------------------------------------------------
def test_purge_asks_then_counts(project: Callable[..., Path]) -> None:
    project()
    for _ in range(3):
        assert run("-A", "proj", "call", "proj.tasks.add").exit_code == 0
    declined = run("-A", "proj", "purge", input="n\n")
    assert declined.exit_code == 1
    assert "There is no undo" in declined.output
    assert proj_app().transport.queue_length("celery") == 3
    result = run("-A", "proj", "purge", input="y\n")
    assert "Purged 3 messages from 1 known task queue." in result.output
    assert run("-A", "proj", "purge", "-f").output.strip() == "No messages purged from 1 queue."


def test_purge_selects_queues(project: Callable[..., Path]) -> None:
    project()
    for queue in ("a", "b", "c"):
        assert run("-A", "proj", "call", "proj.tasks.add", "--queue", queue).exit_code == 0
    result = run("-A", "proj", "purge", "-f", "-Q", "a,b", "-Q", "c", "-X", "c")
    assert result.output.strip() == "Purged 2 messages from 2 known task queues."
    assert proj_app().transport.queue_length("c") == 1


# -- result -----------------------------------------------------------------------------------
def test_result_prints_the_value_or_the_failure(project: Callable[..., Path]) -> None:
    project()
    app = proj_app()
    app.backend.store_result("ok-id", {"sum": 5}, "SUCCESS")
    assert run("-A", "proj", "result", "ok-id").output.strip() == str({"sum": 5})
    assert run("-A", "proj", "result", "ok-id", "-t", "proj.tasks.add").exit_code == 0
    try:
        raise ValueError("boom")
    except ValueError as exc:
        import traceback

        app.backend.store_result("bad-id", exc, "FAILURE", traceback=traceback.format_exc())
    failed = run("-A", "proj", "result", "bad-id")
    assert failed.exit_code == 1
    assert "task bad-id failed: ValueError: boom" in failed.output
    shown = run("-A", "proj", "result", "bad-id", "--traceback")
    assert "ValueError: boom" in shown.output and "Traceback" in shown.output
    waited = run("-A", "proj", "result", "never-id", "--timeout", "0.2")
    assert waited.exit_code == 1
    assert "was not ready after 0.2s" in waited.output


def test_result_with_an_unknown_task_name(project: Callable[..., Path]) -> None:
    project()
    result = run("-A", "proj", "result", "x", "--task", "proj.tasks.nope")
    assert result.exit_code == 2
    assert "no task named 'proj.tasks.nope'" in result.output


# -- dlq --------------------------------------------------------------------------------------
def dead_letter(reason: str, content_type: str = "application/json") -> str:
    """Publish one task message and dead-letter it through the transport; returns the task id."""
    app = proj_app()
    result = app.send_task("proj.tasks.add", args=[1, 2])
    transport = app.transport
    [delivery] = transport.fetch(["celery"], 1, 5.0)
    if content_type != delivery.message.content_type:
        delivery.message.content_type = content_type
    transport.dead_letter(delivery, reason)
    return result.id


def test_dlq_list_show_requeue_purge(project: Callable[..., Path]) -> None:
    project()
    assert "is empty" in run("-A", "proj", "dlq", "list").output
    first = dead_letter(
        "no codec for content type 'application/x-unknown'", content_type="application/x-unknown"
    )
    second = dead_letter("rejected by the task")
    rows = json.loads(run("-A", "proj", "dlq", "list", "--json").output)
    assert [r["task_id"] for r in rows] == [first, second]
    assert {r["task"] for r in rows} == {"proj.tasks.add"}
    assert rows[0]["queue"] == "celery" and "x-unknown" in rows[0]["reason"]
    table = run("-A", "proj", "dlq", "list").output.splitlines()
    assert table[0].split()[:3] == ["ID", "QUEUE", "TIME"]
    assert first in table[1] and "rejected by the task" in table[2]
    assert len(run("-A", "proj", "dlq", "list", "--limit", "1").output.splitlines()) == 2

    raw = run("-A", "proj", "dlq", "show", rows[0]["id"][:8])
    assert raw.exit_code == 0, raw.output
    assert "body (raw bytes):" in raw.output and "b'[[1,2]" in raw.output
    decoded = json.loads(run("-A", "proj", "dlq", "show", rows[1]["id"], "--json").output)
    assert decoded["body_decoded"] is True
    assert decoded["body"][0] == [1, 2]
    assert decoded["headers"]["id"] == second
    missing = run("-A", "proj", "dlq", "show", "zzzz")
    assert missing.exit_code == 1 and "no dead-lettered message has the id 'zzzz'" in missing.output

    assert run("-A", "proj", "dlq", "requeue").exit_code == 2
    requeued = run("-A", "proj", "dlq", "requeue", rows[1]["id"])
    assert requeued.output.strip() == "Requeued 1 dead-lettered message."
    assert proj_app().transport.queue_length("celery") == 1

    assert run("-A", "proj", "dlq", "purge", "--all", input="n\n").exit_code == 1
    purged = run("-A", "proj", "dlq", "purge", "--all", "-f")
    assert purged.output.strip() == "Deleted 1 dead-lettered message."
    assert json.loads(run("-A", "proj", "dlq", "list", "--json").output) == []


# -- worker -----------------------------------------------------------------------------------
class FakeWorker:
    """Stands in for the worker so option mapping and signals can be checked without running."""

    made: list[FakeWorker] = []

    def __init__(self, app: Any, options: Any) -> None:
        self.app = app
        self.options = options
        self.hostname = options.hostname or "celery@test"
        self.queue_names = list(options.queues or ["celery"])
        FakeWorker.made.append(self)
        # As the real worker does: celeryd_init before anything reads the settings.
        signals.celeryd_init.send(
            sender=self.hostname,
            instance=self,
            conf=app.conf,
            options=dict(options.extra.get("cli_options", {})),
        )

    def banner(self) -> str:
        return "BANNER\n"

    def start(self) -> int:
        return 3


@pytest.fixture
def fake_worker(monkeypatch: pytest.MonkeyPatch) -> list[FakeWorker]:
    import celeriac.worker.logging_setup as logging_setup
    import celeriac.worker.worker as worker_module
    from celeriac.worker.logging_setup import LoggingSetup

    FakeWorker.made = []
    monkeypatch.setattr(worker_module, "Worker", FakeWorker)
    monkeypatch.setattr(
        logging_setup,
        "setup_worker_logging",
        lambda app, **kw: LoggingSetup(20, kw.get("logfile"), False, custom=True),
    )
    return FakeWorker.made


def test_worker_options_map_to_worker_options(
    project: Callable[..., Path], fake_worker: list[FakeWorker]
) -> None:
    project()
    events: list[tuple[str, dict[str, Any]]] = []

    def on_init(sender: Any, **kwargs: Any) -> None:
        events.append(("init", {"sender": sender, **kwargs}))

    def on_after_setup(sender: Any, **kwargs: Any) -> None:
        events.append(("after_setup", {"sender": sender, **kwargs}))

    signals.celeryd_init.connect(on_init)
    signals.celeryd_after_setup.connect(on_after_setup)
    try:
        result = run(
            "-A",
            "proj",
            "worker",
            "-l",
            "info",
            "-c",
            "4",
            "-P",
            "threads",
            "-Q",
            "a,b",
            "-X",
            "b",
            "-n",
            "w1@%h",
            "--prefetch-multiplier",
            "2",
            "--max-tasks-per-child",
            "5",
            "--max-memory-per-child",
            "1000",
            "--time-limit",
            "30",
            "--soft-time-limit",
            "20",
            "--autoscale",
            "10,3",
            "-O",
            "fair",
            "--pidfile",
            "w.pid",
            "-f",
            "w.log",
            "-E",
            "--statedb",
            "w.state",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "-I",
            "proj.tasks",
        )
    finally:
        signals.celeryd_init.disconnect(on_init)
        signals.celeryd_after_setup.disconnect(on_after_setup)
    assert result.exit_code == 3, result.output
    assert "BANNER" in result.output
    [node] = fake_worker
    opts = node.options
    assert (opts.concurrency, opts.pool, list(opts.queues), list(opts.exclude_queues)) == (
        4,
        "threads",
        ["a", "b"],
        ["b"],
    )
    assert opts.hostname == "w1@%h"
    assert (opts.prefetch_multiplier, opts.max_tasks_per_child, opts.max_memory_per_child) == (
        2,
        5,
        1000,
    )
    assert (opts.time_limit, opts.soft_time_limit) == (30.0, 20.0)
    assert opts.autoscale == (10, 3)
    assert opts.optimization == "fair"
    assert opts.send_events is True
    assert opts.app_locator == "proj"
    assert opts.pidfile == "w.pid"
    assert opts.extra["statedb"] == "w.state"
    assert opts.extra["loglevel"] == "INFO"
    assert [name for name, _ in events] == ["init", "after_setup"]
    init = events[0][1]
    assert init["sender"] == node.hostname and init["instance"] is node
    assert init["conf"] is proj_app().conf and init["options"]["concurrency"] == 4
    assert events[1][1]["instance"] is node


def test_worker_defaults_and_quiet(
    project: Callable[..., Path], fake_worker: list[FakeWorker]
) -> None:
    project()
    result = run("-q", "-A", "proj", "worker")
    assert result.exit_code == 3
    assert "BANNER" not in result.output
    opts = fake_worker[0].options
    assert opts.pool is None and opts.concurrency is None and opts.queues is None
    assert opts.send_events is None and opts.autoscale is None
    assert opts.extra["loglevel"] == "WARNING"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-D"], "-D/--detach is not supported"),
        (["--uid", "nobody"], "--uid is not supported"),
        (["-P", "eventlet"], "'eventlet' is not one of"),
        (["--autoscale", "3,10"], "MAX (3) is smaller than MIN (10)"),
        (["--autoscale", "many"], "is not MAX,MIN"),
        (["-l", "loud"], "'loud' is not a log level"),
        (["-c", "0"], "0 is not in the range x>=1"),
    ],
)
def test_worker_usage_errors(
    project: Callable[..., Path], fake_worker: list[FakeWorker], args: list[str], message: str
) -> None:
    project()
    result = run("-A", "proj", "worker", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert not fake_worker


def test_a_global_option_after_the_command_is_explained(project: Callable[..., Path]) -> None:
    project()
    result = run("worker", "-A", "proj")
    assert result.exit_code == 2
    assert "-A is a global option: give it before the command" in result.output
