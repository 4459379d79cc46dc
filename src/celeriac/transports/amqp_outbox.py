"""Publish-behind for the AMQP transport: ``publish`` returns once messages are handed to the
connection's loop; publisher confirms are collected in the background.

A message stays in the outbox until RabbitMQ confirms it. If the connection drops first, it is
sent again after the reconnect (at least once, never silently dropped while the process lives).
The number of unconfirmed messages is bounded (``publish`` blocks when the bound is reached),
and ``flush`` waits until every message handed over so far is confirmed: the transport flushes
before counting or purging a queue, on ``close`` and at interpreter exit.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pamqp import commands as spec

from celeriac.exceptions import TransportError
from celeriac.protocol.message import Outgoing
from celeriac.utils.amqp_conn import AMQPLink, channel_error_text, is_connection_error
from celeriac.utils.amqp_wire import WireProperties

logger = logging.getLogger("celeriac.transports.amqp")

#: How long a message keeps being re-sent while RabbitMQ stays unreachable.
GIVE_UP_AFTER = 300.0
#: After the publish channel closes, how long its pending publishes may still settle.
CLOSE_GRACE = 1.0


@dataclass(slots=True)
class _Item:
    out: Outgoing
    props: WireProperties
    give_up: float


class Outbox:
    """Messages handed to the loop and not yet confirmed. ``put``/``flush`` are thread-safe."""

    def __init__(
        self,
        link: AMQPLink,
        ensure_queue: Callable[[str], Awaitable[None]],
        max_unconfirmed: int = 10000,
    ) -> None:
        self._link = link
        self._ensure_queue = ensure_queue
        self.max_unconfirmed = max(1, max_unconfirmed)
        self._cond = threading.Condition()
        self._unconfirmed = 0
        self._queue: deque[_Item] = deque()  # loop side: waiting to be sent
        #: Caller side: handed over, not yet moved to ``_queue``. One wake-up of the loop serves
        #: every batch put while it is pending (a wake-up is a write to the loop's pipe).
        self._incoming: deque[list[_Item]] = deque()
        self._wake_pending = False
        self._pump: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def unconfirmed(self) -> int:
        return self._unconfirmed

    # -- caller threads --------------------------------------------------------------------------
    def put(self, items: Sequence[Outgoing], props: Sequence[WireProperties], wait: float) -> None:
        """Hand *items* to the loop; blocks while too many are unconfirmed (at most *wait* s)."""
        n = len(items)
        with self._cond:
            ok = self._cond.wait_for(
                lambda: self._unconfirmed == 0 or self._unconfirmed + n <= self.max_unconfirmed,
                wait,
            )
            if not ok:
                raise TransportError(
                    f"RabbitMQ at {self._link.endpoint} has not confirmed "
                    f"{self._unconfirmed} message(s) for {wait:.0f}s"
                )
            self._unconfirmed += n
        give_up = time.monotonic() + GIVE_UP_AFTER
        self._incoming.append([_Item(o, p, give_up) for o, p in zip(items, props, strict=True)])
        if not self._wake_pending:
            self._wake_pending = True
            self._link.runner.loop.call_soon_threadsafe(self._enqueue)

    def flush(self, timeout: float) -> bool:
        """Wait until everything handed over so far is confirmed (or given up on)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._unconfirmed == 0, timeout)

    def _settled(self, n: int) -> None:
        with self._cond:
            self._unconfirmed -= n
            self._cond.notify_all()

    # -- the loop --------------------------------------------------------------------------------
    def _enqueue(self) -> None:
        # Cleared before taking: a batch put from now on either is taken here or wakes us again.
        self._wake_pending = False
        incoming = self._incoming
        while incoming:
            self._queue.extend(incoming.popleft())
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._queue:
            batch = list(self._queue)
            self._queue.clear()
            try:
                for item in batch:
                    if item.out.exchange == "":
                        await self._ensure_queue(item.out.routing_key)
                ch = await self._link.channel("publish", confirms=True)
                publish: Any = ch.basic_publish  # aiormq's Channel takes wait=; its ABC does not
                # Tasks take the channel lock in creation order: frames leave in publish order.
                futures = [
                    asyncio.ensure_future(
                        publish(
                            item.out.message.body,
                            exchange=item.out.exchange,
                            routing_key=item.out.routing_key,
                            properties=item.props,
                            wait=False,
                        )
                    )
                    for item in batch
                ]
            except Exception as exc:
                if self._link.is_open and not is_connection_error(exc):
                    # The broker answered and refused (e.g. a queue declared differently).
                    logger.error("dropping %d message(s): %s", len(batch), exc)
                    self._settled(len(batch))
                else:
                    await self._failed(batch, exc)
                continue
            task = asyncio.get_running_loop().create_task(self._confirm(batch, futures, ch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _confirm(
        self, batch: list[_Item], futures: list[asyncio.Future[Any]], channel: Any
    ) -> None:
        gathered = asyncio.gather(*futures, return_exceptions=True)
        closing = channel.closing
        try:
            await asyncio.wait((gathered, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()  # only stops observing the channel
        if not gathered.done():
            # The channel closed first. aiormq leaves a publish that was waiting for the dead
            # connection's write queue waiting forever: those are cancelled and sent again.
            await asyncio.wait((gathered,), timeout=CLOSE_GRACE)
            for future in futures:
                future.cancel()
        results = await gathered
        retry: list[_Item] = []
        done = 0
        for item, result in zip(batch, results, strict=True):
            if isinstance(result, spec.Basic.Ack):
                done += 1
            elif isinstance(result, BaseException) and is_connection_error(result):
                retry.append(item)
            else:
                done += 1
                what = (
                    "refused (nack)"
                    if isinstance(result, spec.Basic.Nack)
                    else (
                        channel_error_text(result) if isinstance(result, BaseException) else result
                    )
                )
                logger.error(
                    "RabbitMQ dropped a message for exchange %r routing key %r: %s",
                    item.out.exchange,
                    item.out.routing_key,
                    what,
                )
                if isinstance(result, BaseException):
                    self._link.drop_channel("publish")
        if done:
            self._settled(done)
        if retry:
            await self._failed(retry, ConnectionError("connection lost before the confirm"))

    async def _failed(self, batch: list[_Item], exc: BaseException) -> None:
        """Put *batch* back at the head of the queue (or give up on expired items)."""
        now = time.monotonic()
        keep = [item for item in batch if item.give_up > now]
        if len(keep) < len(batch):
            logger.error(
                "gave up on %d message(s) after %.0fs: RabbitMQ at %s unreachable (%s)",
                len(batch) - len(keep),
                GIVE_UP_AFTER,
                self._link.endpoint,
                exc,
            )
            self._settled(len(batch) - len(keep))
        if not keep:
            return
        logger.warning("re-sending %d unconfirmed message(s) after: %s", len(keep), exc)
        self._queue.extendleft(reversed(keep))
        if not is_connection_error(exc) and not isinstance(exc, TransportError):
            self._link.drop_channel("publish")
        await asyncio.sleep(0.2)  # the link reconnects meanwhile; _run tries again
