"""Brokers, each behind the :class:`~celeriac.transports.base.Transport` contract."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from celeriac.exceptions import ImproperlyConfigured
from celeriac.transports.base import Transport

#: URL scheme → "module:Class", imported only when used so optional clients stay optional.
TRANSPORTS = {
    "memory": "celeriac.transports.memory:MemoryTransport",
    "sqlite": "celeriac.transports.sqlite:SQLiteTransport",
    "redis": "celeriac.transports.redis:RedisTransport",
    "rediss": "celeriac.transports.redis:RedisTransport",
    "redis+socket": "celeriac.transports.redis:RedisTransport",
    "sentinel": "celeriac.transports.redis:RedisTransport",
    "amqp": "celeriac.transports.amqp:AMQPTransport",
    "amqps": "celeriac.transports.amqp:AMQPTransport",
    "pyamqp": "celeriac.transports.amqp:AMQPTransport",
}


def scheme_of(url: str) -> str:
    """The scheme of a broker URL (``redis://x`` → ``redis``); a bare name counts as a scheme."""
    return url.split("://", 1)[0].split(";", 1)[0].lower()


def transport_class(url: str) -> type[Transport]:
    """The transport class serving *url*."""
    scheme = scheme_of(url)
    target = TRANSPORTS.get(scheme)
    if target is None:
        raise ImproperlyConfigured(
            f"broker_url {url!r}: unknown scheme {scheme!r}; expected one of "
            f"{', '.join(sorted(TRANSPORTS))}"
        )
    module_name, _, cls_name = target.partition(":")
    cls: type[Transport] = getattr(importlib.import_module(module_name), cls_name)
    return cls


def create_transport(url: str, options: Mapping[str, Any] | None = None) -> Transport:
    """Connect a transport for *url* with *options* (see ``transports.base.KNOWN_OPTIONS``)."""
    return transport_class(url)(url, options)
