"""Receiving Celery's monitoring events, and the app's ``app.events`` helpers.

A receiver subscribes to the ``celeryev`` exchange (on Redis: PSUBSCRIBE ``/{db}.celeryev/*``)
and hands each event dict to a handler chosen by its ``type`` (``"*"`` catches all). Worker task
events arrive in ``task.multi`` batches whose body is a list; single events have a dict body.
Both are accepted, from celeriac and from Celery processes alike.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from celeriac.events.dispatcher import EXCHANGE, EventDispatcher, LamportClock
from celeriac.protocol import serialization
from celeriac.protocol.message import Message
from celeriac.transports.base import Subscription, Transport

if TYPE_CHECKING:
    from celeriac.app.base import Celery

logger = logging.getLogger("celeriac.events")

Event = dict[str, Any]
Handler = Callable[[Event], Any]
#: Content types an event may have (Celery's ``event_serializer`` choices that are safe).
EVENT_ACCEPT = frozenset({"application/json", "application/x-msgpack", "application/x-yaml"})


def events_from_message(message: Message) -> list[Event]:
    """The event dicts one broker message carries (a dict body, or a ``task.multi`` list)."""
    try:
        body = serialization.loads(
            message.body, message.content_type, message.content_encoding, accept=EVENT_ACCEPT
        )
    except Exception as exc:
        logger.debug("undecodable event ignored: %r", exc)
        return []
    items = body if isinstance(body, list) else [body]
    return [dict(item) for item in items if isinstance(item, dict) and "type" in item]


class EventReceiver:
    """Capture events and call ``handlers[event["type"]]`` (or ``handlers["*"]``) for each.

    ``EventReceiver(app, handlers={"*": state.event}).capture(limit=None, timeout=None)`` runs
    until stopped, as Celery's ``app.events.Receiver(conn, handlers=...)`` does.
    """

    def __init__(
        self,
        app_or_transport: Celery | Transport | None = None,
        handlers: Mapping[str, Handler] | None = None,
        routing_key: str = "#",
        node_id: str | None = None,
        app: Celery | None = None,
        queue_prefix: str | None = None,
        accept: Any = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(app_or_transport, Transport):
            self.transport = app_or_transport
            exchange = EXCHANGE
        else:
            owner = app_or_transport if app_or_transport is not None else app
            if owner is None:
                raise ValueError("EventReceiver needs an app or a transport, got neither")
            self.transport = owner.transport
            exchange = str(owner.conf.event_exchange or EXCHANGE)
        self.exchange = exchange
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.routing_key = routing_key
        self.node_id = node_id
        self.clock = LamportClock()
        self.should_stop = False
        self._subscription: Subscription | None = None

    def _subscribe(self) -> Subscription:
        if self._subscription is None:
            self._subscription = self.transport.subscribe(self.exchange, (self.routing_key,))
        return self._subscription

    def __enter__(self) -> EventReceiver:
        self._subscribe()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop receiving."""
        sub, self._subscription = self._subscription, None
        if sub is not None:
            sub.close()

    def events(self, timeout: float = 1.0) -> list[Event]:
        """Events received within *timeout* seconds (maybe none), each with ``local_received``."""
        out: list[Event] = []
        for _, message in self._subscribe().get(timeout):
            for event in events_from_message(message):
                clock = event.get("clock")
                if isinstance(clock, int):
                    self.clock.adjust(clock)
                event.setdefault("local_received", time.time())
                out.append(event)
        return out

    def process(self, type_: str, event: Event) -> None:
        """Call the handler for *type_* (or the ``"*"`` handler)."""
        handler = self.handlers.get(type_) or self.handlers.get("*")
        if handler is not None:
            handler(event)

    def itercapture(
        self, limit: int | None = None, timeout: float | None = None, wakeup: bool = True
    ) -> Iterator[Event]:
        """Yield events until *limit* were seen, *timeout* seconds passed, or ``should_stop``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = 0
        self._subscribe()
        while not self.should_stop:
            wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if wait <= 0:
                return
            for event in self.events(wait):
                yield event
                seen += 1
                if limit is not None and seen >= limit:
                    return

    def capture(
        self, limit: int | None = None, timeout: float | None = None, wakeup: bool = True
    ) -> None:
        """Process events until *limit*, *timeout* or ``should_stop`` (see :meth:`itercapture`)."""
        for event in self.itercapture(limit, timeout, wakeup):
            self.process(event["type"], event)


class AppEvents:
    """``app.events``: make a :class:`Receiver`, a :class:`Dispatcher` or a ``State``."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._dispatcher: EventDispatcher | None = None

    def Receiver(
        self,
        channel: Any = None,
        handlers: Mapping[str, Handler] | None = None,
        routing_key: str = "#",
        node_id: str | None = None,
        **kwargs: Any,
    ) -> EventReceiver:
        """An :class:`EventReceiver` on the app's broker (*channel* is accepted, unused)."""
        return EventReceiver(self.app, handlers=handlers, routing_key=routing_key, node_id=node_id)

    def Dispatcher(
        self,
        connection: Any = None,
        hostname: str | None = None,
        enabled: bool = True,
        **kwargs: Any,
    ) -> EventDispatcher:
        """An :class:`EventDispatcher` sending through the app's broker."""
        from celeriac.protocol.task import anon_nodename

        return EventDispatcher(
            self.app.transport.broadcast,
            hostname or anon_nodename(),
            enabled=enabled,
            serializer=str(self.app.conf.event_serializer or "json"),
        )

    def State(self, **kwargs: Any) -> Any:
        """A fresh in-memory cluster state (``celeriac.events.state.State``)."""
        from celeriac.events.state import State

        return State(**kwargs)

    def task_sent(self, message: Message, exchange: str, routing_key: str, queue: Any) -> None:
        """Send ``task-sent`` for a published task message when ``task_send_sent_event`` is on."""
        if not self.app.conf.task_send_sent_event:
            return
        dispatcher = self._dispatcher
        if dispatcher is None or dispatcher.pid != os.getpid():  # new after a fork
            dispatcher = self._dispatcher = EventDispatcher(
                self._broadcast,
                _origin_of(message),
                serializer=str(self.app.conf.event_serializer or "json"),
            )
        h = message.headers
        dispatcher.send(
            "task-sent",
            uuid=h.get("id"),
            root_id=h.get("root_id"),
            parent_id=h.get("parent_id"),
            name=h.get("task"),
            args=h.get("argsrepr"),
            kwargs=h.get("kwargsrepr"),
            retries=h.get("retries", 0),
            eta=h.get("eta"),
            expires=h.get("expires"),
            queue=getattr(queue, "name", queue),
            exchange=exchange,
            routing_key=routing_key,
        )

    def _broadcast(self, exchange: str, routing_key: str, message: Message) -> None:
        try:
            self.app.transport.broadcast(exchange, routing_key, message)
        except Exception as exc:  # a monitoring event must never fail the publish
            logger.debug("task-sent event not sent: %r", exc)


def _origin_of(message: Message) -> str:
    from celeriac.protocol.task import anon_nodename

    origin = message.headers.get("origin")
    return origin if isinstance(origin, str) and origin else anon_nodename()
