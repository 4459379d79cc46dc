"""``rpc://``: results sent back as AMQP messages to the client that sent the task (Celery's RPC).

Wire format (Celery 5.7's, so either side can be Celery): the worker publishes the task's meta
JSON to the default exchange with routing key = the task message's ``reply_to`` (the client's
``oid``), ``correlation_id`` = task id, ``delivery_mode`` 1 (2 with ``result_persistent``),
``headers`` ``{}``. The client declares its reply queue, named by its ``oid``, before it publishes
a task (durable, auto-delete, ``x-expires`` = ``result_expires``), consumes it, and keeps the
latest state per task id.

How the key/value contract maps onto that:

* ``on_task_call(reply_to, task_id)`` (client, before publishing) declares and consumes the
  reply queue.
* ``send_reply(reply_to, key, value, ttl)`` (worker) publishes a result; ``ResultBackend`` calls
  it instead of ``set`` for task results, because the key alone does not say where the client is.
* ``get``/``get_many``/``watch`` read and wait on the client's local table of received states.
* ``set``/``delete`` change the local table only (results live in the client, as in Celery).
* Chords are refused: the header's results reach only the client, never the worker that would
  have to run the body.

The connection is taken from ``broker_url`` (an ``rpc://`` URL names no server of its own).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from aiormq.abc import AbstractConnection, DeliveredMessage

from celeriac.backends.base import ResultStore, Watch
from celeriac.exceptions import ImproperlyConfigured, TransportError
from celeriac.protocol.message import Message
from celeriac.utils.amqp_conn import AMQPLink, LoopThread, is_connection_error, parse_amqp_url
from celeriac.utils.amqp_wire import to_properties

logger = logging.getLogger("celeriac.backends.rpc")

TASK_KEY_PREFIX = "celery-task-meta-"
DEFAULT_EXPIRES = 86400.0
NO_CHORDS = (
    "The rpc:// result backend does not support chords: a chord's header results reach only "
    "the client that sent them, never the worker that must run the body (a group chained with "
    "a task is a chord too). Use a result backend such as redis:// or sqlite:// for chords."
)


def _task_id(key: str) -> str:
    return key[len(TASK_KEY_PREFIX) :] if key.startswith(TASK_KEY_PREFIX) else key


class _Table:
    """The client's received states: key → (value, expiry), with a version per key for watches."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.values: dict[str, tuple[bytes, float | None]] = {}
        self.versions: dict[str, int] = {}

    def put(self, key: str, value: bytes, ttl: float | None) -> None:
        with self.cond:
            self.values[key] = (value, None if ttl is None else time.time() + ttl)
            self.versions[key] = self.versions.get(key, 0) + 1
            self.cond.notify_all()

    def get(self, key: str, now: float) -> bytes | None:
        item = self.values.get(key)
        if item is None:
            return None
        if item[1] is not None and item[1] <= now:
            del self.values[key]
            return None
        return item[0]


class _RPCWatch(Watch):
    def __init__(self, table: _Table, keys: Sequence[str]) -> None:
        self._t = table
        self._keys = [_task_id(k) for k in keys]
        self._seen = {k: table.versions.get(k, 0) for k in self._keys}

    def _changed(self) -> bool:
        return any(self._t.versions.get(k, 0) != v for k, v in self._seen.items())

    def wait(self, timeout: float | None) -> bool:
        with self._t.cond:
            ok = self._t.cond.wait_for(self._changed, timeout)
            self._seen = {k: self._t.versions.get(k, 0) for k in self._keys}
            return ok

    def close(self) -> None:
        pass


class RPCResultStore(ResultStore):
    """Results as reply messages over the broker's RabbitMQ. See the module docstring."""

    schemes: ClassVar[tuple[str, ...]] = ("rpc",)
    pushes_notifications: ClassVar[bool] = True

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, options)
        opts = self.options
        broker = str(opts.get("broker_url") or "")
        rest = url.split("://", 1)[1] if "://" in url else ""
        if rest.strip("/"):
            broker = f"amqp://{rest}"  # rpc://user:pw@host/vhost names the server itself
        if not broker or broker.split("://", 1)[0].lower() not in ("amqp", "amqps", "pyamqp"):
            raise ImproperlyConfigured(
                f"result_backend {url!r} needs a RabbitMQ broker_url (amqp://...), "
                f"got {broker or None!r}"
            )
        broker_options = dict(opts.get("broker_options") or {})
        self.params = parse_amqp_url(broker, broker_options)
        expires = opts.get("expires", DEFAULT_EXPIRES)
        self.expires = float(expires) if expires else None
        self.delivery_mode = 2 if opts.get("persistent") else 1
        self._table = _Table()
        self._queues: set[str] = set()
        self._runner = LoopThread("celeriac-rpc")
        self._link = AMQPLink(self.params, self._runner, "celeriac-rpc")
        self._link.on_connect(self._restore)
        self._closed = False

    def _call(self, coro: Any) -> Any:
        return self._runner.call(coro, self.params.retry_budget + 30.0)

    async def _retrying(self, action: str, op: Any) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.params.retry_budget
        while True:
            try:
                return await op()
            except TransportError:
                raise
            except Exception as exc:
                if not is_connection_error(exc) or loop.time() >= deadline:
                    raise TransportError(
                        f"rpc:// result backend at {self._link.endpoint}: {action} failed: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                await asyncio.sleep(0.05)

    # -- the client's reply queues -----------------------------------------------------------------
    async def _listen(self, queue: str) -> None:
        ch = await self._link.channel("replies")
        args: dict[str, Any] = {}
        if self.expires:
            args["x-expires"] = int(self.expires * 1000)
        await ch.queue_declare(queue, durable=True, auto_delete=True, arguments=args or None)
        await ch.basic_consume(queue, self._on_reply, no_ack=True, consumer_tag=f"rpc.{queue}")
        self._queues.add(queue)

    async def _restore(self, conn: AbstractConnection) -> None:
        for queue in list(self._queues):
            await self._listen(queue)

    async def _on_reply(self, msg: DeliveredMessage) -> None:
        task_id = msg.header.properties.correlation_id
        if task_id:
            self._table.put(task_id, bytes(msg.body), self.expires)

    def on_task_call(self, reply_to: str, task_id: str) -> None:
        """Make sure the reply queue *reply_to* exists and is consumed before a task is sent."""
        if reply_to in self._queues:
            return
        self._call(self._retrying("declaring the reply queue", lambda: self._listen(reply_to)))

    # -- the worker's side -------------------------------------------------------------------------
    async def _send(self, reply_to: str, task_id: str, value: bytes) -> None:
        ch = await self._link.channel("results", confirms=self.delivery_mode == 2)
        message = Message(
            value,
            {},
            {"correlation_id": task_id, "delivery_mode": self.delivery_mode, "priority": 0},
            content_type="application/json",
            content_encoding="utf-8",
        )
        await ch.basic_publish(
            value,
            exchange="",
            routing_key=reply_to,
            properties=to_properties(message, self.delivery_mode),
        )

    def send_reply(self, reply_to: str | None, key: str, value: bytes, ttl: float | None) -> None:
        """Send a task's state to the client queue *reply_to* (local only without one)."""
        task_id = _task_id(key)
        if not reply_to:
            logger.warning(
                "rpc:// result for task %s has no reply_to; kept in this process only", task_id
            )
            self._table.put(task_id, value, ttl)
            return
        self._call(self._retrying("sending a result", lambda: self._send(reply_to, task_id, value)))

    # -- the key/value contract --------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        with self._table.cond:
            return self._table.get(_task_id(key), time.time())

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = time.time()
        with self._table.cond:
            return [self._table.get(_task_id(k), now) for k in keys]

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self._table.put(_task_id(key), value, ttl)

    def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        for key, value in items:
            self._table.put(_task_id(key), value, ttl)

    def delete(self, keys: Sequence[str]) -> None:
        with self._table.cond:
            for key in keys:
                self._table.values.pop(_task_id(key), None)

    def watch(self, keys: Sequence[str]) -> Watch:
        with self._table.cond:
            return _RPCWatch(self._table, keys)

    def chord_init(self, group_id: str, size: int, ttl: float | None) -> None:
        raise NotImplementedError(NO_CHORDS)

    def chord_grow(self, group_id: str, delta: int, ttl: float | None) -> None:
        raise NotImplementedError(NO_CHORDS)

    def chord_part(
        self, group_id: str, task_id: str, index: int, value: bytes, ttl: float | None
    ) -> list[bytes] | None:
        raise NotImplementedError(NO_CHORDS)

    def chord_release(self, group_id: str) -> None:
        raise NotImplementedError(NO_CHORDS)

    def cleanup(self) -> int:
        now = time.time()
        with self._table.cond:
            dead = [
                k for k, (_, exp) in self._table.values.items() if exp is not None and exp <= now
            ]
            for key in dead:
                del self._table.values[key]
        return len(dead)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._runner.call(self._link.close(), 10)
        except Exception:  # closing anyway
            pass
        self._runner.stop()
