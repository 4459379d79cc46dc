"""Execution pools: prefork (default), threads, solo and asyncio, behind one contract."""

from __future__ import annotations

from celeriac.worker.pools.base import Pool, PoolOptions

POOLS = {
    "prefork": "celeriac.worker.pools.prefork:PreforkPool",
    "processes": "celeriac.worker.pools.prefork:PreforkPool",
    "threads": "celeriac.worker.pools.threads:ThreadPool",
    "solo": "celeriac.worker.pools.threads:SoloPool",
    "asyncio": "celeriac.worker.pools.asyncio_pool:AsyncioPool",
}


def pool_class(name: str) -> type[Pool]:
    """The pool class for ``-P NAME``."""
    import importlib

    target = POOLS.get(name)
    if target is None:
        raise ValueError(f"unknown pool {name!r}; expected one of {', '.join(sorted(POOLS))}")
    module_name, _, cls_name = target.partition(":")
    cls: type[Pool] = getattr(importlib.import_module(module_name), cls_name)
    return cls


__all__ = ["POOLS", "Pool", "PoolOptions", "pool_class"]
