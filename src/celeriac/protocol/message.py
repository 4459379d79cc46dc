"""The broker message value type every layer passes around."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Message:
    """One broker message: AMQP-style headers and properties around a serialized body.

    ``properties`` holds the AMQP basic properties Celery sets (``correlation_id``, ``reply_to``,
    ``delivery_mode``, ``priority``, ``expiration``) and, for virtual transports, ``delivery_tag``.
    Transports encode this to their wire form; nothing else knows that form.
    """

    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    content_type: str = "application/json"
    content_encoding: str = "utf-8"

    @property
    def priority(self) -> int:
        """The message priority (0-255 on the wire; Celery uses 0-9), 0 when unset."""
        value = self.properties.get("priority")
        return int(value) if isinstance(value, int | float) else 0


@dataclass(slots=True)
class Outgoing:
    """A message on its way out, with where it is addressed.

    ``exchange`` ``""`` (the default exchange) means ``routing_key`` names the queue, which is what
    Celery does for direct queues.
    """

    message: Message
    exchange: str
    routing_key: str


@dataclass(slots=True)
class Delivery:
    """A message handed to a consumer, leased to it until acked, rejected, parked or restored.

    ``tag`` identifies the lease in the transport (kombu's ``delivery_tag`` on Redis).
    """

    message: Message
    queue: str
    tag: str
    exchange: str = ""
    routing_key: str = ""
    redelivered: bool = False
    #: Opaque per-transport data needed to ack (e.g. the raw envelope on Redis).
    raw: Any = None
