"""Prefork pool processes that fetch their own tasks, on transports that allow it (Redis).

In a flood of short tasks the supervisor's work for each task (receive it, parse it, hand it to a
process, learn that it started and ended, ack it) costs more than running the task, and its round
trips leave the processes idle between batches. A self-fetching process leases its share of the
prefetch window itself, runs the plain tasks it got and acks each when it starts. A message that
needs the supervisor (an ETA or expiry, a rate or time limit, late ack, a revoked, unknown or
undecodable task) it hands over on its pipe, and the supervisor treats it as one it fetched.

The supervisor still knows what each process holds: the process lists its current batch in
shared memory (:class:`Board`) with the state of each message, so the supervisor renews their
leases, reports them to ``inspect``, and, when the process dies, settles them as it settles any
pool process's jobs: the running task is lost (``WorkerLostError``), the ended ones keep their
stored results, the unstarted ones go back to the queue.
"""

from __future__ import annotations

import ctypes
import logging
import pickle
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celeriac.protocol.message import Delivery
from celeriac.protocol.task import parse
from celeriac.worker.job import Job, current_rss_kb, run_job

if TYPE_CHECKING:
    from celeriac.app.base import Celery

logger = logging.getLogger("celeriac.worker.pool")

#: States of a message on a board.
WAITING, HANDED, RUNNING, ENDED = 0, 1, 2, 3
#: Most messages one process fetches at a time.
MAX_BATCH = 64
#: Room for a batch's envelopes; a batch too big for it goes to the supervisor instead.
BOARD_BYTES = 1 << 18
#: How long an idle process waits for messages in one call (the supervisor can end it sooner).
FETCH_WAIT = 1.0
#: How often (seconds) a busy process reports how many tasks it ran (``inspect stats``).
TALLY_EVERY = 0.5

#: A message on a board: (lease data, queue, delivery tag, task id).
Entry = tuple[Any, str, str, str]


@dataclass(frozen=True, slots=True)
class FetchPlan:
    """What a self-fetching process fetches: its queues and how many messages at a time."""

    queues: tuple[str, ...]
    limit: int


@dataclass(frozen=True, slots=True)
class Control:
    """A supervisor's order to a self-fetching process, sent on its pipe with the jobs.

    ``fetch``: start fetching (``value``: (plan, revoked ids)); ``revoke``: ids; ``queues``:
    the queues to fetch from now; ``stop-fetching``: stop for good (waiting messages go back).
    """

    kind: str
    value: Any = None


class Board:
    """One process's current batch, in memory shared with the supervisor.

    The process posts the batch after each fetch and marks each message as it goes; the
    supervisor reads it only now and then (lease renewal, ``inspect``, the process's death).
    A sequence number, odd while a post is half-written, lets a reader see a whole batch.
    """

    def __init__(self, ctx: Any) -> None:
        self._seq = ctx.RawValue(ctypes.c_uint64, 0)
        self._size = ctx.RawValue(ctypes.c_uint32, 0)
        self._data = ctx.RawArray(ctypes.c_char, BOARD_BYTES)
        self.states = ctx.RawArray(ctypes.c_ubyte, MAX_BATCH)
        #: While the process waits for messages, the token that ends the wait (else 0).
        self.waker = ctx.RawValue(ctypes.c_int64, 0)

    def post(self, entries: list[Entry]) -> bool:
        """Show *entries*, all waiting; False (and an empty board) when they do not fit."""
        blob = pickle.dumps(entries, pickle.HIGHEST_PROTOCOL) if entries else b""
        fits = len(blob) <= BOARD_BYTES and len(entries) <= MAX_BATCH
        if not fits:
            blob = b""
        self._seq.value += 1
        ctypes.memmove(self._data, blob, len(blob))
        self._size.value = len(blob)
        ctypes.memset(self.states, WAITING, MAX_BATCH)
        self._seq.value += 1
        return fits

    def busy(self) -> bool:
        """True while a task of the batch runs (a cheap look, no whole read)."""
        return RUNNING in bytes(self.states)

    def read(self, tries: int = 1000) -> list[tuple[Entry, int]] | None:
        """The batch and each message's state; None when no whole post could be read (the
        process died while posting)."""
        for _ in range(tries):
            seq = self._seq.value
            if seq & 1:
                time.sleep(0)
                continue
            blob = ctypes.string_at(ctypes.addressof(self._data), self._size.value)
            marks = bytes(self.states)
            if self._seq.value == seq:
                entries: list[Entry] = pickle.loads(blob) if blob else []
                return [(e, marks[i]) for i, e in enumerate(entries)]
        return None


class SelfFetcher:
    """The fetching side of one pool process (see the module docstring).

    *send* reports to the supervisor; *short* tells tasks known to be short, whose acks wait
    for the next fetch's round trip (a long task's ack goes out when it starts), *ran*
    learns each task's run time, and *mail* tells whether the supervisor sent something.
    """

    def __init__(
        self,
        app: Celery,
        board: Board,
        send: Callable[[Any], None],
        plan: FetchPlan,
        revoked: Iterable[str],
        short: Callable[[str], bool],
        ran: Callable[[str, float], None],
        hostname: str,
        mail: Callable[[], bool] = lambda: False,
    ) -> None:
        self.app = app
        self.transport = app.transport
        self.board = board
        self.send = send
        self.queues = plan.queues
        self.limit = max(1, min(plan.limit, MAX_BATCH))
        self.revoked = set(revoked)
        self.short = short
        self.ran = ran
        self.hostname = hostname
        self.mail = mail
        self.accept = app.conf.accept_content
        self.rate_limits_off = bool(app.conf.worker_disable_rate_limits)
        self.on = True
        # Results of a batch's short tasks are written together, before the next fetch, in
        # the same round trip when the result store is on the broker's Redis.
        store: Any = getattr(app.backend, "store", None) if app.backend is not None else None
        self._push: Callable[[], None] = getattr(store, "push", _nothing)
        if store is not None and hasattr(store, "gather"):
            store.gather = True
        self._store = store
        self._riders = _riders(self.transport, store)
        self.batch: list[Delivery] = []
        self.next = 0
        self.acks: list[Delivery] = []
        self.tally: Counter[str] = Counter()
        self._tallied = time.monotonic()
        #: False after a fetch that came back short: the queues are likely empty.
        self.busy = False

    # -- orders from the supervisor ----------------------------------------------------------------
    def apply(self, order: Control) -> None:
        if order.kind == "revoke":
            self.revoked.update(order.value)
        elif order.kind == "queues":
            self.queues = tuple(order.value)
        elif order.kind == "stop-fetching":
            self.on = False
            self.give_back()

    # -- fetching ----------------------------------------------------------------------------------
    def has_work(self) -> bool:
        return self.next < len(self.batch)

    def fetch(self, block: bool, room: int | None = None) -> None:
        """Lease the next batch (acking the ended tasks' messages in the same round trip);
        *block*: wait for messages up to FETCH_WAIT."""
        writes, before = self._riders() if self._riders is not None else ([], [])
        self._push()
        acks, self.acks = self.acks, []
        limit = self.limit if room is None else max(0, min(self.limit, room))
        try:
            got = self.transport.fetch_for_pool(
                self.queues, limit, FETCH_WAIT if block else 0.0, acks, self._announce, before
            )
        except Exception:
            self.acks = acks + self.acks  # sent with the next call
            if writes:
                self._store.put_back(writes)  # written by the store's thread
            raise
        self.busy = len(got) >= limit
        entries = [(d.raw, d.queue, d.tag, str(d.message.headers.get("id") or "")) for d in got]
        if not self.board.post(entries):
            self.send(("adopt", got))  # too much for the board: the supervisor holds them
            got = []
        self.batch, self.next = got, 0

    def _announce(self, waker: int) -> None:
        self.board.waker.value = waker
        if waker and self.mail():
            # A job arrived after the last look at the pipe, before the waker was shown: the
            # supervisor could not end this wait, so the process ends it itself.
            try:
                self.transport.wake_fetch(waker)
            except Exception as exc:
                logger.debug("could not end its own fetch wait: %r", exc)

    def flush_acks(self, acks: list[Delivery] | None = None) -> None:
        if acks is None:
            acks, self.acks = self.acks, []
        if not acks:
            return
        try:
            self.transport.ack(acks)
        except Exception:
            self.acks = acks + self.acks  # sent with the next call
            raise

    # -- running -----------------------------------------------------------------------------------
    def step(self) -> str | None:
        """Run (or hand to the supervisor) the next message of the batch; the name of the task
        it ran, or None."""
        i = self.next
        delivery = self.batch[i]
        self.next += 1
        job = self._plain_job(delivery)
        if job is None:
            self.board.states[i] = HANDED
            self.send(("adopt", [delivery]))
            return None
        self.board.states[i] = RUNNING
        self.acks.append(delivery)  # acked when it starts, as the supervisor acks
        if not self.short(job.name):
            try:
                self.flush_acks()
            except Exception as exc:
                logger.warning("acking %s failed (%r); it goes with the next fetch", job.id, exc)
        result = run_job(self.app, job)
        self.board.states[i] = ENDED
        self.ran(job.name, result.runtime)
        if not self.short(job.name):
            self._push()
        self.tally[job.name] += 1
        return job.name

    def _plain_job(self, delivery: Delivery) -> Job | None:
        """The job for *delivery* when this process can run it without the supervisor."""
        try:
            msg = parse(delivery.message, self.accept)
        except Exception:
            return None  # the supervisor dead-letters it, with the reason
        task = self.app._tasks.get(msg.name)
        if (
            task is None
            or msg.eta is not None
            or msg.expires is not None
            or msg.id in self.revoked
            or task.acks_late
            or task.time_limit
            or task.soft_time_limit
            or any(msg.timelimit)
            or (task.rate_limit and not self.rate_limits_off)
        ):
            return None
        info = {
            "exchange": delivery.exchange,
            "routing_key": delivery.routing_key or delivery.queue,
            "priority": delivery.message.priority,
            "redelivered": delivery.redelivered,
        }
        return Job.from_message(msg, info, self.hostname, None, None)

    def report_tally(self, now: bool = False) -> None:
        """Tell the supervisor how many tasks ran (at most every TALLY_EVERY unless *now*)."""
        if not self.tally:
            return
        if now or time.monotonic() - self._tallied >= TALLY_EVERY:
            self.send(("tally", dict(self.tally)))
            self.tally.clear()
            self._tallied = time.monotonic()

    def give_back(self) -> None:
        """Requeue the batch's unstarted messages and ack the started ones (stopping)."""
        waiting = self.batch[self.next :]
        self.batch, self.next = [], 0
        if waiting:
            self.transport.requeue(waiting)
        self.flush_acks()
        self.board.post([])
        self.report_tally(now=True)


def _nothing() -> None:
    pass


def _riders(transport: Any, store: Any) -> Callable[[], tuple[list[Any], list[Any]]] | None:
    """When *store* (a write-behind store) writes to the broker's Redis: a function taking its
    queued writes as (writes, commands to send ahead of the next fetch); else None."""
    inner: Any = getattr(store, "inner", None)
    params = getattr(inner, "params", None)
    carries = getattr(transport, "carries", None)
    if params is None or not hasattr(inner, "write_commands") or carries is None:
        return None
    if not carries(params):
        return None

    def take() -> tuple[list[Any], list[Any]]:
        writes = store.take_writes()
        if not writes:
            return [], []
        return writes, transport.carried(params, inner.write_commands(writes))

    return take


def over_memory(limit_kb: int | None) -> bool:
    """True when this process's peak RSS passed *limit_kb* (``max_memory_per_child``)."""
    return bool(limit_kb) and current_rss_kb() > int(limit_kb or 0)
