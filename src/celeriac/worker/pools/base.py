"""The pool contract: run jobs, report starts and ends on the worker's event loop."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celeriac.protocol.message import Delivery
from celeriac.worker.job import Job, JobResult

if TYPE_CHECKING:
    from celeriac.app.base import Celery

OnStart = Callable[[Job, int], None]
OnDone = Callable[[Job, JobResult], None]


@dataclass(slots=True)
class SelfFetchHooks:
    """How a pool whose processes fetch for themselves reaches the consumer (on its loop).

    ``adopt``: messages a process fetched but hands over (an ETA, a limit, late ack, ...);
    ``orphan(delivery, result)``: a message a dead process held, with how its task ended
    (None: it never started); ``tally``: tasks run, by name.
    """

    adopt: Callable[[list[Delivery]], None]
    orphan: Callable[[Delivery, JobResult | None], None]
    tally: Callable[[dict[str, int]], None]
    revoked: Callable[[], list[str]]


@dataclass(slots=True)
class PoolOptions:
    """What every pool is told at start."""

    concurrency: int
    hostname: str
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None  # KiB, as Celery's setting
    app_locator: str | None = None  # "module:attr" for pools whose processes import the app
    #: Jobs a pool process may hold: 1 runs, the rest wait in its pipe (1 with ``-O fair``).
    process_queue_depth: int = 2


class Pool(ABC):
    """Runs jobs. ``on_start(job, pid)`` and ``on_done(job, result)`` are called on the worker's
    event loop thread; a job whose process died ends with state ``WORKER_LOST``.

    The supervisor submits only while ``free_slots > 0``.
    """

    name: str = ""
    #: True when the pool can run ``async def`` tasks without a private event loop.
    native_async: bool = False

    def __init__(
        self, app: Celery, options: PoolOptions, on_start: OnStart, on_done: OnDone
    ) -> None:
        self.app = app
        self.options = options
        self.on_start = on_start
        self.on_done = on_done
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def concurrency(self) -> int:
        return self.options.concurrency

    @abstractmethod
    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start processes/threads; return when the pool can take jobs."""

    @property
    @abstractmethod
    def free_slots(self) -> int:
        """How many more jobs the pool can take now."""

    @abstractmethod
    def submit(self, job: Job) -> None:
        """Run *job*; callbacks report its start and end."""

    def flush(self) -> None:  # noqa: B027 - a hook: most pools hand each job over at once
        """Hand over jobs submitted so far that the pool batches (prefork sends each process's
        jobs as one message once the submitting code is done)."""

    @abstractmethod
    async def stop(self, graceful: bool) -> None:
        """Stop. Graceful: wait for running jobs. Not graceful: end them now (they are reported
        as ``WORKER_LOST``)."""

    @abstractmethod
    def terminate_job(self, job_id: str, signum: int) -> bool:
        """Stop a running job (revoke with terminate); True when it was running here."""

    #: True while the pool's processes fetch their own tasks (the consumer then does not).
    self_fetching: bool = False

    def start_self_fetch(self, queues: list[str], limit: int, hooks: SelfFetchHooks) -> bool:
        """Let the pool's processes fetch for themselves, *limit* messages each at a time;
        False when this pool cannot."""
        return False

    def stop_self_fetch(self) -> None:  # noqa: B027 - nothing to stop by default
        """Stop it for good: the consumer fetches again (messages held go back first)."""

    def forward_revoked(self, ids: list[str]) -> None:  # noqa: B027
        """Tell self-fetching processes about newly revoked ids."""

    def forward_queues(self, queues: list[str]) -> None:  # noqa: B027
        """Tell self-fetching processes the queues to fetch from now."""

    def held_leases(self) -> list[Delivery]:
        """Messages self-fetching processes hold leases on (the worker renews them)."""
        return []

    def self_fetched(self) -> list[tuple[str, Delivery]]:
        """What self-fetching processes hold: ``("active" | "reserved", delivery)``."""
        return []

    def grow(self, n: int = 1) -> None:
        """Add capacity (autoscale, ``pool_grow``)."""
        self.options.concurrency += n

    def shrink(self, n: int = 1) -> None:
        """Remove capacity."""
        self.options.concurrency = max(1, self.options.concurrency - n)

    def info(self) -> dict[str, Any]:
        """What ``inspect stats`` shows under ``pool``."""
        return {
            "implementation": f"celeriac.worker.pools:{type(self).__name__}",
            "max-concurrency": self.concurrency,
        }

    def call_on_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run *fn* on the worker's loop from any thread."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(fn, *args)
