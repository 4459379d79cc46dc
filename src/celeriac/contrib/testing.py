"""Running a worker inside a test process (on a thread), as ``celery.contrib.testing`` does."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from celeriac.worker.worker import Worker, WorkerOptions

if TYPE_CHECKING:
    from celeriac.app.base import Celery


class WorkerThread(threading.Thread):
    """A worker running on its own thread and event loop."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(name=f"celeriac-worker-{worker.hostname}", daemon=True)
        self.worker = worker
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self.worker.run())
        except BaseException as exc:  # reported to the test by start_worker
            self.error = exc
            self.worker.ready.set()


@contextmanager
def start_worker(
    app: Celery,
    concurrency: int = 1,
    pool: str = "solo",
    loglevel: str | int = "WARNING",
    logfile: str | None = None,
    perform_ping_check: bool = True,
    ping_task_timeout: float = 10.0,
    shutdown_timeout: float = 10.0,
    **kwargs: Any,
) -> Iterator[Worker]:
    """Start a worker for *app* on a thread, yield it once it consumes, stop it afterwards.

    Thread pools only (``solo``, ``threads``, ``asyncio``): a test process should not fork.
    """
    options = WorkerOptions(
        concurrency=concurrency,
        pool=pool,
        install_signal_handlers=False,
        hostname=kwargs.pop("hostname", None) or "celery@%h",
        **kwargs,
    )
    worker = Worker(app, options)
    thread = WorkerThread(worker)
    thread.start()
    if not worker.ready.wait(ping_task_timeout):
        raise TimeoutError(f"the test worker did not start within {ping_task_timeout}s")
    if thread.error is not None:
        raise thread.error
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(shutdown_timeout)
        if thread.is_alive():
            raise TimeoutError(f"the test worker did not stop within {shutdown_timeout}s")
