"""A task message the worker holds, from receipt until it is acked, requeued or set aside."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celeriac.protocol.message import Delivery
from celeriac.protocol.task import TaskMessage
from celeriac.worker.job import Job

if TYPE_CHECKING:
    from celeriac.task import Task


@dataclass(eq=False)
class Request:
    """One received task: its delivery (the broker lease), the parsed message and the task."""

    delivery: Delivery
    message: TaskMessage
    task: Task[Any, Any]
    job: Job
    received: float = field(default_factory=time.time)
    time_start: float | None = None
    worker_pid: int | None = None
    acknowledged: bool = False
    timer: Any = None

    @property
    def id(self) -> str:
        return self.message.id

    @property
    def name(self) -> str:
        return self.message.name

    @property
    def acks_late(self) -> bool:
        return bool(self.task.acks_late)

    def expired(self, now: datetime | None = None) -> bool:
        expires = self.message.expires
        return expires is not None and expires <= (now or datetime.now(UTC))

    def eta_in(self, now: datetime | None = None) -> float:
        """Seconds until the ETA (0 or less: due)."""
        eta = self.message.eta
        if eta is None:
            return 0.0
        return (eta - (now or datetime.now(UTC))).total_seconds()

    def info(self) -> dict[str, Any]:
        """The request as ``inspect active``/``reserved`` report it (Celery's fields)."""
        d = self.delivery
        return {
            "id": self.id,
            "name": self.name,
            "args": self.message.args,
            "kwargs": self.message.kwargs,
            "type": self.name,
            "hostname": self.job.hostname,
            "time_start": self.time_start,
            "acknowledged": self.acknowledged,
            "delivery_info": {
                "exchange": d.exchange,
                "routing_key": d.routing_key or d.queue,
                "priority": d.message.priority,
                "redelivered": d.redelivered,
            },
            "worker_pid": self.worker_pid,
        }
