"""``sqlite:///path.db``: the embedded broker, celeriac's default. No server, many processes.

Every queue lives in one SQLite file in WAL mode (tables in ``sqlite_schema.sql``). A message is a
row; fetching claims rows for this transport instance inside one ``BEGIN IMMEDIATE`` transaction
(``UPDATE ... RETURNING``), so each message goes to exactly one consumer. A claim is a lease: the
row records its owner and ``lease_until``; ``renew`` moves that forward, and any consumer that finds
an expired lease puts the row back, marked redelivered. ``park`` hides a row until a due time.

Idle consumers block on a UNIX datagram socket (``celeriac.utils.localwake``) that publishers poke
after each commit, with a fallback timeout (``polling_interval``, 1 s) that bounds the latency of a
lost wake-up. Durability, limits and the table layout: ``docs/sqlite.md``.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any, ClassVar

import orjson

from celeriac.exceptions import ImproperlyConfigured, TransportError
from celeriac.protocol.entities import Queue
from celeriac.protocol.message import Delivery, Message, Outgoing
from celeriac.transports.base import DeadLetter, Subscription, Transport, topic_matches
from celeriac.utils.localwake import Listener, WakeDir, wake_dir_for
from celeriac.utils.sqlitedb import (
    ConnectionPool,
    db_path_from_url,
    synchronous_mode,
)
from celeriac.utils.sqlitedb import (
    merged_options as _merged,
)

#: Wake-up channels in the file's wake directory.
QUEUE_CHANNEL = "q"
BROADCAST_CHANNEL = "b"
#: Seconds a broadcast row is kept for subscribers that have not read it yet.
BROADCAST_RETENTION = 60.0
#: Longest idle wait before re-checking the file when no wake-up came.
DEFAULT_POLLING_INTERVAL = 1.0
#: Rows per statement when a call names many ids (SQLite limits bound parameters).
CHUNK = 500

_MSG_COLUMNS = "headers, properties, content_type, content_encoding, body"
_INSERT = (
    "INSERT INTO messages (queue, priority, exchange, routing_key, "
    f"{_MSG_COLUMNS}, published_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_PROMOTE = "UPDATE messages SET state = 0, visible_at = 0 WHERE state = 2 AND visible_at <= ?"
# Owner and delivery count stay, so the old holder can still ack it if nobody took it meanwhile.
_RECLAIM = (
    "UPDATE messages SET state = 0, lease_until = NULL, redelivered = 1 "
    "WHERE state = 1 AND lease_until <= ?"
)
_WAITING = (
    "SELECT priority, seq, id FROM messages WHERE queue = ? AND state = 0 "
    "ORDER BY priority DESC, seq, id LIMIT ?"
)
_NEXT_EVENT = (
    "SELECT (SELECT MIN(visible_at) FROM messages WHERE state = 2), "
    "(SELECT MIN(lease_until) FROM messages WHERE state = 1)"
)
# A lease is (id, owner, deliveries): a row re-claimed by someone else no longer matches.
_HELD = "id = ? AND owner = ? AND deliveries = ? AND state IN (0, 1)"
_ACK = f"DELETE FROM messages WHERE {_HELD}"
_RENEW = f"UPDATE messages SET state = 1, lease_until = ? WHERE {_HELD}"
_PARK = (
    f"UPDATE messages SET state = 2, visible_at = ?, owner = NULL, lease_until = NULL WHERE {_HELD}"
)
_REQUEUE = (
    "UPDATE messages SET state = 0, owner = NULL, lease_until = NULL, redelivered = 1, "
    "seq = MIN(0, COALESCE((SELECT MIN(m.seq) FROM messages AS m WHERE m.queue = messages.queue"
    " AND m.priority = messages.priority AND m.state = 0), 0)) - 1 "
    f"WHERE {_HELD}"
)
_TO_DEAD = (
    "INSERT INTO dead_letters (id, store, queue, reason, time, exchange, routing_key, "
    f"{_MSG_COLUMNS}) SELECT ?, ?, queue, ?, ?, exchange, routing_key, {_MSG_COLUMNS} "
    f"FROM messages WHERE {_HELD}"
)
_BROADCAST = (
    "INSERT INTO broadcasts (exchange, routing_key, "
    f"{_MSG_COLUMNS}, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)

_Encoded = tuple[str, str, str, str, bytes]


@cache
def schema() -> str:
    """The broker's DDL, read once from ``sqlite_schema.sql``."""
    return resources.files(__package__).joinpath("sqlite_schema.sql").read_text("utf-8")


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # integers beyond 64 bits and other values only the stdlib encodes
        return json.dumps(value, separators=(",", ":"))


def encode(message: Message) -> _Encoded:
    """A message as the values of the row's message columns (``_MSG_COLUMNS``)."""
    return (
        _dumps(message.headers),
        _dumps(message.properties),
        message.content_type,
        message.content_encoding,
        bytes(message.body),
    )


def decode(headers: str, properties: str, ctype: str, cenc: str, body: bytes) -> Message:
    """The message stored in a row's message columns."""
    return Message(bytes(body), orjson.loads(headers), orjson.loads(properties), ctype, cenc)


def _priority(message: Message) -> int:
    return max(0, min(message.priority, 255))


def _lease_of(delivery: Delivery) -> tuple[int, int]:
    """``(row id, delivery count)`` from a delivery this transport handed out."""
    if isinstance(delivery.raw, tuple) and len(delivery.raw) == 2:
        return int(delivery.raw[0]), int(delivery.raw[1])
    row, _, count = delivery.tag.partition(".")
    try:
        return int(row), int(count)
    except ValueError:
        raise ValueError(
            f"delivery tag {delivery.tag!r} is not from the sqlite transport; expected '<id>.<n>'"
        ) from None


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SQLiteSubscription(Subscription):
    """Reads broadcast rows newer than the newest one present when it subscribed."""

    def __init__(self, transport: SQLiteTransport, exchange: str, patterns: Sequence[str]) -> None:
        self._t = transport
        self.exchange = exchange
        self.patterns = tuple(patterns)
        # Listen first, then take the cursor: a broadcast after this point wakes us or is read.
        self._listener: Listener | None = transport._wake.listen(BROADCAST_CHANNEL)
        with transport._db.read() as conn:
            self._cursor = int(
                conn.execute("SELECT COALESCE(MAX(id), 0) FROM broadcasts").fetchone()[0]
            )

    def get(self, timeout: float) -> list[tuple[str, Message]]:
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            listener = self._listener
            if listener is None:
                return []
            listener.drain()
            items = self._read()
            remaining = deadline - time.monotonic()
            if items or remaining <= 0:
                return items
            listener.wait(min(remaining, self._t.polling_interval))

    def _read(self) -> list[tuple[str, Message]]:
        with self._t._db.read() as conn:
            rows = conn.execute(
                f"SELECT id, routing_key, {_MSG_COLUMNS} FROM broadcasts "
                "WHERE exchange = ? AND id > ? ORDER BY id LIMIT 1000",
                (self.exchange, self._cursor),
            ).fetchall()
        out: list[tuple[str, Message]] = []
        for row_id, routing_key, *columns in rows:
            self._cursor = max(self._cursor, row_id)
            if any(topic_matches(p, routing_key) for p in self.patterns):
                out.append((routing_key, decode(*columns)))
        return out

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()


class SQLiteTransport(Transport):
    """The embedded broker. See the module docstring and ``docs/sqlite.md``.

    Options besides the common ones: ``synchronous`` (``normal`` by default, ``full`` to survive
    power loss as well as crashes), ``busy_timeout`` (seconds a write waits for the file lock,
    default 30) and ``polling_interval`` (longest idle wait without a wake-up, default 1 s).
    """

    schemes: ClassVar[tuple[str, ...]] = ("sqlite",)
    shared_across_processes: ClassVar[bool] = True

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        # Options in the URL's query string count unless the settings give them too.
        super().__init__(url, _merged(url, options))
        try:
            self.path = db_path_from_url(url)
            sync = synchronous_mode(self.options.get("synchronous"), "normal")
        except ValueError as exc:
            raise ImproperlyConfigured(str(exc)) from None
        self.polling_interval = float(
            self.options.get("polling_interval") or DEFAULT_POLLING_INTERVAL
        )
        self._db = ConnectionPool(
            self.path,
            schema(),
            synchronous=sync,
            busy_timeout=float(self.options.get("busy_timeout") or 30.0),
            on_error=TransportError,
        )
        self._wake = WakeDir(wake_dir_for(self.path))
        #: This instance's identity in lease rows.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._local = threading.local()
        self._listeners: list[Listener] = []
        self._subscriptions: weakref.WeakSet[SQLiteSubscription] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._broadcast_swept = 0.0

    # -- declaring and publishing ------------------------------------------------------------------
    def declare(self, queue: Queue) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO queues (name, declared_at) VALUES (?, ?)",
                (queue.name, time.time()),
            )
            if queue.exchange.name:
                conn.execute(
                    "INSERT OR IGNORE INTO bindings (exchange, queue, routing_key, kind) "
                    "VALUES (?, ?, ?, ?)",
                    (queue.exchange.name, queue.name, queue.routing_key, queue.exchange.type),
                )

    def publish(self, items: Sequence[Outgoing]) -> None:
        if not items:
            return
        encoded = [(item, encode(item.message), _priority(item.message)) for item in items]
        now = time.time()
        rows: list[tuple[Any, ...]] = []
        with self._db.write() as conn:
            routes: dict[tuple[str, str], list[str]] = {}
            for item, columns, priority in encoded:
                key = (item.exchange, item.routing_key)
                queues = routes.get(key)
                if queues is None:
                    queues = routes[key] = self._route(conn, *key)
                for queue in queues:
                    rows.append((queue, priority, item.exchange, item.routing_key, *columns, now))
            conn.executemany(_INSERT, rows)
        if rows:
            self._wake.notify(QUEUE_CHANNEL)

    def bound_queues(self, exchange: str) -> list[str] | None:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT DISTINCT queue FROM bindings WHERE exchange = ?", (exchange,)
            ).fetchall()
        return [row[0] for row in rows]

    def unbind(self, queue: Queue) -> None:
        with self._db.write() as conn:
            conn.execute(
                "DELETE FROM bindings WHERE exchange = ? AND queue = ?",
                (queue.exchange.name, queue.name),
            )

    @staticmethod
    def _route(conn: sqlite3.Connection, exchange: str, routing_key: str) -> list[str]:
        if not exchange:
            return [routing_key]
        bound = conn.execute(
            "SELECT queue, routing_key, kind FROM bindings WHERE exchange = ?", (exchange,)
        ).fetchall()
        if not bound:  # an exchange nobody declared: treat the routing key as the queue name
            return [routing_key]
        matched = [
            queue
            for queue, key, kind in bound
            if kind == "fanout"
            or (kind == "topic" and topic_matches(key, routing_key))
            or (kind not in ("fanout", "topic") and key == routing_key)
        ]
        return list(dict.fromkeys(matched))

    # -- consuming ---------------------------------------------------------------------------------
    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        queues = list(dict.fromkeys(queues))
        if limit <= 0 or not queues:
            return []
        deadline = time.monotonic() + max(timeout, 0.0)
        listener = self._listener()
        while True:
            listener.drain()  # before checking, so a wake-up sent after the check is kept
            found = self._claim(queues, limit)
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            listener.wait(min(remaining, self._next_event_in()))

    def _listener(self) -> Listener:
        listener: Listener | None = getattr(self._local, "listener", None)
        if listener is None or listener.pid != os.getpid():
            listener = self._wake.listen(QUEUE_CHANNEL)
            self._local.listener = listener
            with self._lock:
                self._listeners.append(listener)
        return listener

    def _next_event_in(self) -> float:
        """Seconds until a parked message is due or a lease ends, at most the poll interval."""
        with self._db.read() as conn:
            due, expiry = conn.execute(_NEXT_EVENT).fetchone()
        now = time.time()
        wait = self.polling_interval
        for moment in (due, expiry):
            if moment is not None:
                wait = min(wait, float(moment) - now)
        return max(wait, 0.005)

    def _claim(self, queues: list[str], limit: int) -> list[Delivery]:
        now = time.time()
        marks = ", ".join("?" * len(queues))
        with self._db.read() as conn:
            due, expired, waiting = conn.execute(
                "SELECT EXISTS(SELECT 1 FROM messages WHERE state = 2 AND visible_at <= ?), "
                "EXISTS(SELECT 1 FROM messages WHERE state = 1 AND lease_until <= ?), "
                f"EXISTS(SELECT 1 FROM messages WHERE state = 0 AND queue IN ({marks}))",
                (now, now, *queues),
            ).fetchone()
        if not (due or expired or waiting):
            return []  # nothing to do: stay off the write lock
        released = False
        rows: list[Any] = []
        with self._db.write() as conn:
            if due:
                released = conn.execute(_PROMOTE, (now,)).rowcount > 0
            if expired:
                released = conn.execute(_RECLAIM, (now,)).rowcount > 0 or released
            candidates: list[tuple[int, int, int, int]] = []
            for rank, queue in enumerate(queues):
                for priority, seq, row_id in conn.execute(_WAITING, (queue, limit)):
                    candidates.append((-priority, rank, seq, row_id))
            candidates.sort()
            chosen = [c[3] for c in candidates[:limit]]
            if chosen:
                rows = conn.execute(
                    "UPDATE messages SET state = 1, owner = ?, lease_until = ?, "
                    "deliveries = deliveries + 1 "
                    f"WHERE state = 0 AND id IN ({', '.join('?' * len(chosen))}) "
                    "RETURNING id, queue, deliveries, redelivered, exchange, routing_key, "
                    f"{_MSG_COLUMNS}",
                    (self.owner, now + self.visibility_timeout, *chosen),
                ).fetchall()
        if released:
            self._wake.notify(QUEUE_CHANNEL)  # others may wait on the queues we just refilled
        order = {row_id: i for i, row_id in enumerate(chosen)}
        rows.sort(key=lambda r: order[r[0]])
        return [self._delivery(row) for row in rows]

    @staticmethod
    def _delivery(row: Any) -> Delivery:
        row_id, queue, count, redelivered, exchange, routing_key, *columns = row
        return Delivery(
            decode(*columns),
            queue,
            f"{row_id}.{count}",
            exchange=exchange,
            routing_key=routing_key,
            redelivered=bool(redelivered),
            raw=(row_id, count),
        )

    def _held(self, deliveries: Sequence[Delivery]) -> list[tuple[int, str, int]]:
        return [(row_id, self.owner, n) for row_id, n in map(_lease_of, deliveries)]

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            with self._db.write() as conn:
                conn.executemany(_ACK, self._held(deliveries))

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        # Last first: each goes before the head, so the batch keeps its order at the front.
        with self._db.write() as conn:
            conn.executemany(_REQUEUE, self._held(deliveries)[::-1])
        self._wake.notify(QUEUE_CHANNEL)

    def park(self, delivery: Delivery, due: float) -> None:
        with self._db.write() as conn:
            conn.execute(_PARK, (due, *self._held([delivery])[0]))
        self._wake.notify(QUEUE_CHANNEL)  # waiters recompute when to look again

    def renew(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            until = time.time() + self.visibility_timeout
            with self._db.write() as conn:
                conn.executemany(_RENEW, [(until, *h) for h in self._held(deliveries)])

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        held = self._held([delivery])[0]
        with self._db.write() as conn:
            # Copies the stored row, so the dead letter holds exactly the bytes that were sent.
            conn.execute(
                _TO_DEAD, (uuid.uuid4().hex, self.dead_letter_queue, reason, time.time(), *held)
            )
            conn.execute(_ACK, held)

    # -- queues and the dead-letter store ---------------------------------------------------------
    def queue_length(self, queue: str) -> int:
        with self._db.read() as conn:
            sql = "SELECT COUNT(*) FROM messages WHERE queue = ? AND state = 0"
            return int(conn.execute(sql, (queue,)).fetchone()[0])

    def purge(self, queue: str) -> int:
        with self._db.write() as conn:
            return conn.execute(
                "DELETE FROM messages WHERE queue = ? AND state = 0", (queue,)
            ).rowcount

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT id, queue, reason, time, {_MSG_COLUMNS} FROM dead_letters "
                "WHERE store = ? ORDER BY seq LIMIT ?",
                (self.dead_letter_queue, limit),
            ).fetchall()
        return [DeadLetter(i, q, r, decode(*columns), t) for i, q, r, t, *columns in rows]

    def _dead_rows(self, conn: sqlite3.Connection, ids: Sequence[str] | None) -> list[Any]:
        select = f"SELECT id, queue, exchange, routing_key, {_MSG_COLUMNS} FROM dead_letters"
        if ids is None:
            return conn.execute(f"{select} WHERE store = ?", (self.dead_letter_queue,)).fetchall()
        rows: list[Any] = []
        for part in _chunks(list(ids)):
            rows += conn.execute(
                f"{select} WHERE store = ? AND id IN ({', '.join('?' * len(part))})",
                (self.dead_letter_queue, *part),
            ).fetchall()
        return rows

    def requeue_dead(self, ids: Sequence[str] | None = None) -> int:
        now = time.time()
        with self._db.write() as conn:
            rows = self._dead_rows(conn, ids)
            conn.executemany(
                _INSERT,
                [
                    (queue, _priority(decode(*columns)), ex, rk, *columns, now)
                    for _, queue, ex, rk, *columns in rows
                ],
            )
            conn.executemany("DELETE FROM dead_letters WHERE id = ?", [(r[0],) for r in rows])
        if rows:
            self._wake.notify(QUEUE_CHANNEL)
        return len(rows)

    def purge_dead(self, ids: Sequence[str] | None = None) -> int:
        with self._db.write() as conn:
            if ids is None:
                sql = "DELETE FROM dead_letters WHERE store = ?"
                return conn.execute(sql, (self.dead_letter_queue,)).rowcount
            count = 0
            for part in _chunks(list(ids)):
                marks = ", ".join("?" * len(part))
                count += conn.execute(
                    f"DELETE FROM dead_letters WHERE store = ? AND id IN ({marks})",
                    (self.dead_letter_queue, *part),
                ).rowcount
            return count

    # -- broadcast ---------------------------------------------------------------------------------
    def broadcast(self, exchange: str, routing_key: str, message: Message) -> None:
        columns = encode(message)
        now = time.time()
        with self._db.write() as conn:
            conn.execute(_BROADCAST, (exchange, routing_key, *columns, now))
            if now - self._broadcast_swept > BROADCAST_RETENTION / 6:
                self._broadcast_swept = now
                conn.execute(
                    "DELETE FROM broadcasts WHERE created_at < ?", (now - BROADCAST_RETENTION,)
                )
        self._wake.notify(BROADCAST_CHANNEL)

    def subscribe(self, exchange: str, patterns: Sequence[str] = ("#",)) -> Subscription:
        sub = SQLiteSubscription(self, exchange, patterns)
        self._subscriptions.add(sub)
        return sub

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Close sockets and connections. Held leases stay until they expire or are acked."""
        for sub in list(self._subscriptions):
            sub.close()
        with self._lock:
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.close()
        self._local = threading.local()
        self._wake.close()
        self._db.close()
