"""The ``prefork`` pool: one OS process per slot, supervised from the worker's event loop.

The supervisor knows which job each child runs (a child says when it starts one), so a child that
dies (crash, OOM kill, hard time limit) costs only that job, which is reported as lost or timed
out (with any job it had ended but whose result it had not reported yet), and the child is
replaced. Jobs queued in it that had not started are not lost: other
children run them, or, when the pool is stopping, they go back to the queue.
Children are retired (not killed) for ``max_tasks_per_child`` and ``max_memory_per_child``: they
get no new job and exit after the one they run.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celeriac import signals
from celeriac.backends.writebehind import WriteBehindStore
from celeriac.exceptions import TimeLimitExceeded, WorkerLostError
from celeriac.worker.job import WORKER_LOST, Job, JobResult, current_rss_kb, fail_job, run_job
from celeriac.worker.limits import soft_limit_alarm
from celeriac.worker.pools.base import Pool

if TYPE_CHECKING:
    from celeriac.app.base import Celery

logger = logging.getLogger("celeriac.worker.pool")

START_METHOD = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _load_app(app: Celery | str) -> Celery:
    if not isinstance(app, str):
        return app
    from celeriac.app.locate import find_app

    return find_app(app)


def child_main(
    app_ref: Celery | str,
    conn: multiprocessing.connection.Connection,
    hostname: str,
    measure_rss: bool,
) -> None:
    """The loop of one pool process: receive jobs, run them in order, report each (with the
    process's peak RSS when *measure_rss*: ``max_memory_per_child`` compares it).

    To the supervisor it sends a job's id the moment it starts the job, and the job's result once
    the result is stored (results are written behind, so several may go as one list). So the
    supervisor knows which jobs really started: a job that never started is not lost when the
    process exits, it goes back to the queue.

    SIGTERM (e.g. systemd stopping the whole control group) lets the running task finish, then
    the process exits without starting another. SIGINT is the supervisor's to handle.
    """
    state = {"busy": False, "stop": False}

    def on_term(signum: int, frame: Any) -> None:
        state["stop"] = True
        if not state["busy"]:
            raise SystemExit(0)

    # A forked child shares the supervisor's signal wake-up fd: without this, a signal sent to
    # this process alone would reach the supervisor's event loop as if sent to the worker.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, on_term)
    app = _load_app(app_ref)
    app._check_fork()
    signals.worker_process_init.send(sender=None)
    pending: deque[Job | None] = deque()
    waiting = _poller(conn)
    send_now, report, behind = _reporter(app, conn, lambda: not pending and not waiting())
    held: JobResult | None = None  # a result to send with the next start: one message for both
    try:
        while not state["stop"]:
            if not pending:
                _receive(conn, pending)
                continue
            job = pending.popleft()
            if job is None:
                break
            state["busy"] = True  # from here SIGTERM waits for the job's result to be sent
            if state["stop"]:
                break
            send_now(job.id if held is None else [held, job.id])
            held = None
            with soft_limit_alarm(job.soft_time_limit):
                result = run_job(app, job)
            if measure_rss:
                result.rss_kb = current_rss_kb()
            if not behind and pending and pending[0] is not None:
                held = result  # the next job starts right away
            else:
                report(result)
            state["busy"] = False
    finally:
        if held is not None:
            try:
                send_now(held)
            except OSError:
                pass  # the supervisor is gone
        signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)
        app.close()


def _reporter(
    app: Celery, conn: multiprocessing.connection.Connection, idle: Callable[[], bool]
) -> tuple[Callable[[Any], None], Callable[[Any], None], bool]:
    """How the process reports to the supervisor: ``(send_now, report, behind)``, *behind*
    telling whether results are written behind.

    Starts go out at once (``send_now``): the supervisor acks an early-ack task when it starts,
    which frees its place in the prefetch window. Results are written behind when they can be
    (``report``): the next task does not wait for the previous result's round trip, and results
    that pile up meanwhile go out as one batch. With no next job (``idle()``), a result is
    written at once, which is quicker than the hand-off to the writer thread. A report still
    reaches the supervisor only after the results written before it landed, so an ack
    (acks_late) never precedes its result.
    """
    backend = app.backend
    if backend is None or hasattr(backend.store, "send_reply"):
        # No results, or rpc:// replies that travel with the broker.
        send = functools.partial(_send, conn)
        return send, send, False
    lock = threading.Lock()  # the writer thread sends on the pipe too

    def send_now(message: Any) -> None:
        with lock:
            _send(conn, message)

    def deliver(messages: list[Any]) -> None:
        # The reports of one batch go as one pipe message: one wake-up of the supervisor.
        with lock:
            _send(conn, messages[0] if len(messages) == 1 else messages)

    behind = WriteBehindStore(backend.store, deliver, idle)
    backend.store = behind
    return send_now, behind.report, True


def _send(conn: multiprocessing.connection.Connection, message: Any) -> None:
    """``conn.send`` with the plain pickler: nothing sent here needs multiprocessing's reducers,
    and its pickler costs a few microseconds a message more."""
    conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def _receive(conn: multiprocessing.connection.Connection, pending: deque[Job | None]) -> None:
    """Add the next batch from the supervisor to *pending* (a stop mark when it is gone)."""
    try:
        batch = conn.recv()
    except EOFError:
        batch = None
    pending.extend([None] if batch is None else batch)


def _poller(conn: multiprocessing.connection.Connection) -> Callable[[], bool]:
    """A cheap check for a waiting message (``Connection.poll`` builds a selector per call)."""
    if not hasattr(select, "poll"):
        return lambda: conn.poll(0)
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return lambda: bool(poller.poll(0))


@dataclass(eq=False)
class _Child:
    process: Any
    conn: multiprocessing.connection.Connection
    waiting: Callable[[], bool]
    jobs: deque[Job] = field(default_factory=deque)
    #: How many of ``jobs`` (a prefix: a process runs its jobs in order) have started, as the
    #: process said. The last of them runs; the ones before it ended, their results on the way.
    started: int = 0
    assigned: int = 0
    retiring: bool = False
    alive: bool = True
    outbox: list[Job] = field(default_factory=list)
    kill_reason: BaseException | None = None
    hard_timer: asyncio.TimerHandle | None = None

    @property
    def pid(self) -> int:
        return int(self.process.pid)


#: A task whose recent runs took less than this (seconds) counts as short.
SHORT_TASK = 0.002
#: At most this many short jobs queue in one process: past the first few, queueing more saves
#: nothing, and it bounds how long they wait if one of them runs long after all.
MAX_SHORT_DEPTH = 16


class PreforkPool(Pool):
    """See the module docstring."""

    name = "prefork"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ctx: Any = multiprocessing.get_context(START_METHOD)
        self._children: list[_Child] = []
        #: Recent run time per task name (a moving average), to tell short tasks.
        self._runtime: dict[str, float] = {}
        self._stopping = False
        self._idle = asyncio.Event()
        #: Only a memory limit needs each job's RSS (a system call per job otherwise saved).
        self._measure_rss = bool(self.options.max_memory_per_child)

    # -- children --------------------------------------------------------------------------------
    def _spawn(self) -> _Child:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        app_ref: Celery | str = self.app
        if START_METHOD != "fork":
            if not self.options.app_locator:
                raise RuntimeError("the prefork pool needs the app's import path on this platform")
            app_ref = self.options.app_locator
        signals.worker_before_create_process.send(sender=self)
        process = self._ctx.Process(
            target=child_main,
            args=(app_ref, child_conn, self.options.hostname, self._measure_rss),
            name=f"ForkPoolWorker-{len(self._children) + 1}",
            daemon=True,
        )
        process.start()
        child_conn.close()
        child = _Child(process, parent_conn, _poller(parent_conn))
        assert self.loop is not None
        self.loop.add_reader(parent_conn.fileno(), self._on_readable, child)
        self.loop.add_reader(process.sentinel, self._on_exit, child)
        self._children.append(child)
        return child

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        for _ in range(self.concurrency):
            self._spawn()
        self._idle.set()

    def _live(self) -> list[_Child]:
        return [c for c in self._children if c.alive and not c.retiring]

    @property
    def depth(self) -> int:
        return max(1, self.options.process_queue_depth)

    def _room(self, child: _Child) -> int:
        """How many more jobs *child* may queue.

        Jobs wait in a process's pipe behind its running job, so a long one delays those queued
        behind it. Only ``depth`` jobs (2; 1 with ``-O fair``) queue in a process, unless every
        job it holds is of a task known to be short: then up to ``MAX_SHORT_DEPTH``, which saves
        a supervisor round trip per task for floods of short tasks.
        """
        held = len(child.jobs)
        if held < self.depth:
            return self.depth - held
        if self.depth < 2 or held >= MAX_SHORT_DEPTH:
            return 0
        runtime = self._runtime
        if all(runtime.get(job.name, SHORT_TASK) < SHORT_TASK for job in child.jobs):
            return MAX_SHORT_DEPTH - held
        return 0

    @property
    def free_slots(self) -> int:
        return sum(self._room(c) for c in self._live())

    def submit(self, job: Job) -> None:
        candidates = [c for c in self._live() if self._room(c) > 0]
        if not candidates:
            raise RuntimeError("prefork pool has no free process")
        child = min(candidates, key=lambda c: len(c.jobs))
        child.jobs.append(job)
        child.assigned += 1
        self._idle.clear()
        if not child.outbox:
            assert self.loop is not None
            self.loop.call_soon(self._send_outbox, child)
        child.outbox.append(job)
        self._check_recycle_quota(child)

    def flush(self) -> None:
        for child in self._children:
            if child.outbox:
                self._send_outbox(child)

    def _send_outbox(self, child: _Child) -> None:
        batch, child.outbox = child.outbox, []
        if batch and child.alive:
            try:
                _send(child.conn, batch)
            except OSError:
                pass  # it died; its sentinel reports the jobs

    def _check_recycle_quota(self, child: _Child) -> None:
        limit = self.options.max_tasks_per_child
        if limit and child.assigned >= limit and not child.retiring:
            # No more jobs for it: it exits after the ones it holds, and a fresh process
            # takes its slot.
            child.retiring = True
            child.outbox.append(None)  # type: ignore[arg-type]
            self._replenish()

    def _running(self, child: _Child) -> Job | None:
        """The job *child* runs now, as far as it said."""
        return child.jobs[child.started - 1] if child.started else None

    def _job_started(self, child: _Child, job_id: str) -> None:
        if child.started >= len(child.jobs) or child.jobs[child.started].id != job_id:
            logger.error("pool process %d started %s, which it was not given", child.pid, job_id)
            return
        job = child.jobs[child.started]
        child.started += 1
        if child.hard_timer is not None:  # the job before it ended
            child.hard_timer.cancel()
            child.hard_timer = None
        self.on_start(job, child.pid)
        if job.time_limit:
            assert self.loop is not None
            child.hard_timer = self.loop.call_later(job.time_limit, self._hard_limit, child, job)

    def _hard_limit(self, child: _Child, job: Job) -> None:
        if self._running(child) is job and child.process.is_alive():
            logger.error(
                "Hard time limit (%ss) exceeded for %s[%s]; killing pool process %d",
                job.time_limit,
                job.name,
                job.id,
                child.pid,
            )
            child.kill_reason = TimeLimitExceeded(job.time_limit)
            os.kill(child.pid, signal.SIGKILL)

    def _on_readable(self, child: _Child) -> None:
        # The loop calls again while more is buffered; only a start message, which the job's
        # result often follows at once, is worth a look for more in the same wake-up.
        while True:
            try:
                message = child.conn.recv()
            except (EOFError, OSError):
                self._forget_reader(child)
                return
            self._on_message(child, message)
            if not isinstance(message, str) or child.conn.closed or not child.waiting():
                return

    def _on_message(self, child: _Child, message: Any) -> None:
        if isinstance(message, list):  # several reports in one message
            for item in message:
                self._on_message(child, item)
            return
        if isinstance(message, str):  # the id of the job it starts now
            self._job_started(child, message)
        else:
            self._job_finished(child, message)

    def _job_finished(self, child: _Child, result: JobResult) -> None:
        if not child.started or child.jobs[0].id != result.id:
            logger.error(
                "pool process %d reported %s, which it had not started", child.pid, result.id
            )
            return
        job = child.jobs.popleft()
        child.started -= 1
        if not child.started and child.hard_timer is not None:
            child.hard_timer.cancel()
            child.hard_timer = None
        last = self._runtime.get(job.name)
        self._runtime[job.name] = (
            result.runtime if last is None else 0.8 * last + 0.2 * result.runtime
        )
        self._maybe_retire(child, result)
        self.on_done(job, result)
        self._check_idle()

    def _maybe_retire(self, child: _Child, result: JobResult) -> None:
        limit_memory = self.options.max_memory_per_child
        if child.retiring or not (limit_memory and result.rss_kb > limit_memory):
            return
        child.retiring = True
        if child.jobs:
            # Jobs already in its pipe still run there; it exits after them.
            child.outbox.append(None)  # type: ignore[arg-type]
            assert self.loop is not None
            self.loop.call_soon(self._send_outbox, child)
        else:
            _send(child.conn, None)
        self._replenish()

    def _replenish(self) -> None:
        while not self._stopping and len(self._live()) < self.concurrency:
            self._spawn()

    def _forget_reader(self, child: _Child) -> None:
        assert self.loop is not None
        try:
            self.loop.remove_reader(child.conn.fileno())
        except (ValueError, OSError):
            pass

    def _on_exit(self, child: _Child) -> None:
        assert self.loop is not None
        child.alive = False
        self.loop.remove_reader(child.process.sentinel)
        try:
            while child.conn.poll():  # results sent just before exiting still count
                self._on_message(child, child.conn.recv())
        except (EOFError, OSError):
            pass
        self._forget_reader(child)
        child.process.join(0)
        if child.hard_timer is not None:
            child.hard_timer.cancel()
        self._children.remove(child)
        jobs = list(child.jobs)
        # A job it was told to stop (time limit, terminate) counts as lost even if the kill came
        # before the process said it started.
        lost = max(child.started, 1 if child.kill_reason is not None else 0)
        started, unstarted = jobs[:lost], jobs[lost:]
        child.jobs.clear()
        child.outbox.clear()
        child.conn.close()
        # The last started job ran when the process died; any before it had ended, but their
        # results had not been reported, so they may not be stored: they count as lost too.
        for i, job in enumerate(started):
            self._report_lost(child, job, running=i == len(started) - 1)
        if unstarted:
            # Jobs it never started (queued behind its last one, e.g. after SIGTERM): other
            # processes run them, or, when the pool is stopping, they go back to the queue.
            self._replenish()
            for job in unstarted:
                self._resubmit(job)
        if not self._stopping and not child.retiring:
            code = child.process.exitcode
            log = logger.warning if code == 0 else logger.error  # 0: it was sent SIGTERM
            log("Pool process %d exited with code %s", child.pid, code)
        self._replenish()
        self._check_idle()

    def _resubmit(self, job: Job) -> None:
        candidates = [c for c in self._live() if c.process.pid is not None]
        if self._stopping or not candidates:
            # Not started: the consumer requeues it (no on_start, so it was never acked).
            self.on_done(
                job, JobResult(job.id, WORKER_LOST, exc_repr="pool process exited before it")
            )
            return
        child = min(candidates, key=lambda c: len(c.jobs))
        child.jobs.append(job)
        child.assigned += 1
        if not child.outbox:
            assert self.loop is not None
            self.loop.call_soon(self._send_outbox, child)
        child.outbox.append(job)

    def _report_lost(self, child: _Child, job: Job, running: bool) -> None:
        if running and isinstance(child.kill_reason, TimeLimitExceeded):
            result = fail_job(self.app, job, child.kill_reason)
        else:
            code = child.process.exitcode
            result = JobResult(
                job.id, WORKER_LOST, exc_repr=repr(WorkerLostError(_exit_text(code)))
            )
            result.extra["exitcode"] = code
            result.extra["terminated"] = running and child.kill_reason is not None
        self.on_done(job, result)

    def _check_idle(self) -> None:
        if not any(c.jobs for c in self._children):
            self._idle.set()

    # -- control ---------------------------------------------------------------------------------
    async def stop(self, graceful: bool) -> None:
        self._stopping = True
        if graceful:
            await self._idle.wait()
        for child in list(self._children):
            if graceful:
                try:
                    _send(child.conn, [None])
                except OSError:
                    pass
            elif child.process.is_alive():
                os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self._children and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for child in list(self._children):
            if child.process.is_alive():
                os.kill(child.pid, signal.SIGKILL)

    def terminate_job(self, job_id: str, signum: int) -> bool:
        for child in self._children:
            # Before its start message arrives, jobs[0] is taken as running: it is about to.
            running = self._running(child) or (child.jobs[0] if child.jobs else None)
            if running is not None and running.id == job_id and child.process.is_alive():
                child.kill_reason = WorkerLostError(f"terminated by signal {signum}")
                # Pool processes finish their task on SIGTERM (graceful stops); terminating a
                # task must stop it now.
                os.kill(child.pid, signal.SIGKILL if signum == signal.SIGTERM else signum)
                return True
        return False

    def grow(self, n: int = 1) -> None:
        super().grow(n)
        self._replenish()

    def shrink(self, n: int = 1) -> None:
        for child in [c for c in self._live() if not c.jobs][:n]:
            child.retiring = True
            _send(child.conn, [None])
        super().shrink(n)

    def info(self) -> dict[str, Any]:
        return {
            **super().info(),
            "processes": [c.pid for c in self._children],
            "max-tasks-per-child": self.options.max_tasks_per_child or "N/A",
            "put-guarded-by-semaphore": False,
            "timeouts": [0, 0],
            "writes": {},
        }

    def pids(self) -> list[int]:
        return [c.pid for c in self._children]


def _exit_text(code: int | None) -> str:
    if code is None:
        return "pool process exited"
    if code < 0:
        try:
            return f"Worker exited prematurely: signal {-code} ({signal.Signals(-code).name})."
        except ValueError:
            return f"Worker exited prematurely: signal {-code}."
    return f"Worker exited prematurely: exitcode {code}."
