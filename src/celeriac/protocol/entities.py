"""Exchanges and queues as users declare them (``task_queues``), kombu-compatible in shape."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

EXCHANGE_TYPES = frozenset({"direct", "topic", "fanout", "headers"})


@dataclass(frozen=True, slots=True)
class Exchange:
    """A named exchange; ``Exchange("")`` is the default exchange (routing key = queue name)."""

    name: str = ""
    type: str = "direct"
    durable: bool = True
    auto_delete: bool = False
    arguments: Mapping[str, Any] = field(default_factory=dict)
    delivery_mode: int | None = None

    def __post_init__(self) -> None:
        if self.type not in EXCHANGE_TYPES:
            raise ValueError(
                f"Exchange {self.name!r}: type {self.type!r} is not one of {sorted(EXCHANGE_TYPES)}"
            )


@dataclass(frozen=True, slots=True, init=False)
class Queue:
    """A queue and its binding to an exchange, as ``kombu.Queue`` describes one.

    ``Queue("email")`` binds queue ``email`` to a direct exchange ``email`` with routing key
    ``email``, as Celery does for queues it creates on demand.
    """

    name: str
    exchange: Exchange
    routing_key: str
    durable: bool
    exclusive: bool
    auto_delete: bool
    queue_arguments: Mapping[str, Any]
    binding_arguments: Mapping[str, Any]
    max_priority: int | None
    expires: float | None
    message_ttl: float | None

    def __init__(
        self,
        name: str = "",
        exchange: Exchange | str | None = None,
        routing_key: str | None = None,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        queue_arguments: Mapping[str, Any] | None = None,
        binding_arguments: Mapping[str, Any] | None = None,
        max_priority: int | None = None,
        expires: float | None = None,
        message_ttl: float | None = None,
        **_ignored: Any,
    ) -> None:
        if isinstance(exchange, str):
            exchange = Exchange(exchange)
        elif exchange is None:
            exchange = Exchange(name)
        set_ = object.__setattr__
        set_(self, "name", name)
        set_(self, "exchange", exchange)
        set_(self, "routing_key", name if routing_key is None else routing_key)
        set_(self, "durable", durable)
        set_(self, "exclusive", exclusive)
        set_(self, "auto_delete", auto_delete)
        set_(self, "queue_arguments", dict(queue_arguments or {}))
        set_(self, "binding_arguments", dict(binding_arguments or {}))
        set_(self, "max_priority", max_priority)
        set_(self, "expires", expires)
        set_(self, "message_ttl", message_ttl)

    def __hash__(self) -> int:
        return hash((self.name, self.exchange.name, self.routing_key))

    def __repr__(self) -> str:
        return (
            f"<Queue {self.name} -> <Exchange {self.exchange.name}({self.exchange.type})>"
            f" -> {self.routing_key}>"
        )

    def as_dict(self) -> dict[str, Any]:
        """The queue as ``inspect active_queues`` reports it."""
        return {
            "name": self.name,
            "exchange": {
                "name": self.exchange.name,
                "type": self.exchange.type,
                "durable": self.exchange.durable,
                "auto_delete": self.exchange.auto_delete,
                "arguments": dict(self.exchange.arguments) or None,
            },
            "routing_key": self.routing_key,
            "durable": self.durable,
            "exclusive": self.exclusive,
            "auto_delete": self.auto_delete,
            "queue_arguments": dict(self.queue_arguments) or None,
            "binding_arguments": dict(self.binding_arguments) or None,
            "max_priority": self.max_priority,
            "expires": self.expires,
            "message_ttl": self.message_ttl,
            "no_ack": False,
            "alias": None,
            "bindings": [],
            "no_declare": None,
            "consumer_arguments": None,
        }
