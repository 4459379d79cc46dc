"""Signals with Celery's names, fired in the processes where Celery fires them.

``@task_success.connect`` and ``task_success.connect(handler, sender=...)`` work as in Celery;
handlers receive ``sender`` and keyword arguments and should accept ``**kwargs``.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

Handler = Callable[..., Any]


class Signal:
    """A named signal: handlers connect, senders ``send``; a failing handler is logged."""

    def __init__(self, name: str, providing_args: frozenset[str] | None = None) -> None:
        self.name = name
        self.providing_args = providing_args or frozenset()
        self._lock = threading.Lock()
        # (handler id, sender id or None) -> (handler ref, sender filter)
        self._receivers: list[tuple[tuple[int, int | None], Callable[[], Handler | None], Any]] = []

    def connect(
        self,
        receiver: Handler | None = None,
        *,
        sender: Any = None,
        weak: bool = False,
        dispatch_uid: Any = None,
    ) -> Any:
        """Connect *receiver*; usable as ``@sig.connect`` or ``@sig.connect(sender=...)``."""

        def register(fn: Handler) -> Handler:
            ref: Callable[[], Handler | None]
            if weak:
                try:
                    ref = weakref.WeakMethod(fn)  # type: ignore[arg-type]
                except TypeError:
                    ref = weakref.ref(fn)
            else:
                ref = _strong(fn)
            key = (
                id(dispatch_uid) if dispatch_uid is not None else id(fn),
                None if sender is None else id(sender),
            )
            with self._lock:
                if all(existing != key for existing, _, _ in self._receivers):
                    self._receivers.append((key, ref, sender))
            return fn

        if receiver is None:
            return register
        return register(receiver)

    def disconnect(
        self, receiver: Handler | None = None, *, sender: Any = None, dispatch_uid: Any = None
    ) -> bool:
        """Disconnect a handler; True when one was connected."""
        target = id(dispatch_uid) if dispatch_uid is not None else id(receiver)
        key = (target, None if sender is None else id(sender))
        with self._lock:
            before = len(self._receivers)
            self._receivers = [r for r in self._receivers if r[0] != key]
            return len(self._receivers) != before

    @property
    def receivers(self) -> list[Handler]:
        return [fn for _, ref, _ in list(self._receivers) if (fn := ref()) is not None]

    def has_listeners(self) -> bool:
        return bool(self._receivers)

    def send(self, sender: Any = None, **named: Any) -> list[tuple[Handler, Any]]:
        """Call every handler connected for *sender*; return ``(handler, result)`` pairs.

        A handler that raises is logged and its exception returned as its result, as Celery does.
        """
        if not self._receivers:
            return []
        responses: list[tuple[Handler, Any]] = []
        for _, ref, wanted in list(self._receivers):
            fn = ref()
            if fn is None or (wanted is not None and wanted is not sender and wanted != sender):
                continue
            try:
                responses.append((fn, fn(signal=self, sender=sender, **named)))
            except Exception as exc:
                logger.exception("Signal handler %r raised: %r", fn, exc)
                responses.append((fn, exc))
        return responses

    send_robust = send

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"


def _strong(fn: Handler) -> Callable[[], Handler]:
    return lambda: fn


# Task
before_task_publish = Signal("before_task_publish")
after_task_publish = Signal("after_task_publish")
task_received = Signal("task_received")
task_prerun = Signal("task_prerun")
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")
task_retry = Signal("task_retry")
task_failure = Signal("task_failure")
task_internal_error = Signal("task_internal_error")
task_revoked = Signal("task_revoked")
task_rejected = Signal("task_rejected")
task_unknown = Signal("task_unknown")
# Program
import_modules = Signal("import_modules")
# Worker
celeryd_init = Signal("celeryd_init")
celeryd_after_setup = Signal("celeryd_after_setup")
worker_init = Signal("worker_init")
worker_before_create_process = Signal("worker_before_create_process")
worker_process_init = Signal("worker_process_init")
worker_process_shutdown = Signal("worker_process_shutdown")
worker_ready = Signal("worker_ready")
worker_shutdown = Signal("worker_shutdown")
worker_shutting_down = Signal("worker_shutting_down")
heartbeat_sent = Signal("heartbeat_sent")
# Beat
beat_init = Signal("beat_init")
beat_embedded_init = Signal("beat_embedded_init")
# Logging
setup_logging = Signal("setup_logging")
after_setup_logger = Signal("after_setup_logger")
after_setup_task_logger = Signal("after_setup_task_logger")
# Events
eventlet_pool_started = Signal("eventlet_pool_started")
eventlet_pool_preshutdown = Signal("eventlet_pool_preshutdown")
eventlet_pool_postshutdown = Signal("eventlet_pool_postshutdown")
eventlet_pool_apply = Signal("eventlet_pool_apply")
# Deprecated Celery names kept for imports
user_preload_options = Signal("user_preload_options")

__all__ = [name for name, value in dict(globals()).items() if isinstance(value, Signal)] + [
    "Signal"
]
