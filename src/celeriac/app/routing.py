"""Routing: which queue (and exchange, routing key, priority) a task message goes to.

Follows Celery's ``task_routes``: a dict (exact names, glob patterns, compiled regexes), a router
function ``(name, args, kwargs, options, task=None, **kw) -> dict | str | None``, an import path to
one, or a list of any of those tried in order.
"""

from __future__ import annotations

import fnmatch
import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from celeriac.exceptions import ImproperlyConfigured

Route = dict[str, Any]
RouterFn = Callable[..., Any]


class MapRoute:
    """Routes from a mapping of task name (exact, glob or regex) to options or a queue name."""

    def __init__(self, table: Mapping[Any, Any]) -> None:
        self.exact: dict[str, Any] = {}
        self.patterns: list[tuple[re.Pattern[str], Any]] = []
        for key, value in table.items():
            if isinstance(key, re.Pattern):
                self.patterns.append((key, value))
            elif isinstance(key, str) and any(ch in key for ch in "*?["):
                self.patterns.append((re.compile(fnmatch.translate(key)), value))
            elif isinstance(key, str):
                self.exact[key] = value
            else:
                raise ImproperlyConfigured(
                    f"task_routes key {key!r} must be a task name, glob pattern or compiled regex"
                )

    def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name in self.exact:
            return self.exact[name]
        for pattern, value in self.patterns:
            if pattern.match(name):
                return value
        return None


def _to_router(spec: Any) -> RouterFn:
    if isinstance(spec, Mapping):
        return MapRoute(spec)
    if isinstance(spec, str):
        module_name, _, attr = spec.rpartition(".")
        if ":" in spec:
            module_name, _, attr = spec.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"task_routes: cannot import router {spec!r}: {exc}"
            ) from exc
        return _to_router(obj() if isinstance(obj, type) else obj)
    if callable(spec):
        router: RouterFn = spec
        return router
    route_for_task = getattr(spec, "route_for_task", None)
    if callable(route_for_task):
        return _legacy(route_for_task)
    raise ImproperlyConfigured(
        f"task_routes entry {spec!r} must be a dict, a router function, or an import path to one"
    )


def _legacy(method: Callable[..., Any]) -> RouterFn:
    def route(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any) -> Any:
        return method(name, args, kwargs)

    return route


def prepare_routers(routes: Any) -> list[RouterFn]:
    """Turn the ``task_routes`` setting into a list of router callables."""
    if routes is None:
        return []
    if isinstance(routes, Sequence) and not isinstance(routes, str):
        return [_to_router(r) for r in routes]
    return [_to_router(routes)]


def _normalize(result: Any) -> Route | None:
    if result is None:
        return None
    if isinstance(result, str):
        return {"queue": result}
    if isinstance(result, Mapping):
        return dict(result)
    raise ImproperlyConfigured(
        f"a router returned {result!r}; expected a dict of options, a queue name, or None"
    )


class Router:
    """Applies the routers in order; the first that answers decides. Results are cached for
    static (mapping-only) configurations, which is the common case and keeps ``delay()`` fast."""

    def __init__(self, routes: Any) -> None:
        self.routers = prepare_routers(routes)
        self._static = all(isinstance(r, MapRoute) for r in self.routers)
        self._cache: dict[str, Route | None] = {}

    @property
    def static(self) -> bool:
        """True when routes depend on the task name only (not on arguments or options)."""
        return self._static

    def route(
        self, name: str, args: Any = (), kwargs: Any = None, options: Any = None, task: Any = None
    ) -> Route | None:
        """The options the routers give for task *name* (None when no router answers)."""
        if self._static and name in self._cache:
            return self._cache[name]
        found: Route | None = None
        for router in self.routers:
            found = _normalize(router(name, args, kwargs or {}, options or {}, task=task))
            if found is not None:
                break
        if self._static:
            self._cache[name] = found
        return found
