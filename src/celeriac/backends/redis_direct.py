"""Watches read by the waiting thread itself, on pub/sub connections kept for them.

A wait for one or a few results (``delay().get()``) is the latency users feel. Through the
store's shared hub it costs two hand-offs to the hub's thread and back (subscribe, then the
notification); here the waiting thread sends SUBSCRIBE and reads the notification from its own
connection, and the kernel wakes it directly when the result is published.

A connection is lent to one watch at a time. Closing the watch sends UNSUBSCRIBE without waiting
for the reply: the next watch on that connection reads past what is left of its predecessor
(unsubscribe replies, late notifications) until its own SUBSCRIBE is confirmed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import redis

from celeriac.backends.base import Watch
from celeriac.exceptions import BackendError

#: Idle connections kept for the next watches; more are closed when their watch ends.
KEEP_IDLE = 4
#: Most connections lent at once; watches beyond share the store's hub, so many concurrent
#: waiters (threads of a web server, ``aget`` calls) do not each hold a connection.
MAX_LENT = 8
#: Longest single wait on the socket when the caller waits without a timeout.
READ_SLICE = 1.0
_LOST = (redis.ConnectionError, redis.TimeoutError, OSError)


class Connection(Protocol):
    """What a watch uses of a redis-py connection (whose own methods carry no types)."""

    def send_command(self, *args: Any, **kwargs: Any) -> None: ...
    def can_read(self, timeout: float = 0) -> bool: ...
    def read_response(self, *args: Any, **kwargs: Any) -> Any: ...
    def disconnect(self, *args: Any) -> None: ...


class DirectConnections:
    """Pub/sub connections lent to direct watches, made by *make* (the store's pub/sub pool)."""

    def __init__(self, make: Callable[[], Connection]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._idle: list[Connection] = []
        self._pid = os.getpid()
        self._lent = 0
        self.closed = False

    def take(self) -> Connection | None:
        """A connection to use, or None when ``MAX_LENT`` are out already."""
        with self._lock:
            if self.closed:
                raise BackendError("result store is closed")
            if self._pid != os.getpid():
                # Inherited through fork: those sockets are the parent's to use.
                self._idle, self._lent, self._pid = [], 0, os.getpid()
            if self._lent >= MAX_LENT:
                return None
            self._lent += 1
            if self._idle:
                return self._idle.pop()
        try:
            return self._make()
        except BaseException:
            self.give_back(None)
            raise

    def make(self) -> Connection:
        """A fresh connection for a watch that holds a loan already (its own was dropped)."""
        return self._make()

    def give_back(self, conn: Connection | None) -> None:
        """End a loan; *conn* None: the connection was dropped (its state unknown)."""
        with self._lock:
            if self._pid == os.getpid():
                self._lent -= 1
                if conn is not None and not self.closed and len(self._idle) < KEEP_IDLE:
                    self._idle.append(conn)
                    return
        if conn is not None:
            conn.disconnect()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            try:
                conn.disconnect()
            except (redis.RedisError, OSError):
                pass


class DirectWatch(Watch):
    """A watch on a connection lent to it, read by the thread that waits (see the module doc).

    *keys* maps channel names to the keys as the caller named them. ``start`` subscribes and
    returns once the server confirmed it; *retry* runs it again while the server is unreachable.
    """

    def __init__(
        self,
        pool: DirectConnections,
        conn: Connection,
        keys: Mapping[bytes, str],
        retry: Callable[[Callable[[], None]], None],
        timeout: float,
        endpoint: str = "Redis",
    ) -> None:
        self._pool = pool
        self._endpoint = endpoint
        self._conn: Connection | None = conn
        self.keys = keys
        self._retry = retry
        self._timeout = timeout
        self._values: dict[str, bytes] = {}
        self._missed = False
        self._closed = False

    def start(self) -> DirectWatch:
        try:
            self._retry(self._subscribe)
        except BaseException:
            self.close()
            raise
        return self

    def _subscribe(self) -> None:
        if self._conn is None:
            self._conn = self._pool.make()
        conn = self._conn
        try:
            conn.send_command("SUBSCRIBE", *self.keys, check_health=False)
            waiting = set(self.keys)
            deadline = time.monotonic() + self._timeout
            while waiting:
                left = deadline - time.monotonic()
                if left <= 0 or not conn.can_read(left):
                    raise BackendError(
                        f"Redis at {self._endpoint} did not confirm SUBSCRIBE within "
                        f"{self._timeout:.0f}s"
                    )
                reply = conn.read_response(push_request=True)
                # Anything else is what the connection's previous watch left unread.
                if _kind(reply) == b"subscribe":
                    waiting.discard(reply[1])
        except BaseException:
            self._drop()
            raise

    def _drop(self) -> None:
        """Forget the connection: its state is unknown, it is never lent again."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()

    def wait(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                left = READ_SLICE if deadline is None else deadline - time.monotonic()
                if self._read(max(left, 0.0)):
                    while self._read(0):  # take what else arrived with it
                        pass
                    return True
                if deadline is not None and time.monotonic() >= deadline:
                    return False
        except _LOST:
            # Writes while the connection was down came without notification: subscribe
            # again, and have the caller read the keys.
            self._drop()
            self._retry(self._subscribe)
            self._missed = True
            return True

    def _read(self, timeout: float) -> bool:
        """Read one reply, waiting up to *timeout*: True when it is one of our notifications."""
        conn = self._conn
        if conn is None:
            raise redis.ConnectionError("the watch's connection was dropped")
        if not conn.can_read(timeout):
            return False
        reply = conn.read_response(push_request=True)
        if _kind(reply) != b"message":
            return False
        key = self.keys.get(reply[1])
        if key is None:
            return False
        if isinstance(reply[2], bytes):
            self._values[key] = reply[2]
        return True

    def take_values(self) -> dict[str, bytes] | None:
        values, self._values = self._values, {}
        missed, self._missed = self._missed, False
        return None if missed else values

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        if conn is not None:
            try:
                conn.send_command("UNSUBSCRIBE", *self.keys, check_health=False)
            except (redis.RedisError, OSError):
                self._drop()
        self._pool.give_back(self._conn)
        self._conn = None


def _kind(reply: Any) -> bytes | None:
    if isinstance(reply, list) and reply and isinstance(reply[0], bytes):
        return reply[0]
    return None
