"""The worker: one supervising process with an asyncio loop, and a pool that runs the tasks."""

from __future__ import annotations

from celeriac.worker.worker import Worker, WorkerOptions

__all__ = ["Worker", "WorkerOptions"]
