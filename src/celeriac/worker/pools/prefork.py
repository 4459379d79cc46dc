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
import ctypes
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

from celeriac import signals, states
from celeriac.backends.writebehind import WriteBehindStore
from celeriac.exceptions import TimeLimitExceeded, WorkerLostError
from celeriac.protocol.message import Delivery
from celeriac.worker.job import WORKER_LOST, Job, JobResult, current_rss_kb, fail_job, run_job
from celeriac.worker.limits import soft_limit_alarm
from celeriac.worker.pools.base import Pool, SelfFetchHooks
from celeriac.worker.pools.self_fetch import (
    ENDED,
    HANDED,
    RUNNING,
    WAITING,
    Board,
    Control,
    FetchPlan,
    SelfFetcher,
    over_memory,
)

if TYPE_CHECKING:
    from celeriac.app.base import Celery

logger = logging.getLogger("celeriac.worker.pool")

START_METHOD = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"

#: A task whose recent runs took less than this (seconds) counts as short.
SHORT_TASK = 0.002
#: First wait (seconds) of a pool process that cannot fetch from the broker; it doubles.
FETCH_RETRY = 1.0


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
    starts: Any,
    board: Board | None = None,
    max_tasks: int | None = None,
    max_memory_kb: int | None = None,
) -> None:
    """The loop of one pool process: receive jobs, run them in order, report each (with the
    process's peak RSS when *measure_rss*: ``max_memory_per_child`` compares it).

    Before running a job it counts it in *starts*, memory shared with the supervisor, so the
    supervisor knows exactly which jobs started (a job that never started is not lost when the
    process exits: it goes back to the queue). It also says so on the pipe, except for a job of
    a task known to be short with more jobs queued behind it: the supervisor reads the count
    when the next message comes, which saves a wake-up of the supervisor per task in floods of
    short tasks. A job's result goes out once the result is stored (results are written behind,
    so several may go as one list), or, with nothing to write, with the next message.

    Told to (a ``fetch`` order, see ``self_fetch``), it also fetches tasks for itself, between
    the jobs the supervisor sends, and then retires itself after *max_tasks* tasks or past
    *max_memory_kb*.

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
    loop = _ChildLoop(app, conn, hostname, board, max_tasks, max_memory_kb)
    loop.runner = _Runner(app, conn, starts, measure_rss, loop.idle)
    try:
        loop.run(state)
    finally:
        try:
            loop.give_back()
        except Exception:
            logger.exception("pool process %d: giving back its fetched tasks failed", os.getpid())
        try:
            loop.runner.flush()
        except OSError:
            pass  # the supervisor is gone
        signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)
        app.close()


class _ChildLoop:
    """The work loop of a pool process (see ``child_main``): the supervisor's jobs first, then,
    once told to fetch, the tasks it fetches itself."""

    runner: _Runner

    def __init__(
        self,
        app: Celery,
        conn: multiprocessing.connection.Connection,
        hostname: str,
        board: Board | None,
        max_tasks: int | None,
        max_memory_kb: int | None,
    ) -> None:
        self.app = app
        self.conn = conn
        self.hostname = hostname
        self.board = board
        self.max_tasks = max_tasks
        self.max_memory_kb = max_memory_kb
        self.pending: deque[Job | None] = deque()
        self.waiting = _poller(conn)
        self.fetcher: SelfFetcher | None = None
        self.done = 0  # tasks run (max_tasks counts them while the process fetches)
        self.retired = False
        self.backoff = FETCH_RETRY

    def idle(self) -> bool:
        f = self.fetcher
        return not self.pending and not self.waiting() and not (f is not None and f.busy)

    def obey(self, order: Control) -> None:
        if order.kind == "fetch" and self.board is not None:
            plan, revoked = order.value
            times = self.runner.runtime
            self.fetcher = SelfFetcher(
                self.app,
                self.board,
                self.runner.send_now,
                plan,
                revoked,
                times.short_name,
                times.add,
                self.hostname,
                self.waiting,
            )
        elif self.fetcher is not None:
            self.fetcher.apply(order)

    def run(self, state: dict[str, bool]) -> None:
        pending = self.pending
        while not state["stop"]:
            fetcher = self.fetcher
            if fetcher is not None and not (fetcher.on and (fetcher.queues or fetcher.has_work())):
                fetcher = None  # not fetching (or from no queue): only the supervisor's jobs
            if self.waiting() or (not pending and fetcher is None):
                if self.retired and not pending and not self.waiting():
                    return
                _receive(self.conn, pending, self.obey)
                continue
            # From here SIGTERM waits: for the job's result to be sent, or for the fetch (a
            # message it popped is never dropped).
            state["busy"] = True
            ran = True
            if pending:
                job = pending.popleft()
                if job is None or state["stop"]:
                    return
                self.runner.run(job, pending[0] if pending else None)
            elif fetcher is not None and fetcher.has_work():
                ran = fetcher.step() is not None  # else handed to the supervisor
            elif fetcher is not None:
                self.runner.flush()
                fetcher.report_tally(now=not fetcher.busy)
                room = self.max_tasks - self.done if self.max_tasks else None
                self._fetch(fetcher, room)
                ran = False
            state["busy"] = False
            if ran:
                self.done += 1
                self._maybe_retire(fetcher)

    def _fetch(self, fetcher: SelfFetcher, room: int | None) -> None:
        try:
            fetcher.fetch(block=True, room=room)
            self.backoff = FETCH_RETRY
        except Exception as exc:
            # The broker is away (the transport retried already): wait, keep serving the
            # supervisor's jobs, and try again.
            logger.error(
                "pool process %d: cannot fetch from the broker (%s); retrying in %.0fs",
                os.getpid(),
                exc,
                self.backoff,
            )
            select.select([self.conn], [], [], self.backoff)
            self.backoff = min(self.backoff * 2, 30.0)

    def _maybe_retire(self, fetcher: SelfFetcher | None) -> None:
        if fetcher is None or self.retired:
            return
        if (self.max_tasks and self.done >= self.max_tasks) or over_memory(self.max_memory_kb):
            # Done: what it holds goes back, and the supervisor starts a fresh process.
            self.retired = True
            fetcher.give_back()
            fetcher.on = False
            self.runner.send_now(("bye",))

    def give_back(self) -> None:
        if self.fetcher is not None and self.fetcher.on:
            self.fetcher.on = False
            self.fetcher.give_back()


class _Runner:
    """Runs one job at a time in a pool process and tells the supervisor (see ``child_main``)."""

    def __init__(
        self,
        app: Celery,
        conn: multiprocessing.connection.Connection,
        starts: Any,
        measure_rss: bool,
        idle: Callable[[], bool],
    ) -> None:
        self.app = app
        self.starts = starts
        self.measure_rss = measure_rss
        self.send_now, self.report, self.quiet = _reporter(app, conn, idle)
        self.runtime = _Runtimes()
        self.held: list[JobResult] = []  # results with nothing to write, for the next message

    def run(self, job: Job, following: Job | None) -> None:
        """Run *job*; *following* is the job queued behind it, if any."""
        self.starts.value += 1
        if following is None or job.time_limit or not self.runtime.short(job):
            # Said at once: the supervisor acks the job now, times its hard limit, and
            # refills this process while it runs its last job.
            self.send_now([*self.held, job.id] if self.held else job.id)
            self.held = []
        with soft_limit_alarm(job.soft_time_limit):
            result = run_job(self.app, job)
        if self.measure_rss:
            result.rss_kb = current_rss_kb()
        self.runtime.add(job.name, result.runtime)
        if following is not None and self.runtime.short(following) and self.quiet():
            self.held.append(result)  # the next job starts right away
            return
        self.flush()
        self.report(result)

    def flush(self) -> None:
        """Send the results held back, before anything reported after them."""
        if self.held:
            held, self.held = self.held, []
            self.send_now(held)


class _Runtimes:
    """Recent run time per task name (a moving average), to tell short tasks."""

    __slots__ = ("_avg",)

    def __init__(self) -> None:
        self._avg: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        last = self._avg.get(name)
        self._avg[name] = seconds if last is None else 0.8 * last + 0.2 * seconds

    def short(self, job: Job | None) -> bool:
        """True when *job*'s task is known to run for less than SHORT_TASK."""
        return job is not None and self._avg.get(job.name, SHORT_TASK) < SHORT_TASK

    def short_name(self, name: str) -> bool:
        return self._avg.get(name, SHORT_TASK) < SHORT_TASK


def _reporter(
    app: Celery, conn: multiprocessing.connection.Connection, idle: Callable[[], bool]
) -> tuple[Callable[[Any], None], Callable[[Any], None], Callable[[], bool]]:
    """How the process reports to the supervisor: ``(send_now, report, quiet)``, *quiet*
    telling whether no result write is queued (a report may then go with the next message).

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
        return send, send, lambda: True
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
    return send_now, behind.report, behind.quiet


def _send(conn: multiprocessing.connection.Connection, message: Any) -> None:
    """``conn.send`` with the plain pickler: nothing sent here needs multiprocessing's reducers,
    and its pickler costs a few microseconds a message more."""
    conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def _receive(
    conn: multiprocessing.connection.Connection,
    pending: deque[Job | None],
    obey: Callable[[Control], None],
) -> None:
    """Add the next batch from the supervisor to *pending* (a stop mark when it is gone);
    orders in it are carried out at once."""
    try:
        batch = conn.recv()
    except EOFError:
        batch = None
    if batch is None:
        pending.append(None)
        return
    for item in batch:
        if isinstance(item, Control):
            obey(item)
        else:
            pending.append(item)


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
    #: How many jobs the process started since it was spawned (shared memory it counts in).
    starts: Any
    jobs: deque[Job] = field(default_factory=deque)
    #: How many of ``jobs`` (a prefix: a process runs its jobs in order) are known to have
    #: started. The last of them runs; the ones before it ended, their results on the way.
    started: int = 0
    #: How many jobs it finished (reported) since it was spawned.
    finished: int = 0
    assigned: int = 0
    retiring: bool = False
    alive: bool = True
    outbox: list[Job] = field(default_factory=list)
    kill_reason: BaseException | None = None
    hard_timer: asyncio.TimerHandle | None = None
    #: The batch it fetched for itself (see ``self_fetch``).
    board: Board | None = None

    @property
    def pid(self) -> int:
        return int(self.process.pid)


#: At most this many short jobs queue in one process: past the first few, queueing more saves
#: nothing, and it bounds how long they wait if one of them runs long after all.
MAX_SHORT_DEPTH = 16
#: How often (seconds) the supervisor reads the start counts while some jobs' starts are unsaid.
START_CHECK = 0.05


class PreforkPool(Pool):
    """See the module docstring."""

    name = "prefork"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ctx: Any = multiprocessing.get_context(START_METHOD)
        self._children: list[_Child] = []
        #: Recent run time per task name (a moving average), to tell short tasks.
        self._runtime = _Runtimes()
        self._sync_timer: asyncio.TimerHandle | None = None
        self._stopping = False
        self._idle = asyncio.Event()
        #: Only a memory limit needs each job's RSS (a system call per job otherwise saved).
        self._measure_rss = bool(self.options.max_memory_per_child)
        #: Set while the processes fetch for themselves.
        self._plan: FetchPlan | None = None
        self._hooks: SelfFetchHooks | None = None

    # -- children --------------------------------------------------------------------------------
    def _spawn(self) -> _Child:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        starts = self._ctx.RawValue(ctypes.c_uint64, 0)
        board = Board(self._ctx)
        o = self.options
        app_ref: Celery | str = self.app
        if START_METHOD != "fork":
            if not self.options.app_locator:
                raise RuntimeError("the prefork pool needs the app's import path on this platform")
            app_ref = self.options.app_locator
        signals.worker_before_create_process.send(sender=self)
        process = self._ctx.Process(
            target=child_main,
            args=(
                app_ref,
                child_conn,
                o.hostname,
                self._measure_rss,
                starts,
                board,
                o.max_tasks_per_child,
                o.max_memory_per_child,
            ),
            name=f"ForkPoolWorker-{len(self._children) + 1}",
            daemon=True,
        )
        process.start()
        child_conn.close()
        child = _Child(process, parent_conn, _poller(parent_conn), starts, board=board)
        assert self.loop is not None
        self.loop.add_reader(parent_conn.fileno(), self._on_readable, child)
        self.loop.add_reader(process.sentinel, self._on_exit, child)
        self._children.append(child)
        if self._plan is not None:
            self._order(child, self._fetch_order())
        return child

    # -- processes that fetch for themselves -------------------------------------------------------
    def start_self_fetch(self, queues: list[str], limit: int, hooks: SelfFetchHooks) -> bool:
        if not self.app.transport.supports_pool_fetch:
            return False
        self._plan = FetchPlan(tuple(queues), limit)
        self._hooks = hooks
        self.self_fetching = True
        order = self._fetch_order()
        for child in self._children:
            self._order(child, order)
        return True

    def _fetch_order(self) -> Control:
        assert self._hooks is not None
        return Control("fetch", (self._plan, self._hooks.revoked()))

    def stop_self_fetch(self) -> None:
        if self._plan is None:
            return
        self._plan = None
        self.self_fetching = False
        for child in self._children:
            self._order(child, Control("stop-fetching"))

    def forward_revoked(self, ids: list[str]) -> None:
        if self._plan is not None:
            for child in self._children:
                self._order(child, Control("revoke", list(ids)), wake=False)

    def forward_queues(self, queues: list[str]) -> None:
        if self._plan is not None:
            self._plan = FetchPlan(tuple(queues), self._plan.limit)
            for child in self._children:
                self._order(child, Control("queues", list(queues)))

    def _order(self, child: _Child, order: Control, wake: bool = True) -> None:
        if not child.alive:
            return
        child.outbox.append(order)  # type: ignore[arg-type]
        self._send_outbox(child, wake)

    def _wake(self, child: _Child) -> None:
        """End the fetch wait of *child*, if it waits: what was sent to it runs now."""
        board = child.board
        waker = board.waker.value if board is not None else 0
        if waker:
            assert self.loop is not None
            self.loop.run_in_executor(None, _wake_fetch, self.app, waker)

    def self_fetched(self) -> list[tuple[str, Delivery]]:
        found = []
        for child in self._children:
            for delivery, mark in self._boarded(child):
                if mark == RUNNING:
                    found.append(("active", delivery))
                elif mark == WAITING:
                    found.append(("reserved", delivery))
        return found

    def _boarded(self, child: _Child) -> list[tuple[Delivery, int]]:
        """The messages on *child*'s board, with their states (see ``self_fetch``)."""
        if child.board is None:
            return []
        read = child.board.read()
        if read is None:
            logger.error(
                "pool process %d: its fetched batch could not be read; those messages return "
                "to their queues when their leases expire",
                child.pid,
            )
            return []
        transport = self.app.transport
        out = []
        for (raw, queue, tag, _task_id), mark in read:
            try:
                out.append((transport.redelivery(raw, queue, tag), mark))
            except Exception:
                logger.exception("pool process %d held an unreadable message %s", child.pid, tag)
        return out

    def held_leases(self) -> list[Delivery]:
        """Messages the processes fetched for themselves and may still hold leases on."""
        return [d for c in self._children for d, mark in self._boarded(c) if mark != HANDED]

    def _settle_board(self, child: _Child) -> None:
        """*child* died: settle the messages it fetched for itself, as its jobs are settled."""
        if self._hooks is None:
            return  # it never fetched
        for delivery, mark in self._boarded(child):
            if mark == HANDED:
                continue
            if mark == WAITING:
                self._hooks.orphan(delivery, None)
                continue
            task_id = str(delivery.message.headers.get("id") or "")
            stored = self._stored_outcome(task_id) if mark == ENDED else None
            self._hooks.orphan(delivery, stored or self._lost(child, task_id, mark == RUNNING))

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
        if all(self._runtime.short(job) for job in child.jobs):
            return MAX_SHORT_DEPTH - held
        return 0

    @property
    def free_slots(self) -> int:
        return sum(self._room(c) for c in self._live())

    def submit(self, job: Job) -> None:
        candidates = [c for c in self._live() if self._room(c) > 0]
        if not candidates:
            raise RuntimeError("prefork pool has no free process")
        child = min(candidates, key=_load)
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
        self._watch_starts()

    def _send_outbox(self, child: _Child, wake: bool = True) -> None:
        batch, child.outbox = child.outbox, []
        if batch and child.alive:
            try:
                _send(child.conn, batch)
            except OSError:
                return  # it died; its sentinel reports the jobs
            if wake:
                self._wake(child)

    def _check_recycle_quota(self, child: _Child) -> None:
        limit = self.options.max_tasks_per_child
        if self._plan is not None:
            return  # a process that fetches counts its tasks itself
        if limit and child.assigned >= limit and not child.retiring:
            # No more jobs for it: it exits after the ones it holds, and a fresh process
            # takes its slot.
            child.retiring = True
            child.outbox.append(None)  # type: ignore[arg-type]
            self._replenish()

    def _running(self, child: _Child) -> Job | None:
        """The job *child* runs now, as far as it said."""
        return child.jobs[child.started - 1] if child.started else None

    def _sync_starts(self, child: _Child) -> None:
        """Take in the jobs *child* started since last asked (it counts them in shared memory,
        and says so on the pipe only for some)."""
        unsaid = child.starts.value - child.finished - child.started
        for _ in range(min(unsaid, len(child.jobs) - child.started)):
            self._job_started(child, child.jobs[child.started])

    def _watch_starts(self) -> None:
        """Look at the counts now and then while jobs might have started unsaid: a job of a
        task thought short may run long, and its early ack should not wait for its result."""
        if self._sync_timer is not None or not any(len(c.jobs) > c.started for c in self._children):
            return
        assert self.loop is not None
        self._sync_timer = self.loop.call_later(START_CHECK, self._check_starts)

    def _check_starts(self) -> None:
        self._sync_timer = None
        for child in list(self._children):
            if child.alive:
                self._sync_starts(child)
        self._watch_starts()

    def _job_started(self, child: _Child, job: Job) -> None:
        child.started += 1
        if child.hard_timer is not None:  # the job before it ended
            child.hard_timer.cancel()
            child.hard_timer = None
        self.on_start(job, child.pid)
        if job.time_limit:
            assert self.loop is not None
            child.hard_timer = self.loop.call_later(job.time_limit, self._hard_limit, child, job)

    def _hard_limit(self, child: _Child, job: Job) -> None:
        self._sync_starts(child)  # the job may have ended, and a short one started unsaid
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
                break
        # The other processes may have started jobs unsaid meanwhile: count them too.
        for other in self._children:
            if other is not child and other.alive and len(other.jobs) > other.started:
                self._sync_starts(other)

    def _on_message(self, child: _Child, message: Any) -> None:
        if isinstance(message, list):  # several reports in one message
            for item in message:
                self._on_message(child, item)
            return
        if isinstance(message, tuple):  # from a process that fetches for itself
            self._on_fetcher_message(child, message)
            return
        if isinstance(message, str):  # it starts a job now (the count says which)
            self._sync_starts(child)
        else:
            self._job_finished(child, message)

    def _on_fetcher_message(self, child: _Child, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "bye":  # it reached its task or memory limit: it exits, a new one starts
            child.retiring = True
            self._replenish()
        elif self._hooks is None:
            logger.error("pool process %d sent %r unasked", child.pid, kind)
        elif kind == "adopt":
            self._hooks.adopt(message[1])
        elif kind == "tally":
            self._hooks.tally(message[1])

    def _job_finished(self, child: _Child, result: JobResult) -> None:
        if not child.started:
            self._sync_starts(child)
        if not child.started or child.jobs[0].id != result.id:
            logger.error(
                "pool process %d reported %s, which it had not started", child.pid, result.id
            )
            return
        job = child.jobs.popleft()
        child.started -= 1
        child.finished += 1
        if not child.started and child.hard_timer is not None:
            child.hard_timer.cancel()
            child.hard_timer = None
        self._runtime.add(job.name, result.runtime)
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
        self._sync_starts(child)  # it may have started a job it had no time to mention
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
        self._settle_board(child)
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
        child = min(candidates, key=_load)
        child.jobs.append(job)
        child.assigned += 1
        if not child.outbox:
            assert self.loop is not None
            self.loop.call_soon(self._send_outbox, child)
        child.outbox.append(job)

    def _report_lost(self, child: _Child, job: Job, running: bool) -> None:
        stored = None if running else self._stored_outcome(job.id)
        if stored is not None:
            result = stored
        elif running and isinstance(child.kill_reason, TimeLimitExceeded):
            result = fail_job(self.app, job, child.kill_reason)
        else:
            result = self._lost(child, job.id, running)
        self.on_done(job, result)

    def _lost(self, child: _Child, job_id: str, running: bool) -> JobResult:
        code = child.process.exitcode
        result = JobResult(job_id, WORKER_LOST, exc_repr=repr(WorkerLostError(_exit_text(code))))
        result.extra["exitcode"] = code
        result.extra["terminated"] = running and child.kill_reason is not None
        return result

    def _stored_outcome(self, job_id: str) -> JobResult | None:
        """How a job that had ended in a process that died before reporting it ended, as far
        as its stored result tells (results are written before they are reported); None when
        no final result is stored. The job ran: failing it now would overwrite its result."""
        backend = self.app.backend
        if backend is None or hasattr(backend.store, "send_reply"):
            return None
        try:
            state = backend.get_task_meta(job_id).get("status")
        except Exception:
            logger.exception("reading the result of %s after its pool process died", job_id)
            return None
        return JobResult(job_id, state) if state in states.READY_STATES else None

    def _check_idle(self) -> None:
        if not any(c.jobs for c in self._children):
            self._idle.set()

    # -- control ---------------------------------------------------------------------------------
    async def stop(self, graceful: bool) -> None:
        self._stopping = True
        if graceful and self._plan is not None:
            # Processes that fetch run their current task, give the rest back, and exit: wait
            # for them (a second signal makes the stop cold).
            for child in list(self._children):
                self._order(child, None)  # type: ignore[arg-type]
            while self._children:
                await asyncio.sleep(0.02)
        elif graceful:
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
            for delivery, mark in self._boarded(child):
                if mark == RUNNING and delivery.message.headers.get("id") == job_id:
                    return self._terminate(child, signum)
        for child in self._children:
            self._sync_starts(child)
            # Before its start message arrives, jobs[0] is taken as running: it is about to.
            running = self._running(child) or (child.jobs[0] if child.jobs else None)
            if running is not None and running.id == job_id:
                return self._terminate(child, signum)
        return False

    def _terminate(self, child: _Child, signum: int) -> bool:
        if not child.process.is_alive():
            return False
        child.kill_reason = WorkerLostError(f"terminated by signal {signum}")
        # Pool processes finish their task on SIGTERM (graceful stops); terminating a task
        # must stop it now.
        os.kill(child.pid, signal.SIGKILL if signum == signal.SIGTERM else signum)
        return True

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
            "self-fetching": self.self_fetching,
        }

    def pids(self) -> list[int]:
        return [c.pid for c in self._children]


def _load(child: _Child) -> tuple[int, bool]:
    """How busy *child* is, to pick the least busy: the jobs it holds, then (a process that
    fetches for itself) whether it runs a task of its own rather than waiting for one."""
    board = child.board
    return len(child.jobs), board is not None and not board.waker.value and board.busy()


def _wake_fetch(app: Celery, waker: int) -> None:
    try:
        app.transport.wake_fetch(waker)
    except Exception as exc:
        # It still sees the job when its wait times out (at most a second).
        logger.warning("could not wake a pool process waiting for messages: %r", exc)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "pool process exited"
    if code < 0:
        try:
            return f"Worker exited prematurely: signal {-code} ({signal.Signals(-code).name})."
        except ValueError:
            return f"Worker exited prematurely: signal {-code}."
    return f"Worker exited prematurely: exitcode {code}."
