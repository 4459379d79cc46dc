"""Receiving tasks: fetch within the prefetch window, hold ETAs and rate limits, dispatch to the
pool, and ack/requeue/dead-letter in batches. Runs on the worker's event loop; broker calls run on
two worker threads (one blocking fetch, one for acks and other writes) so the loop never waits for
the broker, except for one short, bounded fetch call while messages are waiting
(``Transport.fetch_nowait``)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celeriac import signals, states
from celeriac.exceptions import NotRegistered, OperationalError, WorkerLostError
from celeriac.protocol.message import Delivery
from celeriac.protocol.task import parse
from celeriac.worker.job import WORKER_LOST, Job, JobResult, fail_job
from celeriac.worker.limits import RateLimit
from celeriac.worker.pools.base import SelfFetchHooks
from celeriac.worker.request import Request

if TYPE_CHECKING:
    from celeriac.worker.worker import Worker

logger = logging.getLogger("celeriac.worker.consumer")

FETCH_TIMEOUT = 1.0
#: Acks wait at most the transport's ``ack_delay`` (or until ACK_BATCH are pending) so they go out
#: in batches.
ACK_BATCH = 64
#: At most this many ETA messages are held in memory; more are parked in the broker.
MAX_HELD_ETA = 1000
#: How many messages a self-fetching pool process takes at a time with no prefetch limit.
SELF_FETCH_UNLIMITED = 64

#: A broker write waiting for a fetch to return: (function, arguments, future of its outcome).
_HeldWrite = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]


class Consumer:
    """See the module docstring."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.app = worker.app
        self.transport = worker.app.transport
        self.pool = worker.pool
        self.queues = worker.queue_names
        self.accept = worker.app.conf.accept_content
        self.park_after = float(worker.app.conf.worker_eta_park_threshold)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._fetcher = ThreadPoolExecutor(1, thread_name_prefix="celeriac-fetch")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="celeriac-broker")
        self.ready: deque[Request] = deque()
        self.active: dict[str, Request] = {}
        #: Active requests already acked (early ack at start): they no longer use the window.
        self._running_acked = 0
        self.held: dict[str, Request] = {}  # ETA or rate-limited, waiting in memory
        self.leased: dict[str, Delivery] = {}
        self._acks: list[Delivery] = []
        self._ack_timer: asyncio.TimerHandle | None = None
        self._room = asyncio.Event()
        self._rate_limits: dict[str, RateLimit] = {}
        self.stopping = False
        self.cold = False
        self.paused_queues: set[str] = set()
        #: Tags the fetch in progress handed over early: their leases may not be recorded yet,
        #: so broker writes settling them wait (in order) until that fetch returns.
        self._unrecorded: set[str] = set()
        self._held_writes: list[_HeldWrite] = []

    # -- the fetch loop --------------------------------------------------------------------------
    @property
    def window(self) -> int:
        w = self.worker
        multiplier = w.prefetch_multiplier
        if multiplier <= 0:
            return 10000
        return max(1, self.pool.concurrency * multiplier)

    def _room_left(self) -> int:
        # As Celery's prefetch count, the window bounds unacked messages: a task acked when it
        # started (the default) no longer holds a place in it.
        return self.window - len(self.ready) - len(self.active) + self._running_acked

    def start_self_fetch(self) -> bool:
        """Let the pool's processes fetch their tasks themselves (see ``pools.self_fetch``)."""
        w = self.worker
        limit = w.prefetch_multiplier if w.prefetch_multiplier > 0 else SELF_FETCH_UNLIMITED
        hooks = SelfFetchHooks(
            adopt=self.adopt,
            orphan=self.on_orphan,
            tally=self.on_tally,
            revoked=lambda: list(w.state.revoked),
        )
        return self.pool.start_self_fetch(self._fetched_queues(), limit, hooks)

    def _fetched_queues(self) -> list[str]:
        return [q for q in self.queues if q not in self.paused_queues]

    def queues_changed(self) -> None:
        """The worker's queues changed (``add_consumer``, ``cancel_consumer``)."""
        self.pool.forward_queues(self._fetched_queues())
        self.wake()

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self.worker.self_fetch:
            self.start_self_fetch()
        backoff = 1.0
        backlog = False
        while not self.stopping:
            if self.pool.self_fetching:
                # The pool's processes fetch: this loop only wakes when that ends.
                await self._wait_for_room()
                continue
            room = self._room_left()
            queues = [q for q in self.queues if q not in self.paused_queues]
            # While work is waiting (here or queued in the pool), fetch in batches of at least
            # half the window rather than one message per started task.
            if room < max(1, self.window // 2) and self._work_waiting():
                room = 0
            if room <= 0 or not queues:
                await self._wait_for_room()
                continue
            try:
                # While messages are waiting, fetch right here: a hand-off to the fetch thread
                # and back costs more than the short call itself.
                got = self.transport.fetch_nowait(queues, room) if backlog else None
                handed = 0
                if not got:
                    early = _EarlyTaker(self.loop, self._take_early)
                    try:
                        got = await self.loop.run_in_executor(
                            self._fetcher,
                            self.transport.fetch_early,
                            queues,
                            room,
                            FETCH_TIMEOUT,
                            early,
                        )
                    finally:
                        handed = early.count
                        self._release_held_writes()
                # A full batch suggests more are waiting; a short one, that the queue is empty.
                backlog = len(got) + handed >= room
            except OperationalError as exc:
                backlog = False
                logger.error(
                    "consumer: cannot fetch from the broker (%s); retrying in %.0fs", exc, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 1.0
            if self.stopping:
                # Fetched while shutdown began: hand it straight back rather than strand it.
                self.requeue_fetched(got)
                break
            self._take(got)

    async def _wait_for_room(self) -> None:
        """Until woken (room in the window, queues changed) or FETCH_TIMEOUT passed."""
        self._room.clear()
        try:
            await asyncio.wait_for(self._room.wait(), FETCH_TIMEOUT)
        except TimeoutError:
            pass

    def _take(self, got: list[Delivery]) -> None:
        for delivery in got:
            self.leased[delivery.tag] = delivery
            self.on_delivery(delivery)
        if got:
            self.dispatch()

    def _take_early(self, got: list[Delivery]) -> None:
        """Deliveries a fetch in progress handed over (on the loop, before that fetch returns)."""
        self._unrecorded.update(d.tag for d in got)
        if self.stopping:
            self.requeue_fetched(got)  # held like any settlement until the fetch returns
            return
        self._take(got)

    def _release_held_writes(self) -> None:
        """The fetch that handed deliveries early returned: their leases are recorded (or the
        fetch failed, and there is nothing more to wait for). Send what waited, in order."""
        self._unrecorded.clear()
        held, self._held_writes = self._held_writes, []
        for fn, args, waiter in held:
            future = self._broker_write(fn, *args)
            future.add_done_callback(functools.partial(_chain, waiter))

    def _work_waiting(self) -> bool:
        # Unacked active requests are queued in the pool (or run, with acks_late).
        return bool(self.ready) or len(self.active) > self._running_acked

    def wake(self) -> None:
        self._room.set()

    # -- what self-fetching pool processes hand over ---------------------------------------------
    def adopt(self, deliveries: list[Delivery]) -> None:
        """Messages a pool process fetched but leaves to the worker, as if fetched here."""
        if self.stopping:
            self.requeue_fetched(deliveries)
        else:
            self._take(deliveries)

    def on_orphan(self, delivery: Delivery, result: JobResult | None) -> None:
        """A message a dead pool process had fetched for itself: back to the queue when it
        never started (*result* None); else ended as *result* says, as a job of that process."""
        if delivery.tag in self.leased:
            return  # handed over before it died: this consumer holds it
        if result is None:
            self.requeue([delivery])
            return
        request = self._request(delivery, quiet=True)
        if request is None:
            self.ack(delivery)
            return
        # It had started: acked then, as this consumer acks (maybe not sent before it died).
        request.time_start = request.time_start or time.time()
        request.acknowledged = True
        self._running_acked += 1
        self.ack(delivery)
        self.active[request.id] = request
        self.on_job_done(request.job, result)

    def on_tally(self, counts: dict[str, int]) -> None:
        state = self.worker.state
        for name, n in counts.items():
            state.processed[name] += n
            state.total_count += n

    # -- receiving -------------------------------------------------------------------------------
    def on_delivery(self, delivery: Delivery) -> None:
        request = self._request(delivery)
        if request is None:
            return
        if signals.task_received.has_listeners():
            signals.task_received.send(sender=self.worker, request=request)
        self.worker.events.task_received(request)
        if self._skip_if_revoked_or_expired(request):
            return
        delay = request.eta_in()
        if delay > 0:
            self._hold_eta(request, delay)
        else:
            self._ready(request)

    def _request(self, delivery: Delivery, quiet: bool = False) -> Request | None:
        """The request for *delivery*; None when it is not a task this worker runs (then it
        is dead-lettered, unless *quiet*)."""
        try:
            msg = parse(delivery.message, self.accept)
        except Exception as exc:
            if not quiet:
                self.dead_letter(delivery, f"{type(exc).__name__}: {exc}")
            return None
        task = self.app._tasks.get(msg.name)
        if task is None:
            if quiet:
                return None
            error = NotRegistered(msg.name)
            signals.task_unknown.send(
                sender=self.worker, name=msg.name, id=msg.id, message=delivery.message, exc=error
            )
            self.dead_letter(
                delivery,
                f"unknown task {msg.name!r} (id {msg.id}): not registered in this worker; "
                "import its module through 'include' or autodiscovery",
            )
            return None
        hard, soft = msg.timelimit
        job = Job.from_message(
            msg,
            {
                "exchange": delivery.exchange,
                "routing_key": delivery.routing_key or delivery.queue,
                "priority": delivery.message.priority,
                "redelivered": delivery.redelivered,
            },
            self.worker.hostname,
            soft_time_limit=soft or task.soft_time_limit or self.worker.soft_time_limit,
            time_limit=hard or task.time_limit or self.worker.time_limit,
        )
        return Request(delivery, msg, task, job)

    def _is_revoked(self, request: Request) -> bool:
        return request.id in self.worker.state.revoked or self.worker.control.revoked_by_stamp(
            request
        )

    def _skip_if_revoked_or_expired(self, request: Request) -> bool:
        if self._is_revoked(request):
            self._revoke(request, expired=False)
            return True
        if request.expired():
            logger.info("Task %s[%s] expired; not running it", request.name, request.id)
            self._revoke(request, expired=True)
            return True
        return False

    def _revoke(
        self, request: Request, expired: bool, terminated: bool = False, signum: int | None = None
    ) -> None:
        backend = self.app.backend
        if backend is not None and not request.task.ignore_result:
            try:
                backend.mark_as_revoked(
                    request.id, "expired" if expired else "revoked", request=request.job.context()
                )
            except Exception:
                logger.exception("storing REVOKED for %s failed", request.id)
        signals.task_revoked.send(
            sender=request.task,
            request=request,
            terminated=terminated,
            signum=signum,
            expired=expired,
        )
        self.worker.events.task_revoked(request, terminated, signum, expired)
        if not request.acknowledged:
            self.ack(request.delivery)

    def _hold_eta(self, request: Request, delay: float) -> None:
        assert self.loop is not None
        if delay > self.park_after or len(self.held) >= MAX_HELD_ETA:
            due = time.time() + delay
            self._broker_write(self.transport.park, request.delivery, due)
            self.leased.pop(request.delivery.tag, None)
            return
        self.held[request.id] = request
        request.timer = self.loop.call_later(delay, self._release_held, request)

    def _release_held(self, request: Request) -> None:
        if self.held.pop(request.id, None) is None:
            return
        if not self._skip_if_revoked_or_expired(request):
            self._ready(request)
            self.dispatch()

    def _ready(self, request: Request) -> None:
        limit = self._rate_limit(request)
        if limit is not None:
            wait = limit.take()
            if wait > 0:
                assert self.loop is not None
                self.held[request.id] = request
                request.timer = self.loop.call_later(wait, self._release_held, request)
                return
        self.ready.append(request)

    def _rate_limit(self, request: Request) -> RateLimit | None:
        spec = request.task.rate_limit
        if not spec or self.app.conf.worker_disable_rate_limits:
            return None
        bucket = self._rate_limits.get(request.name)
        if bucket is None or bucket.rate != RateLimit(spec).rate:
            bucket = self._rate_limits[request.name] = RateLimit(spec)
        return bucket

    def set_rate_limit(self, task_name: str, spec: str | float | None) -> None:
        self._rate_limits.pop(task_name, None)

    # -- running ---------------------------------------------------------------------------------
    def dispatch(self) -> None:
        pool = self.pool
        while self.ready and pool.free_slots > 0 and not self.cold:
            request = self.ready.popleft()
            if self._is_revoked(request):
                self._revoke(request, expired=False)
                continue
            self.active[request.id] = request
            pool.submit(request.job)
        pool.flush()  # the jobs go out now, not after whatever the loop does next (a fetch)
        if self._room_left() > 0:
            self._room.set()

    def on_job_start(self, job: Job, pid: int) -> None:
        request = self.active.get(job.id)
        if request is not None:
            request.time_start = time.time()
            request.worker_pid = pid
            if not request.acks_late and not request.acknowledged:
                # Early ack happens when the task starts (Celery's "accepted"), not when it is
                # handed to the pool, so a crash never loses a task that had not started.
                request.acknowledged = True
                self._running_acked += 1
                self.ack(request.delivery)
                self._room.set()
            self.worker.events.task_started(request)

    def on_job_done(self, job: Job, result: JobResult) -> None:
        request = self.active.pop(job.id, None)
        if request is None:
            return
        if request.acknowledged:  # only early acks at start happen while a request is active
            self._running_acked -= 1
        state = result.state
        signum = self.worker.control.terminated.pop(job.id, None)
        if signum is not None and state in (states.FAILURE, states.REVOKED, WORKER_LOST):
            # Stopped by revoke(terminate=True): REVOKED, not a failure or a lost worker.
            self.worker.state.task_done(job.name)
            self._revoke(request, expired=False, terminated=True, signum=signum)
            self.dispatch()
            return
        if state == WORKER_LOST and request.time_start is None and not request.acknowledged:
            # Its pool process exited before starting it: nothing ran, so it goes back to the
            # queue as if never fetched (no result, no event).
            self.requeue([request.delivery])
            self.dispatch()
            return
        self.worker.state.task_done(job.name)
        if state == WORKER_LOST:
            self._worker_lost(request, result)
        elif state == states.REJECTED:
            signals.task_rejected.send(
                sender=self.worker, message=request.delivery.message, exc=result.exc_repr
            )
            if result.requeue:
                self.requeue([request.delivery])
            else:
                self.dead_letter(
                    request.delivery, f"rejected by the task: {result.exc_repr}", quiet=True
                )
        elif request.acks_late and not request.acknowledged:
            if state == states.FAILURE and not request.task.acks_on_failure_or_timeout:
                self.dead_letter(request.delivery, f"task failed: {result.exc_repr}", quiet=True)
            else:
                self.ack(request.delivery)
        self.worker.events.task_done(request, result)
        self.dispatch()

    def _worker_lost(self, request: Request, result: JobResult) -> None:
        if (
            request.acks_late
            and not request.acknowledged
            and (request.task.reject_on_worker_lost or self.cold)
        ):
            logger.warning(
                "Task %s[%s]: pool process lost; message requeued", request.name, request.id
            )
            self.requeue([request.delivery])
            return
        exc = WorkerLostError(
            f"Worker exited prematurely: {result.extra.get('exitcode', 'unknown exit code')}."
        )
        logger.error("Task %s[%s] raised %r", request.name, request.id, exc)
        fail_job(self.app, request.job, exc)
        if not request.acknowledged:
            self.ack(request.delivery)

    # -- broker writes -----------------------------------------------------------------------------
    def ack(self, delivery: Delivery) -> None:
        self.leased.pop(delivery.tag, None)
        self._acks.append(delivery)
        if len(self._acks) >= ACK_BATCH:
            self._flush_acks()
        elif self._ack_timer is None:
            assert self.loop is not None
            self._ack_timer = self.loop.call_later(self.transport.ack_delay, self._flush_acks)

    def _flush_acks(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        batch, self._acks = self._acks, []
        if batch:
            self._broker_write(self.transport.ack, batch)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            self.leased.pop(d.tag, None)
        if deliveries:
            self._broker_write(self.transport.requeue, list(deliveries))

    def requeue_fetched(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            self._broker_write(self.transport.requeue, list(deliveries))

    def dead_letter(self, delivery: Delivery, reason: str, quiet: bool = False) -> None:
        self.leased.pop(delivery.tag, None)
        log = logger.info if quiet else logger.error
        log(
            "Message moved to the dead-letter queue %r: %s",
            self.transport.dead_letter_queue,
            reason,
        )
        self._broker_write(self.transport.dead_letter, delivery, reason)

    def _broker_write(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        assert self.loop is not None
        if self._unrecorded and _settles_any(args, self._unrecorded):
            waiter: asyncio.Future[Any] = self.loop.create_future()
            self._held_writes.append((fn, args, waiter))
            return waiter
        future = self.loop.run_in_executor(self._writer, _retrying, fn, args)
        future.add_done_callback(_log_write_error)
        return future

    def renew_leases(self) -> asyncio.Future[Any] | None:
        held = list(self.leased.values()) + self.pool.held_leases()
        if not held:
            return None
        return self._broker_write(self.transport.renew, held)

    async def flush(self) -> None:
        """Wait until every broker write issued so far is done."""
        self._flush_acks()
        assert self.loop is not None
        await self.loop.run_in_executor(self._writer, lambda: None)

    # -- shutdown --------------------------------------------------------------------------------
    def give_back_unstarted(self) -> int:
        """Requeue everything held but not running (warm shutdown)."""
        give_back = list(self.ready) + list(self.held.values())
        for request in self.held.values():
            if request.timer is not None:
                request.timer.cancel()
        self.ready.clear()
        self.held.clear()
        self.requeue([r.delivery for r in give_back if r.delivery.tag in self.leased])
        return len(give_back)

    def close(self) -> None:
        self._fetcher.shutdown(wait=False, cancel_futures=True)
        self._writer.shutdown(wait=True)


class _EarlyTaker:
    """The ``early`` callback a fetch thread calls: hands deliveries to the loop, counting."""

    def __init__(self, loop: asyncio.AbstractEventLoop, take: Callable[[list[Delivery]], None]):
        self._loop = loop
        self._take = take
        self.count = 0

    def __call__(self, got: list[Delivery]) -> None:
        self.count += len(got)
        # Runs before the fetch's own result reaches the loop: both go through call_soon.
        self._loop.call_soon_threadsafe(self._take, got)


def _settles_any(args: tuple[Any, ...], tags: set[str]) -> bool:
    for arg in args:
        if isinstance(arg, Delivery):
            if arg.tag in tags:
                return True
        elif isinstance(arg, list) and any(isinstance(d, Delivery) and d.tag in tags for d in arg):
            return True
    return False


def _chain(waiter: asyncio.Future[Any], future: asyncio.Future[Any]) -> None:
    if waiter.done():
        return
    if future.cancelled():
        waiter.cancel()
    elif future.exception() is not None:
        waiter.set_exception(future.exception())  # type: ignore[arg-type]
    else:
        waiter.set_result(future.result())


def _retrying(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Broker writes must not be lost to a short outage: retry with backoff for ~1 minute."""
    delay = 0.2
    deadline = time.monotonic() + 60
    while True:
        try:
            return fn(*args)
        except OperationalError as exc:
            if time.monotonic() > deadline:
                raise
            logger.warning("broker write %s failed (%s); retrying", fn.__name__, exc)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _log_write_error(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("broker write failed: %r", future.exception())


def utcnow() -> datetime:
    return datetime.now(UTC)
