"""The worker process: composes the consumer, the pool, events and timers, and runs them on one
asyncio loop until a shutdown signal.

Shutdown follows Celery: SIGTERM or SIGINT starts a warm shutdown (stop fetching, give back what is
held but not running, let running tasks finish); a second one makes it cold (stop running tasks;
unacked late-ack tasks go back to the queue); SIGQUIT exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from celeriac import signals
from celeriac.exceptions import ImproperlyConfigured
from celeriac.worker.consumer import Consumer
from celeriac.worker.control import ControlNode
from celeriac.worker.events import WorkerEvents
from celeriac.worker.pools import PoolOptions, pool_class
from celeriac.worker.state import WorkerState

if TYPE_CHECKING:
    from celeriac.app.base import Celery

logger = logging.getLogger("celeriac.worker")


def expand_hostname(template: str | None, default_name: str = "celery") -> str:
    """Celery's node name: ``name@host``, with ``%h`` (host), ``%n`` (name), ``%d`` (domain)."""
    host = socket.gethostname()
    name, _, domain = host.partition(".")
    template = template or f"{default_name}@%h"
    if "@" not in template:
        template = f"{template}@%h"
    return template.replace("%h", host).replace("%n", name).replace("%d", domain).replace("%%", "%")


@dataclass
class WorkerOptions:
    """The worker's command-line options (None: take the app's setting)."""

    concurrency: int | None = None
    pool: str | None = None
    queues: Sequence[str] | None = None
    exclude_queues: Sequence[str] = ()
    hostname: str | None = None
    prefetch_multiplier: int | None = None
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    autoscale: tuple[int, int] | None = None
    optimization: str | None = None
    send_events: bool | None = None
    app_locator: str | None = None
    pidfile: str | None = None
    #: False when the worker runs on a thread that is not the main one (tests, embedding).
    install_signal_handlers: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class Worker:
    """One worker node. ``Worker(app, options).start()`` runs it until shut down."""

    def __init__(self, app: Celery, options: WorkerOptions | None = None, **kwargs: Any) -> None:
        options = options or WorkerOptions(**kwargs)
        self.app = app
        self.options = options
        conf = app.conf
        self.hostname = expand_hostname(options.hostname)
        # Sent before anything reads the settings, so handlers can configure this node (Celery's
        # per-hostname configuration pattern).
        signals.celeryd_init.send(
            sender=self.hostname,
            instance=self,
            conf=conf,
            options=dict(options.extra.get("cli_options", {})),
        )
        app.finalize()
        self.pool_name = options.pool or conf.worker_pool or "prefork"
        concurrency = options.concurrency or conf.worker_concurrency or os.cpu_count() or 1
        if options.autoscale:
            concurrency = options.autoscale[1] or 1
        self.prefetch_multiplier = (
            options.prefetch_multiplier
            if options.prefetch_multiplier is not None
            else int(conf.worker_prefetch_multiplier)
        )
        if options.optimization == "fair":
            self.prefetch_multiplier = 1
        self.time_limit = options.time_limit or conf.task_time_limit
        self.soft_time_limit = options.soft_time_limit or conf.task_soft_time_limit
        self.queue_names = self._select_queues(options.queues, options.exclude_queues)
        self.state = WorkerState()
        self.pool = pool_class(self.pool_name)(
            app,
            PoolOptions(
                concurrency=int(concurrency),
                hostname=self.hostname,
                max_tasks_per_child=options.max_tasks_per_child or conf.worker_max_tasks_per_child,
                max_memory_per_child=options.max_memory_per_child
                or conf.worker_max_memory_per_child,
                app_locator=options.app_locator,
                process_queue_depth=1 if options.optimization == "fair" else 2,
            ),
            on_start=self._on_job_start,
            on_done=self._on_job_done,
        )
        send_events = (
            options.send_events
            if options.send_events is not None
            else bool(conf.worker_send_task_events)
        )
        freq = float(options.extra.get("heartbeat_interval") or 2.0)
        self.events = WorkerEvents(self, task_events=send_events, freq=freq)
        #: Pool processes fetch plain tasks themselves (see ``pools.self_fetch``).
        self.self_fetch = self._self_fetch_allowed()
        self.control = ControlNode(self)  # remote control; loads --statedb revoked ids
        self.consumer: Consumer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._shutdowns = 0
        self._background: list[asyncio.Task[Any]] = []
        self.exitcode = 0
        #: Set once the worker consumes (for embedding and tests).
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self.started_at: datetime | None = None
        #: The embedded beat (``-B``), started with the consumer.
        self.beat: Any = None

    # -- configuration ---------------------------------------------------------------------------
    def _select_queues(self, wanted: Sequence[str] | None, exclude: Sequence[str]) -> list[str]:
        app = self.app
        if wanted:
            names = [q for item in wanted for q in str(item).split(",") if q]
        else:
            names = list(app.queues())
        names = [q for q in names if q not in set(exclude)]
        if not names:
            raise ImproperlyConfigured("the worker has no queue to consume from (check -Q/-X)")
        return names

    def _self_fetch_allowed(self) -> bool:
        """Whether the pool's processes may fetch for themselves: only where most tasks need
        nothing of the worker's process (no task events, late acks, time or rate limits by
        default, autoscale, ``task_received`` handlers or rpc:// results); a task that does need
        it is handed over all the same."""
        conf = self.app.conf
        if self.pool_name != "prefork" or not conf.worker_pool_fetch:
            return False
        if not self.app.transport.supports_pool_fetch:
            return False
        if (
            self.events.task_events
            or conf.task_acks_late
            or self.time_limit
            or self.soft_time_limit
            or (conf.task_default_rate_limit and not conf.worker_disable_rate_limits)
            or self.options.autoscale
            or signals.task_received.has_listeners()
        ):
            return False
        backend = self.app.backend
        return backend is None or not hasattr(backend.store, "send_reply")

    def stop_self_fetch(self, why: str) -> None:
        """Make the consumer fetch again, for good (a setting changed that tasks need it for)."""
        if self.pool.self_fetching:
            logger.info("pool processes no longer fetch tasks themselves: %s", why)
            self.pool.stop_self_fetch()
            if self.consumer is not None:
                self.consumer.wake()

    def banner(self) -> str:
        """The startup banner, like Celery's."""
        app = self.app
        backend_url = app.result_backend_url
        lines = [
            f" -------------- {self.hostname} v0.1.0 (celeriac)",
            f"--- ***** ----- {sys.platform} Python {sys.version.split()[0]} "
            f"{datetime.now().strftime('%Y-%m-%d %H:%M:%S')}",
            "-- ******* ---- ",
            f"- *** --- * --- .> app:         {app.main or '__main__'}:{id(app):#x}",
            f"- ** ---------- .> transport:   {app.transport.describe()}",
            f"- ** ---------- .> results:     "
            f"{_censor(backend_url) if backend_url else 'disabled://'}",
            f"- *** --- * --- .> concurrency: {self.pool.concurrency} ({self.pool_name})",
            f"-- ******* ---- .> task events: {'ON' if self.events.task_events else 'OFF'}",
            "--- ***** ----- ",
            " -------------- [queues]",
        ]
        for name in self.queue_names:
            q = app.queue_for(name)
            lines.append(
                f"                .> {name:<16} exchange={q.exchange.name}"
                f"({q.exchange.type}) key={q.routing_key}"
            )
        lines.append("")
        lines.append("[tasks]")
        for name in sorted(app.tasks.regular()):
            lines.append(f"  . {name}")
        return "\n".join(lines) + "\n"

    # -- running ---------------------------------------------------------------------------------
    def start(self) -> int:
        """Run until shut down; return the exit code."""
        self._write_pidfile()
        try:
            asyncio.run(self.run())
        finally:
            self._remove_pidfile()
        return self.exitcode

    async def run(self) -> None:
        loop = self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self.options.install_signal_handlers:
            self._install_signal_handlers(loop)
        signals.worker_init.send(sender=self)
        for name in self.queue_names:
            await loop.run_in_executor(None, self.app.transport.declare, self.app.queue_for(name))
        # Mingle (revoked ids from running workers) overlaps the pool start; both end before
        # the first fetch, so a task revoked earlier never runs here.
        mingle = None
        if not self.options.extra.get("without_mingle"):
            mingle = asyncio.create_task(self.control.mingle(self._mingle_timeout()))
        await self.pool.start(loop)
        if mingle is not None:
            await mingle
        self.consumer = Consumer(self)
        await self.control.start()
        self.started_at = datetime.now()
        self._background = [
            asyncio.create_task(self.consumer.run(), name="consumer"),
            asyncio.create_task(self._renew_leases(), name="leases"),
            asyncio.create_task(self.events.flusher(), name="events"),
        ]
        if not self.options.extra.get("without_heartbeat"):
            self._background.append(asyncio.create_task(self.events.heartbeats(), name="heartbeat"))
        if self.options.autoscale:
            self._background.append(asyncio.create_task(self._autoscale(), name="autoscale"))
        if self.options.extra.get("beat"):
            self._start_beat()
        await loop.run_in_executor(None, self.events.online)
        logger.info("%s ready.", self.hostname)
        self.ready.set()
        signals.worker_ready.send(sender=self)
        await self._stop.wait()
        await self._shutdown()

    def _mingle_timeout(self) -> float:
        timeout = self.options.extra.get("mingle_timeout")
        if timeout is not None:
            return float(timeout)
        # In-process brokers can only have sibling workers in this process: they answer at once.
        return 1.0 if self.app.transport.shared_across_processes else 0.1

    def _start_beat(self) -> None:
        from celeriac.beat.service import EmbeddedService

        extra = self.options.extra
        self.beat = EmbeddedService(
            self.app,
            schedule_filename=extra.get("schedule_filename"),
            scheduler_cls=extra.get("scheduler"),
        )
        self.beat.start()

    async def _renew_leases(self) -> None:
        transport = self.app.transport
        period = max(0.2, min(transport.visibility_timeout / 4.0, 60.0))
        while True:
            await asyncio.sleep(period)
            if self.consumer is not None:
                future = self.consumer.renew_leases()
                if future is not None:
                    try:
                        await future
                    except Exception as exc:
                        logger.error("renewing leases failed: %r", exc)

    async def _autoscale(self) -> None:
        idle_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            assert self.options.autoscale is not None
            high, low = self.options.autoscale  # re-read: the autoscale command changes it
            consumer = self.consumer
            if consumer is None:
                continue
            backlog = len(consumer.ready)
            if backlog and self.pool.concurrency < high:
                self.pool.grow(min(backlog, high - self.pool.concurrency))
                idle_since = None
            elif not consumer.active and self.pool.concurrency > low:
                idle_since = idle_since or loop.time()
                if loop.time() - idle_since > 5.0:
                    self.pool.shrink(1)
                    idle_since = loop.time()
            consumer.wake()

    def _on_job_start(self, job: Any, pid: int) -> None:
        if self.consumer is not None:
            self.consumer.on_job_start(job, pid)

    def _on_job_done(self, job: Any, result: Any) -> None:
        if self.consumer is not None:
            self.consumer.on_job_done(job, result)

    # -- stopping --------------------------------------------------------------------------------
    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_shutdown, signum)
        loop.add_signal_handler(signal.SIGQUIT, self._quit_now)

    def request_shutdown(self, signum: int | None = None) -> None:
        """Warm shutdown the first time, cold the second."""
        self._shutdowns += 1
        name = signal.Signals(signum).name if signum else "request"
        if self._shutdowns == 1:
            logger.warning("worker: Warm shutdown (%s)", name)
            signals.worker_shutting_down.send(
                sender=self.hostname, sig=name, how="Warm", exitcode=0
            )
            self._stop.set()
        else:
            logger.warning("worker: Cold shutdown (%s)", name)
            signals.worker_shutting_down.send(
                sender=self.hostname, sig=name, how="Cold", exitcode=0
            )
            if self.consumer is not None:
                self.consumer.cold = True
            assert self.loop is not None
            self.loop.create_task(self.pool.stop(graceful=False))

    def stop(self) -> None:
        """Ask the worker to shut down warmly (thread-safe)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.request_shutdown, None)

    def _quit_now(self) -> None:
        logger.warning("worker: SIGQUIT, exiting now")
        pids = getattr(self.pool, "pids", None)
        for pid in pids() if callable(pids) else ():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._remove_pidfile()
        os._exit(1)

    async def _shutdown(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        consumer.stopping = True
        if self.beat is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.beat.stop)
        returned = consumer.give_back_unstarted()
        if returned:
            logger.info("gave %d unstarted task(s) back to the broker", returned)
        await self.pool.stop(graceful=self._shutdowns < 2)
        # The fetch loop ends within one fetch timeout and hands back anything it got meanwhile.
        consume, *others = self._background
        await asyncio.gather(consume, return_exceptions=True)
        consumer.give_back_unstarted()
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await consumer.flush()
        await self.control.stop()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.events.offline)
        consumer.close()
        signals.worker_shutdown.send(sender=self)
        self.stopped.set()

    # -- pidfile ---------------------------------------------------------------------------------
    def _write_pidfile(self) -> None:
        path = self.options.pidfile
        if not path:
            return
        if os.path.exists(path):
            try:
                with open(path) as fh:
                    other = int(fh.read().strip() or 0)
                os.kill(other, 0)
            except (ValueError, ProcessLookupError, PermissionError):
                pass
            else:
                raise ImproperlyConfigured(f"pidfile {path} names a running process ({other})")
        with open(path, "w") as fh:
            fh.write(f"{os.getpid()}\n")

    def _remove_pidfile(self) -> None:
        path = self.options.pidfile
        if path and os.path.exists(path):
            try:
                os.unlink(path)
            except OSError:
                pass


def _censor(url: str) -> str:
    from celeriac.transports.base import censor_url

    return censor_url(url)
