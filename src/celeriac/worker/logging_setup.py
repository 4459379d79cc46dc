"""Logging for the worker process, configured the way Celery's worker does it.

Order and rules (Celery's):

1. ``setup_logging`` is sent. If anyone is connected, they own logging and nothing else is done.
2. Otherwise the root logger gets one handler (stderr, or ``--logfile``) formatted with
   ``worker_log_format``; with ``worker_hijack_root_logger`` (default True) the root's existing
   handlers are removed first. With it False and handlers already on the root, the user's logging
   is left exactly as it is (no handler, no level change). ``after_setup_logger`` is sent.
3. ``celery.task`` gets a handler formatted with ``worker_task_log_format`` (task name and id) and
   stops propagating, so task lines are written once. ``after_setup_task_logger`` is sent.

``worker_log_format = "json"`` writes one JSON object per line instead.
"""

from __future__ import annotations

import logging
import logging.handlers
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celeriac import signals
from celeriac.utils.log import (
    DEFAULT_LOG_FORMAT,
    DEFAULT_TASK_LOG_FORMAT,
    REDIRECTED_LOGGER_NAME,
    TASK_LOGGER_NAME,
    LoggingProxy,
    make_formatter,
)

if TYPE_CHECKING:
    from celeriac.app.base import Celery

#: Marks handlers this module added, so a second setup replaces them instead of stacking.
_OURS = "_celeriac_worker_handler"


@dataclass(frozen=True, slots=True)
class LoggingSetup:
    """What :func:`setup_worker_logging` decided (``custom``: a ``setup_logging`` receiver ran)."""

    loglevel: int
    logfile: str | None
    colorize: bool
    custom: bool


def parse_loglevel(value: int | str | None, default: int = logging.WARNING) -> int:
    """``"info"``/``"INFO"``/``20`` → 20; ``FATAL`` is CRITICAL, as in Celery."""
    if value is None or value == "":
        return default
    if isinstance(value, int):
        return value
    text = str(value).strip().upper()
    if text.isdigit():
        return int(text)
    level = logging.getLevelName("CRITICAL" if text == "FATAL" else text)
    if not isinstance(level, int):
        raise ValueError(
            f"unknown log level {value!r}; expected DEBUG, INFO, WARNING, ERROR, CRITICAL or FATAL"
        )
    return level


def expand_logfile(path: str, hostname: str | None) -> str:
    """Celery's node format in ``--logfile``.

    For node ``w1@box.example.com``: ``%n`` → ``w1``, ``%h`` → ``box.example.com``, ``%d`` →
    ``example.com``, ``%p`` → ``w1@box.example.com``; ``%i`` → ``0`` and ``%I`` → empty (this is
    the main process; pool processes share its log file).
    """
    if "%" not in path:
        return path
    node = hostname or socket.gethostname()
    name, at, host = node.partition("@")
    if not at:
        name, host = "", node
    domain = host.partition(".")[2]
    keys = {
        "n": name or host.partition(".")[0],
        "h": host,
        "d": domain,
        "p": node,
        "i": "0",
        "I": "",
        "%": "%",
    }
    out: list[str] = []
    chars = iter(path)
    for char in chars:
        if char == "%":
            key = next(chars, "")
            out.append(keys.get(key, "%" + key))
        else:
            out.append(char)
    return "".join(out)


def _setting(app: Celery, name: str, default: Any) -> Any:
    value = app.conf.get(name, default)
    return default if value is None else value


def supports_color(colorize: bool | None, logfile: str | None) -> bool:
    """Colour only on a terminal, never into a file; *colorize* False turns it off (as Celery)."""
    if colorize is not None and not colorize:
        return False
    return logfile is None and sys.stderr is not None and sys.stderr.isatty()


def _handler(logfile: str | None) -> logging.Handler:
    handler: logging.Handler
    if logfile:
        # Watched, so logrotate moving the file does not leave us writing to the old one.
        handler = logging.handlers.WatchedFileHandler(logfile, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.__stderr__ or sys.stderr)
    setattr(handler, _OURS, True)
    return handler


def _drop_our_handlers(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        if getattr(handler, _OURS, False):
            logger.removeHandler(handler)
            handler.close()


def setup_worker_logging(
    app: Celery,
    loglevel: int | str | None = None,
    logfile: str | None = None,
    colorize: bool | None = None,
    hostname: str | None = None,
) -> LoggingSetup:
    """Configure logging for a worker of *app* (see the module docstring for the rules)."""
    level = parse_loglevel(loglevel)
    if logfile:
        logfile = expand_logfile(logfile, hostname)
    if colorize is None:
        colorize = app.conf.get("worker_log_color")
    use_color = supports_color(colorize, logfile)
    fmt = str(_setting(app, "worker_log_format", DEFAULT_LOG_FORMAT))
    task_fmt = str(_setting(app, "worker_task_log_format", DEFAULT_TASK_LOG_FORMAT))
    common = {"loglevel": level, "logfile": logfile, "colorize": use_color}
    if signals.setup_logging.send(sender=None, format=fmt, **common):
        return LoggingSetup(level, logfile, use_color, custom=True)

    root = logging.getLogger()
    task_logger = logging.getLogger(TASK_LOGGER_NAME)
    if bool(_setting(app, "worker_hijack_root_logger", True)):
        for logger in (root, task_logger, logging.getLogger(REDIRECTED_LOGGER_NAME)):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
    else:
        _drop_our_handlers(root)
        _drop_our_handlers(task_logger)
    if not root.handlers:
        handler = _handler(logfile)
        handler.setFormatter(make_formatter(fmt, use_color))
        root.addHandler(handler)
        root.setLevel(level)
        # Task lines are written by celery.task's own handler, once, in the task format.
        task_handler = _handler(logfile)
        task_handler.setFormatter(make_formatter(task_fmt, use_color, task=True))
        task_logger.addHandler(task_handler)
        task_logger.propagate = False
    task_logger.setLevel(level)
    signals.after_setup_logger.send(sender=None, logger=root, format=fmt, **common)
    signals.after_setup_task_logger.send(sender=None, logger=task_logger, format=task_fmt, **common)
    return LoggingSetup(level, logfile, use_color, custom=False)


def redirect_stdouts(level: int | str = logging.WARNING) -> None:
    """Send ``print`` output (stdout and stderr) to the ``celery.redirected`` logger at *level*."""
    logger = logging.getLogger(REDIRECTED_LOGGER_NAME)
    for name in ("stdout", "stderr"):
        current = getattr(sys, name)
        if not isinstance(current, LoggingProxy):
            setattr(sys, name, LoggingProxy(logger, parse_loglevel(level), replaced=current))


def restore_stdouts() -> None:
    """Undo :func:`redirect_stdouts` (flushing a last unterminated line)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, LoggingProxy):
            stream.flush()
            setattr(sys, name, stream.replaced or getattr(sys, f"__{name}__"))


__all__ = [
    "LoggingSetup",
    "expand_logfile",
    "parse_loglevel",
    "redirect_stdouts",
    "restore_stdouts",
    "setup_worker_logging",
    "supports_color",
]
