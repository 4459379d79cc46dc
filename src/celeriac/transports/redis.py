"""``redis://``, ``rediss://``, ``redis+socket://``, ``sentinel://``: the Redis broker.

The keys and values are kombu 5.7's, so Celery and celeriac processes can share one Redis:

* a queue is a list (LPUSH to publish, RPOP/BRPOP to consume: FIFO); priorities 3/6/9 live in
  ``<queue>\\x06\\x16<step>`` lists, and a *lower* number is served first (kombu's order);
* messages are kombu's JSON envelope (base64 body, ``delivery_tag`` and ``delivery_info`` in
  ``properties``);
* bindings are ``_kombu.binding.<exchange>`` sets (and ``_kombu.binding_permanent.<exchange>``);
* a fetched message is recorded in ``unacked`` / ``unacked_index`` in the same Lua step that pops
  it; expired entries are restored under ``unacked_mutex``, as kombu does;
* broadcast is PUBLISH on ``/{db}.<exchange>/<routing_key>`` with PSUBSCRIBE patterns.

On top of that, leases are renewed (``renew`` re-scores ``unacked_index``, so neither kombu nor
celeriac restores a live consumer's long task), far-future ETAs are parked in ``celeriac.delayed``
and dead letters are kept in a list. See ``docs/redis.md``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from bisect import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, ClassVar

import orjson
import redis
from redis.client import PubSub
from redis.commands.core import Script

from celeriac.exceptions import ImproperlyConfigured, TransportError
from celeriac.protocol.entities import Queue
from celeriac.protocol.message import Delivery, Message, Outgoing
from celeriac.protocol.task import new_task_id
from celeriac.transports.base import (
    DeadLetter,
    Subscription,
    Transport,
    topic_matches,
)
from celeriac.utils.redis_conn import RedisParams, Retrier, is_retryable, parse_redis_url
from celeriac.utils.redis_fast import FastLane

logger = logging.getLogger("celeriac.transports.redis")

PRIORITY_STEPS = (0, 3, 6, 9)
#: Longest a fetch_nowait call may wait on the socket (it runs on the worker's event loop).
NOWAIT_SOCKET_TIMEOUT = 5.0
SEP = "\x06\x16"
BINDING_KEY = "_kombu.binding.%s"
BINDING_PERMANENT_KEY = "_kombu.binding_permanent.%s"
BINDING_DEADLINES_KEY = "_kombu.binding_deadlines"
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"
UNACKED_MUTEX_KEY = "unacked_mutex"
PARKED_KEY = "celeriac.delayed"
PARKED_MESSAGES_KEY = "celeriac.delayed.messages"
#: A fetcher's record of its last fetch: ``celeriac.fetched.<fetcher id>``.
FETCH_RECORD_PREFIX = "celeriac.fetched."
#: kombu never lets an expiring queue's binding table live less than an hour.
MIN_BINDING_TTL_MS = 3600 * 1000
#: How often fetch moves due parked messages back, and how many per call.
UNPARK_INTERVAL = 0.5
UNPARK_LIMIT = 300
#: Longest BRPOP wait, so a consumer notices housekeeping and close in time.
MAX_BLOCK = 1.0
QUEUE_ORDER_STRATEGIES = ("round_robin", "priority", "sorted")
_LUA_DIR = Path(__file__).with_name("redis_lua")


@dataclass(slots=True)
class _Fetcher:
    """One thread's fetching state: its record key, and the fetch whose reply it never read."""

    record: str
    pid: int
    seq: int = 0
    #: (token, queue order) of a fetch sent without its reply read: salvaged on the next attempt.
    unsure: tuple[str, list[str]] | None = None
    #: Salvaged deliveries not yet returned (a later step of that fetch failed).
    salvaged: list[Delivery] = dataclasses.field(default_factory=list)
    #: (list key, envelope) BRPOP popped whose lease is not recorded yet: only this process has
    #: it, so it is kept until a fetch script has leased it.
    held: tuple[str, bytes] | None = None


@dataclass(frozen=True, slots=True)
class RedisTransportConfig:
    """Everything the transport needs from the URL and ``broker_transport_options``, parsed once."""

    conn: RedisParams
    visibility_timeout: float
    dead_letter_queue: str
    queue_order_strategy: str = "round_robin"
    priority_steps: tuple[int, ...] = PRIORITY_STEPS
    sep: str = SEP
    global_keyprefix: str = ""
    #: The PUB/SUB channel prefix, ``/{db}.`` with the db filled in ("" when disabled).
    fanout_prefix: str = "/0."
    fanout_patterns: bool = True
    polling_interval: float = MAX_BLOCK
    unacked_mutex_expire: float = 300.0
    unacked_restore_limit: int = 100
    max_connections: int = 32

    @property
    def restore_interval(self) -> float:
        """Seconds between sweeps for expired leases: a quarter of the timeout, 0.25-10 s."""
        return min(max(self.visibility_timeout / 4, 0.25), 10.0)

    @classmethod
    def parse(
        cls, url: str, options: Mapping[str, Any], visibility_timeout: float, dead_letter_queue: str
    ) -> RedisTransportConfig:
        """Read *url* and *options* (see ``docs/redis.md`` for the keys)."""
        conn_opts = dict(options)
        if conn_opts.get("socket_connect_timeout") is None and options.get("connect_timeout"):
            conn_opts["socket_connect_timeout"] = options["connect_timeout"]
        conn = parse_redis_url(url, conn_opts)
        strategy = str(options.get("queue_order_strategy") or "round_robin")
        if strategy not in QUEUE_ORDER_STRATEGIES:
            raise ImproperlyConfigured(
                f"queue_order_strategy {strategy!r} is not one of {QUEUE_ORDER_STRATEGIES}"
            )
        steps = tuple(sorted({int(s) for s in options.get("priority_steps") or PRIORITY_STEPS}))
        if not steps or steps[0] != 0:
            raise ImproperlyConfigured(
                f"priority_steps {options.get('priority_steps')!r} must start at 0, "
                "e.g. [0, 3, 6, 9]"
            )
        fanout = options.get("fanout_prefix", True)
        prefix = (fanout if isinstance(fanout, str) else "/{db}.") if fanout else ""
        polling = float(options.get("polling_interval") or MAX_BLOCK)
        return cls(
            conn=conn,
            visibility_timeout=visibility_timeout,
            dead_letter_queue=dead_letter_queue,
            queue_order_strategy=strategy,
            priority_steps=steps,
            sep=str(options.get("sep") or SEP),
            global_keyprefix=str(options.get("global_keyprefix") or ""),
            fanout_prefix=prefix.format(db=conn.db),
            fanout_patterns=bool(options.get("fanout_patterns", True)),
            polling_interval=min(max(polling, 0.05), MAX_BLOCK),
            unacked_mutex_expire=float(options.get("unacked_mutex_expire") or 300.0),
            unacked_restore_limit=int(options.get("unacked_restore_limit") or 100),
            max_connections=int(options.get("max_connections") or conn.max_connections or 32),
        )


@cache
def _script_source(name: str) -> str:
    return (_LUA_DIR / f"{name}.lua").read_text()


def topic_pattern(routing_key: str) -> str:
    """The regex kombu stores for a topic binding (``*`` = one word, ``#`` = any)."""
    escaped = "".join(
        c if c.isalnum() or c in ".#*" else ("\\000" if c == "\000" else "\\" + c)
        for c in routing_key
    )
    words = {"*": r"[^\.]+", "#": r".*?"}
    return "^" + r"\.".join(words.get(w, w) for w in escaped.split(".")) + "$"


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _loads(raw: bytes | str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)  # integers beyond 64 bits, which orjson refuses


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, default=str).encode()


def encode_envelope(message: Message, exchange: str, routing_key: str) -> tuple[bytes, str]:
    """kombu's Redis envelope for *message* with a fresh delivery tag; returns (json, tag)."""
    tag = new_task_id()
    props = message.properties
    props = {
        **props,
        "delivery_info": {"exchange": exchange, "routing_key": routing_key},
        "priority": props.get("priority", 0),
        "body_encoding": "base64",
        "delivery_tag": tag,
    }
    envelope = {
        "body": base64.b64encode(message.body).decode("ascii"),
        "content-encoding": message.content_encoding,
        "content-type": message.content_type,
        "headers": message.headers,
        "properties": props,
    }
    return _dumps(envelope), tag


def message_from_envelope(env: Mapping[str, Any]) -> tuple[Message, dict[str, Any]]:
    """Decode a kombu envelope into a Message and its ``delivery_info``."""
    props = dict(env.get("properties") or {})
    info = props.pop("delivery_info", None) or {}
    body_encoding = props.pop("body_encoding", None)
    content_encoding = env.get("content-encoding") or "binary"
    body = env.get("body")
    if body_encoding == "base64" and isinstance(body, str):
        data = base64.b64decode(body)
    elif isinstance(body, str):
        data = body.encode("utf-8" if content_encoding == "binary" else content_encoding)
    elif body is None:
        data = b""
    else:
        data = _dumps(body)
    message = Message(
        body=data,
        headers=dict(env.get("headers") or {}),
        properties=props,
        content_type=env.get("content-type") or "application/data",
        content_encoding=content_encoding,
    )
    return message, dict(info)


def _mark_redelivered(env: dict[str, Any]) -> bytes:
    headers = env.get("headers")
    if isinstance(headers, dict):
        headers["redelivered"] = True
    props = env.get("properties")
    if isinstance(props, dict) and isinstance(props.get("delivery_info"), dict):
        props["delivery_info"]["redelivered"] = True
    return _dumps(env)


class _RedisSubscription(Subscription):
    """PSUBSCRIBE on an exchange's channels; routing keys filtered with AMQP topic rules."""

    def __init__(self, transport: RedisTransport, exchange: str, patterns: Sequence[str]) -> None:
        self._t = transport
        cfg = transport.cfg
        self.exchange = exchange
        self.patterns = tuple(patterns) or ("#",)
        self._base = cfg.global_keyprefix + cfg.fanout_prefix + exchange
        escaped = re.sub(r"([\\?*\[\]])", r"\\\1", self._base)
        globs: set[str] = set()
        for pattern in self.patterns:
            if not cfg.fanout_patterns or topic_matches(pattern, ""):
                globs.add(escaped)
            if cfg.fanout_patterns and pattern:
                globs.add(f"{escaped}/{pattern.replace('#', '*')}")
        self._globs = sorted(globs)
        self._pending: list[tuple[str, Message]] = []
        self._lock = threading.Lock()
        self._pubsub: PubSub = transport._pubsub_client.pubsub()  # type: ignore[no-untyped-call]
        transport._retry.call(self._connect)

    def _connect(self) -> None:
        self._pubsub.psubscribe(*self._globs)
        # Wait for the server's confirmations, so a broadcast sent after this returns is seen.
        confirmed, deadline = 0, time.monotonic() + 10
        while confirmed < len(self._globs) and time.monotonic() < deadline:
            msg = self._pubsub.get_message(timeout=0.5)
            if msg is None:
                continue
            if msg["type"] == "psubscribe":
                confirmed += 1
            else:
                self._offer(msg)

    def _offer(self, msg: Mapping[str, Any]) -> None:
        if msg.get("type") not in ("pmessage", "message"):
            return
        channel = msg["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        rest = channel[len(self._base) :]
        routing_key = rest[1:] if rest.startswith("/") else ""
        if self._t.cfg.fanout_patterns and not any(
            topic_matches(p, routing_key) for p in self.patterns
        ):
            return
        try:
            message, _ = message_from_envelope(_loads(msg["data"]))
        except (ValueError, TypeError, AttributeError):
            return
        self._pending.append((routing_key, message))

    def get(self, timeout: float) -> list[tuple[str, Message]]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    msg = self._pubsub.get_message(timeout=min(left, MAX_BLOCK))
                except (redis.RedisError, OSError) as exc:
                    if not is_retryable(exc, self._t.cfg.conn):
                        raise TransportError(
                            f"Redis at {self._t.cfg.conn.endpoint}: {exc}"
                        ) from exc
                    time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))
                    self._reconnect()
                    continue
                if msg is not None:
                    self._offer(msg)
            # Take whatever else is already buffered, without waiting.
            while self._pending:
                try:
                    msg = self._pubsub.get_message(timeout=0)
                except (redis.RedisError, OSError):
                    break
                if msg is None:
                    break
                self._offer(msg)
            items, self._pending = self._pending, []
        return items

    def _reconnect(self) -> None:
        try:
            conn = self._pubsub.connection
            if conn is not None:
                conn.disconnect()
                conn.connect()  # redis-py re-issues the PSUBSCRIBEs on connect
        except (redis.RedisError, OSError):
            pass

    def close(self) -> None:
        with self._lock:
            try:
                self._pubsub.close()
            except (redis.RedisError, OSError):
                pass


class RedisTransport(Transport):
    """kombu-compatible Redis broker. See the module docstring and ``docs/redis.md``."""

    schemes: ClassVar[tuple[str, ...]] = ("redis", "rediss", "redis+socket", "sentinel")
    #: kombu serves priority 0 before 9 on Redis; we keep its order so mixed workers agree.
    priority_reversed: ClassVar[bool] = True

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, options)
        self.cfg = RedisTransportConfig.parse(
            url, self.options, self.visibility_timeout, self.dead_letter_queue
        )
        self._client = self.cfg.conn.client(self.cfg.max_connections, blocking=True)
        self._pubsub_client = self.cfg.conn.client(blocking=False)
        self._retry = Retrier(self.cfg.conn, TransportError)
        #: Publishing, fetching and acking: the calls made for every task.
        self._fast = FastLane(self.cfg.conn.pool(blocking=False), self.cfg.max_connections)
        self._scripts: dict[str, Script] = {}
        self._nowait: FastLane | None = None
        self._fanout_exchanges: set[str] = set()
        self._lock = threading.Lock()
        self._housekeeping = threading.Lock()
        self._cycle: tuple[tuple[str, ...], list[str]] = ((), [])
        self._next_unpark = 0.0
        self._next_restore = 0.0
        p = self.cfg.global_keyprefix
        self._unacked = p + UNACKED_KEY
        self._unacked_index = p + UNACKED_INDEX_KEY
        self._unacked_mutex = p + UNACKED_MUTEX_KEY
        self._parked = p + PARKED_KEY
        self._parked_messages = p + PARKED_MESSAGES_KEY
        self._dlq = p + self.dead_letter_queue
        self._fetchers = threading.local()

    # -- keys --------------------------------------------------------------------------------------
    def _step(self, priority: Any) -> int:
        try:
            value = max(min(int(priority), 9), 0)
        except (TypeError, ValueError):
            value = 0
        steps = self.cfg.priority_steps
        return steps[bisect(steps, value) - 1]

    def _list_key(self, queue: str, priority: Any = 0) -> str:
        step = self._step(priority)
        name = f"{queue}{self.cfg.sep}{step}" if step else queue
        return self.cfg.global_keyprefix + name

    def _script(self, name: str) -> Script:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self._client.register_script(_script_source(name))
        return script

    # -- declaring and publishing ------------------------------------------------------------------
    def declare(self, queue: Queue) -> None:
        exchange = queue.exchange
        if exchange.type == "fanout":
            self._fanout_exchanges.add(exchange.name)
        if not exchange.name:
            return  # the default exchange routes by queue name; kombu stores no binding for it
        member = self._binding_member(queue)
        prefix = self.cfg.global_keyprefix
        table = prefix + BINDING_KEY % exchange.name
        expires_ms = self._queue_expires_ms(queue)
        if expires_ms:
            ttl = max(expires_ms * 2, MIN_BINDING_TTL_MS)
            self._retry.call(
                self._script("refresh_binding"),
                keys=[table, prefix + BINDING_DEADLINES_KEY],
                args=[member, exchange.name, ttl],
            )
            return

        def bind() -> None:
            with self._client.pipeline() as pipe:
                pipe.sadd(table, member)
                pipe.sadd(prefix + BINDING_PERMANENT_KEY % exchange.name, member)
                pipe.execute()

        self._retry.call(bind)

    @staticmethod
    def _queue_expires_ms(queue: Queue) -> int | None:
        if queue.expires:
            return int(queue.expires * 1000)
        value = queue.queue_arguments.get("x-expires")
        try:
            return int(value) if value else None
        except (TypeError, ValueError):
            return None

    def _binding_tables(self, exchanges: set[str]) -> dict[str, list[str]]:
        names = sorted(exchanges)

        def read() -> list[Any]:
            with self._client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.smembers(self.cfg.global_keyprefix + BINDING_KEY % name)
                return pipe.execute()

        replies = self._retry.call(read)
        return {
            name: sorted(m.decode() if isinstance(m, bytes) else m for m in members)
            for name, members in zip(names, replies, strict=True)
        }

    def _binding_member(self, queue: Queue) -> str:
        """kombu's member of a binding table: ``routing_key<sep>pattern<sep>queue``."""
        pattern = topic_pattern(queue.routing_key) if queue.exchange.type == "topic" else ""
        return self.cfg.sep.join([queue.routing_key or "", pattern, queue.name])

    def bound_queues(self, exchange: str) -> list[str] | None:
        members = self._binding_tables({exchange})[exchange]
        return sorted({member.split(self.cfg.sep)[-1] for member in members})

    def unbind(self, queue: Queue) -> None:
        exchange = queue.exchange
        if not exchange.name:
            return
        member = self._binding_member(queue)
        prefix = self.cfg.global_keyprefix

        def forget() -> None:
            with self._client.pipeline() as pipe:
                pipe.srem(prefix + BINDING_KEY % exchange.name, member)
                pipe.srem(prefix + BINDING_PERMANENT_KEY % exchange.name, member)
                pipe.execute()

        self._retry.call(forget)

    def _route(self, exchange: str, routing_key: str, table: list[str]) -> list[str]:
        """Queues for a message: kombu's direct/topic lookup over the binding members."""
        if not exchange or not table:
            return [routing_key]  # unbound exchange: the queue named by the routing key, as Celery
        out: list[str] = []
        for member in table:
            parts = member.split(self.cfg.sep)
            if len(parts) != 3:
                continue
            bound_key, pattern, queue = parts
            if pattern:
                regex = _compiled(pattern)
                hit = regex is not None and regex.match(routing_key) is not None
            else:
                hit = bound_key == routing_key
            if hit and queue not in out:
                out.append(queue)
        return out

    def publish(self, items: Sequence[Outgoing]) -> None:
        if not items:
            return
        if len(items) == 1 and not items[0].exchange:
            item = items[0]
            payload, _ = encode_envelope(item.message, "", item.routing_key)
            key = self._list_key(item.routing_key, item.message.properties.get("priority"))
            self._retry.call(self._fast.execute, "LPUSH", key, payload)
            return
        exchanges = {
            i.exchange for i in items if i.exchange and i.exchange not in self._fanout_exchanges
        }
        tables = self._binding_tables(exchanges) if exchanges else {}
        by_key: dict[str, list[bytes]] = {}
        broadcasts: list[tuple[str, bytes]] = []
        list_keys: dict[tuple[str, Any], str] = {}
        for item in items:
            if item.exchange in self._fanout_exchanges:
                payload, _ = encode_envelope(item.message, item.exchange, item.routing_key)
                broadcasts.append((self._channel(item.exchange, item.routing_key), payload))
                continue
            priority = item.message.properties.get("priority")
            for queue in self._route(
                item.exchange, item.routing_key, tables.get(item.exchange, [])
            ):
                payload, _ = encode_envelope(item.message, item.exchange, item.routing_key)
                cached = list_keys.get((queue, priority))
                if cached is None:
                    cached = list_keys[queue, priority] = self._list_key(queue, priority)
                by_key.setdefault(cached, []).append(payload)

        def send() -> None:
            with self._client.pipeline(transaction=True) as pipe:
                for key, payloads in by_key.items():
                    pipe.lpush(key, *payloads)
                for channel, payload in broadcasts:
                    pipe.publish(channel, payload)
                pipe.execute()

        self._retry.call(send)

    # -- consuming ---------------------------------------------------------------------------------
    def _queue_order(self, queues: Sequence[str]) -> list[str]:
        wanted = tuple(dict.fromkeys(queues))
        strategy = self.cfg.queue_order_strategy
        if strategy == "sorted":
            return sorted(wanted)
        if strategy == "priority":
            return list(wanted)
        with self._lock:
            known, order = self._cycle
            if known != wanted:
                order = list(wanted)
                self._cycle = (wanted, order)
            return list(order)

    def _remember_order(self, queues: tuple[str, ...], order: list[str]) -> None:
        if self.cfg.queue_order_strategy == "round_robin":
            with self._lock:
                if self._cycle[0] == queues:
                    self._cycle = (queues, order)

    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        return self._fetch(queues, limit, timeout, None)

    def fetch_early(
        self,
        queues: Sequence[str],
        limit: int,
        timeout: float,
        early: Callable[[list[Delivery]], None],
    ) -> list[Delivery]:
        # The message BRPOP returns goes to the worker while the fetch script records its lease
        # (a round trip the task's latency no longer waits for).
        return self._fetch(queues, limit, timeout, early)

    def _fetch(
        self,
        queues: Sequence[str],
        limit: int,
        timeout: float,
        early: Callable[[list[Delivery]], None] | None,
    ) -> list[Delivery]:
        if not queues or limit <= 0:
            return []
        deadline = time.monotonic() + max(timeout, 0.0)
        wanted = tuple(dict.fromkeys(queues))
        while True:
            self._housekeep()
            order = self._queue_order(wanted)
            keys = [self._list_key(q, s) for s in self.cfg.priority_steps for q in order]
            got = self._pop(wanted, order, keys, limit, None)
            if got:
                return got
            left = deadline - time.monotonic()
            if left <= 0.005:
                return []
            wait = min(left, self.cfg.polling_interval, self._until_housekeeping())
            sock_timeout = self.cfg.conn.socket_timeout
            if sock_timeout:
                wait = min(wait, sock_timeout * 0.8)
            if wait < 0.01:
                continue
            popped = self._retry.call(self._fast.execute, "BRPOP", *keys, wait)
            if popped:
                key, raw = popped
                key = key.decode() if isinstance(key, bytes) else key
                data = raw if isinstance(raw, bytes) else str(raw).encode()
                k = keys.index(key) + 1
                handed = self._hand_early(early, data, order[(k - 1) % len(order)])
                if handed is None:
                    self._fetcher().held = (key, data)
                got = self._pop(wanted, order, keys, limit, (k, data))
                if handed is not None:
                    if not got or got[0].tag != handed.tag:
                        logger.error(
                            "message %s was handed to the worker but the fetch script did not "
                            "lease it (see the dead-letter queue)",
                            handed.tag,
                        )
                    return [d for d in got if d.tag != handed.tag]
                if got:
                    return got

    supports_pool_fetch: ClassVar[bool] = True

    def fetch_for_pool(
        self,
        queues: Sequence[str],
        limit: int,
        timeout: float,
        acks: Sequence[Delivery],
        announce: Callable[[int], None],
        before: Sequence[Sequence[Any]] = (),
    ) -> list[Delivery]:
        if not queues or limit <= 0:
            if acks or before:
                tags = [d.tag for d in acks]
                self._retry.call(self._fast.pipeline, [*before, *self._ack_commands(tags)])
            return []
        wanted = tuple(dict.fromkeys(queues))
        self._housekeep()
        order = self._queue_order(wanted)
        keys = [self._list_key(q, s) for s in self.cfg.priority_steps for q in order]
        got = self._pop(wanted, order, keys, limit, None, [d.tag for d in acks], before)
        wait = min(timeout, self.cfg.polling_interval, self._until_housekeeping())
        sock_timeout = self.cfg.conn.socket_timeout
        if sock_timeout:
            wait = min(wait, sock_timeout * 0.8)
        if got or wait < 0.01:
            return got
        # The waker is the connection's client id: CLIENT UNBLOCK ends the BRPOP as a timeout,
        # so nothing popped is ever dropped.
        popped = self._retry.call(self._fast.execute_announced, announce, "BRPOP", *keys, wait)
        if not popped:
            return []
        key, raw = popped
        key = key.decode() if isinstance(key, bytes) else key
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        self._fetcher().held = (key, data)
        return self._pop(wanted, order, keys, limit, None)

    def carries(self, params: RedisParams) -> bool:
        """True when commands for a client of *params* (a result store) can go on this
        transport's connections, ahead of a fetch: the same server, user and TLS."""

        def where(p: RedisParams) -> tuple[Any, ...]:
            return (p.host, p.port, p.path, p.username, p.password, bool(p.ssl), p.sentinels)

        return not params.sentinels and where(params) == where(self.cfg.conn)

    def carried(self, params: RedisParams, commands: list[tuple[Any, ...]]) -> list[Any]:
        """*commands* for a client of *params* (see :meth:`carries`), in its database."""
        if not commands or params.db == self.cfg.conn.db:
            return commands
        return [("SELECT", params.db), *commands, ("SELECT", self.cfg.conn.db)]

    def wake_fetch(self, waker: int) -> None:
        self._fast.execute("CLIENT", "UNBLOCK", waker)

    def redelivery(self, raw: Any, queue: str, tag: str) -> Delivery:
        return self._delivery(raw, queue, tag)

    def _hand_early(
        self, early: Callable[[list[Delivery]], None] | None, raw: bytes, queue: str
    ) -> Delivery | None:
        """Hand the message BRPOP returned to *early* before its lease is recorded, when its
        envelope names its delivery tag (the lease is recorded under it): the delivery handed,
        or None."""
        if early is None:
            return None
        try:
            env = _loads(raw)
            tag = env["properties"]["delivery_tag"]
            if not isinstance(tag, str) or not tag:
                return None
            delivery = self._delivery(raw, queue, tag)
        except Exception:
            return None  # the fetch script decides what becomes of it
        early([delivery])
        return delivery

    def fetch_nowait(self, queues: Sequence[str], limit: int) -> list[Delivery]:
        if not queues or limit <= 0:
            return []
        wanted = tuple(dict.fromkeys(queues))
        order = self._queue_order(wanted)
        keys = [self._list_key(q, s) for s in self.cfg.priority_steps for q in order]
        try:
            return self._pop(wanted, order, keys, limit, None, lane=self._nowait_lane())
        except redis.RedisError as exc:
            raise TransportError(f"Redis at {self.cfg.conn.endpoint}: fetch failed: {exc}") from exc

    def _nowait_lane(self) -> FastLane:
        """Connections whose calls give up within NOWAIT_SOCKET_TIMEOUT: they serve
        fetch_nowait, which runs on the worker's event loop."""
        if self._nowait is None:
            conn = self.cfg.conn
            timeout = min(conn.socket_timeout or NOWAIT_SOCKET_TIMEOUT, NOWAIT_SOCKET_TIMEOUT)
            pool = dataclasses.replace(conn, socket_timeout=timeout).pool(blocking=False)
            self._nowait = FastLane(pool, 1)
        return self._nowait

    def _pop(
        self,
        wanted: tuple[str, ...],
        order: list[str],
        keys: list[str],
        limit: int,
        popped: tuple[int, bytes] | None,
        acks: Sequence[str] = (),
        before: Sequence[Sequence[Any]] = (),
        lane: FastLane | None = None,
    ) -> list[Delivery]:
        """Run the fetch script: with retries on the transport's lane, or once on *lane*.
        *acks* are acked and *before* sent first, in the same write.

        A fetch whose connection failed after it was sent may have run in Redis: what it leased
        is read back from the fetcher's record on the next attempt (see ``_salvage``)."""
        fetcher = self._fetcher()
        if popped is None and fetcher.held is not None:
            popped = self._held(fetcher, keys)
        source = _script_source("fetch")
        keys = [self._unacked, self._unacked_index, self._dlq, fetcher.record, *keys]
        settle = [*before, *self._ack_commands(acks)]

        def attempt() -> Any:
            fetcher.salvaged += self._salvage(fetcher)
            room = limit - len(fetcher.salvaged)
            if room <= 0 and popped is None:
                return None
            fetcher.seq += 1
            token = str(fetcher.seq)
            args: list[Any] = [
                max(room, 0),
                repr(time.time()),
                len(order),
                "1" if self.cfg.queue_order_strategy == "round_robin" else "0",
                token,
                self._record_ttl,
            ]
            if popped is not None:
                args += [popped[1], popped[0]]
            fetcher.unsure = (token, order)
            if settle:
                # Acked (and *before* sent) in the same write: one round trip.
                reply = self._fast.script_after(settle, source, keys, args)
            elif lane is None:
                reply = self._fast.script(source, keys, args)
            else:
                reply = lane.script(source, keys, args)
            fetcher.unsure = fetcher.held = None
            return reply

        reply = attempt() if lane is not None else self._retry.call(attempt)
        salvaged, fetcher.salvaged = fetcher.salvaged, []
        if reply is None:
            return salvaged
        new_order = [order[int(i) - 1] for i in reply[0].decode().split(",") if i]
        self._remember_order(wanted, new_order)
        nq = len(order)
        leased = [
            (order[(int(reply[i]) - 1) % nq], reply[i + 1], reply[i + 2].decode())
            for i in range(1, len(reply), 3)
        ]
        return salvaged + self._deliveries(leased)

    def _held(self, fetcher: _Fetcher, keys: list[str]) -> tuple[int, bytes] | None:
        """The message BRPOP popped for *fetcher* as (candidate index, envelope) for this fetch;
        pushed back to its list when this fetch does not read that list."""
        assert fetcher.held is not None
        key, raw = fetcher.held
        if key in keys:
            return keys.index(key) + 1, raw
        self._retry.call(self._fast.execute, "RPUSH", key, raw)
        fetcher.held = None
        return None

    @property
    def _record_ttl(self) -> int:
        return max(math.ceil(self.cfg.visibility_timeout), 1)

    def _fetcher(self) -> _Fetcher:
        fetcher: _Fetcher | None = getattr(self._fetchers, "state", None)
        if fetcher is None or fetcher.pid != os.getpid():
            # Per thread and process: a forked child must not share its parent's record.
            record = f"{self.cfg.global_keyprefix}{FETCH_RECORD_PREFIX}{uuid.uuid4().hex}"
            fetcher = self._fetchers.state = _Fetcher(record, os.getpid())
        return fetcher

    def _salvage(self, fetcher: _Fetcher) -> list[Delivery]:
        """The messages leased by *fetcher*'s unsure fetch, when it ran in Redis: they are still
        leased to us (their leases renewed now). Raises like any Redis call when unreachable."""
        if fetcher.unsure is None:
            return []
        token, order = fetcher.unsure
        record = self._fast.execute("GET", fetcher.record)
        fetcher.unsure = None
        entry = orjson.loads(record) if record else None
        if not entry or entry[0] != token:
            return []  # that fetch never ran
        ks, tags = entry[1::2], entry[2::2]
        values = self._fast.execute("HMGET", self._unacked, *tags)
        leased: list[tuple[str, bytes, str]] = []
        for k, tag, value in zip(ks, tags, values, strict=True):
            if value is None:
                continue  # settled or restored meanwhile
            envelope = _loads(value)[0]
            leased.append((order[(int(k) - 1) % len(order)], _dumps(envelope), tag))
        if leased:
            now = repr(time.time())
            pairs = [x for _, _, tag in leased for x in (now, tag)]
            self._fast.execute("ZADD", self._unacked_index, "XX", *pairs)
            logger.warning(
                "Connection to Redis at %s failed after a fetch ran: %d leased message(s) "
                "taken back from its record",
                self.cfg.conn.endpoint,
                len(leased),
            )
        return self._deliveries(leased)

    def _deliveries(self, leased: Sequence[tuple[str, bytes, str]]) -> list[Delivery]:
        """Deliveries of leased (queue, envelope, tag) triples; one that does not decode goes to
        the dead-letter list."""
        out: list[Delivery] = []
        for queue, raw, tag in leased:
            try:
                out.append(self._delivery(raw, queue, tag))
            except Exception as exc:
                # The script reads an envelope's tag without decoding it all: one that is not
                # a valid envelope after all goes to the dead-letter list here.
                # Kept as text, as the script keeps an envelope it cannot decode.
                logger.error("Message from %r moved to the dead-letter queue: %s", queue, exc)
                envelope = _dumps(raw.decode("utf-8", "replace"))
                self._dead_letter_raw(envelope, queue, tag, f"undecodable message envelope: {exc}")
        return out

    @staticmethod
    def _delivery(raw: bytes, queue: str, tag: str) -> Delivery:
        env = _loads(raw)
        message, info = message_from_envelope(env)
        redelivered = bool(info.get("redelivered") or message.headers.get("redelivered"))
        return Delivery(
            message,
            queue,
            tag,
            exchange=str(info.get("exchange") or ""),
            routing_key=str(info.get("routing_key") or queue),
            redelivered=redelivered,
            raw=raw,
        )

    # -- housekeeping: parked messages and expired leases ------------------------------------------
    def _until_housekeeping(self) -> float:
        return max(min(self._next_unpark, self._next_restore) - time.monotonic(), 0.0)

    def _housekeep(self) -> None:
        now = time.monotonic()
        if now < self._next_unpark and now < self._next_restore:
            return
        if not self._housekeeping.acquire(blocking=False):
            return
        try:
            if now >= self._next_unpark:
                self._next_unpark = now + UNPARK_INTERVAL
                self._retry.call(
                    self._script("unpark"),
                    keys=[self._parked, self._parked_messages],
                    args=[repr(time.time()), UNPARK_LIMIT, SEP],
                )
            if now >= self._next_restore:
                self._next_restore = now + self.cfg.restore_interval
                self.restore_visible()
        finally:
            self._housekeeping.release()

    def restore_visible(self) -> int:
        """Give messages whose lease expired (holder gone) back to their queues; return how many.

        Runs under kombu's ``unacked_mutex`` (skipped while anyone else holds it). Each entry is
        re-checked atomically, so a lease renewed meanwhile is left alone.
        """
        token = uuid.uuid4().hex
        expire_ms = int(self.cfg.unacked_mutex_expire * 1000)
        if not self._retry.call(
            self._client.set, self._unacked_mutex, token, nx=True, px=expire_ms
        ):
            return 0
        try:
            cutoff = time.time() - self.visibility_timeout
            tags: list[Any] = self._retry.call(
                self._client.zrangebyscore,
                self._unacked_index,
                "-inf",
                cutoff,
                start=0,
                num=self.cfg.unacked_restore_limit,
            )
            if not tags:
                return 0
            values: list[Any] = self._retry.call(self._client.hmget, self._unacked, tags)
            plans = [
                self._restore_plan(tag, value) for tag, value in zip(tags, values, strict=True)
            ]
            exchanges = {ex for _, ex, _, _ in plans if ex}
            tables = self._binding_tables(exchanges) if exchanges else {}
            restore = self._script("restore")

            def run() -> list[Any]:
                with self._client.pipeline(transaction=False) as pipe:
                    for tag, ex, rk, (payload, priority) in plans:
                        targets = [
                            self._list_key(q, priority)
                            for q in (self._route(ex, rk, tables.get(ex, [])) if payload else [])
                        ]
                        restore(
                            keys=[self._unacked, self._unacked_index, *targets],
                            args=[tag, cutoff, payload],
                            client=pipe,
                        )
                    return pipe.execute()

            return sum(int(r) for r in self._retry.call(run))
        finally:
            self._retry.call(
                self._script("release_mutex"), keys=[self._unacked_mutex], args=[token]
            )

    @staticmethod
    def _restore_plan(tag: bytes, value: bytes | None) -> tuple[bytes, str, str, tuple[bytes, Any]]:
        if value is None:
            return tag, "", "", (b"", 0)
        try:
            env, exchange, routing_key = _loads(value)
            priority = (env.get("properties") or {}).get("priority")
            return (
                tag,
                str(exchange or ""),
                str(routing_key or ""),
                (
                    _mark_redelivered(env),
                    priority,
                ),
            )
        except (ValueError, TypeError, AttributeError):
            return tag, "", "", (b"", 0)

    # -- settling leases ---------------------------------------------------------------------------
    def ack(self, deliveries: Sequence[Delivery]) -> None:
        tags = [d.tag for d in deliveries]
        if not tags:
            return

        commands = self._ack_commands(tags)
        self._retry.call(self._fast.pipeline, commands, transaction=True)

    def _ack_commands(self, tags: Sequence[str]) -> list[tuple[Any, ...]]:
        if not tags:
            return []
        return [("HDEL", self._unacked, *tags), ("ZREM", self._unacked_index, *tags)]

    def _target(self, delivery: Delivery) -> tuple[dict[str, Any], str]:
        env = _loads(delivery.raw) if delivery.raw is not None else None
        if not isinstance(env, dict):
            payload, _ = encode_envelope(delivery.message, delivery.exchange, delivery.routing_key)
            env = _loads(payload)
        priority = (env.get("properties") or {}).get("priority")
        return env, self._list_key(delivery.queue, priority)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        keys = [self._unacked, self._unacked_index]
        args: list[Any] = []
        # RPUSH puts the last one nearest the consumer end: push in reverse to keep their order.
        for d in reversed(deliveries):
            env, key = self._target(d)
            keys.append(key)
            args += [d.tag, _mark_redelivered(env)]
        self._retry.call(self._script("requeue"), keys=keys, args=args)

    def park(self, delivery: Delivery, due: float) -> None:
        env, key = self._target(delivery)
        raw = delivery.raw if isinstance(delivery.raw, bytes) else _dumps(env)
        self._retry.call(
            self._script("park"),
            keys=[self._unacked, self._unacked_index, self._parked, self._parked_messages],
            args=[delivery.tag, repr(float(due)), key, raw, SEP],
        )

    def renew(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        now = time.time()
        pairs = [x for d in deliveries for x in (now, d.tag)]
        # XX: only re-score leases still held; never resurrect an acked or restored one.
        self._retry.call(self._fast.execute, "ZADD", self._unacked_index, "XX", *pairs)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        env, _ = self._target(delivery)
        raw = delivery.raw if isinstance(delivery.raw, bytes) else _dumps(env)
        self._dead_letter_raw(raw, delivery.queue, delivery.tag, reason)

    def _dead_letter_raw(self, envelope: bytes, queue: str, tag: str, reason: str) -> None:
        """Move the message leased as *tag* to the dead-letter list; *envelope* is JSON."""
        head = _dumps(
            {"id": uuid.uuid4().hex, "queue": queue, "reason": reason, "time": time.time()}
        )
        entry = head[:-1] + b',"envelope":' + envelope + b"}"

        def run() -> None:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.hdel(self._unacked, tag)
                pipe.zrem(self._unacked_index, tag)
                pipe.rpush(self._dlq, entry)
                pipe.execute()

        self._retry.call(run)

    # -- queues and the dead-letter store ----------------------------------------------------------
    def _all_keys(self, queue: str) -> list[str]:
        return [self._list_key(queue, s) for s in self.cfg.priority_steps]

    def queue_length(self, queue: str) -> int:
        def run() -> list[Any]:
            with self._client.pipeline(transaction=False) as pipe:
                for key in self._all_keys(queue):
                    pipe.llen(key)
                return pipe.execute()

        return sum(int(n) for n in self._retry.call(run))

    def purge(self, queue: str) -> int:
        def run() -> list[Any]:
            with self._client.pipeline(transaction=True) as pipe:
                for key in self._all_keys(queue):
                    pipe.llen(key)
                    pipe.delete(key)
                return pipe.execute()

        return sum(int(n) for n in self._retry.call(run)[::2])

    def _dead_entries(self, limit: int = -1) -> list[tuple[bytes, dict[str, Any]]]:
        raws: list[Any] = self._retry.call(
            self._client.lrange, self._dlq, 0, limit - 1 if limit > 0 else -1
        )
        out = []
        for raw in raws:
            try:
                entry = _loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict):
                out.append((raw, entry))
        return out

    @staticmethod
    def _dead_message(entry: Mapping[str, Any]) -> Message:
        env = entry.get("envelope")
        if isinstance(env, dict):
            return message_from_envelope(env)[0]
        return Message(
            body=str(env or "").encode(), content_type="application/data", content_encoding="binary"
        )

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return [
            DeadLetter(
                id=str(entry.get("id")),
                queue=str(entry.get("queue") or ""),
                reason=str(entry.get("reason") or ""),
                message=self._dead_message(entry),
                time=float(entry.get("time") or 0.0),
            )
            for _, entry in self._dead_entries(limit)
        ]

    def _chosen(self, ids: Sequence[str] | None) -> list[tuple[bytes, dict[str, Any]]]:
        entries = self._dead_entries()
        if ids is None:
            return entries
        wanted = set(ids)
        return [(raw, e) for raw, e in entries if str(e.get("id")) in wanted]

    def requeue_dead(self, ids: Sequence[str] | None = None) -> int:
        chosen = [(raw, e) for raw, e in self._chosen(ids) if isinstance(e.get("envelope"), dict)]
        if not chosen:
            return 0
        script = self._script("requeue_dead")

        def run() -> list[Any]:
            with self._client.pipeline(transaction=False) as pipe:
                for raw, entry in chosen:
                    env = entry["envelope"]
                    priority = (env.get("properties") or {}).get("priority")
                    key = self._list_key(str(entry.get("queue") or ""), priority)
                    script(keys=[self._dlq, key], args=[raw, _dumps(env)], client=pipe)
                return pipe.execute()

        return sum(int(r) for r in self._retry.call(run))

    def purge_dead(self, ids: Sequence[str] | None = None) -> int:
        if ids is None:

            def purge_all() -> list[Any]:
                with self._client.pipeline(transaction=True) as pipe:
                    pipe.llen(self._dlq)
                    pipe.delete(self._dlq)
                    return pipe.execute()

            return int(self._retry.call(purge_all)[0])
        chosen = self._chosen(ids)
        if not chosen:
            return 0

        def run() -> list[Any]:
            with self._client.pipeline(transaction=False) as pipe:
                for raw, _ in chosen:
                    pipe.lrem(self._dlq, 1, raw)  # type: ignore[arg-type]
                return pipe.execute()

        return sum(int(r) for r in self._retry.call(run))

    # -- broadcast ---------------------------------------------------------------------------------
    def _channel(self, exchange: str, routing_key: str) -> str:
        base = self.cfg.global_keyprefix + self.cfg.fanout_prefix + exchange
        if routing_key and self.cfg.fanout_patterns:
            return f"{base}/{routing_key}"
        return base

    def broadcast(self, exchange: str, routing_key: str, message: Message) -> None:
        payload, _ = encode_envelope(message, exchange, routing_key)
        self._retry.call(self._client.publish, self._channel(exchange, routing_key), payload)

    def subscribe(self, exchange: str, patterns: Sequence[str] = ("#",)) -> Subscription:
        return _RedisSubscription(self, exchange, patterns)

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        self._retry.stop()
        for lane in (self._fast, self._nowait):
            if lane is not None:
                lane.close()
        clients = [self._client, self._pubsub_client]
        for client in clients:
            try:
                client.connection_pool.disconnect()
            except (redis.RedisError, OSError):
                pass
