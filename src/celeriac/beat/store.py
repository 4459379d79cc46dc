"""Beat's shared state: the last run of every schedule entry, claimed with compare-and-set.

Every beat process reads the same records, so a standby that takes over knows what the leader
sent. A run is sent only after it is *claimed*: the claim names the version of the record the
sender read and fails if any other process has claimed since. Two processes that both decide an
entry is due (a lock lost mid-tick, clocks apart) therefore send it once between them.

Implementations: :class:`MemoryStateStore` (one process), :class:`SQLiteStateStore` (a table in
the SQLite broker file, or in the local schedule file) and :class:`RedisStateStore` (a hash, the
claim in a Lua script).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import CeleryError

if TYPE_CHECKING:
    import redis

    from celeriac.utils.sqlitedb import ConnectionPool

__all__ = [
    "EntryState",
    "MemoryStateStore",
    "RedisStateStore",
    "SQLiteStateStore",
    "SchedulingError",
    "StateStore",
    "lua_script",
    "sqlite_schema",
]


class SchedulingError(CeleryError):
    """Beat could not read, claim or send a scheduled run (``celery.beat.SchedulingError``)."""


@dataclass(frozen=True, slots=True)
class EntryState:
    """One entry's record. Times are epoch seconds (UTC).

    ``version`` counts claims (0: never run); ``last_run_at`` is the instant the schedule counts
    the last run from; ``due_at`` is the due time of the last claimed run (the dedup key).
    """

    version: int = 0
    last_run_at: float | None = None
    due_at: float | None = None
    total_run_count: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": self.version,
                "last": self.last_run_at,
                "due": self.due_at,
                "count": self.total_run_count,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> EntryState:
        data = json.loads(raw)
        return cls(
            int(data.get("v", 0)), data.get("last"), data.get("due"), int(data.get("count", 0))
        )


class StateStore:
    """The contract every state store fulfils (the in-memory one is the reference)."""

    #: Where the records live, for the banner and logs (no passwords).
    where: str = ""

    def load(self, names: Iterable[str]) -> dict[str, EntryState]:
        """The records of *names* that exist (absent names were never run)."""
        raise NotImplementedError

    def claim(self, name: str, seen_version: int, new: EntryState) -> bool:
        """Replace *name*'s record by *new* if its version is still *seen_version* (0: absent).

        *new.version* must be ``seen_version + 1``. True when claimed; False when another process
        claimed first (the caller must not send).
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release connections (the records stay)."""


def _check_version(seen_version: int, new: EntryState) -> None:
    if new.version != seen_version + 1:
        raise ValueError(
            f"claim: new version {new.version} must be the seen version {seen_version} + 1"
        )


class MemoryStateStore(StateStore):
    """Records in a dict shared by every store of the same *name* in this process."""

    _shared: dict[str, dict[str, EntryState]] = {}
    _guard = threading.Lock()

    def __init__(self, name: str = "default") -> None:
        self.where = f"memory ({name})"
        with self._guard:
            self._records = self._shared.setdefault(name, {})

    def load(self, names: Iterable[str]) -> dict[str, EntryState]:
        with self._guard:
            return {n: self._records[n] for n in names if n in self._records}

    def claim(self, name: str, seen_version: int, new: EntryState) -> bool:
        _check_version(seen_version, new)
        with self._guard:
            current = self._records.get(name)
            if (current.version if current else 0) != seen_version:
                return False
            self._records[name] = new
            return True


@cache
def sqlite_schema() -> str:
    """DDL of beat's lock and state tables."""
    return resources.files(__package__).joinpath("sqlite_schema.sql").read_text("utf-8")


@cache
def lua_script(name: str) -> str:
    """The text of ``redis_lua/<name>.lua``."""
    return resources.files(__package__).joinpath("redis_lua", f"{name}.lua").read_text("utf-8")


class SQLiteStateStore(StateStore):
    """Rows of ``celeriac_beat_state``; a claim is one ``UPDATE``/``INSERT`` in a write txn."""

    def __init__(self, pool: ConnectionPool, namespace: str) -> None:
        self.pool = pool
        self.namespace = namespace
        self.where = f"sqlite {pool.path}"

    def load(self, names: Iterable[str]) -> dict[str, EntryState]:
        wanted = set(names)
        with self.pool.read() as conn:
            rows = conn.execute(
                "SELECT entry, version, last_run_at, due_at, total_run_count "
                "FROM celeriac_beat_state WHERE namespace = ?",
                (self.namespace,),
            ).fetchall()
        return {r[0]: EntryState(r[1], r[2], r[3], r[4]) for r in rows if r[0] in wanted}

    def claim(self, name: str, seen_version: int, new: EntryState) -> bool:
        _check_version(seen_version, new)
        values = (new.version, new.last_run_at, new.due_at, new.total_run_count)
        with self.pool.write() as conn:
            if seen_version == 0:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO celeriac_beat_state (namespace, entry, version, "
                    "last_run_at, due_at, total_run_count) VALUES (?, ?, ?, ?, ?, ?)",
                    (self.namespace, name, *values),
                )
            else:
                cur = conn.execute(
                    "UPDATE celeriac_beat_state SET version = ?, last_run_at = ?, due_at = ?, "
                    "total_run_count = ? WHERE namespace = ? AND entry = ? AND version = ?",
                    (*values, self.namespace, name, seen_version),
                )
            return cur.rowcount == 1


class RedisStateStore(StateStore):
    """One hash per namespace, field = entry name, value = the record as JSON."""

    def __init__(self, client: redis.Redis, key: str, where: str = "redis") -> None:
        self.client = client
        self.key = key
        self.where = where
        self._claim = client.register_script(lua_script("claim"))

    def load(self, names: Iterable[str]) -> dict[str, EntryState]:
        wanted = list(names)
        if not wanted:
            return {}
        raw: list[Any] = self.client.hmget(self.key, wanted)
        return {n: EntryState.from_json(v) for n, v in zip(wanted, raw, strict=True) if v}

    def claim(self, name: str, seen_version: int, new: EntryState) -> bool:
        _check_version(seen_version, new)
        done = self._claim(keys=[self.key], args=[name, seen_version, new.to_json()])
        return bool(done)

    def close(self) -> None:
        self.client.close()
