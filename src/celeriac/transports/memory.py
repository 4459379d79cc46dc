"""``memory://``: an in-process broker for unit tests and eager demos.

Every transport with the same URL in one process shares one broker, so a client app and a worker
thread in the same test see the same queues. Nothing survives the process.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from celeriac.protocol.entities import Queue
from celeriac.protocol.message import Delivery, Message, Outgoing
from celeriac.transports.base import (
    DeadLetter,
    Subscription,
    Transport,
    Waker,
    topic_matches,
)

_counter = itertools.count()


@dataclass(order=True, slots=True)
class _Entry:
    sort_key: tuple[int, int]
    message: Message = field(compare=False)
    redelivered: bool = field(compare=False, default=False)


@dataclass(slots=True)
class _Lease:
    delivery: Delivery
    expires: float


class _MemorySubscription(Subscription):
    def __init__(self, broker: _Broker, exchange: str, patterns: Sequence[str]) -> None:
        self._broker = broker
        self.exchange = exchange
        self.patterns = tuple(patterns)
        self._items: list[tuple[str, Message]] = []
        self._waker = Waker()

    def offer(self, routing_key: str, message: Message) -> None:
        if any(topic_matches(p, routing_key) for p in self.patterns):
            with self._broker.lock:
                self._items.append((routing_key, message))
            self._waker.notify()

    def get(self, timeout: float) -> list[tuple[str, Message]]:
        seen = self._waker.generation
        with self._broker.lock:
            if self._items:
                items, self._items = self._items, []
                return items
        self._waker.wait(seen, timeout)
        with self._broker.lock:
            items, self._items = self._items, []
        return items

    def close(self) -> None:
        with self._broker.lock:
            if self in self._broker.subscribers:
                self._broker.subscribers.remove(self)


class _Broker:
    """The shared state behind every ``MemoryTransport`` with one URL."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.waker = Waker()
        self.queues: dict[str, list[_Entry]] = {}
        self.bindings: dict[str, list[tuple[str, str, str]]] = {}
        self.leases: dict[str, _Lease] = {}
        self.parked: list[tuple[float, int, str, Message]] = []
        self.dead: dict[str, DeadLetter] = {}
        self.subscribers: list[_MemorySubscription] = []

    def push(
        self, queue: str, message: Message, *, redelivered: bool = False, head: bool = False
    ) -> None:
        seq = next(_counter)
        priority = min(message.priority, 255)
        # Head-of-queue inserts sort before everything of the same priority.
        entry = _Entry((-priority, -seq if head else seq), message, redelivered)
        heapq.heappush(self.queues.setdefault(queue, []), entry)

    def route(self, exchange: str, routing_key: str) -> list[str]:
        bound = self.bindings.get(exchange)
        if not exchange or not bound:
            return [routing_key]
        return [
            queue
            for key, queue, kind in bound
            if kind == "fanout"
            or (kind == "topic" and topic_matches(key, routing_key))
            or (kind not in ("fanout", "topic") and key == routing_key)
        ]

    def housekeep(self, now: float) -> None:
        while self.parked and self.parked[0][0] <= now:
            _, _, queue, message = heapq.heappop(self.parked)
            self.push(queue, message)
        for tag, lease in list(self.leases.items()):
            if lease.expires <= now:
                del self.leases[tag]
                self.push(lease.delivery.queue, lease.delivery.message, redelivered=True, head=True)


_brokers: dict[str, _Broker] = {}
_brokers_lock = threading.Lock()


def _broker_for(url: str) -> _Broker:
    key = url.split("://", 1)[-1].rstrip("/")
    with _brokers_lock:
        return _brokers.setdefault(key, _Broker())


def reset(url: str = "memory://") -> None:
    """Forget everything the in-memory broker at *url* holds (tests use this between cases)."""
    key = url.split("://", 1)[-1].rstrip("/")
    with _brokers_lock:
        _brokers.pop(key, None)


class MemoryTransport(Transport):
    """In-process broker. See the module docstring."""

    schemes: ClassVar[tuple[str, ...]] = ("memory",)
    shared_across_processes: ClassVar[bool] = False

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, options)
        self._b = _broker_for(url)

    def declare(self, queue: Queue) -> None:
        b = self._b
        with b.lock:
            b.queues.setdefault(queue.name, [])
            if queue.exchange.name:
                binding = (queue.routing_key, queue.name, queue.exchange.type)
                bound = b.bindings.setdefault(queue.exchange.name, [])
                if binding not in bound:
                    bound.append(binding)

    def bound_queues(self, exchange: str) -> list[str] | None:
        with self._b.lock:
            return [queue for _, queue, _ in self._b.bindings.get(exchange, [])]

    def unbind(self, queue: Queue) -> None:
        with self._b.lock:
            bound = self._b.bindings.get(queue.exchange.name, [])
            bound[:] = [b for b in bound if b[1] != queue.name]

    def publish(self, items: Sequence[Outgoing]) -> None:
        b = self._b
        with b.lock:
            for item in items:
                src = item.message
                message = Message(
                    src.body,
                    dict(src.headers),
                    dict(src.properties),
                    src.content_type,
                    src.content_encoding,
                )
                for queue in b.route(item.exchange, item.routing_key):
                    b.push(queue, message)
        b.waker.notify()

    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        b = self._b
        deadline = time.monotonic() + timeout
        while True:
            seen = b.waker.generation
            with b.lock:
                b.housekeep(time.time())
                found = self._take(queues, limit)
                wait = min(
                    deadline - time.monotonic(),
                    (b.parked[0][0] - time.time()) if b.parked else timeout,
                )
            if found or wait <= 0:
                return found
            b.waker.wait(seen, max(wait, 0.001))

    def fetch_nowait(self, queues: Sequence[str], limit: int) -> list[Delivery]:
        return self.fetch(queues, limit, 0)

    def _take(self, queues: Sequence[str], limit: int) -> list[Delivery]:
        b = self._b
        out: list[Delivery] = []
        expires = time.time() + self.visibility_timeout
        while len(out) < limit:
            best: tuple[tuple[int, int], int, str] | None = None
            for rank, name in enumerate(queues):
                heap = b.queues.get(name)
                if heap and (best is None or (heap[0].sort_key[0], rank) < (best[0][0], best[1])):
                    best = (heap[0].sort_key, rank, name)
            if best is None:
                break
            entry = heapq.heappop(b.queues[best[2]])
            tag = uuid.uuid4().hex
            delivery = Delivery(
                entry.message, best[2], tag, routing_key=best[2], redelivered=entry.redelivered
            )
            b.leases[tag] = _Lease(delivery, expires)
            out.append(delivery)
        return out

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        with self._b.lock:
            for d in deliveries:
                self._b.leases.pop(d.tag, None)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        b = self._b
        with b.lock:
            for d in deliveries:
                if b.leases.pop(d.tag, None) is not None:
                    b.push(d.queue, d.message, redelivered=True, head=True)
        b.waker.notify()

    def park(self, delivery: Delivery, due: float) -> None:
        b = self._b
        with b.lock:
            if b.leases.pop(delivery.tag, None) is not None:
                heapq.heappush(b.parked, (due, next(_counter), delivery.queue, delivery.message))
        b.waker.notify()

    def renew(self, deliveries: Sequence[Delivery]) -> None:
        expires = time.time() + self.visibility_timeout
        with self._b.lock:
            for d in deliveries:
                lease = self._b.leases.get(d.tag)
                if lease is not None:
                    lease.expires = expires

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        b = self._b
        with b.lock:
            b.leases.pop(delivery.tag, None)
            dead_id = uuid.uuid4().hex
            b.dead[dead_id] = DeadLetter(
                dead_id, delivery.queue, reason, delivery.message, time.time()
            )

    def queue_length(self, queue: str) -> int:
        with self._b.lock:
            return len(self._b.queues.get(queue, ()))

    def purge(self, queue: str) -> int:
        with self._b.lock:
            heap = self._b.queues.get(queue, [])
            count = len(heap)
            heap.clear()
            return count

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._b.lock:
            return list(self._b.dead.values())[:limit]

    def requeue_dead(self, ids: Sequence[str] | None = None) -> int:
        b = self._b
        with b.lock:
            chosen = list(b.dead) if ids is None else [i for i in ids if i in b.dead]
            for dead_id in chosen:
                dead = b.dead.pop(dead_id)
                b.push(dead.queue, dead.message)
        b.waker.notify()
        return len(chosen)

    def purge_dead(self, ids: Sequence[str] | None = None) -> int:
        with self._b.lock:
            chosen = list(self._b.dead) if ids is None else [i for i in ids if i in self._b.dead]
            for dead_id in chosen:
                del self._b.dead[dead_id]
            return len(chosen)

    def broadcast(self, exchange: str, routing_key: str, message: Message) -> None:
        with self._b.lock:
            subscribers = [s for s in self._b.subscribers if s.exchange == exchange]
        for sub in subscribers:
            sub.offer(routing_key, message)

    def subscribe(self, exchange: str, patterns: Sequence[str] = ("#",)) -> Subscription:
        sub = _MemorySubscription(self._b, exchange, patterns)
        with self._b.lock:
            self._b.subscribers.append(sub)
        return sub
