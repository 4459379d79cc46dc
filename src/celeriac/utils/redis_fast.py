"""Commands on the hot paths (publishing a task, fetching, acking, writing and reading results),
sent on connections of a redis-py pool without going through the client object.

redis-py's client spends several times the cost of the round trip itself on each call (pool
checkout and release, retry wrapper, event dispatch, connection attributes). Here a command is
packed by hiredis, written, and its reply read, on a connection borrowed from a small free list.
The connection itself is redis-py's, so the URL forms, TLS, authentication, RESP3 and sentinel
discovery all behave exactly as on the client.

Errors are redis-py's: a connection or timeout error drops the connection (its state is unknown)
and is raised for the caller's :class:`~celeriac.utils.redis_conn.Retrier` to retry on a new one;
an error reply leaves the connection usable and is raised as ``ResponseError``.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import hiredis
import redis
import redis.exceptions as rexc

#: Idle connections kept per lane; a burst beyond them makes new ones and closes the extras.
KEEP_IDLE = 8
#: Most connections a lane has out at once when its owner sets no limit; callers beyond wait.
DEFAULT_MAX_LENT = 64
_CLIENT_ID = b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n"


class _Conn(Protocol):
    """What a lane uses of a redis-py connection (whose own methods carry no types)."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None: ...
    def read_response(self, *args: Any, **kwargs: Any) -> Any: ...
    def disconnect(self, *args: Any) -> None: ...


class FastLane:
    """Single commands, pipelines and scripts on connections made by *pool*."""

    def __init__(self, pool: redis.ConnectionPool, max_lent: int | None = None) -> None:
        self._pool = pool
        self._slots = threading.BoundedSemaphore(max_lent or DEFAULT_MAX_LENT)
        self._idle: list[_Conn] = []
        self._lent: set[_Conn] = set()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._shas: dict[str, bytes] = {}
        self.closed = False

    # -- connections -------------------------------------------------------------------------------
    def _take(self) -> _Conn:
        self._slots.acquire()
        try:
            with self._lock:
                if self._pid != os.getpid():
                    # Inherited through fork: those sockets (and slots) are the parent's.
                    self._idle, self._lent, self._pid = [], set(), os.getpid()
                conn: _Conn = (
                    self._idle.pop() if self._idle else self._pool.make_connection()  # type: ignore[no-untyped-call]
                )
                self._lent.add(conn)
                return conn
        except BaseException:
            self._slots.release()
            raise

    def _give_back(self, conn: _Conn, usable: bool = True) -> None:
        try:
            with self._lock:
                self._lent.discard(conn)
                keep = not self.closed and self._pid == os.getpid() and len(self._idle) < KEEP_IDLE
                if usable and keep:
                    self._idle.append(conn)
                    return
            conn.disconnect()
        finally:
            self._slots.release()

    def _drop_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            mine = self._pid == os.getpid()
        if mine:
            for conn in idle:
                conn.disconnect()

    def close(self) -> None:
        """Disconnect every connection, also those in use (a blocking BRPOP returns at once)."""
        with self._lock:
            self.closed = True
            conns, self._idle = [*self._idle, *self._lent], []
            mine = self._pid == os.getpid()
        if mine:
            for conn in conns:
                conn.disconnect()

    # -- commands ----------------------------------------------------------------------------------
    def _run(self, packed: bytes, replies: int) -> list[Any]:
        """Send *packed* (holding *replies* commands) and read every reply, in order.

        An error reply is returned in its place as the exception; the caller raises it.
        """
        conn = self._take()
        try:
            conn.send_packed_command((packed,), check_health=False)
            out = []
            for _ in range(replies):
                try:
                    out.append(conn.read_response())
                except rexc.ResponseError as exc:
                    out.append(exc)
        except BaseException as exc:
            self._give_back(conn, usable=False)  # its state is unknown
            if isinstance(exc, rexc.ConnectionError | rexc.TimeoutError | OSError):
                self._drop_idle()  # after a server restart the idle ones are dead too
            raise
        self._give_back(conn)
        return out

    def execute(self, *args: Any) -> Any:
        """One command; its reply."""
        return _raise_first_error(self._run(hiredis.pack_command(args), 1))[0]

    def pipeline(self, commands: Sequence[Sequence[Any]], transaction: bool = False) -> list[Any]:
        """Several commands in one write; their replies (of the EXEC, in a transaction).

        The first error reply is raised after every reply has been read.
        """
        if transaction:
            commands = [("MULTI",), *commands, ("EXEC",)]
        packed = b"".join(hiredis.pack_command(tuple(c)) for c in commands)
        replies = _raise_first_error(self._run(packed, len(commands)))
        if not transaction:
            return replies
        if replies[-1] is None:
            raise rexc.WatchError("transaction aborted")
        # EXEC's replies: a queued command's error reply comes back in its place.
        return _raise_first_error(list(replies[-1]))

    def script(self, source: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """EVALSHA of *source*, loading it first when Redis does not know it (after a restart)."""
        sha = self._sha(source)
        try:
            return self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except rexc.NoScriptError:
            self.execute("SCRIPT", "LOAD", source)
            return self.execute("EVALSHA", sha, len(keys), *keys, *args)

    def scripts(
        self, source: str, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]
    ) -> list[Any]:
        """EVALSHA of *source* once for each (keys, args) of *calls*, in one write: the replies,
        in order, an error reply in its place as the exception."""
        sha = self._sha(source)
        packed = b"".join(
            hiredis.pack_command(("EVALSHA", sha, len(keys), *keys, *args)) for keys, args in calls
        )
        replies = self._run(packed, len(calls))
        missing = [i for i, r in enumerate(replies) if isinstance(r, rexc.NoScriptError)]
        if missing:
            # Those did not run (Redis restarted meanwhile): load the script, run them again.
            self.execute("SCRIPT", "LOAD", source)
            for i in missing:
                keys, args = calls[i]
                replies[i] = self._run(
                    hiredis.pack_command(("EVALSHA", sha, len(keys), *keys, *args)), 1
                )[0]
        return replies

    def _sha(self, source: str) -> bytes:
        sha = self._shas.get(source)
        if sha is None:
            sha = self._shas[source] = hashlib.sha1(source.encode()).hexdigest().encode()
        return sha

    def script_after(
        self,
        commands: Sequence[Sequence[Any]],
        source: str,
        keys: Sequence[Any],
        args: Sequence[Any],
    ) -> Any:
        """*commands*, then EVALSHA of *source*, in one write: the script's reply. The first
        error reply of *commands* is raised (after the script ran)."""
        sha = self._sha(source)
        packed = b"".join(hiredis.pack_command(tuple(c)) for c in commands)
        packed += hiredis.pack_command(("EVALSHA", sha, len(keys), *keys, *args))
        replies = self._run(packed, len(commands) + 1)
        *before, reply = replies
        _raise_first_error(before)
        if isinstance(reply, rexc.NoScriptError):
            self.execute("SCRIPT", "LOAD", source)
            return self.execute("EVALSHA", sha, len(keys), *keys, *args)
        return _raise_first_error([reply])[0]

    def execute_announced(self, announce: Callable[[int], None], *args: Any) -> Any:
        """One (blocking) command; its reply. While it waits, ``announce(id)`` has told the
        connection's client id (for ``CLIENT UNBLOCK`` from elsewhere); ``announce(0)``
        follows once it returned."""
        conn = self._take()
        try:
            conn.send_packed_command(
                (_CLIENT_ID + hiredis.pack_command(args),),
                check_health=False,
            )
            announce(int(conn.read_response()))
            try:
                reply = conn.read_response()
            finally:
                announce(0)
        except BaseException as exc:
            self._give_back(conn, usable=False)
            if isinstance(exc, rexc.ConnectionError | rexc.TimeoutError | OSError):
                self._drop_idle()
            raise
        self._give_back(conn)
        return reply


def _raise_first_error(replies: list[Any]) -> list[Any]:
    """*replies*, unless one is an error reply: then the first of those is raised."""
    for reply in replies:
        if isinstance(reply, rexc.ResponseError):
            raise reply
    return replies
