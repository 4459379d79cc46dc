"""The leader lock: of all running beat processes, only the holder sends periodic tasks.

The lock expires ``ttl`` seconds after it was last taken or renewed, so when the leader dies a
standby takes it over within about ``ttl`` seconds. The leader renews it well before that (see
``service.py``). Losing the lock mid-tick cannot cause a double send: every send is also claimed
in the state store (``store.py``).

Implementations: :class:`MemoryLock` (threads of one process), :class:`SQLiteLock` (a row with an
expiry, taken in a ``BEGIN IMMEDIATE`` transaction) and :class:`RedisLock` (``SET NX PX``, renewed
and released by compare-and-set Lua scripts).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING

from celeriac.beat.store import lua_script

if TYPE_CHECKING:
    import redis

    from celeriac.utils.sqlitedb import ConnectionPool

__all__ = ["DEFAULT_LOCK_TTL", "LeaderLock", "MemoryLock", "RedisLock", "SQLiteLock", "new_owner"]

#: Seconds the lock lives without renewal: bounds how long a dead leader blocks a standby.
DEFAULT_LOCK_TTL = 5.0


def new_owner() -> str:
    """A token naming this process uniquely (host, pid and a random part, for humans and logs)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class LeaderLock:
    """The contract of a leader lock (the in-memory one is the reference)."""

    def __init__(self, name: str, ttl: float = DEFAULT_LOCK_TTL, owner: str | None = None) -> None:
        if ttl <= 0:
            raise ValueError(f"lock ttl must be a positive number of seconds, not {ttl!r}")
        self.name = name
        self.ttl = float(ttl)
        self.owner = owner or new_owner()

    def acquire(self) -> bool:
        """Take the lock if it is free or expired, or extend it if we hold it.

        Never blocks on other holders. True when this owner holds the lock for ``ttl`` more seconds.
        """
        raise NotImplementedError

    def holder(self) -> str | None:
        """The current holder's token, or None when the lock is free."""
        raise NotImplementedError

    def release(self) -> None:
        """Give the lock up now if we hold it (a standby can take it at once)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections (not the lock: call :meth:`release` for that)."""


class MemoryLock(LeaderLock):
    """A lock shared by every :class:`MemoryLock` of the same name in this process."""

    _held: dict[str, tuple[str, float]] = {}
    _guard = threading.Lock()

    def acquire(self) -> bool:
        now = time.monotonic()
        with self._guard:
            current = self._held.get(self.name)
            if current is None or current[0] == self.owner or current[1] <= now:
                self._held[self.name] = (self.owner, now + self.ttl)
                return True
            return False

    def holder(self) -> str | None:
        with self._guard:
            current = self._held.get(self.name)
        return current[0] if current and current[1] > time.monotonic() else None

    def release(self) -> None:
        with self._guard:
            current = self._held.get(self.name)
            if current is not None and current[0] == self.owner:
                del self._held[self.name]


class SQLiteLock(LeaderLock):
    """A row of ``celeriac_beat_lock``; expiry is wall-clock time, shared by one machine."""

    def __init__(
        self,
        pool: ConnectionPool,
        name: str,
        ttl: float = DEFAULT_LOCK_TTL,
        owner: str | None = None,
    ) -> None:
        super().__init__(name, ttl, owner)
        self.pool = pool

    def acquire(self) -> bool:
        with self.pool.write() as conn:
            now = time.time()
            row = conn.execute(
                "SELECT owner, expires_at FROM celeriac_beat_lock WHERE name = ?", (self.name,)
            ).fetchone()
            if row is not None and row[0] != self.owner and row[1] > now:
                return False
            conn.execute(
                "INSERT INTO celeriac_beat_lock (name, owner, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, "
                "expires_at = excluded.expires_at",
                (self.name, self.owner, now + self.ttl),
            )
            return True

    def holder(self) -> str | None:
        with self.pool.read() as conn:
            row = conn.execute(
                "SELECT owner, expires_at FROM celeriac_beat_lock WHERE name = ?", (self.name,)
            ).fetchone()
        return str(row[0]) if row is not None and row[1] > time.time() else None

    def release(self) -> None:
        with self.pool.write() as conn:
            conn.execute(
                "DELETE FROM celeriac_beat_lock WHERE name = ? AND owner = ?",
                (self.name, self.owner),
            )


class RedisLock(LeaderLock):
    """A key holding the owner token, with a time to live kept by Redis itself."""

    def __init__(
        self, client: redis.Redis, key: str, ttl: float = DEFAULT_LOCK_TTL, owner: str | None = None
    ) -> None:
        super().__init__(key, ttl, owner)
        self.client = client
        self._renew = client.register_script(lua_script("lock_renew"))
        self._release = client.register_script(lua_script("lock_release"))

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    def acquire(self) -> bool:
        if self.client.set(self.name, self.owner, nx=True, px=self._ttl_ms):
            return True
        return bool(self._renew(keys=[self.name], args=[self.owner, self._ttl_ms]))

    def holder(self) -> str | None:
        value = self.client.get(self.name)
        return value.decode() if isinstance(value, bytes) else value

    def release(self) -> None:
        self._release(keys=[self.name], args=[self.owner])

    def close(self) -> None:
        self.client.close()
