"""Redis connection settings shared by the Redis broker transport and the Redis result store.

A URL plus an options mapping is parsed once into a frozen :class:`RedisParams`, which builds
redis-py connection pools and knows how to name its endpoint in errors. :class:`Retrier` runs an
operation again, with a bounded backoff, when the connection drops or Redis restarts.

URL forms (as kombu and Celery accept them)::

    redis://[user:password@]host[:port][/db]
    rediss://[user:password@]host[:port][/db][?ssl_cert_reqs=required&ssl_ca_certs=...]
    redis+socket:///path/to/redis.sock[?virtual_host=db]
    sentinel://[:password@]host:port[/db];sentinel://host2:port  (options: master_name)
"""

from __future__ import annotations

import ssl as _ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.exceptions as rexc
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from celeriac.exceptions import ImproperlyConfigured

T = TypeVar("T")

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
SCHEMES = ("redis", "rediss", "redis+socket", "sentinel")

#: Query-string keys accepted in the URL, with their converters.
_QUERY_KEYS: dict[str, Callable[[str], Any]] = {
    "virtual_host": str,
    "db": int,
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "socket_keepalive": lambda v: v.lower() in ("1", "true", "yes", "on"),
    "retry_on_timeout": lambda v: v.lower() in ("1", "true", "yes", "on"),
    "max_connections": int,
    "health_check_interval": int,
    "client_name": str,
    "ssl_cert_reqs": str,
    "ssl_ca_certs": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_check_hostname": lambda v: v.lower() in ("1", "true", "yes", "on"),
}

_CERT_REQS = {
    "required": "required",
    "cert_required": "required",
    "optional": "optional",
    "cert_optional": "optional",
    "none": "none",
    "cert_none": "none",
}

#: Errors after which the same command may be sent again on a fresh connection.
#: Authentication failures are ConnectionErrors too, but retrying them cannot help.
_NOT_RETRYABLE = (rexc.AuthenticationError, rexc.AuthorizationError)


def _retryable(retry_on_timeout: bool) -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (
        rexc.ConnectionError,
        rexc.BusyLoadingError,
        ConnectionError,
    )
    if retry_on_timeout:
        errors += (rexc.TimeoutError,)
    return errors


@dataclass(frozen=True, slots=True)
class RedisParams:
    """Where and how to connect to Redis, parsed once from a URL and options."""

    scheme: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    db: int = 0
    username: str | None = None
    password: str | None = None
    #: Unix socket path (``redis+socket://``).
    path: str | None = None
    #: ssl keyword arguments for redis-py (``ssl_cert_reqs``, ``ssl_ca_certs``, ...), None = no TLS.
    ssl: Mapping[str, Any] | None = field(default=None, hash=False)
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str | None = None
    sentinel_kwargs: Mapping[str, Any] | None = field(default=None, hash=False)
    socket_timeout: float | None = None
    socket_connect_timeout: float | None = None
    socket_keepalive: bool | None = None
    retry_on_timeout: bool = False
    max_connections: int | None = None
    health_check_interval: int = 25
    client_name: str | None = None

    @property
    def endpoint(self) -> str:
        """The server's address for error messages (never the password)."""
        if self.path:
            return f"unix socket {self.path}"
        if self.sentinels:
            where = ", ".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"sentinel master {self.master_name!r} via {where}"
        return f"{self.host}:{self.port}"

    def connection_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for a redis-py connection (pool) to the server.

        redis-py's own retry is switched off: :class:`Retrier` decides what is safe to resend.
        """
        kwargs: dict[str, Any] = {
            "db": self.db,
            "username": self.username,
            "password": self.password,
            "socket_timeout": self.socket_timeout,
            "health_check_interval": self.health_check_interval,
            "client_name": self.client_name,
            "retry": Retry(NoBackoff(), 0),
        }
        if self.path:
            kwargs["path"] = self.path
            kwargs["connection_class"] = redis.UnixDomainSocketConnection
            return kwargs
        kwargs["socket_connect_timeout"] = self.socket_connect_timeout
        if self.socket_keepalive is not None:
            kwargs["socket_keepalive"] = self.socket_keepalive
        if not self.sentinels:
            kwargs["host"] = self.host
            kwargs["port"] = self.port
        if self.ssl is not None:
            kwargs.update(self.ssl)
            if self.sentinels:
                kwargs["ssl"] = True  # SentinelConnectionPool picks the SSL connection class
            else:
                kwargs["connection_class"] = redis.SSLConnection
        return kwargs

    def pool(
        self, max_connections: int | None = None, blocking: bool = True
    ) -> redis.ConnectionPool:
        """A new connection pool; *blocking* pools wait for a free connection instead of failing."""
        limit = max_connections or self.max_connections
        kwargs = self.connection_kwargs()
        if self.sentinels:
            sentinel = Sentinel(  # type: ignore[no-untyped-call]
                list(self.sentinels), sentinel_kwargs=dict(self.sentinel_kwargs or {}), **kwargs
            )
            master = sentinel.master_for(  # type: ignore[no-untyped-call]
                str(self.master_name), max_connections=limit or 2**31
            )
            pool: redis.ConnectionPool = master.connection_pool
            return pool
        if blocking and limit:
            return redis.BlockingConnectionPool(  # type: ignore[no-untyped-call]
                max_connections=limit, timeout=20, **kwargs
            )
        return redis.ConnectionPool(max_connections=limit, **kwargs)

    def client(self, max_connections: int | None = None, blocking: bool = True) -> redis.Redis:
        """A redis-py client (bytes replies) on a new pool."""
        return redis.Redis(connection_pool=self.pool(max_connections, blocking))


def parse_redis_url(url: str, options: Mapping[str, Any] | None = None) -> RedisParams:
    """Parse a Redis URL and connection *options* into :class:`RedisParams`.

    Options read: ``ssl`` (True or a dict of ssl keyword arguments), ``socket_timeout``,
    ``socket_connect_timeout``, ``socket_keepalive``, ``retry_on_timeout``, ``max_connections``,
    ``health_check_interval``, ``client_name``, ``master_name`` and ``sentinel_kwargs``
    (sentinel only). URL query parameters override options.
    """
    opts = dict(options or {})
    parts = [p for p in url.split(";") if p.strip()]
    if not parts:
        raise ImproperlyConfigured(f"Redis URL {url!r} is empty; expected redis://host:port/db")
    first = urlsplit(parts[0].strip())
    scheme = first.scheme.lower()
    if scheme not in SCHEMES:
        raise ImproperlyConfigured(
            f"Redis URL {url!r}: scheme {scheme!r} is not one of {', '.join(SCHEMES)}"
        )
    query = _parse_query(url, first.query)
    opts.update(query)
    values: dict[str, Any] = {"scheme": scheme}
    values["username"] = unquote(first.username) if first.username else None
    values["password"] = unquote(first.password) if first.password else None
    if scheme == "redis+socket":
        values["path"] = first.path or None
        if not values["path"]:
            raise ImproperlyConfigured(
                f"Redis URL {url!r} has no socket path; expected redis+socket:///path/to.sock"
            )
        values["db"] = _db(url, str(opts.pop("virtual_host", opts.pop("db", 0)) or 0))
    else:
        try:
            port = first.port
        except ValueError as exc:
            raise ImproperlyConfigured(f"Redis URL {url!r}: bad port ({exc})") from None
        values["host"] = first.hostname or "127.0.0.1"
        default_port = DEFAULT_SENTINEL_PORT if scheme == "sentinel" else DEFAULT_PORT
        values["port"] = port or default_port
        db = first.path.strip("/") or str(opts.pop("virtual_host", opts.pop("db", 0)) or 0)
        values["db"] = _db(url, db)
    opts.pop("virtual_host", None)
    opts.pop("db", None)
    if scheme == "sentinel":
        values.update(_sentinel_values(url, parts, opts))
    values["ssl"] = _ssl_kwargs(url, scheme, opts)
    for name, conv in (
        ("socket_timeout", float),
        ("socket_connect_timeout", float),
        ("max_connections", int),
        ("health_check_interval", int),
        ("client_name", str),
    ):
        value = opts.get(name)
        if value is not None:
            try:
                values[name] = conv(value)
            except (TypeError, ValueError):
                raise ImproperlyConfigured(
                    f"Redis option {name}={value!r} is not a valid {conv.__name__}"
                ) from None
    if opts.get("socket_keepalive") is not None:
        values["socket_keepalive"] = bool(opts["socket_keepalive"])
    values["retry_on_timeout"] = bool(opts.get("retry_on_timeout") or False)
    return RedisParams(**values)


def _parse_query(url: str, query: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in parse_qsl(query, keep_blank_values=True):
        conv = _QUERY_KEYS.get(key)
        if conv is None:
            raise ImproperlyConfigured(
                f"Redis URL {url!r}: unknown query parameter {key!r}; expected one of "
                f"{', '.join(sorted(_QUERY_KEYS))}"
            )
        try:
            out[key] = conv(unquote(raw))
        except ValueError:
            raise ImproperlyConfigured(
                f"Redis URL {url!r}: query parameter {key}={raw!r} is not valid"
            ) from None
    return out


def _db(url: str, text: str) -> int:
    try:
        db = int(text)
    except ValueError:
        raise ImproperlyConfigured(
            f"Redis URL {url!r}: database {text!r} is not a number; expected e.g. redis://host:6379/0"
        ) from None
    if db < 0:
        raise ImproperlyConfigured(f"Redis URL {url!r}: database {db} must be 0 or more")
    return db


def _sentinel_values(url: str, parts: list[str], opts: Mapping[str, Any]) -> dict[str, Any]:
    sentinels: list[tuple[str, int]] = []
    for part in parts:
        split = urlsplit(part.strip())
        if split.scheme.lower() != "sentinel":
            raise ImproperlyConfigured(
                f"Redis URL {url!r}: {part!r} is not a sentinel:// address; expected "
                "sentinel://host:port;sentinel://host2:port"
            )
        sentinels.append((split.hostname or "127.0.0.1", split.port or DEFAULT_SENTINEL_PORT))
    master = opts.get("master_name")
    if not master:
        raise ImproperlyConfigured(
            f"Redis URL {url!r} uses sentinel but the transport option 'master_name' is not set"
        )
    kwargs = opts.get("sentinel_kwargs")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ImproperlyConfigured(f"sentinel_kwargs={kwargs!r} must be a dict")
    return {"sentinels": tuple(sentinels), "master_name": str(master), "sentinel_kwargs": kwargs}


def _ssl_kwargs(url: str, scheme: str, opts: Mapping[str, Any]) -> dict[str, Any] | None:
    given = opts.get("ssl")
    from_query = {k: v for k, v in opts.items() if k.startswith("ssl_")}
    if not given and not from_query and scheme != "rediss":
        return None
    if given is True or given is None or given is False:
        kwargs: dict[str, Any] = {}
    elif isinstance(given, Mapping):
        kwargs = dict(given)
    else:
        raise ImproperlyConfigured(
            f"ssl option {given!r} is not valid; expected True or a dict such as "
            "{'ssl_cert_reqs': 'required', 'ssl_ca_certs': '/path/ca.pem'}"
        )
    kwargs.update(from_query)
    for key in kwargs:
        if not key.startswith("ssl_"):
            raise ImproperlyConfigured(
                f"ssl option key {key!r} is not valid for Redis; expected ssl_* keys such as "
                "ssl_cert_reqs, ssl_ca_certs, ssl_certfile, ssl_keyfile"
            )
    if "ssl_cert_reqs" in kwargs:
        kwargs["ssl_cert_reqs"] = _cert_reqs(kwargs["ssl_cert_reqs"])
    return kwargs


def _cert_reqs(value: Any) -> Any:
    if isinstance(value, _ssl.VerifyMode):
        return value
    if isinstance(value, int):
        return _ssl.VerifyMode(value)
    if value is None:
        return "none"
    mapped = _CERT_REQS.get(str(value).lower())
    if mapped is None:
        raise ImproperlyConfigured(
            f"ssl_cert_reqs={value!r} is not valid; expected required, optional or none"
        )
    return mapped


class Retrier:
    """Runs Redis operations, retrying with a bounded backoff while the server is unreachable.

    After *budget* seconds of failures the last error is raised as ``error_cls`` with the endpoint
    named. Only use it for operations that are safe to resend: at worst a resent write is applied
    twice (a message published twice), never lost.
    """

    def __init__(
        self,
        params: RedisParams,
        error_cls: type[Exception],
        budget: float = 10.0,
        first_delay: float = 0.05,
        max_delay: float = 1.0,
    ) -> None:
        self.params = params
        self.error_cls = error_cls
        self.budget = budget
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.retryable = _retryable(params.retry_on_timeout)
        self._stop = threading.Event()

    def stop(self) -> None:
        """Make waiting retries give up now (on close)."""
        self._stop.set()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, retried while the connection fails."""
        deadline = time.monotonic() + self.budget
        delay = self.first_delay
        attempts = 0
        while True:
            attempts += 1
            try:
                return fn(*args, **kwargs)
            except _NOT_RETRYABLE as exc:
                raise self.error_cls(
                    f"Redis at {self.params.endpoint} refused the credentials: {exc}"
                ) from exc
            except self.retryable as exc:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    raise self.error_cls(
                        f"Redis at {self.params.endpoint} unreachable after {attempts} attempts "
                        f"over {self.budget:.0f}s: {exc}"
                    ) from exc
                self._stop.wait(min(delay, left))
                delay = min(delay * 2, self.max_delay)
            except rexc.RedisError as exc:
                raise self.error_cls(f"Redis at {self.params.endpoint}: {exc}") from exc


def is_retryable(exc: BaseException, params: RedisParams) -> bool:
    """True when *exc* means the connection failed (not a command error)."""
    return isinstance(exc, _retryable(params.retry_on_timeout)) and not isinstance(
        exc, _NOT_RETRYABLE
    )
