"""Every exception celeriac raises, under Celery's public names."""

from __future__ import annotations

import datetime as _dt
import numbers
from typing import Any

__all__ = [
    "AlreadyRegistered",
    "BackendError",
    "BackendGetMetaError",
    "BackendStoreError",
    "CDeprecationWarning",
    "CPendingDeprecationWarning",
    "CeleryError",
    "CeleryWarning",
    "ChordError",
    "ContentDisallowed",
    "DecodeError",
    "DuplicateNodenameWarning",
    "FixupWarning",
    "Ignore",
    "ImproperlyConfigured",
    "IncompleteStream",
    "InvalidTaskError",
    "MaxRetriesExceededError",
    "NotConfigured",
    "NotRegistered",
    "OperationalError",
    "QueueNotFound",
    "Reject",
    "Retry",
    "SecurityError",
    "SoftTimeLimitExceeded",
    "TaskError",
    "TaskPredicate",
    "TaskRevokedError",
    "Terminated",
    "TimeLimitExceeded",
    "TimeoutError",
    "UnknownSettingWarning",
    "WorkerLostError",
    "WorkerShutdown",
    "WorkerTerminate",
]


class CeleryWarning(UserWarning):
    """Base class for celeriac warnings."""


class AlwaysEagerIgnored(CeleryWarning):
    """``send_task`` ignores ``task_always_eager``."""


class DuplicateNodenameWarning(CeleryWarning):
    """Several workers use the same node name."""


class FixupWarning(CeleryWarning):
    """A framework fix-up failed."""


class NotConfigured(CeleryWarning):
    """No configuration was given."""


class UnknownSettingWarning(CeleryWarning):
    """A setting name is not one celeriac knows."""


class CDeprecationWarning(DeprecationWarning):
    """A feature is deprecated."""


class CPendingDeprecationWarning(PendingDeprecationWarning):
    """A feature will be deprecated."""


class CeleryError(Exception):
    """Base class for celeriac errors."""


class ImproperlyConfigured(CeleryError):
    """The configuration is invalid; the message names the setting and the expected form."""


class SecurityError(CeleryError):
    """A message or value was refused for safety (e.g. a content type not accepted)."""


class ContentDisallowed(SecurityError):
    """The message's content type is not in ``accept_content``."""


class DecodeError(CeleryError):
    """A message body could not be decoded."""


class OperationalError(CeleryError):
    """A broker or result store operation failed."""


class TaskPredicate(CeleryError):
    """Base class for exceptions that steer what happens to a task."""


class Retry(TaskPredicate):
    """Raised by ``Task.retry`` to tell the worker the task is being retried."""

    message: str | None
    exc: BaseException | None
    when: Any

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | str | None = None,
        when: float | _dt.datetime | None = None,
        is_eager: bool = False,
        sig: Any = None,
        **kwargs: Any,
    ) -> None:
        self.message = message
        self.exc = exc if isinstance(exc, BaseException) else None
        self.excs = exc if isinstance(exc, str) else (repr(exc) if exc is not None else None)
        self.when = when
        self.is_eager = is_eager
        self.sig = sig
        super().__init__(self, exc, when, **kwargs)

    def humanize(self) -> str:
        if isinstance(self.when, numbers.Number):
            return f"in {self.when}s"
        return f"at {self.when}"

    def __str__(self) -> str:
        if self.message:
            return self.message
        if self.excs:
            return f"Retry {self.humanize()}: {self.excs}"
        return f"Retry {self.humanize()}"

    def __reduce__(self) -> Any:
        return self.__class__, (self.message, self.excs, self.when)


RetryTaskError = Retry


class Ignore(TaskPredicate):
    """Raised by a task to say its state must not be recorded."""


class Reject(TaskPredicate):
    """Raised by a task to reject its message, optionally re-queueing it."""

    def __init__(self, reason: object = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)

    def __repr__(self) -> str:
        return f"reject requeue={self.requeue}: {self.reason}"


class ImproperlyConfiguredWarning(CeleryWarning):
    """Reserved for Celery compatibility."""


class TaskError(CeleryError):
    """Base class for task errors."""


class TimeoutError(TaskError):
    """The operation timed out."""


class MaxRetriesExceededError(TaskError):
    """The task was retried more than ``max_retries`` times."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.task_args = kwargs.pop("task_args", [])
        self.task_kwargs = kwargs.pop("task_kwargs", {})
        super().__init__(*args, **kwargs)


class TaskRevokedError(TaskError):
    """The task was revoked, so it has no result."""


class NotRegistered(KeyError, TaskError):
    """No task is registered under that name."""

    def __repr__(self) -> str:
        return f"Task of kind {self.args[0]!r} never registered, please make sure it's imported."

    __str__ = __repr__


class AlreadyRegistered(TaskError):
    """A task is already registered under that name."""


class InvalidTaskError(TaskError):
    """A task message is malformed."""


class ChordError(TaskError):
    """A task in a chord's header failed, so the body cannot run."""


class QueueNotFound(KeyError, TaskError):
    """A task was routed to a queue that is not in ``task_queues``."""


class IncompleteStream(TaskError):
    """The end of a data stream was reached too soon."""


class BackendError(CeleryError):
    """A result store error."""


class BackendGetMetaError(BackendError):
    """Reading a task's meta from the result store failed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.task_id = kwargs.pop("task_id", None)
        super().__init__(*args)


class BackendStoreError(BackendError):
    """Storing a task's meta in the result store failed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state = kwargs.pop("state", None)
        self.task_id = kwargs.pop("task_id", None)
        super().__init__(*args)


class WorkerLostError(Exception):
    """The pool process running the task died."""


class Terminated(Exception):
    """The task was terminated."""


class WorkerShutdown(SystemExit):
    """Raised to ask the worker to shut down warmly."""


class WorkerTerminate(SystemExit):
    """Raised to ask the worker to terminate at once."""


class SoftTimeLimitExceeded(Exception):
    """The soft time limit expired; the task may clean up before the hard limit."""

    def __str__(self) -> str:
        return "SoftTimeLimitExceeded" + (f"{self.args!r}" if self.args else "()")


class TimeLimitExceeded(Exception):
    """The hard time limit expired and the task was killed."""

    def __str__(self) -> str:
        return "TimeLimitExceeded" + (f"{self.args!r}" if self.args else "()")


class TransportError(OperationalError):
    """The broker connection failed."""


class DeadLettered(CeleryError):
    """A message was moved to the dead-letter store; the text says why."""
