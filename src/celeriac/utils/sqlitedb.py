"""Opening one SQLite file from many threads and processes: URL parsing, pragmas, transactions.

Shared by the embedded broker (``transports/sqlite.py``) and result store (``backends/sqlite.py``).
Each thread gets its own connection (sqlite3 connections must not be shared between threads), each
connection runs in autocommit mode so transactions are explicit: reads are single statements, writes
run inside ``BEGIN IMMEDIATE`` so the write lock is taken up front and waits out other writers with
the busy timeout instead of failing with ``SQLITE_BUSY`` halfway through.

Connections inherited over ``fork`` are never used nor closed in the child: SQLite forbids both, and
closing one could drop the parent's file locks. The child opens its own. A fork also waits until no
other thread is inside SQLite: the library's mutexes would be copied into the child locked, and the
child would hang on its first SQLite call (a prefork worker replacing a process mid-load).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl

__all__ = [
    "SYNCHRONOUS_MODES",
    "ConnectionPool",
    "db_path_from_url",
    "merged_options",
    "synchronous_mode",
    "url_options",
]

#: ``synchronous`` pragma values a user may choose (see docs/sqlite.md for what each survives).
SYNCHRONOUS_MODES = ("off", "normal", "full", "extra")

# Connections a forked child inherited: kept referenced so garbage collection never closes them.
_inherited: list[sqlite3.Connection] = []

logger = logging.getLogger("celeriac.sqlite")

#: Longest a fork waits for other threads to leave SQLite before it goes ahead anyway.
FORK_WAIT = 10.0


class _ForkGuard:
    """Threads enter SQLite through ``inside()``; ``os.fork`` waits until none is inside."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._forking = False

    @contextmanager
    def inside(self) -> Iterator[None]:
        with self._cond:
            while self._forking:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if not self._active:
                    self._cond.notify_all()

    def before_fork(self) -> None:
        self._cond.acquire()  # held across the fork: no thread enters SQLite meanwhile
        self._forking = True
        if not self._cond.wait_for(lambda: not self._active, FORK_WAIT):
            logger.warning("forking while a thread is still inside SQLite (waited %ss)", FORK_WAIT)

    def after_fork_in_parent(self) -> None:
        self._forking = False
        self._cond.notify_all()
        self._cond.release()

    def after_fork_in_child(self) -> None:
        self.__init__()  # type: ignore[misc]  # the child has only the forking thread


_fork_guard = _ForkGuard()
os.register_at_fork(
    before=_fork_guard.before_fork,
    after_in_parent=_fork_guard.after_fork_in_parent,
    after_in_child=_fork_guard.after_fork_in_child,
)


def db_path_from_url(url: str, what: str = "broker_url") -> str:
    """The file path in ``sqlite:///relative.db`` or ``sqlite:////absolute.db``."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "sqlite" or not rest.startswith("/") or len(rest) < 2:
        raise ValueError(
            f"{what} {url!r}: expected 'sqlite:///relative/path.db' or 'sqlite:////abs/path.db'"
        )
    path = rest[1:].split("?", 1)[0]
    if path in (":memory:", "") or path.startswith("file:"):
        raise ValueError(
            f"{what} {url!r}: the embedded store needs a file that every process can open; "
            "expected 'sqlite:///relative/path.db' or 'sqlite:////abs/path.db'"
        )
    return path


def url_options(url: str) -> dict[str, str]:
    """Options given in the URL's query string (``sqlite:///x.db?synchronous=full``)."""
    _, _, query = url.partition("?")
    return dict(parse_qsl(query, keep_blank_values=False))


def merged_options(url: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The URL's query options overridden by the settings' options that have a value."""
    given = {k: v for k, v in (options or {}).items() if v is not None}
    return {**url_options(url), **given}


def synchronous_mode(value: Any, default: str) -> str:
    """Validate the ``synchronous`` option."""
    mode = str(value or default).lower()
    if mode not in SYNCHRONOUS_MODES:
        raise ValueError(
            f"sqlite option synchronous={value!r}: expected one of {SYNCHRONOUS_MODES}"
        )
    return mode


class ConnectionPool:
    """Per-thread connections to one database file, created with the schema on first use."""

    def __init__(
        self,
        path: str,
        schema: str,
        *,
        synchronous: str = "normal",
        busy_timeout: float = 30.0,
        on_error: Callable[[str], Exception] = RuntimeError,
    ) -> None:
        self.path = path
        self._schema = schema
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._on_error = on_error
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        self._closed = False
        self._schema_ready = False

    # -- connections -------------------------------------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        """This thread's connection, opened (and the schema created) on first use."""
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid():
            return conn
        if self._closed:
            raise self._on_error(f"sqlite database {self.path!r}: connection is closed")
        if self._pid != os.getpid():
            self._after_fork()
        conn = self._open()
        local.conn, local.pid = conn, os.getpid()
        with self._lock:
            self._all.append(conn)
        return conn

    def _after_fork(self) -> None:
        with self._lock:
            _inherited.extend(self._all)
            self._all = []
            self._pid = os.getpid()

    def _open(self) -> sqlite3.Connection:
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=256,
            )
        except (OSError, sqlite3.Error) as exc:
            raise self._on_error(f"cannot open sqlite database {self.path!r}: {exc}") from exc
        try:
            self._prepare(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise self._on_error(f"cannot prepare sqlite database {self.path!r}: {exc}") from exc
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        # journal_mode is stored in the file; switching needs a moment alone with it.
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"journal_mode is {mode!r}; WAL is required")
        conn.execute(f"PRAGMA synchronous = {self._synchronous.upper()}")
        # After a checkpoint, shrink the WAL file back instead of keeping its high-water size.
        conn.execute("PRAGMA journal_size_limit = 67108864")
        if not self._schema_ready:
            # Idempotent (CREATE ... IF NOT EXISTS), once per pool: the broker and the result
            # store may share one file, so neither may assume the other's tables exist.
            with self._transaction(conn):
                for statement in _statements(self._schema):
                    conn.execute(statement)
            self._schema_ready = True

    # -- transactions ------------------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on this thread's connection (``BEGIN IMMEDIATE`` … ``COMMIT``)."""
        try:
            with _fork_guard.inside():
                conn = self.conn()
                with self._transaction(conn):
                    yield conn
        except sqlite3.Error as exc:
            raise self._on_error(f"sqlite database {self.path!r}: {exc}") from exc

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection for reads, with SQLite errors turned into our error type."""
        try:
            with _fork_guard.inside():
                yield self.conn()
        except sqlite3.Error as exc:
            raise self._on_error(f"sqlite database {self.path!r}: {exc}") from exc

    @staticmethod
    @contextmanager
    def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection this process opened (later use raises)."""
        with self._lock:
            self._closed = True
            conns, self._all = self._all, []
            mine = self._pid == os.getpid()
        if not mine:
            _inherited.extend(conns)
            return
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass


def _statements(script: str) -> list[str]:
    """Split a schema script into statements (``sqlite3.complete_statement`` decides the ends)."""
    out: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--") and not current.strip():
            continue
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    if current.strip():
        out.append(current.strip())
    return out
