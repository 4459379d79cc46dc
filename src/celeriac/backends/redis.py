"""``redis://``, ``rediss://``, ``redis+socket://``, ``sentinel://``: the Redis result store.

Compatible with Celery 5.7's Redis backend, so both read each other's results:

* ``set`` writes ``SET key value PX ttl`` and ``PUBLISH key value`` in one Lua call (atomic, one
  round trip); Celery clients wait on that PUBLISH (they SUBSCRIBE to a channel named like the key);
* ``watch`` SUBSCRIBEs to the keys' channels. A watch of a few keys (``get()`` of one result) uses
  a pub/sub connection lent to it and read by the waiting thread (``redis_direct``); bigger ones
  share ONE pub/sub connection per store, read by one background thread that wakes the watchers;
* chords use Celery's keys (``celery-taskset-meta-<gid>.j/.t/.s/.d/.c``) and a Lua script with the
  same semantics, so a Celery worker and a celeriac worker can complete the same chord.

Options read (the ``options`` mapping; setting names as in Celery, short names also accepted):
``redis_backend_use_ssl`` (``ssl``), ``redis_max_connections`` (``max_connections``),
``redis_socket_timeout``, ``redis_socket_connect_timeout``, ``redis_retry_on_timeout``,
``redis_socket_keepalive``, ``redis_backend_health_check_interval``, ``redis_client_name`` and
``result_backend_transport_options`` (``global_keyprefix``, ``result_chord_ordered``,
``master_name``, ``sentinel_kwargs``).
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import uuid
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import redis
from redis.client import PubSub
from redis.commands.core import Script

from celeriac.backends.base import ChordPartArgs, ResultStore, Watch
from celeriac.backends.redis_direct import DirectConnections, DirectWatch
from celeriac.exceptions import BackendError
from celeriac.utils.redis_conn import Retrier, is_retryable, parse_redis_url
from celeriac.utils.redis_fast import FastLane

logger = logging.getLogger("celeriac.backends")

#: Seconds a chord's body-sending claim lasts (Celery: 2 x result_chord_join_timeout, >= 5).
CHORD_CLAIM_SECONDS = 10
#: How long "done" stays in ``.c`` after a chord finished (Celery: max(2 x claim, 300)).
CHORD_DONE_SECONDS = 300
#: Longest wait for the server to confirm a SUBSCRIBE.
SUBSCRIBE_TIMEOUT = 10.0
_LUA_DIR = Path(__file__).with_name("redis_lua")

_OPTION_NAMES = {
    "ssl": ("redis_backend_use_ssl", "ssl"),
    "max_connections": ("redis_max_connections", "max_connections"),
    "socket_timeout": ("redis_socket_timeout", "socket_timeout"),
    "socket_connect_timeout": ("redis_socket_connect_timeout", "socket_connect_timeout"),
    "retry_on_timeout": ("redis_retry_on_timeout", "retry_on_timeout"),
    "socket_keepalive": ("redis_socket_keepalive", "socket_keepalive"),
    "health_check_interval": ("redis_backend_health_check_interval", "health_check_interval"),
    "client_name": ("redis_client_name", "client_name"),
}


@cache
def _script_source(name: str) -> str:
    return (_LUA_DIR / f"{name}.lua").read_text()


def _connection_options(options: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for short, names in _OPTION_NAMES.items():
        for name in names:
            if options.get(name) is not None:
                out[short] = options[name]
                break
    transport = options.get("result_backend_transport_options") or {}
    for name in ("master_name", "sentinel_kwargs"):
        value = transport.get(name, options.get(name))
        if value is not None:
            out[name] = value
    return out


def key_prefix(options: Mapping[str, Any]) -> str:
    """Celery's ``global_keyprefix`` rule: a ``_`` is added unless it ends in ``:_-.``."""
    transport = options.get("result_backend_transport_options") or {}
    prefix = str(transport.get("global_keyprefix") or options.get("global_keyprefix") or "")
    if prefix and prefix[-1] not in ":_-.":
        prefix += "_"
    return prefix


#: Watches of more keys than this get a pub/sub connection of their own.
BIG_WATCH = 1000
#: Watches of this many keys or fewer are read by the waiting thread (``redis_direct``).
DIRECT_WATCH = 16


class _RedisWatch(Watch):
    def __init__(self, hub: _PubSubHub, keys: Mapping[bytes, str]) -> None:
        self._hub = hub
        #: A hub of this watch alone (a big one): closing the watch closes its connection.
        self.owns_hub = False
        self.channels = frozenset(keys)
        self.keys = keys  # channel -> the key as the caller named it
        self.fired = False
        #: Values published with the notifications (a result's PUBLISH carries the value).
        self.values: dict[str, bytes] = {}
        #: Set when the connection was lost: writes meanwhile came without notification.
        self.missed = False
        self._closed = False

    def wait(self, timeout: float | None) -> bool:
        cond = self._hub.cond
        with cond:
            ok = cond.wait_for(lambda: self.fired or self._hub.closed, timeout)
            fired, self.fired = self.fired, False
            return bool(ok and fired)

    def take_values(self) -> dict[str, bytes] | None:
        with self._hub.cond:
            values, self.values = self.values, {}
            missed, self.missed = self.missed, False
        return None if missed else values

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.owns_hub:
                self._hub.close()
            else:
                self._hub.unregister(self)


class _PubSubHub:
    """One pub/sub connection shared by every watch of a store, read by one daemon thread.

    Callers queue (UN)SUBSCRIBE requests and wake the thread through a socket pair; only the
    thread talks to the connection. A watch returns once a PING sent after its SUBSCRIBE came
    back, so the server has the subscription before the caller reads the key.
    """

    def __init__(self, store: RedisResultStore) -> None:
        self._store = store
        self.cond = threading.Condition()
        self.closed = False
        self._watches: dict[bytes, set[_RedisWatch]] = {}
        self._requests: list[tuple[str, Any]] = []
        self._barrier_asked = 0
        self._barrier_seen = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._pubsub: PubSub = store._pubsub_client.pubsub()  # type: ignore[no-untyped-call]
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- caller side -------------------------------------------------------------------------------
    def register(self, keys: Mapping[bytes, str]) -> _RedisWatch:
        watch = _RedisWatch(self, keys)
        with self.cond:
            if self.closed:
                raise BackendError("result store is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="celeriac-redis-results", daemon=True
                )
                self._thread.start()
            for channel in watch.channels:
                self._watches.setdefault(channel, set()).add(watch)
                self._requests.append(("sub", channel))
            self._barrier_asked += 1
            barrier = self._barrier_asked
            self._requests.append(("ping", str(barrier)))
        self._wake()
        with self.cond:
            ok = self.cond.wait_for(
                lambda: self._barrier_seen >= barrier or self.closed, SUBSCRIBE_TIMEOUT
            )
        if not ok:
            watch.close()
            raise BackendError(
                f"Redis at {self._store.params.endpoint} did not confirm SUBSCRIBE within "
                f"{SUBSCRIBE_TIMEOUT:.0f}s"
            )
        return watch

    def unregister(self, watch: _RedisWatch) -> None:
        with self.cond:
            for channel in watch.channels:
                group = self._watches.get(channel)
                if group is None:
                    continue
                group.discard(watch)
                if not group:
                    del self._watches[channel]
                    self._requests.append(("unsub", channel))
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for closable in (self._pubsub, self._wake_r, self._wake_w):
            try:
                closable.close()
            except (redis.RedisError, OSError):
                pass

    # -- listener thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        delay = 0.05
        while not self._stop.is_set():
            try:
                self._send_requests()
                self._read(timeout=1.0)
                delay = 0.05
            except (redis.RedisError, OSError) as exc:
                if self._stop.is_set():
                    return
                if not is_retryable(exc, self._store.params):
                    delay = 1.0
                self._stop.wait(delay)
                delay = min(delay * 2, 1.0)
                self._reconnect()

    def _send_requests(self) -> None:
        with self.cond:
            if not self._requests:
                return
            requests, self._requests = self._requests, []
            # Channels watched again since their UNSUBSCRIBE was asked (not a copy of every
            # watched channel: this runs on each turn of the thread, with thousands watched).
            live = {v for kind, v in requests if kind == "unsub" and v in self._watches}
        # Runs of (un)subscriptions go as one command each: a wait for 10,000 results
        # subscribes to, and later leaves, 10,000 channels.
        run_kind = ""
        run: list[bytes] = []
        for kind, value in [*requests, ("end", None)]:
            if kind == "unsub" and value in live:
                continue  # watched again meanwhile
            if kind != run_kind and run:
                if run_kind == "sub":
                    self._pubsub.subscribe(*run)
                else:
                    self._pubsub.unsubscribe(*run)  # type: ignore[no-untyped-call]
                run = []
            run_kind = kind
            if kind == "ping":
                self._pubsub.ping(value)
            elif kind in ("sub", "unsub"):
                run.append(value)

    def _read(self, timeout: float) -> None:
        conn = self._pubsub.connection
        sock = getattr(conn, "_sock", None) if conn is not None else None
        fds: list[Any] = [self._wake_r] + ([sock] if sock is not None else [])
        readable, _, _ = select.select(fds, [], [], timeout)
        if self._wake_r in readable:
            try:
                while self._wake_r.recv(4096):
                    pass
            except (BlockingIOError, OSError):
                pass
        if conn is None:
            return
        # Everything buffered is read here; the notifications go to the watches together, one
        # wake-up of the waiters per batch. A notification is taken straight from the reply:
        # redis-py's per-message path (health check, retry wrapper, message dict, metrics)
        # would cost several times the parsing itself, 10,000 times for a big group.
        pubsub = self._pubsub
        pubsub.check_health()  # a PING every health_check_interval, as get_message sends
        arrived: list[tuple[Any, Any]] = []
        try:
            while conn.can_read(timeout=0):
                try:
                    reply = conn.read_response(
                        disconnect_on_error=False, push_request=True, timeout=0
                    )
                except redis.TimeoutError:
                    break  # part of a reply: the parser keeps it for the next turn
                if type(reply) is list and len(reply) == 3 and reply[0] == b"message":
                    arrived.append((reply[1], reply[2]))
                elif pubsub.is_health_check_response(reply):
                    pubsub.health_check_response_counter -= 1  # as redis-py counts its PINGs
                else:
                    msg = pubsub.handle_message(reply)  # (un)subscribe, pong: redis-py's books
                    if msg is not None:
                        self._handle(msg)
        finally:
            if arrived:
                self._notify(arrived)

    def _notify(self, arrived: Sequence[tuple[Any, Any]]) -> None:
        with self.cond:
            for channel, data in arrived:
                for watch in self._watches.get(channel, ()):
                    watch.fired = True
                    if isinstance(data, bytes):
                        watch.values[watch.keys[channel]] = data
            self.cond.notify_all()

    def _handle(self, msg: Mapping[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "message":
            self._notify([(msg["channel"], msg.get("data"))])
        elif kind == "pong":
            data = msg.get("data") or b"0"
            try:
                seen = int(data)
            except (TypeError, ValueError):
                return
            with self.cond:
                self._barrier_seen = max(self._barrier_seen, seen)
                self.cond.notify_all()

    def _reconnect(self) -> None:
        conn = self._pubsub.connection
        if conn is None:
            return
        try:
            conn.disconnect()
            conn.connect()  # redis-py SUBSCRIBEs again to every channel it knows
        except (redis.RedisError, OSError):
            return
        with self.cond:
            # Writes made while disconnected were not seen: wake every watcher to read again,
            # and confirm pending subscriptions with a fresh barrier.
            for group in self._watches.values():
                for watch in group:
                    watch.fired = True
                    watch.missed = True
            self._requests.append(("ping", str(self._barrier_asked)))
            self.cond.notify_all()


class RedisResultStore(ResultStore):
    """Celery-compatible Redis result store. See the module docstring."""

    schemes: ClassVar[tuple[str, ...]] = ("redis", "rediss", "redis+socket", "sentinel")
    pushes_notifications: ClassVar[bool] = True

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, options)
        self.params = parse_redis_url(url, _connection_options(self.options))
        self.prefix = key_prefix(self.options)
        transport = self.options.get("result_backend_transport_options") or {}
        # app.store_options() hands result_backend_transport_options over flattened.
        ordered = transport.get("result_chord_ordered", self.options.get("result_chord_ordered"))
        self.chord_ordered = True if ordered is None else bool(ordered)
        self._client = self.params.client(self.params.max_connections or 32, blocking=True)
        self._pubsub_client = self.params.client(blocking=False)
        self._retry = Retrier(self.params, BackendError)
        #: Result reads and writes: the calls made for every task.
        self._fast = FastLane(self.params.pool(blocking=False), self.params.max_connections or 32)
        self._scripts: dict[str, Script] = {}
        self._hub: _PubSubHub | None = None
        self._hub_lock = threading.Lock()
        self._direct = DirectConnections(self._pubsub_client.connection_pool.make_connection)  # type: ignore[arg-type]
        self._claims: dict[str, str] = {}

    def _k(self, key: str) -> str:
        return self.prefix + key

    def _script(self, name: str) -> Script:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self._client.register_script(_script_source(name))
        return script

    # -- values ------------------------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        value: Any = self._retry.call(self._fast.execute, "GET", self._k(key))
        return bytes(value) if value is not None else None

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        values: list[Any] = self._retry.call(
            self._fast.execute, "MGET", *[self._k(k) for k in keys]
        )
        return values

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        # One EVALSHA instead of MULTI/SETEX/PUBLISH/EXEC: a result write is on every task's
        # path, and the transaction costs several times more client-side work.
        ttl_ms = max(int(ttl * 1000), 1) if ttl and ttl > 0 else 0
        source = _script_source("set_publish")
        self._retry.call(self._fast.script, source, [self._k(key)], [value, ttl_ms])

    def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        if items:
            commands = self.write_commands([(key, value, ttl) for key, value in items])
            self._retry.call(self._fast.pipeline, commands)

    def write_commands(
        self, writes: Sequence[tuple[str, bytes, float | None]]
    ) -> list[tuple[Any, ...]]:
        """The commands that store and announce *writes* (key, value, ttl), for one pipeline.

        Each value is written before it is published, on one connection, in one write: no
        transaction is needed for a waiter to find the value once notified."""
        commands: list[tuple[Any, ...]] = []
        for key, value, ttl in writes:
            full = self._k(key)
            if ttl and ttl > 0:
                if float(ttl).is_integer():
                    commands.append(("SETEX", full, int(ttl), value))  # as Celery writes it
                else:
                    commands.append(("SET", full, value, "PX", max(int(ttl * 1000), 1)))
            else:
                commands.append(("SET", full, value))
            commands.append(("PUBLISH", full, value))
        return commands

    def delete(self, keys: Sequence[str]) -> None:
        if keys:
            self._retry.call(self._client.delete, *[self._k(k) for k in keys])

    def watch(self, keys: Sequence[str]) -> Watch:
        channels = {self._k(k).encode(): k for k in keys}
        if len(channels) > BIG_WATCH:
            # A connection of its own, closed with the watch: leaving thousands of channels one
            # UNSUBSCRIBE reply at a time would cost the shared connection's thread dearly.
            own = _PubSubHub(self)
            try:
                watch = own.register(channels)
            except BaseException:
                own.close()
                raise
            watch.owns_hub = True
            return watch
        conn = self._direct.take() if len(channels) <= DIRECT_WATCH else None
        if conn is not None:
            direct = DirectWatch(
                self._direct,
                conn,
                channels,
                self._retry.call,
                SUBSCRIBE_TIMEOUT,
                endpoint=self.params.endpoint,
            )
            return direct.start()
        with self._hub_lock:
            if self._hub is None:
                self._hub = _PubSubHub(self)
            hub = self._hub
        return hub.register(channels)

    # -- chords ------------------------------------------------------------------------------------
    def _chord_keys(self, group_id: str) -> dict[str, str]:
        base = self._k(f"celery-taskset-meta-{group_id}")
        return {s: base + s for s in ("", ".j", ".t", ".s", ".d", ".c")}

    def chord_init(self, group_id: str, size: int, ttl: float | None) -> None:
        keys = self._chord_keys(group_id)

        def run() -> None:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(keys[".c"])  # a re-applied frozen chord reuses its group id
                pipe.set(keys[".s"], size, ex=int(ttl) if ttl and ttl > 0 else None)
                pipe.execute()

        self._retry.call(run)

    def chord_grow(self, group_id: str, delta: int, ttl: float | None) -> None:
        key = self._chord_keys(group_id)[".t"]

        def run() -> None:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.incrby(key, delta)
                if ttl and ttl > 0:
                    pipe.expire(key, int(ttl))
                pipe.execute()

        self._retry.call(run)

    def chord_part(
        self, group_id: str, task_id: str, index: int, value: bytes, ttl: float | None
    ) -> list[bytes] | None:
        keys, args = self._chord_part_call(group_id, task_id, index, value, ttl)
        reply = self._retry.call(self._fast.script, _script_source("chord_part"), keys, args)
        return self._chord_claimed(group_id, args[-1], reply)

    def chord_parts(self, parts: Sequence[ChordPartArgs]) -> list[list[bytes] | None]:
        # One round trip for the lot (each part is counted once however often it is sent).
        calls = [self._chord_part_call(*part) for part in parts]
        replies = self._retry.call(self._fast.scripts, _script_source("chord_part"), calls)
        out: list[list[bytes] | None] = []
        for part, (_, args), reply in zip(parts, calls, replies, strict=True):
            if isinstance(reply, Exception):
                logger.error("counting chord %s part %s failed: %r", part[0], part[1], reply)
                out.append(None)
            else:
                out.append(self._chord_claimed(part[0], args[-1], reply))
        return out

    def _chord_part_call(
        self, group_id: str, task_id: str, index: int, value: bytes, ttl: float | None
    ) -> tuple[list[str], list[Any]]:
        keys = self._chord_keys(group_id)
        expires = int(ttl) if ttl and ttl > 0 else 0
        return (
            [keys[".j"], keys[".t"], keys[".s"], keys[".d"], keys[""], keys[".c"]],
            [
                task_id,
                value,
                "1" if self.chord_ordered else "0",
                index,
                expires,
                expires,
                CHORD_CLAIM_SECONDS,
                uuid.uuid4().hex,  # the claim token: last, for _chord_claimed
            ],
        )

    def _chord_claimed(self, group_id: str, token: str, reply: Any) -> list[bytes] | None:
        if int(reply[0]) < 0 or not int(reply[1]):
            return None
        self._claims[group_id] = token
        return [bytes(m) for m in reply[2:]]

    def chord_release(self, group_id: str) -> None:
        keys = self._chord_keys(group_id)
        token = self._claims.pop(group_id, "")
        self._retry.call(
            self._script("chord_cleanup"),
            keys=[keys[".c"], keys[".j"], keys[".t"], keys[".s"], keys[".d"]],
            args=[token, CHORD_DONE_SECONDS],
        )

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        self._retry.stop()
        with self._hub_lock:
            hub, self._hub = self._hub, None
        if hub is not None:
            hub.close()
        self._direct.close()
        self._fast.close()
        for client in (self._client, self._pubsub_client):
            try:
                client.connection_pool.disconnect()
            except (redis.RedisError, OSError):
                pass
