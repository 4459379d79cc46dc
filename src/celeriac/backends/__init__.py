"""Result stores: where task states and return values are kept, each behind one small contract."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from celeriac.backends.base import ResultStore
from celeriac.exceptions import ImproperlyConfigured

#: URL scheme → "module:Class", imported only when used.
STORES = {
    "memory": "celeriac.backends.memory:MemoryResultStore",
    "cache+memory": "celeriac.backends.memory:MemoryResultStore",
    "sqlite": "celeriac.backends.sqlite:SQLiteResultStore",
    "redis": "celeriac.backends.redis:RedisResultStore",
    "rediss": "celeriac.backends.redis:RedisResultStore",
    "redis+socket": "celeriac.backends.redis:RedisResultStore",
    "sentinel": "celeriac.backends.redis:RedisResultStore",
    "rpc": "celeriac.backends.rpc:RPCResultStore",
}


def store_class(url: str) -> type[ResultStore]:
    """The result store class serving *url*."""
    scheme = url.split("://", 1)[0].lower()
    target = STORES.get(scheme)
    if target is None:
        raise ImproperlyConfigured(
            f"result_backend {url!r}: unknown scheme {scheme!r}; expected one of "
            f"{', '.join(sorted(STORES))}"
        )
    module_name, _, cls_name = target.partition(":")
    cls: type[ResultStore] = getattr(importlib.import_module(module_name), cls_name)
    return cls


def create_store(url: str, options: Mapping[str, Any] | None = None) -> ResultStore:
    """Connect the result store for *url*."""
    return store_class(url)(url, options)
