"""One AMQP 0-9-1 connection, driven by aiormq on a private event loop thread.

The broker transport and the ``rpc://`` result store are synchronous and thread-safe; both keep an
:class:`AMQPLink`, whose asyncio client runs on a :class:`LoopThread` that the link owns. Callers
submit coroutines to that loop (:meth:`LoopThread.call`) and wait for their result, so the protocol
logic exists once, in asyncio.

The link connects on first use (trying each URL of a ``;``-separated failover list in turn),
reconnects in the background with backoff when the connection drops, and then runs the
restore hooks its owner registered (re-declare, re-consume, re-subscribe).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

import aiormq
import aiormq.exceptions as amqp_errors
from aiormq.abc import AbstractChannel, AbstractConnection

from celeriac.exceptions import ImproperlyConfigured, TransportError

logger = logging.getLogger("celeriac.amqp")

T = TypeVar("T")

SCHEMES = ("amqp", "amqps", "pyamqp", "pyamqps", "rpc")
DEFAULT_PORTS = {False: 5672, True: 5671}
#: How long an operation keeps trying to (re)connect before it raises TransportError.
DEFAULT_RETRY_BUDGET = 10.0
#: Background reconnection backoff: first delay, growth factor, ceiling (seconds).
RECONNECT_FIRST = 0.2
RECONNECT_MAX = 5.0

#: Errors that mean "the connection or channel is gone": retry after reconnecting.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    amqp_errors.AMQPConnectionError,
    amqp_errors.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    asyncio.CancelledError,
    RuntimeError,  # aiormq: "<Connection ...> closed"
)


_CONNECT_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, amqp_errors.AMQPError)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One broker address."""

    host: str
    port: int
    user: str
    password: str
    vhost: str
    tls: bool

    def aiormq_url(self, heartbeat: int | None, name: str) -> str:
        scheme = "amqps" if self.tls else "amqp"
        creds = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        vhost = quote(self.vhost, safe="")
        query = f"?name={quote(name, safe='')}"
        if heartbeat is not None:
            query += f"&heartbeat={heartbeat}"
        return f"{scheme}://{creds}@{self.host}:{self.port}/{vhost}{query}"

    def __str__(self) -> str:
        scheme = "amqps" if self.tls else "amqp"
        return f"{scheme}://{self.user}:**@{self.host}:{self.port}/{quote(self.vhost, safe='')}"


@dataclass(frozen=True, slots=True)
class AMQPParams:
    """Everything needed to connect, parsed once from the URL and the options."""

    endpoints: tuple[Endpoint, ...]
    heartbeat: int | None
    connect_timeout: float
    ssl_context: ssl.SSLContext | None
    retry: bool = True
    retry_on_startup: bool = True
    max_retries: int | None = 100
    retry_budget: float = DEFAULT_RETRY_BUDGET

    @property
    def endpoint(self) -> str:
        """The first address, password hidden, for messages."""
        return str(self.endpoints[0])


def _vhost(path: str) -> str:
    # kombu: "" and "/" mean the default vhost "/"; "//" too ("/" after the separator).
    if path in ("", "/"):
        return "/"
    return unquote(path[1:]) or "/"


def parse_endpoint(url: str, tls: bool) -> Endpoint:
    """One ``amqp://user:password@host:port/vhost`` URL."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ImproperlyConfigured(
            f"broker URL {url!r}: expected amqp://user:password@host:port/vhost "
            "(or amqps://, pyamqp://)"
        )
    parts = urlsplit(url)
    secure = tls or scheme.lower() in ("amqps", "pyamqps")
    try:
        port = parts.port or DEFAULT_PORTS[secure]
    except ValueError as exc:
        raise ImproperlyConfigured(f"broker URL {url!r}: port is not a number") from exc
    return Endpoint(
        host=parts.hostname or "localhost",
        port=port,
        user=unquote(parts.username) if parts.username is not None else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
        vhost=_vhost(parts.path),
        tls=secure,
    )


def make_ssl_context(option: Any) -> ssl.SSLContext | None:
    """``broker_use_ssl``: False/None, True (verify against system CAs), a dict or an SSLContext.

    Dict keys as kombu/py-amqp take them: ``ca_certs``, ``certfile``, ``keyfile``, ``cert_reqs``
    (``ssl.CERT_*`` or ``"required"``/``"optional"``/``"none"``), ``check_hostname``.
    """
    if option in (None, False, {}):
        return None
    if isinstance(option, ssl.SSLContext):
        return option
    if option is True:
        return ssl.create_default_context()
    if not isinstance(option, Mapping):
        raise ImproperlyConfigured(
            f"broker_use_ssl {option!r}: expected True, a dict of ssl options or an SSLContext"
        )
    opts = {str(k).removeprefix("ssl_"): v for k, v in option.items()}
    ctx = ssl.create_default_context(cafile=opts.get("ca_certs") or opts.get("cafile"))
    reqs = opts.get("cert_reqs")
    if isinstance(reqs, str):
        names = {
            "required": ssl.CERT_REQUIRED,
            "optional": ssl.CERT_OPTIONAL,
            "none": ssl.CERT_NONE,
        }
        key = reqs.lower().removeprefix("cert_")
        if key not in names:
            raise ImproperlyConfigured(
                f"broker_use_ssl cert_reqs {reqs!r}: expected required, optional or none"
            )
        reqs = names[key]
    if reqs is not None:
        if reqs == ssl.CERT_NONE:
            ctx.check_hostname = False
        ctx.verify_mode = ssl.VerifyMode(reqs)
    if "check_hostname" in opts:
        ctx.check_hostname = bool(opts["check_hostname"])
    if opts.get("certfile"):
        ctx.load_cert_chain(opts["certfile"], opts.get("keyfile"))
    return ctx


def _opt_bool(options: Mapping[str, Any], key: str, default: bool) -> bool:
    value = options.get(key)
    return default if value is None else bool(value)


def parse_amqp_url(url: str, options: Mapping[str, Any] | None = None) -> AMQPParams:
    """Parse a (``;``-separated failover list of) AMQP URL(s) and the transport options.

    Options: ``ssl`` (``broker_use_ssl``), ``heartbeat`` (seconds, 0 disables), ``connect_timeout``,
    ``connection_retry``, ``connection_retry_on_startup``, ``connection_max_retries`` (0 or None:
    for ever), ``retry_budget`` (seconds one call keeps trying to reconnect).
    """
    options = options or {}
    ssl_ctx = make_ssl_context(options.get("ssl"))
    urls = [u.strip() for u in url.split(";") if u.strip()]
    if not urls:
        raise ImproperlyConfigured(f"broker URL {url!r} is empty; expected amqp://host")
    endpoints = tuple(parse_endpoint(u, ssl_ctx is not None) for u in urls)
    if ssl_ctx is None and any(e.tls for e in endpoints):
        ssl_ctx = ssl.create_default_context()
    heartbeat = options.get("heartbeat")
    retry = _opt_bool(options, "connection_retry", True)
    max_retries = options.get("connection_max_retries", 100)
    try:
        return AMQPParams(
            endpoints=endpoints,
            heartbeat=None if heartbeat is None else max(round(float(heartbeat)), 0),
            connect_timeout=float(options.get("connect_timeout") or 4.0),
            ssl_context=ssl_ctx,
            retry=retry,
            retry_on_startup=_opt_bool(options, "connection_retry_on_startup", retry),
            max_retries=int(max_retries) if max_retries else None,
            retry_budget=float(options.get("retry_budget") or DEFAULT_RETRY_BUDGET),
        )
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(
            f"AMQP options: {exc} (heartbeat, connect_timeout and retry_budget are seconds, "
            "connection_max_retries a count)"
        ) from exc


class LoopThread:
    """An asyncio event loop running in a daemon thread, with a synchronous ``call``."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def in_loop(self) -> bool:
        return threading.current_thread() is self._thread

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run *coro* on the loop and wait for its result (``TransportError`` on timeout)."""
        if self.in_loop:
            coro.close()
            raise RuntimeError("a synchronous AMQP call was made from the client's own loop")
        if self.loop.is_closed():
            coro.close()
            raise TransportError("the AMQP connection is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except FutureTimeout as exc:
            future.cancel()
            raise TransportError(f"AMQP operation timed out after {timeout}s") from exc

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run *coro* on the loop without waiting; the future reports how it ended."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        if not self.in_loop:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self.loop.close()


Restorer = Callable[[AbstractConnection], Awaitable[None]]


class AMQPLink:
    """A self-healing AMQP connection and its named channels. Use only on ``runner.loop``."""

    def __init__(self, params: AMQPParams, runner: LoopThread, name: str) -> None:
        self.params = params
        self.runner = runner
        self.name = f"{name} {socket.gethostname()} pid {os.getpid()}"
        self.generation = 0
        self.closed = False
        self._conn: AbstractConnection | None = None
        self._lock: asyncio.Lock | None = None
        self._channels: dict[str, AbstractChannel] = {}
        self._restorers: list[Restorer] = []
        self._next = 0  # failover: index of the endpoint to try first
        self._connected_once = False
        self._reconnecting: asyncio.Task[None] | None = None

    def on_connect(self, restorer: Restorer) -> None:
        """Run *restorer* after every new connection (before anyone else uses it)."""
        self._restorers.append(restorer)

    @property
    def is_open(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.is_closed

    @property
    def endpoint(self) -> str:
        return str(self.params.endpoints[self._next % len(self.params.endpoints)])

    async def connection(self, budget: float | None = None) -> AbstractConnection:
        """The open connection, connecting (with failover and retries within *budget*) if needed."""
        conn = self._conn
        if conn is not None and not conn.is_closed:
            return conn
        if self.closed:
            raise TransportError("the AMQP connection was closed by its owner")
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            conn = self._conn
            if conn is not None and not conn.is_closed:
                return conn
            conn = await self._connect(self.params.retry_budget if budget is None else budget)
            self._conn = conn
            self.generation += 1
            self._channels.clear()
            self._connected_once = True
            conn.closing.add_done_callback(functools.partial(self._on_closed, conn))
            for restore in self._restorers:
                try:
                    await restore(conn)
                except Exception:  # the next failure or call will retry
                    logger.warning("restoring AMQP state after connecting failed", exc_info=True)
            return conn

    async def _connect(self, budget: float) -> AbstractConnection:
        p = self.params
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        startup = not self._connected_once
        retries = p.retry_on_startup if startup else p.retry
        delay, attempts, last = 0.05, 0, None
        while True:
            endpoint = p.endpoints[self._next % len(p.endpoints)]
            attempts += 1
            conn = aiormq.Connection(
                endpoint.aiormq_url(p.heartbeat, self.name),
                context=p.ssl_context if endpoint.tls else None,
            )
            try:
                await asyncio.wait_for(conn.connect(), p.connect_timeout)
                if attempts > 1 or startup is False:
                    logger.info("connected to %s", endpoint)
                return conn
            except amqp_errors.ProbableAuthenticationError as exc:
                await _close_quietly(conn)
                raise TransportError(f"RabbitMQ at {endpoint} refused the login: {exc}") from exc
            except _CONNECT_ERRORS as exc:
                await _close_quietly(conn)
                last = exc
                self._next += 1  # fail over to the next URL
            if not retries and attempts >= len(p.endpoints):
                break
            if p.max_retries is not None and attempts > p.max_retries:
                break
            left = deadline - loop.time()
            if left <= 0:
                break
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 1.0)
        raise TransportError(
            f"RabbitMQ at {endpoint} unreachable after {attempts} attempt(s): "
            f"{type(last).__name__}: {last}"
        ) from last

    def _on_closed(self, conn: AbstractConnection, _: asyncio.Future[Any]) -> None:
        self._lost(conn)

    def _lost(self, conn: AbstractConnection) -> None:
        if self.closed or conn is not self._conn:
            return
        logger.warning("lost the connection to %s; reconnecting", self.endpoint)
        self._channels.clear()
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """Reconnect in the background so consumers and subscriptions resume on their own."""
        delay, tries = RECONNECT_FIRST, 0
        while not self.closed and not self.is_open:
            tries += 1
            try:
                await self.connection(budget=0)
                return
            except TransportError as exc:
                limit = self.params.max_retries
                if not self.params.retry or (limit is not None and tries >= limit):
                    logger.error("giving up reconnecting to %s: %s", self.endpoint, exc)
                    return
                logger.warning(
                    "reconnect to %s failed (%s); next try in %.1fs", self.endpoint, exc, delay
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def channel(
        self, role: str, *, confirms: bool = False, budget: float | None = None
    ) -> AbstractChannel:
        """The open channel called *role*, reopened (and the connection too) when needed."""
        ch = self._channels.get(role)
        if ch is not None and not ch.is_closed and self.is_open:
            return ch
        conn = await self.connection(budget)
        ch = await conn.channel(publisher_confirms=confirms, on_return_raises=False)
        self._channels[role] = ch
        return ch

    def drop_channel(self, role: str) -> None:
        """Forget *role*'s channel (after a channel error closed it)."""
        ch = self._channels.pop(role, None)
        if ch is not None and not ch.is_closed:
            asyncio.get_running_loop().create_task(_close_quietly(ch))

    async def close(self) -> None:
        self.closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        conn, self._conn = self._conn, None
        self._channels.clear()
        if conn is not None:
            await _close_quietly(conn)


async def _close_quietly(obj: AbstractConnection | AbstractChannel) -> None:
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(obj.close(), 5)


def is_connection_error(exc: BaseException) -> bool:
    """True when *exc* means the connection (not a single channel) failed."""
    if isinstance(exc, amqp_errors.ChannelClosed | amqp_errors.DeliveryError):
        return False
    return isinstance(exc, CONNECTION_ERRORS)


def channel_error_text(exc: BaseException) -> str:
    """The broker's reply text for a channel error (``PRECONDITION_FAILED - ...``)."""
    args = getattr(exc, "args", ())
    for arg in args:
        if isinstance(arg, str) and arg:
            return arg
    return f"{type(exc).__name__}: {exc}"
