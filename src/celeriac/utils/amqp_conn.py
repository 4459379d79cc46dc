"""One AMQP 0-9-1 connection, driven by aiormq on a private event loop thread.

The broker transport and the ``rpc://`` result store are synchronous and thread-safe; both keep an
:class:`AMQPLink`, whose asyncio client runs on a :class:`LoopThread` that the link owns. Callers
submit coroutines to that loop (:meth:`LoopThread.call`) and wait for their result, so the protocol
logic exists once, in asyncio.

The link connects on first use (trying each URL of a ``;``-separated failover list in turn),
reconnects in the background with backoff when the connection drops, and then runs the
restore hooks its owner registered (re-declare, re-consume, re-subscribe).

:class:`ConsumeConnection` is a second, minimal AMQP client used only to consume: it parses
frames itself as they arrive (no task, queue or lock per frame), which is most of the cost of a
delivery through aiormq.
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
import struct
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

import aiormq
import aiormq.exceptions as amqp_errors
import pamqp.frame
from aiormq.abc import AbstractChannel, AbstractConnection
from aiormq.channel import exception_by_code as channel_exception_by_code
from aiormq.connection import exception_by_code as connection_exception_by_code
from pamqp import commands as spec

from celeriac.exceptions import ImproperlyConfigured, TransportError
from celeriac.protocol.message import Message
from celeriac.utils.amqp_wire import (
    decode_content_header,
    decode_deliver,
    reject_frame,
)

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
    def current(self) -> Endpoint:
        """The address connected to (or to be tried next)."""
        return self.params.endpoints[self._next % len(self.params.endpoints)]

    @property
    def endpoint(self) -> str:
        return str(self.current)

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


# -- a lean connection for consuming -------------------------------------------------------------
#: AMQP frame types (heartbeats need no handling) and the end-of-frame octet.
_METHOD, _HEADER, _BODY = 1, 2, 3
_FRAME_END = 0xCE
_FRAME_HEAD = struct.Struct(">BHI")
_METHOD_ID = struct.Struct(">I")
_DELIVER_ID = 0x003C003C  # basic.deliver (class 60, method 60)
_HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"
#: aiormq's default when the URL sets no heartbeat.
DEFAULT_HEARTBEAT = 60

#: ``on_delivery(channel, consumer_tag, delivery_tag, redelivered, exchange, routing_key, message)``
DeliveryHandler = Callable[["ConsumeChannel", str, int, bool, str, str, Message], None]


class ConsumeChannel:
    """One channel of a :class:`ConsumeConnection`: qos, consume, cancel, ack, reject.

    ``send_frames`` (acks, rejects) and ``basic_reject`` may be called from any thread: frames
    are queued in call order and written by the loop. The rest runs on the connection's loop.
    """

    def __init__(self, conn: ConsumeConnection, number: int) -> None:
        self.conn = conn
        self.number = number
        self.closed_by: BaseException | None = None
        self._rpcs: deque[asyncio.Future[Any]] = deque()
        self._handlers: dict[str, DeliveryHandler] = {}
        self._deliver: tuple[str, int, bool, str, str] | None = None
        self._message: Message | None = None
        self._size = 0
        self._body: list[bytes] = []
        self._got = 0

    @property
    def is_closed(self) -> bool:
        return self.closed_by is not None or self.conn.is_closed

    async def _rpc(self, method: Any) -> Any:
        if self.is_closed:
            raise self.closed_by or self.conn.closed_error()
        future = self.conn.loop.create_future()
        self._rpcs.append(future)
        self.conn.send_method(self.number, method)
        return await future

    async def basic_qos(self, prefetch_count: int, global_: bool = False) -> None:
        await self._rpc(spec.Basic.Qos(prefetch_count=prefetch_count, global_=global_))

    async def basic_consume(self, queue: str, handler: DeliveryHandler, consumer_tag: str) -> None:
        self._handlers[consumer_tag] = handler
        try:
            await self._rpc(spec.Basic.Consume(queue=queue, consumer_tag=consumer_tag))
        except BaseException:
            self._handlers.pop(consumer_tag, None)
            raise

    async def basic_cancel(self, consumer_tag: str) -> None:
        """Stop a consumer; deliveries sent before the broker's reply were handled by then."""
        try:
            await self._rpc(spec.Basic.Cancel(consumer_tag=consumer_tag))
        finally:
            self._handlers.pop(consumer_tag, None)

    def basic_reject(self, tag: int, requeue: bool) -> None:
        self.conn.write_threadsafe(reject_frame(self.number, tag, requeue))

    def send_frames(self, frames: bytes) -> None:
        """Queue ready-made frames (acks, rejects) for this channel; any thread."""
        self.conn.write_threadsafe(frames)

    async def close(self) -> None:
        if self.is_closed:
            return
        try:
            await asyncio.wait_for(
                self._rpc(
                    spec.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0)
                ),
                5,
            )
        except Exception:  # closing anyway
            logger.debug("closing AMQP channel %d failed", self.number, exc_info=True)
        self._closed(amqp_errors.ChannelInvalidStateError(f"channel {self.number} closed"))

    def _closed(self, exc: BaseException) -> None:
        if self.closed_by is None:
            self.closed_by = exc
        while self._rpcs:
            future = self._rpcs.popleft()
            if not future.done():
                future.set_exception(exc)
        self.conn.channels.pop(self.number, None)

    # -- frames from the broker ----------------------------------------------------------------
    def _on_method(self, index: int, payload: bytes) -> None:
        if index == _DELIVER_ID:
            self._deliver = decode_deliver(payload)
            return
        method = spec.INDEX_MAPPING[index]()  # type: ignore[attr-defined]
        method.unmarshal(payload[4:])
        if isinstance(method, spec.Channel.Close):
            self.conn.send_method(self.number, spec.Channel.CloseOk())
            logger.warning(
                "RabbitMQ closed consume channel %d: %s %s; its deliveries go back to the queue",
                self.number,
                method.reply_code,
                method.reply_text,
            )
            self._closed(channel_exception_by_code(method))
        elif isinstance(method, spec.Basic.Cancel):  # the broker cancelled (queue deleted)
            tag = str(method.consumer_tag or "")
            if self._handlers.pop(tag, None) is not None:
                self.conn.cancelled(self, tag)
        elif self._rpcs:
            future = self._rpcs.popleft()
            if not future.done():
                future.set_result(method)
        else:
            logger.debug("unexpected %r on AMQP channel %d", method, self.number)

    def _on_header(self, payload: bytes) -> None:
        self._size, self._message = decode_content_header(payload)
        self._body = []
        self._got = 0
        if self._size == 0:
            self._complete()

    def _on_body(self, payload: bytes) -> None:
        self._body.append(payload)
        self._got += len(payload)
        if self._got >= self._size:
            self._complete()

    def _complete(self) -> None:
        deliver, message = self._deliver, self._message
        self._deliver = self._message = None
        if deliver is None or message is None:
            return
        body = self._body
        message.body = body[0] if len(body) == 1 else b"".join(body)
        self._body = []
        handler = self._handlers.get(deliver[0])
        if handler is None:
            # A consumer already cancelled: the delivery goes back.
            self.basic_reject(deliver[1], requeue=True)
            return
        handler(self, *deliver, message)


class ConsumeConnection(asyncio.Protocol):
    """A minimal AMQP 0-9-1 client connection for consuming, as an asyncio protocol.

    It does only what a consumer needs (open channels, qos, consume, cancel, ack, reject) and
    decodes deliveries straight from the received bytes into :class:`Message` values, with no
    task or queue per frame. Publishing and everything else stay on the aiormq connection.
    Leases held on it last while it is open: RabbitMQ returns unacknowledged deliveries when it
    closes.
    """

    def __init__(self, endpoint: Endpoint, params: AMQPParams, name: str) -> None:
        self.endpoint = endpoint
        self.params = params
        self.name = name
        self.loop = asyncio.get_running_loop()
        self.channels: dict[int, ConsumeChannel] = {}
        self.closed_by: BaseException | None = None
        self.on_lost: Callable[[ConsumeConnection], None] | None = None
        self.on_cancel: Callable[[ConsumeChannel, str], None] | None = None
        #: Called (on the loop) after each read whose frames included a delivery.
        self.on_deliveries: Callable[[], None] | None = None
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._opening: asyncio.Future[Any] | None = None
        self._closing: asyncio.Future[None] | None = None
        self._frame_max = 131072
        self._channel_max = 2047
        self._next_channel = 1
        self._pending: list[bytes] = []
        self._pending_lock = threading.Lock()
        self._flush_scheduled = False
        self._delivered = False
        self._heartbeat: asyncio.TimerHandle | None = None
        self._heartbeat_interval = 0
        self._last_read = 0.0

    @classmethod
    async def open(cls, endpoint: Endpoint, params: AMQPParams, name: str) -> ConsumeConnection:
        """Connect and log in (within ``params.connect_timeout``)."""
        loop = asyncio.get_running_loop()
        conn = cls(endpoint, params, name)
        ssl_ctx = params.ssl_context if endpoint.tls else None

        async def run() -> None:
            await loop.create_connection(
                lambda: conn,
                endpoint.host,
                endpoint.port,
                ssl=ssl_ctx,
                server_hostname=endpoint.host if ssl_ctx is not None else None,
            )
            assert conn._opening is not None
            await conn._opening

        try:
            await asyncio.wait_for(run(), params.connect_timeout)
        except BaseException:
            conn.abort()
            raise
        return conn

    @property
    def is_closed(self) -> bool:
        return self.closed_by is not None

    def closed_error(self) -> BaseException:
        return self.closed_by or amqp_errors.AMQPConnectionError("the connection is closed")

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._opening = self.loop.create_future()
        self._last_read = self.loop.time()
        transport.write(b"AMQP\x00\x00\x09\x01")

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc or amqp_errors.AMQPConnectionError("connection closed by the broker"))

    def data_received(self, data: bytes) -> None:
        self._last_read = self.loop.time()
        buf = self._buf
        buf += data
        pos, size = 0, len(buf)
        try:
            while size - pos >= 8:
                kind, number, length = _FRAME_HEAD.unpack_from(buf, pos)
                end = pos + 7 + length
                if end >= size:
                    break
                if buf[end] != _FRAME_END:
                    raise amqp_errors.AMQPConnectionError(f"bad frame end octet {buf[end]:#x}")
                payload = bytes(buf[pos + 7 : end])
                pos = end + 1
                self._frame(kind, number, payload)
        except Exception as exc:
            logger.error("AMQP consume connection: %s; closing it", exc, exc_info=True)
            del buf[:pos]
            self.abort(exc)
            return
        finally:
            if self._delivered:
                self._delivered = False
                if self.on_deliveries is not None:
                    self.on_deliveries()
        del buf[:pos]

    def _frame(self, kind: int, number: int, payload: bytes) -> None:
        if number:
            ch = self.channels.get(number)
            if ch is None:
                return  # a closed channel's late frames
            if kind == _BODY:
                ch._on_body(payload)
                self._delivered = True
            elif kind == _HEADER:
                ch._on_header(payload)
                self._delivered = True
            elif kind == _METHOD:
                ch._on_method(_METHOD_ID.unpack_from(payload)[0], payload)
            return
        if kind == _METHOD:
            method = spec.INDEX_MAPPING[_METHOD_ID.unpack_from(payload)[0]]()  # type: ignore[attr-defined]
            method.unmarshal(payload[4:])
            self._on_connection_method(method)
        # heartbeats need nothing: any read counts as a sign of life

    def _on_connection_method(self, method: Any) -> None:
        if isinstance(method, spec.Connection.Start):
            self._start_ok(method)
        elif isinstance(method, spec.Connection.Tune):
            self._tune_ok(method)
        elif isinstance(method, spec.Connection.OpenOk):
            if self._heartbeat_interval > 0:
                self._heartbeat = self.loop.call_later(self._heartbeat_interval / 2, self._beat)
            if self._opening is not None and not self._opening.done():
                self._opening.set_result(None)
        elif isinstance(method, spec.Connection.Close):
            self.send_method(0, spec.Connection.CloseOk())
            if method.reply_code == 403 and self._opening is not None and not self._opening.done():
                exc: BaseException = amqp_errors.ProbableAuthenticationError(method.reply_text)
            else:
                exc = connection_exception_by_code(method)
            self.abort(exc)
        elif (
            isinstance(method, spec.Connection.CloseOk)
            and self._closing is not None
            and not self._closing.done()
        ):
            self._closing.set_result(None)
        # connection.blocked / unblocked: nothing is published here

    def _start_ok(self, method: spec.Connection.Start) -> None:
        mechanisms: Any = method.mechanisms
        if isinstance(mechanisms, bytes):
            mechanisms = mechanisms.decode("utf-8", "replace")
        if "PLAIN" not in str(mechanisms).split():
            raise amqp_errors.AuthenticationError(mechanisms, ["PLAIN"])
        e = self.endpoint
        self.send_method(
            0,
            spec.Connection.StartOk(
                client_properties={
                    "product": "celeriac",
                    "connection_name": self.name,
                    "capabilities": {
                        "authentication_failure_close": True,
                        "consumer_cancel_notify": True,
                        "connection.blocked": True,
                    },
                },
                mechanism="PLAIN",
                response=f"\0{e.user}\0{e.password}",
            ),
        )

    def _tune_ok(self, method: spec.Connection.Tune) -> None:
        p = self.params
        heartbeat = DEFAULT_HEARTBEAT if p.heartbeat is None else p.heartbeat
        self._frame_max = method.frame_max or self._frame_max
        self._channel_max = min(method.channel_max or 2047, 2047)
        self._heartbeat_interval = heartbeat
        self.send_method(
            0,
            spec.Connection.TuneOk(
                channel_max=self._channel_max, frame_max=self._frame_max, heartbeat=heartbeat
            ),
        )
        self.send_method(0, spec.Connection.Open(virtual_host=self.endpoint.vhost))

    def _beat(self) -> None:
        if self.is_closed or self._transport is None:
            return
        now = self.loop.time()
        if now - self._last_read > self._heartbeat_interval * 2 + 1:
            self.abort(amqp_errors.AMQPConnectionError("no heartbeat from the broker"))
            return
        self._transport.write(_HEARTBEAT_FRAME)
        self._heartbeat = self.loop.call_later(self._heartbeat_interval / 2, self._beat)

    # -- writing ---------------------------------------------------------------------------------
    def send_method(self, number: int, method: Any) -> None:
        """Write one method frame now (on the loop)."""
        if self._transport is None or self._transport.is_closing():
            raise self.closed_error()
        self._transport.write(pamqp.frame.marshal(method, number))

    def write_threadsafe(self, frames: bytes) -> None:
        """Queue *frames* to be written by the loop, after those queued before (any thread)."""
        with self._pending_lock:
            self._pending.append(frames)
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._flush)
        except RuntimeError:  # the loop is closed: so is the connection
            pass

    def _flush(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, []
            self._flush_scheduled = False
        if pending and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(pending))

    # -- channels and lifecycle ------------------------------------------------------------------
    async def channel(self) -> ConsumeChannel:
        if self.is_closed:
            raise self.closed_error()
        for _ in range(self._channel_max):
            number = self._next_channel
            self._next_channel = number % self._channel_max + 1
            if number not in self.channels:
                break
        else:
            raise amqp_errors.AMQPConnectionError("no free AMQP channel number")
        ch = self.channels[number] = ConsumeChannel(self, number)
        try:
            await ch._rpc(spec.Channel.Open())
        except BaseException:
            self.channels.pop(number, None)
            raise
        return ch

    def cancelled(self, ch: ConsumeChannel, consumer_tag: str) -> None:
        if self.on_cancel is not None:
            self.on_cancel(ch, consumer_tag)

    def _lost(self, exc: BaseException) -> None:
        if self.closed_by is not None:
            return
        self.closed_by = exc
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._opening is not None and not self._opening.done():
            self._opening.set_exception(exc)
        if self._closing is not None and not self._closing.done():
            self._closing.set_result(None)  # closed either way
        for ch in list(self.channels.values()):
            ch._closed(exc)
        if self.on_lost is not None:
            self.on_lost(self)

    def abort(self, exc: BaseException | None = None) -> None:
        """Drop the connection at once (RabbitMQ returns what it held)."""
        transport = self._transport
        self._lost(exc or amqp_errors.AMQPConnectionError("connection aborted"))
        if transport is not None:
            transport.abort()

    async def close(self) -> None:
        """Close politely: queued frames go out first, then connection.close."""
        if self.is_closed or self._transport is None:
            return
        self._flush()
        self._closing = self.loop.create_future()
        try:
            self.send_method(
                0, spec.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)
            )
            await asyncio.wait_for(asyncio.shield(self._closing), 5)
        except Exception:  # closing anyway
            logger.debug("closing the AMQP consume connection failed", exc_info=True)
        transport = self._transport
        self._lost(amqp_errors.AMQPConnectionError("the connection was closed by its owner"))
        transport.close()
