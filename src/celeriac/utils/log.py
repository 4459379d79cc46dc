"""Loggers for tasks and the worker, under Celery's logger names.

``get_task_logger(__name__)`` gives a logger below ``celery.task`` (Celery's name, so handlers users
attach to it keep working) whose records carry ``task_name`` and ``task_id`` of the task running in
the current context, or ``"???"`` outside a task, as in Celery.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from datetime import UTC, datetime
from typing import Any

from celeriac.app.context import current_request, current_task_var

#: The logger every task logger descends from (Celery's name).
TASK_LOGGER_NAME = "celery.task"
#: Where ``print`` output of tasks goes when the worker redirects stdout/stderr.
REDIRECTED_LOGGER_NAME = "celery.redirected"
#: Names a task logger may not take: they would loop the hierarchy.
RESERVED_LOGGER_NAMES = frozenset({"celery", TASK_LOGGER_NAME})
#: What ``task_name``/``task_id`` read outside a task.
NO_TASK = "???"

#: Celery's default ``worker_log_format``.
DEFAULT_LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
#: Celery's default ``worker_task_log_format``.
DEFAULT_TASK_LOG_FORMAT = (
    "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s"
)
#: The format value that selects :class:`JsonFormatter` (one JSON object per line).
JSON_FORMAT = "json"

_LEVEL_COLOURS = {
    logging.DEBUG: "\x1b[34m",  # blue
    logging.WARNING: "\x1b[33m",  # yellow
    logging.ERROR: "\x1b[31m",  # red
    logging.CRITICAL: "\x1b[35m",  # magenta
}
_RESET = "\x1b[0m"


def get_logger(name: str) -> logging.Logger:
    """The logger called *name* (a plain :func:`logging.getLogger`, kept for Celery's API)."""
    return logging.getLogger(name)


def task_context() -> tuple[str, str]:
    """``(task_name, task_id)`` of the task running in this context, ``"???"`` for each outside."""
    request = current_request.get()
    task = current_task_var.get()
    name = getattr(request, "task", None) or getattr(task, "name", None)
    task_id = getattr(request, "id", None)
    return str(name or NO_TASK), str(task_id or NO_TASK)


def add_task_context(record: logging.LogRecord) -> None:
    """Give *record* ``task_name``/``task_id`` unless it already has them."""
    if not hasattr(record, "task_name") or not hasattr(record, "task_id"):
        name, task_id = task_context()
        record.__dict__.setdefault("task_name", name)
        record.__dict__.setdefault("task_id", task_id)


class TaskContextFilter(logging.Filter):
    """Adds ``task_name``/``task_id`` when the record is made, so any formatter can use them."""

    def filter(self, record: logging.LogRecord) -> bool:
        add_task_context(record)
        return True


_TASK_FILTER = TaskContextFilter()


def get_task_logger(name: str) -> logging.Logger:
    """A logger for task modules: a descendant of ``celery.task`` tagging records with the task.

    Raises RuntimeError for ``celery`` and ``celery.task``, which Celery reserves as well.
    """
    if name in RESERVED_LOGGER_NAMES:
        raise RuntimeError(f"Logger name {name!r} is reserved; use e.g. get_task_logger(__name__)")
    logger = logging.getLogger(name)
    parent = logging.getLogger(TASK_LOGGER_NAME)
    if not _descends_from(logger, parent):
        # Re-parent rather than rename, as Celery does: the user's logger keeps its own name.
        logger.parent = parent
    if _TASK_FILTER not in logger.filters:
        logger.addFilter(_TASK_FILTER)
    return logger


def _descends_from(logger: logging.Logger, ancestor: logging.Logger) -> bool:
    node: logging.Logger | None = logger.parent
    while node is not None:
        if node is ancestor:
            return True
        node = node.parent
    return False


class ColorFormatter(logging.Formatter):
    """A formatter that colours whole lines by level when *use_color* (DEBUG blue ... CRITICAL)."""

    def __init__(self, fmt: str | None = None, use_color: bool = True, **kwargs: Any) -> None:
        super().__init__(fmt, **kwargs)
        self.use_color = use_color

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        colour = _LEVEL_COLOURS.get(record.levelno) if self.use_color else None
        return f"{colour}{text}{_RESET}" if colour else text


class TaskFormatter(ColorFormatter):
    """:class:`ColorFormatter` that fills ``task_name``/``task_id`` (``"???"`` outside a task)."""

    def format(self, record: logging.LogRecord) -> str:
        add_task_context(record)
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, process, message, task fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        add_task_context(record)
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        task_name = getattr(record, "task_name", NO_TASK)
        if task_name != NO_TASK:
            entry["task_name"] = task_name
            entry["task_id"] = getattr(record, "task_id", NO_TASK)
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def make_formatter(fmt: str, use_color: bool, task: bool = False) -> logging.Formatter:
    """The formatter for *fmt*: JSON for ``"json"``, else a (task) colour formatter."""
    if fmt.strip().lower() == JSON_FORMAT:
        return JsonFormatter()
    cls = TaskFormatter if task else ColorFormatter
    return cls(fmt, use_color=use_color)


class LoggingProxy(io.TextIOBase):
    """A write-only text stream that sends each line to *logger* (``worker_redirect_stdouts``)."""

    def __init__(
        self, logger: logging.Logger, level: int = logging.WARNING, replaced: Any = None
    ) -> None:
        super().__init__()
        self.logger = logger
        self.level = level
        #: The stream this proxy stands in for, put back when the redirection ends.
        self.replaced = replaced
        self._buffer = ""
        self._local = threading.local()

    @property
    def name(self) -> str:
        return f"<logger {self.logger.name}>"

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, data: str) -> int:
        if getattr(self._local, "busy", False):
            # A handler printing to the redirected stream must not loop back into logging.
            stream = sys.__stderr__
            if stream is not None:
                stream.write(data)
            return len(data)
        self._local.busy = True
        try:
            self._buffer += data
            *lines, self._buffer = self._buffer.split("\n")
            for line in lines:
                if line.strip():
                    self.logger.log(self.level, line.rstrip())
        finally:
            self._local.busy = False
        return len(data)

    def flush(self) -> None:
        if self._buffer.strip():
            pending, self._buffer = self._buffer, ""
            self.write(pending + "\n")


__all__ = [
    "DEFAULT_LOG_FORMAT",
    "DEFAULT_TASK_LOG_FORMAT",
    "NO_TASK",
    "TASK_LOGGER_NAME",
    "ColorFormatter",
    "JsonFormatter",
    "LoggingProxy",
    "TaskContextFilter",
    "TaskFormatter",
    "get_logger",
    "get_task_logger",
    "make_formatter",
    "task_context",
]
