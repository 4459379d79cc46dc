"""Task loggers and the worker's logging setup (Celery's names, formats, signals and rules)."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery, signals
from celeriac.app.context import Context, current_request
from celeriac.utils.log import (
    DEFAULT_TASK_LOG_FORMAT,
    LoggingProxy,
    TaskFormatter,
    get_logger,
    get_task_logger,
    task_context,
)
from celeriac.worker.logging_setup import (
    expand_logfile,
    parse_loglevel,
    redirect_stdouts,
    restore_stdouts,
    setup_worker_logging,
    supports_color,
)


@pytest.fixture(autouse=True)
def saved_logging() -> Iterator[None]:
    """Put the root and celery.task loggers back as they were, whatever a test did."""
    names = ["", "celery.task", "celery.redirected"]
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate)
    yield
    restore_stdouts()
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.fixture
def app() -> Iterator[Celery]:
    with Celery("logtest", broker="memory://", set_as_current=False) as app:
        yield app


def running(name: str, task_id: str) -> Any:
    return current_request.set(Context(id=task_id, task=name))


# -- task loggers --------------------------------------------------------------------------------
def test_task_logger_descends_from_celery_task() -> None:
    logger = get_task_logger("proj.tasks.logging_test")
    assert logger.name == "proj.tasks.logging_test"
    node: logging.Logger | None = logger
    chain = []
    while node is not None:
        chain.append(node.name)
        node = node.parent
    assert "celery.task" in chain


def test_reserved_names_are_refused() -> None:
    for name in ("celery", "celery.task"):
        with pytest.raises(RuntimeError, match="reserved"):
            get_task_logger(name)


def test_get_logger_is_a_plain_logger() -> None:
    assert get_logger("proj.something") is logging.getLogger("proj.something")


def test_records_outside_a_task_read_question_marks() -> None:
    assert task_context() == ("???", "???")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    text = TaskFormatter(DEFAULT_TASK_LOG_FORMAT, use_color=False).format(record)
    assert "???[???]: hello" in text


def test_records_in_a_task_carry_its_name_and_id() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    # A plain formatter: the fields come from the logger's filter, not from our formatter.
    handler.setFormatter(logging.Formatter("%(task_name)s[%(task_id)s] %(message)s"))
    logger = get_task_logger("proj.tasks.context_test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    token = running("proj.tasks.add", "abc-123")
    try:
        logger.info("adding")
    finally:
        current_request.reset(token)
        logger.removeHandler(handler)
    assert stream.getvalue().strip() == "proj.tasks.add[abc-123] adding"


# -- the worker's setup ----------------------------------------------------------------------
def test_hijack_replaces_root_handlers_and_formats_task_lines(app: Celery, tmp_path: Path) -> None:
    user_handler = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(user_handler)
    logfile = tmp_path / "worker.log"
    state = setup_worker_logging(app, loglevel="info", logfile=str(logfile), hostname="w1@box")
    assert not state.custom and state.loglevel == logging.INFO
    root = logging.getLogger()
    assert user_handler not in root.handlers
    assert root.level == logging.INFO
    logging.getLogger("celeriac.test").info("plain line")
    token = running("proj.tasks.add", "id-1")
    try:
        get_task_logger("proj.tasks.setup_test").info("task line")
    finally:
        current_request.reset(token)
    text = logfile.read_text()
    assert "INFO/MainProcess] plain line" in text
    assert "INFO/MainProcess] proj.tasks.add[id-1]: task line" in text
    # Written once: celery.task does not also propagate to the root handler.
    assert text.count("task line") == 1


def test_without_hijack_user_logging_is_left_alone(app: Celery) -> None:
    app.conf.worker_hijack_root_logger = False
    user_handler = logging.StreamHandler(io.StringIO())
    root = logging.getLogger()
    root.addHandler(user_handler)
    root.setLevel(logging.ERROR)
    before = list(root.handlers)
    setup_worker_logging(app, loglevel="debug")
    assert root.handlers == before
    assert root.level == logging.ERROR


def test_a_setup_logging_receiver_takes_over(app: Celery) -> None:
    calls: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        calls.append(kwargs)

    signals.setup_logging.connect(receiver)
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        state = setup_worker_logging(app, loglevel="info")
    finally:
        signals.setup_logging.disconnect(receiver)
    assert state.custom
    assert root.handlers == before
    assert calls and calls[0]["loglevel"] == logging.INFO
    assert set(calls[0]) >= {"loglevel", "logfile", "format", "colorize"}


def test_after_setup_signals_get_the_loggers(app: Celery) -> None:
    seen: dict[str, Any] = {}

    def after_logger(logger: logging.Logger, **kwargs: Any) -> None:
        seen["root"] = logger

    def after_task_logger(logger: logging.Logger, **kwargs: Any) -> None:
        seen["task"] = logger
        seen["task_format"] = kwargs["format"]

    signals.after_setup_logger.connect(after_logger)
    signals.after_setup_task_logger.connect(after_task_logger)
    try:
        setup_worker_logging(app, loglevel="warning")
    finally:
        signals.after_setup_logger.disconnect(after_logger)
        signals.after_setup_task_logger.disconnect(after_task_logger)
    assert seen["root"] is logging.getLogger()
    assert seen["task"] is logging.getLogger("celery.task")
    assert "%(task_name)s[%(task_id)s]" in seen["task_format"]


def test_json_format(app: Celery, tmp_path: Path) -> None:
    app.conf.worker_log_format = "json"
    app.conf.worker_task_log_format = "json"
    logfile = tmp_path / "json.log"
    setup_worker_logging(app, loglevel="info", logfile=str(logfile))
    token = running("proj.tasks.add", "id-9")
    try:
        get_task_logger("proj.tasks.json_test").warning("careful %d", 3)
    finally:
        current_request.reset(token)
    entry = json.loads(logfile.read_text().strip().splitlines()[-1])
    assert entry["message"] == "careful 3"
    assert entry["level"] == "WARNING"
    assert (entry["task_name"], entry["task_id"]) == ("proj.tasks.add", "id-9")


def test_colour_only_on_a_terminal_and_never_into_files(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    assert supports_color(None, None)
    assert not supports_color(False, None)
    assert not supports_color(None, "/tmp/x.log")
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not supports_color(True, None)


def test_loglevel_and_logfile_parsing() -> None:
    assert parse_loglevel("info") == logging.INFO
    assert parse_loglevel("FATAL") == logging.CRITICAL
    assert parse_loglevel("10") == logging.DEBUG
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        parse_loglevel("loud")
    node = "w1@box.example.com"
    assert expand_logfile("/var/log/%n.log", node) == "/var/log/w1.log"
    assert expand_logfile("%h-%d-%p-%i%I.log", node) == (
        "box.example.com-example.com-w1@box.example.com-0.log"
    )
    assert expand_logfile("100%%.log", node) == "100%.log"


def test_redirected_stdout_goes_to_the_logger() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    redirected = logging.getLogger("celery.redirected")
    redirected.addHandler(handler)
    try:
        redirect_stdouts("warning")
        assert isinstance(sys.stdout, LoggingProxy)
        print("hello from a task")
        print("partial", end="")
    finally:
        restore_stdouts()
        redirected.removeHandler(handler)
    assert stream.getvalue().splitlines() == ["hello from a task", "partial"]
    assert not isinstance(sys.stdout, LoggingProxy)
