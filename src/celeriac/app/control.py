"""Remote control and inspection of workers: Celery's ``app.control`` and ``app.control.inspect()``.

The wire format is kombu's "pidbox" (``PROTOCOL.md`` §6), so these work against Celery workers, and
Celery's ``celery inspect``/``celery control`` (and Flower) work against celeriac workers:

* a request is broadcast on the fanout exchange ``celery.pidbox`` with the body ``{method,
  arguments, destination, pattern, matcher}`` (plus ``ticket`` and ``reply_to`` when replies are
  wanted) and the headers ``{clock, expires}``;
* each worker answers ``{<nodename>: <result>}`` through the direct exchange ``reply.celery.pidbox``
  with the routing key ``<oid>``, which lands in the client's queue ``<oid>.reply.celery.pidbox``;
* the client keeps replies carrying its ``ticket`` until the timeout or ``limit`` replies.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celeriac.events.dispatcher import LamportClock
from celeriac.protocol import serialization
from celeriac.protocol.entities import Exchange, Queue
from celeriac.protocol.message import Message

if TYPE_CHECKING:
    from celeriac.app.base import Celery

logger = logging.getLogger("celeriac.app.control")

#: kombu's reply queue expiry (``x-expires``), seconds.
REPLY_QUEUE_EXPIRES = 10.0
#: Matchers accepted with ``pattern=`` (kombu's names).
MATCHERS = ("glob", "pcre")

Reply = dict[str, Any]
Callback = Callable[[Reply], Any]


def flatten_reply(replies: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge ``[{node: value}, ...]`` into ``{node: value}`` (a node answering twice: last wins)."""
    merged: dict[str, Any] = {}
    for reply in replies:
        for node, value in reply.items():
            if node in merged:
                logger.warning("duplicate node name in replies: %s", node)
            merged[node] = value
    return merged


def _as_list(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return list(value)


class Mailbox:
    """The names and queue flags of one pidbox (``<control_exchange>.pidbox``)."""

    def __init__(self, namespace: str = "celery") -> None:
        self.namespace = namespace
        self.exchange = f"{namespace}.pidbox"
        self.reply_exchange = f"reply.{namespace}.pidbox"

    def node_queue(self, hostname: str) -> Queue:
        """A worker's own queue, bound to the fanout exchange (kombu declares it on Redis/AMQP)."""
        return Queue(
            f"{hostname}.{self.exchange}",
            Exchange(self.exchange, "fanout", durable=False),
            routing_key="",
            durable=False,
            auto_delete=True,
            expires=10.0,
            message_ttl=300.0,
        )

    def reply_queue(self, oid: str) -> Queue:
        """The client's queue ``<oid>.reply.<namespace>.pidbox`` (auto-delete, 10 s expiry)."""
        return Queue(
            f"{oid}.{self.reply_exchange}",
            Exchange(self.reply_exchange, "direct", durable=False),
            routing_key=oid,
            durable=False,
            auto_delete=True,
            expires=REPLY_QUEUE_EXPIRES,
        )


class Control:
    """Send remote control commands to workers (``app.control``)."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.clock = LamportClock()

    @property
    def mailbox(self) -> Mailbox:
        """The pidbox names for the app's ``control_exchange`` setting."""
        return Mailbox(str(self.app.conf.control_exchange or "celery"))

    # -- the generic broadcast -----------------------------------------------------------------
    def broadcast(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        destination: str | Sequence[str] | None = None,
        connection: Any = None,
        reply: bool = False,
        timeout: float | None = 1.0,
        limit: int | None = None,
        callback: Callback | None = None,
        channel: Any = None,
        pattern: str | None = None,
        matcher: str | None = None,
        **extra_kwargs: Any,
    ) -> list[Reply] | None:
        """Send *command* to the workers; with *reply*, return ``[{node: result}, ...]``.

        *destination* limits the command to those node names; *pattern* with *matcher*
        (``"glob"`` or ``"pcre"``) selects nodes by name instead. Replies are collected for
        *timeout* seconds, or until *limit* arrived (by default as many as destinations).
        """
        if matcher is not None and matcher not in MATCHERS:
            raise ValueError(f"matcher {matcher!r} is not one of {MATCHERS}")
        timeout = 1.0 if timeout is None else float(timeout)
        dest = _as_list(destination)
        if dest is not None and limit is None:
            limit = len(dest)
        body: dict[str, Any] = {
            "method": command,
            "arguments": dict(arguments or {}),
            "destination": dest,
            "pattern": pattern,
            "matcher": matcher,
        }
        transport = self.app.transport
        mailbox = self.mailbox
        if not reply:
            transport.broadcast(mailbox.exchange, "", self._request(body, timeout))
            return None
        oid = self.app.oid
        queue = mailbox.reply_queue(oid)
        self._declare(queue)
        ticket = str(uuid.uuid4())
        body["ticket"] = ticket
        body["reply_to"] = {"exchange": mailbox.reply_exchange, "routing_key": oid}
        transport.broadcast(mailbox.exchange, "", self._request(body, timeout))
        try:
            return self._collect(queue.name, ticket, timeout, limit, callback)
        finally:
            # Late answers would only be discarded by the next request (the oid is per thread).
            transport.purge(queue.name)

    def _declare(self, queue: Queue) -> None:
        # Declared on every request, as kombu does: on Redis this also pushes the binding's
        # deadline forward, so kombu's sweep of expired bindings never removes a live one.
        self.app.transport.declare(queue)

    def _request(self, body: Mapping[str, Any], timeout: float) -> Message:
        content_type, encoding, data = serialization.dumps(dict(body), "json")
        return Message(
            data,
            headers={"clock": self.clock.forward(), "expires": time.time() + timeout},
            properties={"delivery_mode": 2, "priority": 0},
            content_type=content_type,
            content_encoding=encoding,
        )

    def _collect(
        self,
        queue: str,
        ticket: str,
        timeout: float,
        limit: int | None,
        callback: Callback | None,
    ) -> list[Reply]:
        transport = self.app.transport
        deadline = time.monotonic() + timeout
        replies: list[Reply] = []
        while limit is None or len(replies) < limit:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            deliveries = transport.fetch([queue], 100, left)
            if deliveries:
                transport.ack(deliveries)
            for delivery in deliveries:
                body = self._reply_body(delivery.message, ticket)
                if body is None:
                    continue
                replies.append(body)
                if callback is not None:
                    callback(body)
        return replies

    def _reply_body(self, message: Message, ticket: str) -> Reply | None:
        if message.headers.get("ticket") != ticket:
            return None  # a late answer to an earlier request
        clock = message.headers.get("clock")
        if isinstance(clock, int):
            self.clock.adjust(clock)
        try:
            body = serialization.loads(
                message.body,
                message.content_type,
                message.content_encoding,
                accept={"application/json", "application/x-msgpack"},
            )
        except Exception as exc:
            logger.warning("undecodable control reply ignored: %r", exc)
            return None
        return body if isinstance(body, dict) else None

    # -- inspect -------------------------------------------------------------------------------
    def inspect(
        self,
        destination: str | Sequence[str] | None = None,
        timeout: float = 1.0,
        callback: Callback | None = None,
        connection: Any = None,
        app: Any = None,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> Inspect:
        """An :class:`Inspect` for these workers."""
        return Inspect(
            self,
            destination=destination,
            timeout=timeout,
            callback=callback,
            limit=limit,
            pattern=pattern,
            matcher=matcher,
        )

    def ping(
        self, destination: str | Sequence[str] | None = None, timeout: float = 1.0, **kwargs: Any
    ) -> list[Reply] | None:
        """``[{node: {"ok": "pong"}}, ...]`` from every worker that answered."""
        return self.broadcast(
            "ping", reply=True, destination=destination, timeout=timeout, **kwargs
        )

    # -- tasks ---------------------------------------------------------------------------------
    def revoke(
        self,
        task_id: str | Sequence[str],
        destination: str | Sequence[str] | None = None,
        terminate: bool = False,
        signal: str | None = "SIGTERM",
        **kwargs: Any,
    ) -> list[Reply] | None:
        """Tell workers not to run these tasks; with *terminate*, also stop them if running."""
        ids = task_id if isinstance(task_id, str) else list(task_id)
        return self.broadcast(
            "revoke",
            destination=destination,
            arguments={"task_id": ids, "terminate": terminate, "signal": signal or "SIGTERM"},
            **kwargs,
        )

    def terminate(
        self,
        task_id: str | Sequence[str],
        destination: str | Sequence[str] | None = None,
        signal: str = "SIGTERM",
        **kwargs: Any,
    ) -> list[Reply] | None:
        """Revoke and stop running tasks."""
        return self.revoke(
            task_id, destination=destination, terminate=True, signal=signal, **kwargs
        )

    def revoke_by_stamped_headers(
        self,
        headers: Mapping[str, Any] | Sequence[str],
        destination: str | Sequence[str] | None = None,
        terminate: bool = False,
        signal: str | None = "SIGTERM",
        **kwargs: Any,
    ) -> list[Reply] | None:
        """Revoke every task stamped with one of these values (``{"stamp": ["v1", "v2"]}``)."""
        value: Any = dict(headers) if isinstance(headers, Mapping) else list(headers)
        return self.broadcast(
            "revoke_by_stamped_headers",
            destination=destination,
            arguments={"headers": value, "terminate": terminate, "signal": signal or "SIGTERM"},
            **kwargs,
        )

    def rate_limit(
        self,
        task_name: str,
        rate_limit: str | float | None,
        destination: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> list[Reply] | None:
        """Set a task's rate limit (``"10/s"``, ``"100/m"``; 0 or None removes it) on workers."""
        return self.broadcast(
            "rate_limit",
            destination=destination,
            arguments={"task_name": task_name, "rate_limit": rate_limit},
            **kwargs,
        )

    def time_limit(
        self,
        task_name: str,
        soft: float | None = None,
        hard: float | None = None,
        destination: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> list[Reply] | None:
        """Set a task's soft and hard time limits (seconds) on workers."""
        return self.broadcast(
            "time_limit",
            destination=destination,
            arguments={"task_name": task_name, "soft": soft, "hard": hard},
            **kwargs,
        )

    # -- consumers, pool, events ---------------------------------------------------------------
    def add_consumer(
        self,
        queue: str,
        exchange: str | None = None,
        exchange_type: str = "direct",
        routing_key: str | None = None,
        options: Mapping[str, Any] | None = None,
        destination: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> list[Reply] | None:
        """Tell workers to also consume from *queue* (declared if needed)."""
        arguments = {
            "queue": queue,
            "exchange": exchange,
            "exchange_type": exchange_type,
            "routing_key": routing_key,
            **dict(options or {}),
        }
        return self.broadcast(
            "add_consumer", destination=destination, arguments=arguments, **kwargs
        )

    def cancel_consumer(
        self, queue: str, destination: str | Sequence[str] | None = None, **kwargs: Any
    ) -> list[Reply] | None:
        """Tell workers to stop consuming from *queue*."""
        return self.broadcast(
            "cancel_consumer", destination=destination, arguments={"queue": queue}, **kwargs
        )

    def enable_events(
        self, destination: str | Sequence[str] | None = None, **kwargs: Any
    ) -> list[Reply] | None:
        """Tell workers to send task events (as ``-E``)."""
        return self.broadcast("enable_events", destination=destination, **kwargs)

    def disable_events(
        self, destination: str | Sequence[str] | None = None, **kwargs: Any
    ) -> list[Reply] | None:
        """Tell workers to stop sending task events."""
        return self.broadcast("disable_events", destination=destination, **kwargs)

    def heartbeat(
        self, destination: str | Sequence[str] | None = None, **kwargs: Any
    ) -> list[Reply] | None:
        """Tell workers to send a heartbeat event now."""
        return self.broadcast("heartbeat", destination=destination, **kwargs)

    def pool_grow(
        self, n: int = 1, destination: str | Sequence[str] | None = None, **kwargs: Any
    ) -> list[Reply] | None:
        """Add *n* processes/threads to the workers' pools."""
        return self.broadcast("pool_grow", destination=destination, arguments={"n": n}, **kwargs)

    def pool_shrink(
        self, n: int = 1, destination: str | Sequence[str] | None = None, **kwargs: Any
    ) -> list[Reply] | None:
        """Remove *n* processes/threads from the workers' pools."""
        return self.broadcast("pool_shrink", destination=destination, arguments={"n": n}, **kwargs)

    def autoscale(
        self, max: int, min: int, destination: str | Sequence[str] | None = None, **kwargs: Any
    ) -> list[Reply] | None:
        """Change the autoscale bounds of workers started with ``--autoscale``."""
        return self.broadcast(
            "autoscale", destination=destination, arguments={"max": max, "min": min}, **kwargs
        )

    def shutdown(
        self, destination: str | Sequence[str] | None = None, **kwargs: Any
    ) -> list[Reply] | None:
        """Warm-shut down workers (they do not reply)."""
        return self.broadcast("shutdown", destination=destination, **kwargs)

    def election(
        self, id: str, topic: str, action: str | None = None, connection: Any = None
    ) -> None:
        """Accepted for Celery compatibility: sends the ``election`` command."""
        self.broadcast("election", arguments={"id": id, "topic": topic, "action": action})

    # -- queues --------------------------------------------------------------------------------
    def purge(self, connection: Any = None) -> int:
        """Delete every waiting message from the app's queues; return how many."""
        transport = self.app.transport
        return sum(transport.purge(name) for name in self.app.queues())

    discard_all = purge


class Inspect:
    """Ask workers about their state (``app.control.inspect()``); each method returns
    ``{node: reply}`` merged over the workers that answered, or None when none did."""

    def __init__(
        self,
        control: Control,
        destination: str | Sequence[str] | None = None,
        timeout: float = 1.0,
        callback: Callback | None = None,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> None:
        self.control = control
        self.app = control.app
        self.destination = destination
        self.timeout = timeout
        self.callback = callback
        self.limit = limit
        self.pattern = pattern
        self.matcher = matcher

    def _prepare(self, replies: list[Reply] | None) -> Any:
        if not replies:
            return None
        by_node = flatten_reply(replies)
        if isinstance(self.destination, str):
            return by_node.get(self.destination)
        return by_node

    def _request(self, command: str, **kwargs: Any) -> Any:
        return self._prepare(
            self.control.broadcast(
                command,
                arguments=kwargs,
                destination=self.destination,
                callback=self.callback,
                limit=self.limit,
                timeout=self.timeout,
                reply=True,
                pattern=self.pattern,
                matcher=self.matcher,
            )
        )

    def ping(self, destination: str | Sequence[str] | None = None) -> Any:
        """``{node: {"ok": "pong"}}``."""
        return self._request("ping")

    def clock(self) -> Any:
        """``{node: {"clock": <int>}}``."""
        return self._request("clock")

    def active(self, safe: bool | None = None) -> Any:
        """Tasks running now: ``{node: [request info, ...]}``."""
        return self._request("active", safe=safe)

    def reserved(self, safe: bool | None = None) -> Any:
        """Tasks received and waiting for a pool slot (not ETA ones)."""
        return self._request("reserved", safe=safe)

    def scheduled(self, safe: bool | None = None) -> Any:
        """ETA/countdown tasks held: ``{node: [{"eta", "priority", "request"}, ...]}``."""
        return self._request("scheduled", safe=safe)

    def revoked(self) -> Any:
        """Revoked task ids each worker remembers."""
        return self._request("revoked")

    def registered(self, *taskinfoitems: str) -> Any:
        """Registered task names, with the given task attributes (``"rate_limit"``, ...)."""
        return self._request("registered", taskinfoitems=list(taskinfoitems))

    registered_tasks = registered

    def stats(self) -> Any:
        """Counters, pool, broker and resource usage of each worker."""
        return self._request("stats")

    def active_queues(self) -> Any:
        """Queues each worker consumes from (kombu's queue dicts)."""
        return self._request("active_queues")

    def query_task(self, *ids: str) -> Any:
        """``{node: {task_id: [state, request info]}}`` for the tasks a worker holds."""
        flat: list[str] = []
        for item in ids:
            flat.extend([item] if isinstance(item, str) else list(item))
        return self._request("query_task", ids=flat)

    def conf(self, with_defaults: bool = False) -> Any:
        """Each worker's configuration (only changed settings unless *with_defaults*)."""
        return self._request("conf", with_defaults=with_defaults)

    def report(self) -> Any:
        """``{node: {"ok": <bug report text>}}``."""
        return self._request("report")

    def hello(self, from_node: str, revoked: Sequence[str] | None = None) -> Any:
        """The start-up exchange of revoked ids and clocks between workers (mingle)."""
        return self._request("hello", from_node=from_node, revoked=list(revoked or []))

    def memsample(self) -> Any:
        """Each worker's resident memory now."""
        return self._request("memsample")

    def memdump(self, samples: int = 10) -> Any:
        """Each worker's recent memory samples."""
        return self._request("memdump", samples=samples)

    def objgraph(self, type: str = "Request", n: int = 200, max_depth: int = 10) -> Any:
        """Accepted for Celery compatibility (celeriac workers answer with an error)."""
        return self._request("objgraph", num=n, max_depth=max_depth, type=type)
