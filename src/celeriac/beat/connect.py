"""Where beat keeps its leader lock and state: chosen once from the app's settings.

In order: ``beat_lock_url`` if set, else the broker. A SQLite broker file gets two small tables of
beat's own; Redis gets two keys (``celeriac.beat:<app>:lock`` and ``celeriac.beat:<app>:state``);
the memory broker keeps both in the process. A broker with no such store (RabbitMQ) without
``beat_lock_url`` falls back to a SQLite file at the schedule path (``-s``), which only beats on
the same machine share.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celeriac.beat.lock import DEFAULT_LOCK_TTL, LeaderLock, MemoryLock, RedisLock, SQLiteLock
from celeriac.beat.store import (
    MemoryStateStore,
    RedisStateStore,
    SchedulingError,
    SQLiteStateStore,
    StateStore,
    sqlite_schema,
)
from celeriac.exceptions import ImproperlyConfigured
from celeriac.transports import scheme_of
from celeriac.transports.base import censor_url

if TYPE_CHECKING:
    from celeriac.app.base import Celery

__all__ = ["BeatBackend", "lock_url", "namespace_of", "open_backend"]

REDIS_SCHEMES = ("redis", "rediss", "redis+socket", "sentinel")
#: Without a socket timeout a stalled Redis would stall beat past its lock's expiry.
_REDIS_DEFAULTS = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}


@dataclass
class BeatBackend:
    """The lock and the state store beat uses, and where they live."""

    store: StateStore
    lock: LeaderLock
    #: For the banner: the store's location, without passwords.
    where: str
    #: False when only processes on this machine share it (the local schedule file).
    shared: bool

    def close(self) -> None:
        self.lock.close()
        self.store.close()


def namespace_of(app: Celery) -> str:
    """The name separating this app's beat lock and records from other apps on the same broker."""
    return app.main or "default"


def lock_url(app: Celery) -> str:
    """``beat_lock_url`` if set, else the (first) broker URL."""
    url = app.conf.get("beat_lock_url") or app.conf.broker_url
    if isinstance(url, list | tuple):
        url = url[0] if url else None
    return str(url or app.broker_url)


def open_backend(
    app: Celery, schedule_filename: str | None = None, lock_ttl: float | None = None
) -> BeatBackend:
    """Open the lock and state store for *app* (see the module docstring for the choice)."""
    url = lock_url(app)
    ttl = float(lock_ttl or DEFAULT_LOCK_TTL)
    namespace = namespace_of(app)
    scheme = scheme_of(url)
    if scheme == "memory":
        name = f"{url}#{namespace}"
        return BeatBackend(MemoryStateStore(name), MemoryLock(name, ttl), f"memory ({url})", True)
    if scheme == "sqlite":
        from celeriac.utils.sqlitedb import db_path_from_url

        try:
            path = db_path_from_url(
                url, "beat_lock_url" if app.conf.get("beat_lock_url") else "broker_url"
            )
        except ValueError as exc:
            raise ImproperlyConfigured(str(exc)) from None
        return _sqlite_backend(path, namespace, ttl, shared=True)
    if scheme in REDIS_SCHEMES:
        return _redis_backend(app, url, namespace, ttl)
    if app.conf.get("beat_lock_url"):
        raise ImproperlyConfigured(
            f"beat_lock_url {censor_url(url)!r}: unsupported scheme {scheme!r}; expected "
            "'redis://host:port/db' or 'sqlite:///path.db'"
        )
    path = schedule_filename or str(app.conf.beat_schedule_filename or "celerybeat-schedule")
    return _sqlite_backend(path, namespace, ttl, shared=False)


def _sqlite_backend(path: str, namespace: str, ttl: float, *, shared: bool) -> BeatBackend:
    from celeriac.utils.sqlitedb import ConnectionPool

    pool = ConnectionPool(path, sqlite_schema(), on_error=SchedulingError)
    try:
        pool.conn()
    except SchedulingError as exc:
        pool.close()
        if isinstance(exc.__cause__, sqlite3.DatabaseError):
            raise SchedulingError(
                f"{path!r} is not a SQLite file beat can use ({exc.__cause__}); if it is an old "
                "Celery 'celerybeat-schedule' shelve file, delete it or give another path with "
                "-s/--schedule"
            ) from exc
        raise
    lock = SQLiteLock(pool, f"beat:{namespace}", ttl)
    store = SQLiteStateStore(pool, namespace)
    where = f"sqlite {path}" if shared else f"local file {path} (this machine only)"
    return BeatBackend(store, lock, where, shared)


def _redis_backend(app: Celery, url: str, namespace: str, ttl: float) -> BeatBackend:
    from celeriac.utils.redis_conn import parse_redis_url

    options: dict[str, Any] = dict(_REDIS_DEFAULTS)
    if not app.conf.get("beat_lock_url"):
        given = app.transport_options()
        options.update(
            {
                k: v
                for k, v in given.items()
                if v is not None
                and k
                in (
                    "ssl",
                    "socket_timeout",
                    "socket_connect_timeout",
                    "master_name",
                    "sentinel_kwargs",
                )
            }
        )
    params = parse_redis_url(url, options)
    client = params.client(max_connections=4)
    prefix = f"celeriac.beat:{namespace}"
    where = censor_url(url)
    store = RedisStateStore(client, f"{prefix}:state", where)
    return BeatBackend(store, RedisLock(client, f"{prefix}:lock", ttl), where, True)
