"""The worker's events: task lifecycle (with ``-E``) and heartbeats (always), as Celery's."""

from __future__ import annotations

import asyncio
import logging
import os
import platform
from typing import TYPE_CHECKING, Any

from celeriac import signals, states
from celeriac.events.dispatcher import EventDispatcher
from celeriac.worker.job import JobResult
from celeriac.worker.request import Request

if TYPE_CHECKING:
    from celeriac.worker.worker import Worker

logger = logging.getLogger("celeriac.worker.events")

SW_IDENT = "py-celery"  # Flower shows workers by these fields; Celery's values keep it happy.
SW_VER = "5.7.0"


class WorkerEvents:
    """Sends task events when enabled (``-E``) and worker heartbeats every ``freq`` seconds."""

    def __init__(self, worker: Worker, task_events: bool, freq: float = 2.0) -> None:
        self.worker = worker
        self.freq = freq
        self.task_events = task_events
        self.dispatcher = EventDispatcher(self._broadcast, worker.hostname, enabled=True)

    def _broadcast(self, exchange: str, routing_key: str, message: Any) -> None:
        try:
            self.worker.app.transport.broadcast(exchange, routing_key, message)
        except Exception as exc:  # events are best effort: a lost heartbeat is not lost work
            logger.debug("event not sent: %r", exc)

    def _task(self, type_: str, request: Request, **fields: Any) -> None:
        if self.task_events:
            self.dispatcher.send(type_, buffered=True, uuid=request.id, **fields)

    def task_received(self, request: Request) -> None:
        if not self.task_events:
            return
        msg = request.message
        self._task(
            "task-received",
            request,
            name=request.name,
            args=msg.headers.get("argsrepr"),
            kwargs=msg.headers.get("kwargsrepr"),
            root_id=msg.root_id,
            parent_id=msg.parent_id,
            retries=msg.retries,
            eta=msg.headers.get("eta"),
            expires=msg.headers.get("expires"),
        )

    def task_started(self, request: Request) -> None:
        self._task("task-started", request)

    def task_revoked(
        self, request: Request, terminated: bool, signum: int | None, expired: bool
    ) -> None:
        self._task("task-revoked", request, terminated=terminated, signum=signum, expired=expired)

    def task_done(self, request: Request, result: JobResult) -> None:
        if not self.task_events:
            return
        state = result.state
        if state == states.SUCCESS:
            self._task("task-succeeded", request, result=result.retval_repr, runtime=result.runtime)
        elif state == states.RETRY:
            self._task(
                "task-retried", request, exception=result.exc_repr, traceback=result.traceback
            )
        elif state == states.REJECTED:
            self._task("task-rejected", request, requeue=result.requeue)
        elif state != states.IGNORED:
            self._task(
                "task-failed", request, exception=result.exc_repr, traceback=result.traceback
            )

    def worker_fields(self) -> dict[str, Any]:
        consumer = self.worker.consumer
        return {
            "freq": self.freq,
            "active": len(consumer.active) if consumer else 0,
            "processed": self.worker.state.total_count,
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "sw_ident": SW_IDENT,
            "sw_ver": SW_VER,
            "sw_sys": platform.system(),
        }

    def online(self) -> None:
        self.dispatcher.send("worker-online", **self.worker_fields())

    def offline(self) -> None:
        self.dispatcher.flush()
        self.dispatcher.send("worker-offline", **self.worker_fields())

    async def heartbeats(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.freq)
            await loop.run_in_executor(None, self._beat)

    def _beat(self) -> None:
        self.dispatcher.flush()
        self.dispatcher.send("worker-heartbeat", **self.worker_fields())
        signals.heartbeat_sent.send(sender=self.worker)

    async def flusher(self) -> None:
        """Send buffered task events at least every 0.5 s, so monitors see them promptly."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.5)
            await loop.run_in_executor(None, self.dispatcher.flush)
