"""The broker contract every transport implements.

A transport moves :class:`~celeriac.protocol.message.Message` values between processes. It knows
queues, leases and bytes, never tasks. Every method is synchronous and safe to call from several
threads; the asyncio client and the worker call them from worker threads, so one implementation
serves both sync and async callers.

Delivery semantics every implementation guarantees (the contract suite in ``tests/contract`` checks
them against each transport):

* ``fetch`` hands each message to exactly one consumer and leases it to that consumer's transport
  instance. A lease lasts ``visibility_timeout`` seconds unless ``renew`` extends it; a message
  whose lease ran out (its holder died) goes back to its queue, marked ``redelivered``.
* ``ack`` ends the lease and removes the message. ``requeue`` puts it back at the head of its
  queue (on AMQP a message already prefetched may still come first).
  ``park`` hides it until a due time (far-future ETA), then any consumer can fetch it again.
  ``dead_letter`` moves it to the dead-letter store with a reason a user can read.
* Higher ``properties["priority"]`` is served first within a queue (0-9, Celery's scale), FIFO
  within one priority. A transport that must keep another broker's layout says so with
  ``priority_reversed`` (Redis: kombu serves *lower* numbers first, in steps 0/3/6/9, and a Celery
  worker sharing the Redis must see the same order).
* ``broadcast``/``subscribe`` deliver to every subscriber present at publish time, store nothing.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar

from celeriac.protocol.entities import Queue
from celeriac.protocol.message import Delivery, Message, Outgoing

#: Option keys the app passes to every transport (from ``broker_transport_options`` and settings).
KNOWN_OPTIONS = (
    "visibility_timeout",  # seconds a lease lasts without renewal (default 3600, as kombu)
    "dead_letter_queue",  # name of the dead-letter store (setting broker_dead_letter_queue)
    "polling_interval",  # longest idle wait between checks where a transport must poll
    "ssl",  # broker_use_ssl
    "max_connections",  # redis_max_connections / broker_pool_limit
    "connect_timeout",  # broker_connection_timeout
    "heartbeat",  # broker_heartbeat
)

DEFAULT_VISIBILITY_TIMEOUT = 3600.0


@dataclass(slots=True)
class DeadLetter:
    """A message that could not be processed, kept with the reason so a user can inspect it."""

    id: str
    queue: str
    reason: str
    message: Message
    time: float


class Subscription(ABC):
    """A live subscription to a broadcast exchange (control commands, events)."""

    @abstractmethod
    def get(self, timeout: float) -> list[tuple[str, Message]]:
        """Wait up to *timeout* seconds; return the ``(routing_key, message)`` pairs received."""

    @abstractmethod
    def close(self) -> None:
        """Stop receiving."""

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Transport(ABC):
    """A broker connection. See the module docstring for the delivery contract."""

    #: URL schemes this transport serves.
    schemes: ClassVar[tuple[str, ...]] = ()
    #: True when separate processes using the same URL see the same queues.
    shared_across_processes: ClassVar[bool] = True
    #: Highest priority value the transport orders by (Celery's scale is 0-9).
    max_priority: ClassVar[int] = 9
    #: True where a lower priority number is served first (kombu's Redis layout).
    priority_reversed: ClassVar[bool] = False
    #: How long a worker may hold acks back to send them in batches (seconds); shorter where
    #: unsent acks hold back deliveries (a broker-side prefetch limit). Zero: at the end of the
    #: worker's current loop turn.
    ack_delay: ClassVar[float] = 0.005

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.url = url
        self.options: Mapping[str, Any] = dict(options or {})
        self.visibility_timeout = float(
            self.options.get("visibility_timeout") or DEFAULT_VISIBILITY_TIMEOUT
        )
        self.dead_letter_queue = str(self.options.get("dead_letter_queue") or "celeriac.dlq")

    # -- declaring and publishing ------------------------------------------------------------------
    @abstractmethod
    def declare(self, queue: Queue) -> None:
        """Create *queue* and its binding if they do not exist (idempotent)."""

    @abstractmethod
    def publish(self, items: Sequence[Outgoing]) -> None:
        """Publish messages durably, as one batch where the broker allows it.

        An item addressed to exchange ``""`` goes to the queue named by its routing key; otherwise
        the exchange's bindings decide. Raises :class:`~celeriac.exceptions.TransportError` when
        the broker cannot be reached; nothing is half-published within one item.
        """

    # -- consuming ---------------------------------------------------------------------------------
    @abstractmethod
    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        """Lease and return up to *limit* messages from *queues*, waiting up to *timeout* seconds.

        Returns as soon as at least one message is available (an empty list after *timeout*).
        Queues listed first are preferred when priorities are equal. Idle waiting costs no CPU.
        """

    def fetch_early(
        self,
        queues: Sequence[str],
        limit: int,
        timeout: float,
        early: Callable[[list[Delivery]], None],
    ) -> list[Delivery]:
        """:meth:`fetch`, except that a transport may hand a message to *early* (on the calling
        thread) as soon as it has it, before its lease is recorded, and return the others.
        Until this call returns, a message handed early must not be acked, requeued, parked or
        dead-lettered: the broker's books may not show it yet. Default: plain ``fetch``."""
        return self.fetch(queues, limit, timeout)

    def fetch_nowait(self, queues: Sequence[str], limit: int) -> list[Delivery] | None:
        """Lease up to *limit* messages that are ready now, in one short call that never waits
        for messages, locks held by others nor retries (the worker calls it on its event loop
        while messages are waiting). None: this transport has no such call (SQLite: a claim may
        wait for another process's write), use :meth:`fetch`."""
        return None

    #: True when pool processes may fetch for themselves (:meth:`fetch_for_pool`).
    supports_pool_fetch: ClassVar[bool] = False

    def fetch_for_pool(
        self,
        queues: Sequence[str],
        limit: int,
        timeout: float,
        acks: Sequence[Delivery],
        announce: Callable[[int], None],
        before: Sequence[Sequence[Any]] = (),
    ) -> list[Delivery]:
        """:meth:`fetch` for a pool process that fetches for itself: *acks* are acked in the
        same round trip first, and while it waits for messages ``announce(waker)`` tells a
        token :meth:`wake_fetch` can use from another process to end the wait early
        (``announce(0)`` once the wait ended). *before*: commands the transport's server runs
        first, in the same write (result writes, when the result store is on that server)."""
        raise NotImplementedError(f"{type(self).__name__} does not let pool processes fetch")

    def wake_fetch(self, waker: int) -> None:
        """End the wait of the :meth:`fetch_for_pool` that announced *waker* (it returns what
        it has, maybe nothing); nothing when that wait is over."""
        raise NotImplementedError(f"{type(self).__name__} does not let pool processes fetch")

    def redelivery(self, raw: Any, queue: str, tag: str) -> Delivery:
        """The delivery whose lease data (``Delivery.raw``) is *raw*: for a process that settles
        what another process fetched."""
        raise NotImplementedError(f"{type(self).__name__} does not let pool processes fetch")

    @abstractmethod
    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Remove leased messages for good."""

    @abstractmethod
    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        """Give leased messages back to the head of their queues, marked redelivered."""

    @abstractmethod
    def park(self, delivery: Delivery, due: float) -> None:
        """Release *delivery* and hide it until unix time *due*; then it can be fetched again."""

    @abstractmethod
    def renew(self, deliveries: Sequence[Delivery]) -> None:
        """Extend the leases of messages this consumer still holds."""

    @abstractmethod
    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move a leased message to the dead-letter store with *reason*."""

    # -- queues and the dead-letter store --------------------------------------------------------
    @abstractmethod
    def queue_length(self, queue: str) -> int:
        """Messages waiting in *queue* (not counting leased or parked ones)."""

    @abstractmethod
    def purge(self, queue: str) -> int:
        """Delete every waiting message in *queue*; return how many."""

    @abstractmethod
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest *limit* dead-lettered messages."""

    @abstractmethod
    def requeue_dead(self, ids: Sequence[str] | None = None) -> int:
        """Put dead-lettered messages (all when *ids* is None) back on their queues."""

    @abstractmethod
    def purge_dead(self, ids: Sequence[str] | None = None) -> int:
        """Delete dead-lettered messages (all when *ids* is None); return how many."""

    # -- broadcast ---------------------------------------------------------------------------------
    @abstractmethod
    def broadcast(self, exchange: str, routing_key: str, message: Message) -> None:
        """Send *message* to every current subscriber of *exchange* (fanout/topic semantics)."""

    @abstractmethod
    def subscribe(self, exchange: str, patterns: Sequence[str] = ("#",)) -> Subscription:
        """Subscribe to *exchange*; AMQP topic patterns (``*``, ``#``) select routing keys."""

    def bound_queues(self, exchange: str) -> list[str] | None:
        """Names of the queues bound to *exchange*, or None when the broker cannot tell."""
        return None

    def unbind(self, queue: Queue) -> None:  # noqa: B027 - optional hook
        """Remove *queue*'s binding to its exchange (a pidbox queue of a worker that stops)."""

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Held leases are not released (see ``requeue``)."""

    def describe(self) -> str:
        """The URL with any password hidden, for banners and logs."""
        return censor_url(self.url)

    def __enter__(self) -> Transport:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def censor_url(url: str) -> str:
    """Hide the password in a URL: ``redis://:secret@host`` → ``redis://:**@host``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, has_pw, _ = creds.partition(":")
    return f"{scheme}://{user}{':**' if has_pw else ''}@{host}"


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is one word, ``#`` is zero or more words, words split on dots."""
    return _match(pattern.split("."), routing_key.split(".") if routing_key else [])


def _match(pat: list[str], words: list[str]) -> bool:
    if not pat:
        return not words
    head, rest = pat[0], pat[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])


class Waker:
    """An in-process wake-up signal with a generation counter, for transports' idle waits."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0
        self._waiters = 0

    @property
    def generation(self) -> int:
        return self._generation

    def notify(self) -> None:
        self._generation += 1  # read without the lock by waiters about to wait: see wait()
        if self._waiters:
            with self._cond:
                self._cond.notify_all()

    def wait(self, seen_generation: int, timeout: float) -> bool:
        """Wait until the generation moves past *seen_generation* or *timeout* passes."""
        with self._cond:
            self._waiters += 1
            try:
                return self._cond.wait_for(lambda: self._generation != seen_generation, timeout)
            finally:
                self._waiters -= 1
