"""The request context a running task sees as ``self.request``."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any


class Context:
    """Celery's request fields, with Celery's defaults; unknown fields read as None."""

    id: str | None = None
    task: str | None = None
    args: Any = None
    kwargs: Any = None
    retries: int = 0
    is_eager: bool = False
    eta: str | None = None
    expires: str | None = None
    hostname: str | None = None
    delivery_info: dict[str, Any] | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    chord: Any = None
    chain: Any = None
    callbacks: Any = None
    errbacks: Any = None
    timelimit: Any = None
    origin: str | None = None
    headers: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    called_directly: bool = True
    utc: bool = True
    ignore_result: bool = False
    shadow: str | None = None
    stamps: dict[str, Any] | None = None
    stamped_headers: list[str] | None = None
    replaced_task_nesting: int = 0
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    loglevel: int | None = None
    logfile: str | None = None
    taskset: str | None = None
    worker_pid: int | None = None
    time_start: float | None = None

    def __init__(self, *args: dict[str, Any], **kwargs: Any) -> None:
        self.update(*args, **kwargs)
        self.children: list[Any] = []

    def update(self, *args: dict[str, Any], **kwargs: Any) -> None:
        for mapping in args:
            self.__dict__.update(mapping)
        self.__dict__.update(kwargs)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def __getattr__(self, name: str) -> Any:
        # Fields Celery adds over time (and custom headers) read as None rather than failing.
        if name.startswith("__"):
            raise AttributeError(name)
        return None

    def clear(self) -> None:
        self.__dict__.clear()

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"<Context: {self.__dict__!r}>"

    @property
    def group_id(self) -> str | None:
        return self.group

    def as_execution_options(self) -> dict[str, Any]:
        """Options that keep this request's workflow links when the task is sent again."""
        limit_hard, limit_soft = self.timelimit or (None, None)
        return {
            "task_id": self.id,
            "root_id": self.root_id,
            "parent_id": self.parent_id,
            "group_id": self.group,
            "group_index": self.group_index,
            "shadow": self.shadow,
            "chord": self.chord,
            "chain": self.chain,
            "link": self.callbacks,
            "link_error": self.errbacks,
            "expires": self.expires,
            "soft_time_limit": limit_soft,
            "time_limit": limit_hard,
            "headers": self.headers,
            "retries": self.retries,
            "reply_to": self.reply_to,
            "replaced_task_nesting": self.replaced_task_nesting,
            "origin": self.origin,
        }


#: The request a worker (or eager ``apply``) is running in this context, for parent/child links.
current_request: ContextVar[Context | None] = ContextVar("celeriac_current_request", default=None)
#: The task object running in this context (``celeriac.current_task``).
current_task_var: ContextVar[Any] = ContextVar("celeriac_current_task", default=None)
