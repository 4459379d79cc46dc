"""``amqp://``, ``amqps://``, ``pyamqp://``: RabbitMQ (AMQP 0-9-1), interoperable with Celery 5.7.

Entities are declared with the flags Celery/kombu use (``docs/rabbitmq.md`` lists them), so a
Celery worker or client can share the broker: redeclaring with different flags would fail with
``PRECONDITION_FAILED``. Messages are plain AMQP: a raw body, real properties and a header table.

How the contract maps onto AMQP:

* ``fetch`` consumes (``basic.consume``) from the requested queues on one channel whose
  ``basic.qos`` prefetch follows the caller's window: the deliveries it holds plus ``limit``.
  Deliveries wait in a local buffer until a ``fetch`` takes them, best priority first, then in the
  order the queues were listed.
* A lease lasts as long as the connection: RabbitMQ gives unacknowledged deliveries back (marked
  redelivered) when a consumer's connection dies. ``renew`` therefore has nothing to do, and
  ``visibility_timeout`` does not apply.
* ``requeue`` is ``basic.reject(requeue=True)``; ``ack`` is ``basic.ack``, one ``multiple`` ack
  when the batch is every outstanding delivery up to its highest tag.
* ``park`` republishes a copy (with publisher confirms) to a per-delay bucket queue whose
  ``x-message-ttl`` is a power of two milliseconds and whose dead-letter target is the original
  queue, then acks the original. A message that comes back before its due time (carried in the
  ``x-celeriac-due`` header) hops to the next smaller bucket, so it reappears on time to the
  millisecond after at most ~35 hops, without ever holding a prefetch slot.
* ``dead_letter`` republishes a copy with the reason to the durable dead-letter queue, then acks.
* Broadcast uses Celery's exchanges (``celeryev`` topic, ``celery.pidbox`` fanout,
  ``reply.celery.pidbox`` direct; the pidbox ones non-durable) and an exclusive auto-delete
  queue per subscription.

All of it runs on one asyncio connection (aiormq) on a private loop thread; every public method
submits a coroutine there and waits. A lost connection is re-established in the background with
backoff; declarations, consumers and subscriptions are restored, and publishes that were not
confirmed are sent again.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import itertools
import logging
import time
import uuid
import weakref
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import aiormq.exceptions as amqp_errors
from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
from pamqp import commands as spec

from celeriac.exceptions import TransportError
from celeriac.protocol.entities import Queue
from celeriac.protocol.message import Delivery, Message, Outgoing
from celeriac.transports.amqp_outbox import Outbox
from celeriac.transports.base import DeadLetter, Subscription, Transport
from celeriac.utils.amqp_conn import (
    AMQPLink,
    LoopThread,
    channel_error_text,
    is_connection_error,
    parse_amqp_url,
)
from celeriac.utils.amqp_wire import from_properties, to_properties

logger = logging.getLogger("celeriac.transports.amqp")

T = TypeVar("T")

#: Exchanges Celery declares for broadcast, with its type and durability (declaring them
#: differently fails against a broker Celery already uses). Others default to a durable topic.
BROADCAST_EXCHANGES: dict[str, tuple[str, bool]] = {
    "celeryev": ("topic", True),
    "celery.pidbox": ("fanout", False),
    "reply.celery.pidbox": ("direct", False),
}
DEFAULT_BROADCAST_EXCHANGE = ("topic", True)

#: Header carrying a parked copy's due time (unix seconds) and prefix of the bucket queues.
DUE_HEADER = "x-celeriac-due"
PARK_PREFIX = "celeriac.park"
#: A bucket queue is deleted after this long unused (on top of its own delay).
PARK_QUEUE_GRACE_MS = 3_600_000
#: Headers of a dead-lettered copy.
DEAD_ID = "x-celeriac-dead-id"
DEAD_QUEUE = "x-celeriac-dead-queue"
DEAD_REASON = "x-celeriac-dead-reason"
DEAD_TIME = "x-celeriac-dead-time"
_DEATH_HEADERS = (
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
)
#: AMQP prefetch_count is a 16-bit field; 0 means unlimited.
MAX_PREFETCH = 65535
#: Longest single wait inside fetch, so a lost connection is noticed and repaired.
WAIT_SLICE = 1.0
#: Extra seconds a synchronous call waits beyond its own budget before giving up on the loop.
CALL_MARGIN = 30.0
#: fetch_nowait runs on the worker's event loop: it gives up this soon (the fetch thread retries).
NOWAIT_TIMEOUT = 5.0
_QUORUM_TYPES = ("quorum", "stream")


_open_transports: weakref.WeakSet[AMQPTransport] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """Messages published behind must reach RabbitMQ before the interpreter goes."""
    for transport in list(_open_transports):
        try:
            transport.close()
        except Exception:  # exiting anyway
            logger.debug("closing an AMQP transport at exit failed", exc_info=True)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def queue_arguments(queue: Queue) -> dict[str, Any]:
    """The ``x-`` arguments kombu sends for *queue* (none for Celery's default queues)."""
    args = dict(queue.queue_arguments)
    if queue.max_priority is not None:
        args["x-max-priority"] = int(queue.max_priority)
    if queue.expires is not None:
        args["x-expires"] = _ms(queue.expires)
    if queue.message_ttl is not None:
        args["x-message-ttl"] = _ms(queue.message_ttl)
    return args


def park_bucket(remaining_ms: int) -> int:
    """The delay bucket (a power of two, in ms) for a message due in *remaining_ms*."""
    return 1 << max(remaining_ms, 1).bit_length() - 1


def park_queue(queue: str, bucket_ms: int) -> str:
    return f"{PARK_PREFIX}.{bucket_ms}.{queue}"


@dataclass(slots=True)
class _Lease:
    """Where a delivery lives on the broker: the consume channel generation and its tag."""

    gen: int
    tag: int


@dataclass(slots=True)
class _ConsumeState:
    """The consume channel and what it holds; replaced wholesale when the channel is."""

    channel: AbstractChannel
    gen: int
    per_consumer_qos: bool
    consumers: dict[str, str] = field(default_factory=dict)  # queue -> consumer tag
    outstanding: dict[int, None] = field(default_factory=dict)  # unsettled tags, in order
    buffer: list[tuple[int, Delivery]] = field(default_factory=list)  # (arrival, delivery)
    prefetch: int = 0

    @property
    def handed(self) -> int:
        """Deliveries the caller holds (unsettled and no longer in the buffer)."""
        return len(self.outstanding) - len(self.buffer)


class AMQPSubscription(Subscription):
    """An exclusive auto-delete queue bound to a broadcast exchange."""

    def __init__(self, transport: AMQPTransport, exchange: str, patterns: Sequence[str]) -> None:
        self._t = transport
        self.exchange = exchange
        self.patterns = tuple(patterns) or ("#",)
        self.queue = f"{exchange}.{uuid.uuid4()}"
        self.items: list[tuple[str, Message]] = []
        self.closed = False
        self._event: asyncio.Event | None = None
        self._gen = -1

    def event(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    async def attach(self, conn_gen: int, restoring: bool = False) -> None:
        """Declare, bind and consume (again, after a reconnect)."""
        if self._gen == conn_gen or self.closed:
            return
        t = self._t
        if restoring:
            await t._ensure_broadcast_exchange_unlocked(self.exchange)
        else:
            await t._ensure_broadcast_exchange(self.exchange)
        ch = await t._link.channel("subscribe")
        await ch.queue_declare(self.queue, durable=False, exclusive=True, auto_delete=True)
        kind = BROADCAST_EXCHANGES.get(self.exchange, DEFAULT_BROADCAST_EXCHANGE)[0]
        keys = [""] if kind == "fanout" else list(dict.fromkeys(self.patterns))
        for key in keys:
            await ch.queue_bind(self.queue, self.exchange, routing_key=key)
        await ch.basic_consume(
            self.queue, self._on_message, no_ack=True, consumer_tag=f"sub.{self.queue}"
        )
        self._gen = conn_gen

    async def _on_message(self, msg: DeliveredMessage) -> None:
        if self.closed:
            return
        message = from_properties(msg.body, msg.header.properties)
        self.items.append((msg.routing_key or "", message))
        self.event().set()

    async def _get(self, timeout: float) -> list[tuple[str, Message]]:
        t = self._t
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.items and not self.closed:
            if not t._link.is_open or self._gen != t._link.generation:
                try:
                    await t._link.connection()  # restorers re-attach this subscription
                    await self.attach(t._link.generation)
                except TransportError:
                    if loop.time() >= deadline:
                        raise
            left = deadline - loop.time()
            if left <= 0:
                break
            event = self.event()
            event.clear()
            try:
                await asyncio.wait_for(event.wait(), min(left, WAIT_SLICE))
            except TimeoutError:
                pass
        items, self.items = self.items, []
        return items

    def get(self, timeout: float) -> list[tuple[str, Message]]:
        return self._t._call(self._get(max(timeout, 0.0)), timeout)

    async def _close(self) -> None:
        self.closed = True
        self._t._subscriptions.discard(self)
        if self._t._link.is_open and self._gen == self._t._link.generation:
            try:
                ch = await self._t._link.channel("subscribe")
                await ch.basic_cancel(f"sub.{self.queue}")
                await ch.queue_delete(self.queue)
            except Exception:  # the queue goes with the connection anyway
                self._t._link.drop_channel("subscribe")

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._t._call(self._close(), 5.0)
        except TransportError:
            self.closed = True


class AMQPTransport(Transport):
    """RabbitMQ broker. See the module docstring and ``docs/rabbitmq.md``."""

    schemes: ClassVar[tuple[str, ...]] = ("amqp", "amqps", "pyamqp")
    max_priority: ClassVar[int] = 255
    # Unsent acks hold prefetch slots: batch them for less time than on Redis.
    ack_delay: ClassVar[float] = 0.002

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, options)
        self.params = parse_amqp_url(url, self.options)
        self._runner = LoopThread("celeriac-amqp")
        self._link = AMQPLink(self.params, self._runner, "celeriac")
        self._link.on_connect(self._restore)
        self._declared: dict[str, Queue] = {}  # queues declared through declare()
        self._known: set[str] = set()  # queues known to exist on this connection
        self._quorum: set[str] = set()
        self._exchanges: set[str] = set()  # broadcast exchanges declared on this connection
        self._subscriptions: set[AMQPSubscription] = set()
        self._cs: _ConsumeState | None = None
        self._cgen = itertools.count(1)
        self._arrival = itertools.count()
        self._arrived: asyncio.Event | None = None
        self._admin: asyncio.Lock | None = None
        self._settling: set[concurrent.futures.Future[Any]] = set()
        self._closed = False
        #: kombu's option: True waits for RabbitMQ's confirm in every publish() call. By default
        #: publish() returns at once and confirms are collected behind it (see amqp_outbox).
        self.confirm_publish = bool(self.options.get("confirm_publish", False))
        self._outbox = Outbox(
            self._link, self._ensure_queue, int(self.options.get("max_unconfirmed") or 10000)
        )
        _open_transports.add(self)

    # -- plumbing ----------------------------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        budget = self.params.retry_budget + CALL_MARGIN + (timeout or 0.0)
        return self._runner.call(coro, budget)

    def _error(self, action: str, exc: BaseException) -> TransportError:
        if isinstance(exc, TransportError):
            return exc
        return TransportError(
            f"RabbitMQ at {self._link.endpoint}: {action} failed: "
            f"{type(exc).__name__}: {channel_error_text(exc)}"
        )

    async def _retrying(self, action: str, op: Any) -> Any:
        """Run ``await op()``, reconnecting and retrying on connection errors within the budget."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.params.retry_budget
        while True:
            try:
                return await op()
            except TransportError:
                raise
            except Exception as exc:
                if not is_connection_error(exc) or loop.time() >= deadline or self._closed:
                    raise self._error(action, exc) from exc
                logger.debug("%s: connection error %r; retrying", action, exc)
                await asyncio.sleep(0.05)

    async def _restore(self, conn: AbstractConnection) -> None:
        """After (re)connecting: forget per-connection caches, re-declare, re-subscribe."""
        self._known.clear()
        self._exchanges.clear()
        self._cs = None
        # Unlocked: an operation holding the admin lock may be the one waiting for this connection.
        for queue in list(self._declared.values()):
            await self._declare_unlocked(queue)
        for sub in list(self._subscriptions):
            await sub.attach(self._link.generation, restoring=True)

    def _admin_lock(self) -> asyncio.Lock:
        if self._admin is None:
            self._admin = asyncio.Lock()
        return self._admin

    # -- declaring ---------------------------------------------------------------------------------
    async def _declare(self, queue: Queue) -> None:
        async with self._admin_lock():  # one admin channel: a 404 or 406 closes it for all
            return await self._declare_unlocked(queue)

    async def _declare_unlocked(self, queue: Queue) -> None:
        ch = await self._link.channel("admin")
        ex = queue.exchange
        what = f"exchange {ex.name!r}"
        try:
            if ex.name:
                await ch.exchange_declare(
                    ex.name,
                    exchange_type=ex.type,
                    durable=ex.durable,
                    auto_delete=ex.auto_delete,
                    arguments=dict(ex.arguments) or None,
                )
            what = f"queue {queue.name!r}"
            args = queue_arguments(queue)
            await ch.queue_declare(
                queue.name,
                durable=queue.durable,
                exclusive=queue.exclusive,
                auto_delete=queue.auto_delete,
                arguments=args or None,
            )
            if ex.name:
                what = f"binding of queue {queue.name!r} to exchange {ex.name!r}"
                await ch.queue_bind(
                    queue.name,
                    ex.name,
                    routing_key=queue.routing_key,
                    arguments=dict(queue.binding_arguments) or None,
                )
        except amqp_errors.ChannelClosed as exc:
            self._link.drop_channel("admin")
            raise TransportError(
                f"RabbitMQ refused to declare {what}: {channel_error_text(exc)}. It exists with "
                "other settings (durable, auto_delete, type or x- arguments such as "
                "x-max-priority / x-queue-type); declare it the same way (task_queues, "
                "task_queue_max_priority) or delete it first."
            ) from exc
        self._known.add(queue.name)
        if str(queue.queue_arguments.get("x-queue-type", "")) in _QUORUM_TYPES:
            self._quorum.add(queue.name)

    def declare(self, queue: Queue) -> None:
        async def run() -> None:
            self._declared[queue.name] = queue
            await self._retrying(f"declaring {queue!r}", lambda: self._declare(queue))

        self._call(run())

    async def _ensure_queue(self, name: str) -> None:
        """Make sure queue *name* exists, declaring it as Celery would if it does not."""
        if name in self._known:
            return
        declared = self._declared.get(name)
        if declared is not None:
            await self._declare(declared)
            return
        async with self._admin_lock():
            ch = await self._link.channel("admin")
            try:
                await ch.queue_declare(name, passive=True)
                self._known.add(name)
                return
            except amqp_errors.ChannelNotFoundEntity:
                self._link.drop_channel("admin")
        # Celery's queue created on demand: durable, bound to a same-named direct exchange.
        await self._declare(Queue(name))

    async def _ensure_broadcast_exchange(self, exchange: str) -> None:
        async with self._admin_lock():  # one admin channel: a 404 or 406 closes it for all
            return await self._ensure_broadcast_exchange_unlocked(exchange)

    async def _ensure_broadcast_exchange_unlocked(self, exchange: str) -> None:
        if exchange in self._exchanges:
            return
        kind, durable = BROADCAST_EXCHANGES.get(exchange, DEFAULT_BROADCAST_EXCHANGE)
        ch = await self._link.channel("admin")
        try:
            await ch.exchange_declare(exchange, exchange_type=kind, durable=durable)
        except amqp_errors.ChannelClosed as exc:
            self._link.drop_channel("admin")
            raise TransportError(
                f"RabbitMQ refused to declare exchange {exchange!r} as {kind} "
                f"durable={durable}: {channel_error_text(exc)}"
            ) from exc
        self._exchanges.add(exchange)

    # -- publishing --------------------------------------------------------------------------------
    async def _publish_now(self, items: Sequence[Outgoing], *, default_mode: int = 2) -> None:
        """Publish *items* with confirms; retry unconfirmed ones after a connection loss."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.params.retry_budget
        wire = [to_properties(item.message, default_mode) for item in items]
        pending = list(range(len(items)))
        while pending:
            try:
                for i in pending:
                    if items[i].exchange == "":
                        await self._ensure_queue(items[i].routing_key)
                ch = await self._link.channel("publish", confirms=True)
                publish: Any = ch.basic_publish  # aiormq's Channel takes wait=; its ABC does not
                results = await asyncio.gather(
                    *(
                        publish(
                            items[i].message.body,
                            exchange=items[i].exchange,
                            routing_key=items[i].routing_key,
                            properties=wire[i],
                            wait=False,
                        )
                        for i in pending
                    ),
                    return_exceptions=True,
                )
            except TransportError:
                raise
            except Exception as exc:
                results = [exc] * len(pending)
            failed: list[int] = []
            for i, result in zip(pending, results, strict=True):
                if isinstance(result, spec.Basic.Ack):
                    continue
                if isinstance(result, spec.Basic.Nack):
                    raise TransportError(
                        f"RabbitMQ at {self._link.endpoint} refused (nack) a message for "
                        f"exchange {items[i].exchange!r} routing key {items[i].routing_key!r}"
                    )
                if isinstance(result, BaseException) and not is_connection_error(result):
                    self._link.drop_channel("publish")
                    raise TransportError(
                        f"RabbitMQ refused a publish to exchange {items[i].exchange!r} "
                        f"routing key {items[i].routing_key!r}: {channel_error_text(result)}"
                    ) from result
                failed.append(i)
            pending = failed
            if pending:
                if loop.time() >= deadline or self._closed:
                    raise TransportError(
                        f"RabbitMQ at {self._link.endpoint} unreachable: {len(pending)} "
                        "message(s) not confirmed"
                    )
                await asyncio.sleep(0.05)

    def publish(self, items: Sequence[Outgoing]) -> None:
        if not items:
            return
        if self.confirm_publish or not self._link.is_open:
            # Waiting for confirms; also the first publish, so an unreachable broker raises here.
            self._call(self._publish_now(list(items)))
            return
        props = [to_properties(item.message, 2) for item in items]
        self._outbox.put(list(items), props, self.params.retry_budget + CALL_MARGIN)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every message published so far is confirmed by RabbitMQ."""
        return self._outbox.flush(self.params.retry_budget if timeout is None else timeout)

    # -- consuming ---------------------------------------------------------------------------------
    def _event(self) -> asyncio.Event:
        if self._arrived is None:
            self._arrived = asyncio.Event()
        return self._arrived

    async def _consume_state(self, per_consumer_qos: bool) -> _ConsumeState:
        cs = self._cs
        if (
            cs is not None
            and not cs.channel.is_closed
            and self._link.is_open
            and cs.per_consumer_qos == per_consumer_qos
        ):
            return cs
        if cs is not None and not cs.channel.is_closed:
            # Switching QoS mode (a quorum queue joined): a new channel; its deliveries return.
            await cs.channel.close()
        self._cs = None
        gen = next(self._cgen)
        ch = await self._link.channel(f"consume-{gen}")
        cs = self._cs = _ConsumeState(ch, gen, per_consumer_qos)
        return cs

    async def _set_prefetch(self, cs: _ConsumeState, wanted: int) -> None:
        wanted = max(1, wanted)
        prefetch = 0 if wanted > MAX_PREFETCH else wanted
        # Raise at once; lower lazily (only far below), so the window does not flap.
        if cs.prefetch == prefetch or (cs.prefetch == 0 and prefetch == 0):
            return
        if cs.prefetch != 0 and prefetch != 0 and cs.prefetch > prefetch >= cs.prefetch // 2:
            return
        await cs.channel.basic_qos(prefetch_count=prefetch, global_=not cs.per_consumer_qos)
        cs.prefetch = prefetch

    async def _consume(self, queues: list[str], limit: int) -> _ConsumeState:
        quorum = any(q in self._quorum for q in queues)
        cs = await self._consume_state(quorum)
        for queue in [q for q in cs.consumers if q not in queues]:
            await self._cancel(cs, queue)
        await self._set_prefetch(cs, cs.handed + limit)
        for queue in queues:
            if queue in cs.consumers:
                continue
            await self._ensure_queue(queue)
            if cs.per_consumer_qos:
                await cs.channel.basic_qos(prefetch_count=min(cs.handed + limit, MAX_PREFETCH))
            tag = f"celeriac.{cs.gen}.{queue}"
            cs.consumers[queue] = tag

            async def on_message(
                msg: DeliveredMessage, cs: _ConsumeState = cs, queue: str = queue
            ) -> None:
                await self._on_delivery(cs, queue, msg)

            try:
                await cs.channel.basic_consume(queue, on_message, consumer_tag=tag)
            except BaseException:
                cs.consumers.pop(queue, None)
                raise
        return cs

    async def _cancel(self, cs: _ConsumeState, queue: str) -> None:
        tag = cs.consumers.pop(queue)
        await cs.channel.basic_cancel(tag)
        await asyncio.sleep(0)  # let deliveries already read reach the buffer
        keep = []
        for arrival, d in cs.buffer:
            if d.queue == queue:
                await self._reject(cs, [d], requeue=True)
            else:
                keep.append((arrival, d))
        cs.buffer = keep

    async def _on_delivery(self, cs: _ConsumeState, queue: str, msg: DeliveredMessage) -> None:
        deliver = msg.delivery
        assert isinstance(deliver, spec.Basic.Deliver)
        tag = int(deliver.delivery_tag or 0)
        cs.outstanding[tag] = None
        if self._cs is not cs:
            return  # stale channel: RabbitMQ gives it back
        message = from_properties(msg.body, msg.header.properties)
        delivery = Delivery(
            message,
            queue,
            f"{cs.gen}.{tag}",
            exchange=deliver.exchange or "",
            routing_key=deliver.routing_key or "",
            redelivered=bool(deliver.redelivered),
            raw=_Lease(cs.gen, tag),
        )
        due = message.headers.get(DUE_HEADER)
        if due is not None:
            if isinstance(due, int | float) and due - time.time() > 0.001:
                try:
                    await self._park(delivery, float(due))  # not due yet: next bucket
                except Exception:
                    logger.warning(
                        "re-parking a message failed; it goes back to %r", queue, exc_info=True
                    )
                    await self._reject(cs, [delivery], requeue=True)
                return
            for key in (DUE_HEADER, *_DEATH_HEADERS):
                message.headers.pop(key, None)
        if queue not in cs.consumers:
            await self._reject(cs, [delivery], requeue=True)
            return
        cs.buffer.append((next(self._arrival), delivery))
        self._event().set()

    def _take(self, cs: _ConsumeState, queues: list[str], limit: int) -> list[Delivery]:
        rank = {q: i for i, q in enumerate(queues)}
        chosen = sorted(
            (item for item in cs.buffer if item[1].queue in rank),
            # Redelivered first: RabbitMQ put them back where they were, ahead of fresh ones.
            key=lambda item: (
                -item[1].message.priority,
                rank[item[1].queue],
                not item[1].redelivered,
                item[0],
            ),
        )[:limit]
        if not chosen:
            return []
        taken = {id(d) for _, d in chosen}
        cs.buffer = [item for item in cs.buffer if id(item[1]) not in taken]
        return [d for _, d in chosen]

    async def _fetch(self, queues: list[str], limit: int, timeout: float) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        event = self._event()
        while True:
            cs = await self._retrying("consuming", lambda: self._consume(queues, limit))
            got = self._take(cs, queues, limit)
            if got:
                if len(got) < limit:
                    # Deliveries of one burst arrive a few loop turns apart: collect them too.
                    for _ in range(3):
                        await asyncio.sleep(0)
                    got += self._take(cs, queues, limit - len(got))
                return got
            left = deadline - loop.time()
            if left <= 0:
                return []
            event.clear()
            try:
                await asyncio.wait_for(event.wait(), min(left, WAIT_SLICE))
            except TimeoutError:
                pass

    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        if not queues or limit <= 0:
            return []
        wanted = list(dict.fromkeys(queues))
        if self._outbox.unconfirmed:
            self.flush()  # what this transport published is visible to its own consumers
        return self._call(self._fetch(wanted, limit, max(timeout, 0.0)), timeout)

    async def _take_ready(self, queues: list[str], limit: int) -> list[Delivery]:
        cs = self._cs
        if cs is None or cs.channel.is_closed or any(q not in cs.consumers for q in queues):
            return []  # not consuming these queues yet: fetch() sets that up
        await self._set_prefetch(cs, cs.handed + limit)
        return self._take(cs, queues, limit)

    def fetch_nowait(self, queues: Sequence[str], limit: int) -> list[Delivery] | None:
        # Deliveries already received, taken on the connection's loop: one hand-off there and
        # back rather than two through the worker's fetch thread.
        if not queues or limit <= 0:
            return []
        if self._outbox.unconfirmed:
            return None  # fetch() first waits until this transport's own publishes are visible
        try:
            return self._runner.call(
                self._take_ready(list(dict.fromkeys(queues)), limit), NOWAIT_TIMEOUT
            )
        except Exception as exc:
            raise self._error("fetching", exc) from exc

    # -- settling ----------------------------------------------------------------------------------
    def _live(self, cs: _ConsumeState | None, deliveries: Sequence[Delivery]) -> list[int]:
        """Tags of *deliveries* still held on the current channel (others RabbitMQ requeued)."""
        if cs is None or cs.channel.is_closed:
            return []
        tags = []
        for d in deliveries:
            lease = d.raw
            if isinstance(lease, _Lease) and lease.gen == cs.gen and lease.tag in cs.outstanding:
                tags.append(lease.tag)
                del cs.outstanding[lease.tag]
        return tags

    async def _ack(self, deliveries: Sequence[Delivery]) -> None:
        cs = self._cs
        if cs is None:
            return
        before = list(cs.outstanding)
        tags = self._live(cs, deliveries)
        if not tags:
            return
        top, chosen = max(tags), set(tags)
        try:
            if all(t in chosen for t in before if t <= top):
                await cs.channel.basic_ack(top, multiple=True, wait=False)
            else:
                for t in sorted(tags):
                    await cs.channel.basic_ack(t, wait=False)
        except Exception as exc:
            if not is_connection_error(exc):
                raise self._error("ack", exc) from exc
            # The channel is gone, and with it the deliveries: RabbitMQ redelivers them.

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            self._settle(self._ack(list(deliveries)))

    def _settle(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run an ack/reject on the loop without waiting: frames leave in call order, and a lost
        connection returns the deliveries anyway. ``close`` waits for the ones in flight."""
        future = self._runner.submit(coro)
        self._settling.add(future)
        future.add_done_callback(self._settled)

    def _settled(self, future: concurrent.futures.Future[Any]) -> None:
        self._settling.discard(future)
        if not future.cancelled() and future.exception() is not None:
            logger.error("settling deliveries failed: %s", future.exception())

    async def _reject(
        self, cs: _ConsumeState, deliveries: Sequence[Delivery], requeue: bool
    ) -> None:
        tags = self._live(cs, deliveries)
        try:
            for t in tags:
                await cs.channel.basic_reject(t, requeue=requeue, wait=False)
        except Exception as exc:
            if not is_connection_error(exc):
                raise self._error("reject", exc) from exc

    async def _requeue(self, deliveries: Sequence[Delivery]) -> None:
        cs = self._cs
        if cs is None:
            return
        # Prefetched deliveries of the same queues go back too, so RabbitMQ restores the queue's
        # order (each message to its old place) and the requeued ones come first again.
        queues = {d.queue for d in deliveries}
        behind = [d for _, d in cs.buffer if d.queue in queues]
        if behind:
            cs.buffer = [item for item in cs.buffer if item[1].queue not in queues]
        await self._reject(cs, [*deliveries, *behind], requeue=True)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            self._settle(self._requeue(list(deliveries)))

    async def _copy_then_ack(
        self, delivery: Delivery, out: Outgoing, declare: Queue | None = None
    ) -> None:
        """Publish *out* (confirmed), then ack *delivery*; nothing if the lease was lost."""
        cs = self._cs
        lease = delivery.raw
        if (
            cs is None
            or not isinstance(lease, _Lease)
            or lease.gen != cs.gen
            or lease.tag not in cs.outstanding
        ):
            return  # RabbitMQ already gave the original back; copying it would duplicate it
        if declare is not None:
            await self._declare(declare)
        await self._publish_now([out])
        await self._ack([delivery])

    async def _park(self, delivery: Delivery, due: float) -> None:
        remaining = _ms(due - time.time())
        if remaining <= 0:
            await self._requeue([delivery])
            return
        bucket = park_bucket(remaining)
        name = park_queue(delivery.queue, bucket)
        holder = Queue(
            name,
            exchange="",
            durable=True,
            queue_arguments={
                "x-message-ttl": bucket,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": delivery.queue,
                "x-expires": bucket + PARK_QUEUE_GRACE_MS,
            },
        )
        m = delivery.message
        props = {k: v for k, v in m.properties.items() if k != "expiration"}
        copy = Message(
            m.body, {**m.headers, DUE_HEADER: float(due)}, props, m.content_type, m.content_encoding
        )
        # Re-declared each time: that also renews the bucket queue's x-expires lease.
        await self._copy_then_ack(delivery, Outgoing(copy, "", name), declare=holder)

    def park(self, delivery: Delivery, due: float) -> None:
        self._call(self._retrying("parking", lambda: self._park(delivery, due)))

    def renew(self, deliveries: Sequence[Delivery]) -> None:
        """Nothing to do: a delivery stays leased while the connection lives (see the docs)."""

    async def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        m = delivery.message
        headers = {
            **m.headers,
            DEAD_ID: uuid.uuid4().hex,
            DEAD_QUEUE: delivery.queue,
            DEAD_REASON: reason,
            DEAD_TIME: time.time(),
        }
        copy = Message(m.body, headers, dict(m.properties), m.content_type, m.content_encoding)
        await self._copy_then_ack(
            delivery,
            Outgoing(copy, "", self.dead_letter_queue),
            declare=Queue(self.dead_letter_queue, exchange=""),
        )

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._call(self._retrying("dead-lettering", lambda: self._dead_letter(delivery, reason)))

    # -- queues and the dead-letter store ----------------------------------------------------------
    async def _passive_count(self, queue: str) -> int:
        async with self._admin_lock():  # one admin channel: a 404 or 406 closes it for all
            return await self._passive_count_unlocked(queue)

    async def _passive_count_unlocked(self, queue: str) -> int:
        ch = await self._link.channel("admin")
        try:
            ok = await ch.queue_declare(queue, passive=True)
        except amqp_errors.ChannelNotFoundEntity:
            self._link.drop_channel("admin")
            return 0
        return int(ok.message_count or 0)

    def queue_length(self, queue: str) -> int:
        self.flush()  # count what this transport published, too
        return int(self._call(self._retrying("queue length", lambda: self._passive_count(queue))))

    async def _purge(self, queue: str) -> int:
        async with self._admin_lock():  # one admin channel: a 404 or 406 closes it for all
            return await self._purge_unlocked(queue)

    async def _purge_unlocked(self, queue: str) -> int:
        ch = await self._link.channel("admin")
        try:
            ok = await ch.queue_purge(queue)
        except amqp_errors.ChannelNotFoundEntity:
            self._link.drop_channel("admin")
            return 0
        return int(ok.message_count or 0)

    def purge(self, queue: str) -> int:
        self.flush()
        return int(self._call(self._retrying("purge", lambda: self._purge(queue))))

    async def _read_dead(
        self, ch: AbstractChannel, limit: int | None
    ) -> list[tuple[int, DeadLetter]]:
        """Get (without acking) up to *limit* dead letters on *ch*, oldest first."""
        out: list[tuple[int, DeadLetter]] = []
        try:
            await ch.queue_declare(self.dead_letter_queue, passive=True)
        except amqp_errors.ChannelNotFoundEntity:
            return out
        while limit is None or len(out) < limit:
            got = await ch.basic_get(self.dead_letter_queue, no_ack=False)
            if not isinstance(got.delivery, spec.Basic.GetOk):
                break
            message = from_properties(got.body, got.header.properties)
            headers = message.headers
            entry = DeadLetter(
                id=str(headers.pop(DEAD_ID, "") or got.delivery.delivery_tag),
                queue=str(headers.pop(DEAD_QUEUE, "") or ""),
                reason=str(headers.pop(DEAD_REASON, "") or ""),
                message=message,
                time=float(headers.pop(DEAD_TIME, 0.0) or 0.0),
            )
            out.append((int(got.delivery.delivery_tag or 0), entry))
            if not got.delivery.message_count:
                break
        return out

    async def _with_dead(self, limit: int | None, act: Any) -> Any:
        """Run ``act(channel, entries)`` on a private channel; closing it requeues the rest."""
        conn = await self._link.connection()
        ch = await conn.channel(publisher_confirms=False)
        try:
            return await act(ch, await self._read_dead(ch, limit))
        finally:
            await ch.close()

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        async def act(ch: AbstractChannel, entries: list[tuple[int, DeadLetter]]) -> Any:
            return [e for _, e in entries]

        result: list[DeadLetter] = self._call(
            self._retrying("reading dead letters", lambda: self._with_dead(limit, act))
        )
        return result

    def requeue_dead(self, ids: Sequence[str] | None = None) -> int:
        wanted = None if ids is None else set(ids)

        async def act(ch: AbstractChannel, entries: list[tuple[int, DeadLetter]]) -> int:
            count = 0
            for tag, entry in entries:
                if wanted is not None and entry.id not in wanted:
                    continue
                await self._publish_now([Outgoing(entry.message, "", entry.queue)])
                await ch.basic_ack(tag)
                count += 1
            return count

        return int(
            self._call(
                self._retrying("requeueing dead letters", lambda: self._with_dead(None, act))
            )
        )

    def purge_dead(self, ids: Sequence[str] | None = None) -> int:
        if ids is None:
            return self.purge(self.dead_letter_queue)
        wanted = set(ids)

        async def act(ch: AbstractChannel, entries: list[tuple[int, DeadLetter]]) -> int:
            count = 0
            for tag, entry in entries:
                if entry.id in wanted:
                    await ch.basic_ack(tag)
                    count += 1
            return count

        return int(
            self._call(self._retrying("purging dead letters", lambda: self._with_dead(None, act)))
        )

    # -- broadcast ---------------------------------------------------------------------------------
    async def _broadcast(self, exchange: str, routing_key: str, message: Message) -> None:
        await self._ensure_broadcast_exchange(exchange)
        ch = await self._link.channel("broadcast")
        await ch.basic_publish(
            message.body,
            exchange=exchange,
            routing_key=routing_key,
            properties=to_properties(message, 1),
        )

    def broadcast(self, exchange: str, routing_key: str, message: Message) -> None:
        self._call(
            self._retrying(
                f"broadcast to {exchange!r}",
                lambda: self._broadcast(exchange, routing_key, message),
            )
        )

    def subscribe(self, exchange: str, patterns: Sequence[str] = ("#",)) -> Subscription:
        sub = AMQPSubscription(self, exchange, patterns)

        async def run() -> None:
            await self._link.connection()
            self._subscriptions.add(sub)
            await sub.attach(self._link.generation)

        self._call(self._retrying(f"subscribing to {exchange!r}", run))
        return sub

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        concurrent.futures.wait(list(self._settling), timeout=10)
        if not self._outbox.flush(self.params.retry_budget):
            logger.error(
                "closing with %d message(s) RabbitMQ has not confirmed", self._outbox.unconfirmed
            )
        self._closed = True
        _open_transports.discard(self)
        try:
            self._runner.call(self._link.close(), 10)
        except Exception:  # closing anyway
            logger.debug("closing the AMQP connection failed", exc_info=True)
        self._runner.stop()

    def describe(self) -> str:
        return ";".join(str(e) for e in self.params.endpoints)
