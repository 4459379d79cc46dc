"""``sqlite:///path.db``: the embedded result store, beside the embedded broker. No server.

Values live in one SQLite file in WAL mode (tables in ``sqlite_schema.sql``), with an expiry time
that reads honour and ``cleanup`` sweeps in small batches. Every write transaction bumps a counter
and stamps the rows it wrote with it, so a :class:`Watch` that noted the counter knows whether one
of its keys was written since. Waiters block on a UNIX datagram socket that writers poke after
commit (``celeriac.utils.localwake``), with a short fallback poll. Chord counting runs inside one
``BEGIN IMMEDIATE`` transaction, so exactly one caller sees the chord complete.
See ``docs/sqlite.md``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any, ClassVar

from celeriac.backends.base import ResultStore, Watch
from celeriac.exceptions import BackendError, ImproperlyConfigured
from celeriac.utils.localwake import Listener, WakeDir, wake_dir_for
from celeriac.utils.sqlitedb import (
    ConnectionPool,
    db_path_from_url,
    synchronous_mode,
)
from celeriac.utils.sqlitedb import (
    merged_options as _merged,
)

#: Wake-up channel of result writes in the file's wake directory.
RESULT_CHANNEL = "r"
#: Longest wait without a wake-up before a watcher looks at the file again.
DEFAULT_POLLING_INTERVAL = 1.0
#: Rows deleted per transaction by ``cleanup``, so writers are never held up for long.
CLEANUP_BATCH = 500
#: Keys per statement (SQLite limits bound parameters).
CHUNK = 500

_BUMP = "UPDATE result_counters SET value = value + 1 WHERE name = 'result_writes' RETURNING value"
_COUNTER = "SELECT value FROM result_counters WHERE name = 'result_writes'"
_UPSERT = (
    "INSERT INTO results (key, value, expires_at, version) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
    "expires_at = excluded.expires_at, version = excluded.version"
)
_LIVE = "(expires_at IS NULL OR expires_at > ?)"


@cache
def schema() -> str:
    """The result store's DDL, read once from ``sqlite_schema.sql``."""
    return resources.files(__package__).joinpath("sqlite_schema.sql").read_text("utf-8")


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


class SQLiteWatch(Watch):
    """Waits for a write to one of its keys, stamped after the counter value it last saw."""

    def __init__(self, store: SQLiteResultStore, keys: Sequence[str]) -> None:
        self._store = store
        self._keys = list(dict.fromkeys(keys))
        # Listen first, then note the counter: a later write either wakes us or is seen.
        self._listener: Listener | None = store._wake.listen(RESULT_CHANNEL)
        with store._db.read() as conn:
            self._seen = int(conn.execute(_COUNTER).fetchone()[0])

    def _changed(self) -> bool:
        with self._store._db.read() as conn:
            counter = int(conn.execute(_COUNTER).fetchone()[0])
            if counter == self._seen:
                return False
            written = any(
                conn.execute(
                    f"SELECT EXISTS(SELECT 1 FROM results WHERE key IN ({_marks(len(part))}) "
                    "AND version > ?)",
                    (*part, self._seen),
                ).fetchone()[0]
                for part in _chunks(self._keys)
            )
        if written:
            self._seen = counter  # writes after the counter read carry a larger stamp
        return written

    def wait(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        poll = self._store.polling_interval
        while True:
            listener = self._listener
            if listener is None:
                return False
            listener.drain()  # before checking, so a wake-up sent after the check is kept
            if self._changed():
                return True
            if deadline is None:
                listener.wait(poll)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            listener.wait(min(remaining, poll))

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()


class SQLiteResultStore(ResultStore):
    """The embedded result store. See the module docstring and ``docs/sqlite.md``.

    Options (settings' ``result_backend_transport_options`` or the URL's query string):
    ``synchronous`` (``normal`` by default; ``full`` survives power loss too), ``busy_timeout``
    (seconds a write waits for the file lock, default 30), ``polling_interval`` (longest wait
    without a wake-up, default 1 s).
    """

    schemes: ClassVar[tuple[str, ...]] = ("sqlite",)
    #: Waiters are woken by writers (with a fallback poll), so callers may wait without a bound.
    pushes_notifications: ClassVar[bool] = True

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, _merged(url, options))
        try:
            self.path = db_path_from_url(url, "result_backend")
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
            on_error=BackendError,
        )
        self._wake = WakeDir(wake_dir_for(self.path))
        self._lock = threading.Lock()

    # -- values ------------------------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        with self._db.read() as conn:
            row = conn.execute(
                f"SELECT value FROM results WHERE key = ? AND {_LIVE}", (key, time.time())
            ).fetchone()
        return None if row is None else bytes(row[0])

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        found: dict[str, bytes] = {}
        now = time.time()
        with self._db.read() as conn:
            for part in _chunks(list(dict.fromkeys(keys))):
                found.update(
                    (k, bytes(v))
                    for k, v in conn.execute(
                        f"SELECT key, value FROM results WHERE key IN ({_marks(len(part))}) "
                        f"AND {_LIVE}",
                        (*part, now),
                    )
                )
        return [found.get(k) for k in keys]

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self.set_many([(key, value)], ttl)

    def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        if not items:
            return
        expires = None if ttl is None else time.time() + ttl
        with self._db.write() as conn:
            stamp = conn.execute(_BUMP).fetchone()[0]
            conn.executemany(_UPSERT, [(k, bytes(v), expires, stamp) for k, v in items])
        self._wake.notify(RESULT_CHANNEL)

    def delete(self, keys: Sequence[str]) -> None:
        if keys:
            with self._db.write() as conn:
                conn.executemany("DELETE FROM results WHERE key = ?", [(k,) for k in keys])

    def watch(self, keys: Sequence[str]) -> Watch:
        return SQLiteWatch(self, keys)

    # -- chords ------------------------------------------------------------------------------------
    def chord_init(self, group_id: str, size: int, ttl: float | None) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO chords (group_id, size, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (group_id) DO UPDATE SET size = excluded.size, "
                "expires_at = excluded.expires_at",
                (group_id, size, self._expiry(ttl)),
            )

    def chord_grow(self, group_id: str, delta: int, ttl: float | None) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO chords (group_id, extra, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (group_id) DO UPDATE SET extra = extra + excluded.extra, "
                "expires_at = excluded.expires_at",
                (group_id, delta, self._expiry(ttl)),
            )

    def chord_part(
        self, group_id: str, task_id: str, index: int, value: bytes, ttl: float | None
    ) -> list[bytes] | None:
        with self._db.write() as conn:
            expires = self._expiry(ttl)
            conn.execute(
                "INSERT INTO chords (group_id, expires_at) VALUES (?, ?) "
                "ON CONFLICT (group_id) DO UPDATE SET expires_at = excluded.expires_at",
                (group_id, expires),
            )
            size, extra, claimed = conn.execute(
                "SELECT size, extra, claimed FROM chords WHERE group_id = ?", (group_id,)
            ).fetchone()
            if claimed:
                return None
            conn.execute(
                "INSERT OR IGNORE INTO chord_parts (group_id, task_id, idx, value) "
                "VALUES (?, ?, ?, ?)",
                (group_id, task_id, index, bytes(value)),
            )
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM chord_parts WHERE group_id = ?", (group_id,)
            ).fetchone()
            if size is None or count < size + extra:
                return None
            conn.execute("UPDATE chords SET claimed = 1 WHERE group_id = ?", (group_id,))
            rows = conn.execute(
                "SELECT value FROM chord_parts WHERE group_id = ? ORDER BY idx, task_id",
                (group_id,),
            ).fetchall()
        return [bytes(v) for (v,) in rows]

    def chord_release(self, group_id: str) -> None:
        # The chord row stays (claimed) until it expires, so a late duplicate part gets None.
        with self._db.write() as conn:
            conn.execute("DELETE FROM chord_parts WHERE group_id = ?", (group_id,))

    @staticmethod
    def _expiry(ttl: float | None) -> float | None:
        return None if ttl is None else time.time() + ttl

    # -- housekeeping ------------------------------------------------------------------------------
    def cleanup(self) -> int:
        """Delete expired values and chords, ``CLEANUP_BATCH`` rows per transaction."""
        now = time.time()
        removed = self._sweep(
            "DELETE FROM results WHERE rowid IN (SELECT rowid FROM results "
            "WHERE expires_at <= ? LIMIT ?)",
            now,
        )
        return removed + self._sweep(
            "DELETE FROM chords WHERE rowid IN (SELECT rowid FROM chords "
            "WHERE expires_at <= ? LIMIT ?) RETURNING group_id",
            now,
            parts=True,
        )

    def _sweep(self, sql: str, now: float, parts: bool = False) -> int:
        total = 0
        while True:
            with self._db.write() as conn:
                cursor = conn.execute(sql, (now, CLEANUP_BATCH))
                if parts:
                    groups = [(g,) for (g,) in cursor.fetchall()]
                    conn.executemany("DELETE FROM chord_parts WHERE group_id = ?", groups)
                    count = len(groups)
                else:
                    count = cursor.rowcount
            total += count
            if count < CLEANUP_BATCH:
                return total

    def close(self) -> None:
        self._wake.close()
        self._db.close()
