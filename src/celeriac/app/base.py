"""The application: configuration, the task registry, and sending tasks."""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypeVar, overload
from zoneinfo import ZoneInfo

from celeriac import signals
from celeriac.app.backend import ResultBackend
from celeriac.app.config import Settings
from celeriac.app.context import current_request, current_task_var
from celeriac.app.control import Control
from celeriac.app.fixups import apply_fixups
from celeriac.app.registry import TaskRegistry
from celeriac.app.routing import Router
from celeriac.backends import create_store
from celeriac.events.receiver import AppEvents
from celeriac.exceptions import (
    AlwaysEagerIgnored,
    ImproperlyConfigured,
    OperationalError,
    QueueNotFound,
)
from celeriac.protocol.entities import Exchange, Queue
from celeriac.protocol.message import Message, Outgoing
from celeriac.protocol.task import TaskRequest, anon_nodename, build_v2, new_task_id
from celeriac.result import AsyncResult, GroupResult
from celeriac.signals import Signal
from celeriac.task import Task as BaseTask
from celeriac.task import add_autoretry
from celeriac.transports import create_transport, scheme_of
from celeriac.transports.base import Transport
from celeriac.utils import forks

if TYPE_CHECKING:
    from celeriac.canvas import Signature

logger = logging.getLogger("celeriac.app")

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_BROKER_URL = "sqlite:///celeriac.db"

_apps: weakref.WeakSet[Celery] = weakref.WeakSet()
_current: Celery | None = None
_default: Celery | None = None
_shared_constructors: list[Callable[[Celery], BaseTask[Any, Any]]] = []
_state_lock = threading.RLock()
#: Messages held back by ``Celery.publish_batch()`` in this context (None: publish at once).
_pending_batch: ContextVar[list[Outgoing] | None] = ContextVar(
    "celeriac_publish_batch", default=None
)


def pending_batch() -> list[Outgoing]:
    """The messages held back by the innermost ``publish_batch`` block (which must be open)."""
    batch = _pending_batch.get()
    if batch is None:
        raise RuntimeError("pending_batch() outside a publish_batch() block")
    return batch


def current_app() -> Celery:
    """The app most recently created or ``set_current()``-ed (a default one if none exists)."""
    global _default
    if _current is not None:
        return _current
    with _state_lock:
        if _default is None:
            _default = Celery("default", set_as_current=False)
        return _default


def set_current(app: Celery) -> None:
    global _current
    _current = app


def default_results_url(broker_url: str) -> str | None:
    """Where results go when ``result_backend`` is not set: beside an embedded broker, else none."""
    scheme = scheme_of(broker_url)
    if scheme == "memory":
        return broker_url
    if scheme == "sqlite":
        path = broker_url.split("://", 1)[1]
        base, dot, ext = path.rpartition(".")
        return (
            f"sqlite://{base}-results.{ext}"
            if dot and "/" not in ext
            else f"sqlite://{path}-results"
        )
    return None


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


class Celery:
    """A celeriac application, Celery's ``Celery`` class under the same name and arguments."""

    #: Base class of tasks made by ``@app.task`` unless ``base=`` says otherwise.
    task_cls: type[BaseTask[Any, Any]] = BaseTask
    strict_typing: bool

    def __init__(
        self,
        main: str | None = None,
        loader: Any = None,
        backend: str | None = None,
        amqp: Any = None,
        events: Any = None,
        log: Any = None,
        control: Any = None,
        set_as_current: bool = True,
        tasks: Any = None,
        broker: str | None = None,
        include: Iterable[str] | None = None,
        changes: Mapping[str, Any] | None = None,
        config_source: Any = None,
        fixups: Any = None,
        task_cls: type[BaseTask[Any, Any]] | str | None = None,
        autofinalize: bool = True,
        namespace: str | None = None,
        strict_typing: bool = True,
        **kwargs: Any,
    ) -> None:
        self.main = main
        self.namespace = namespace
        self.autofinalize = autofinalize
        self.strict_typing = strict_typing
        if isinstance(task_cls, str):
            module_name, _, attr = task_cls.replace(":", ".").rpartition(".")
            task_cls = getattr(importlib.import_module(module_name), attr)
        if task_cls is not None:
            self.task_cls = task_cls  # type: ignore[assignment]
        self.conf = Settings()
        # Arguments given here win over config objects, as in Celery.
        self._explicit: dict[str, Any] = {}
        if broker is not None:
            self._explicit["broker_url"] = broker
        if backend is not None:
            self._explicit["result_backend"] = backend
        if include is not None:
            self._explicit["include"] = tuple(include)
        self._explicit.update({k: v for k, v in kwargs.items() if k in self.conf})
        if changes:
            self._explicit.update(changes)
        self.conf.update(self._explicit)
        if config_source is not None:
            self.config_from_object(config_source)
        self._tasks = TaskRegistry()
        self.finalized = False
        self.configured = False
        self._finalize_lock = threading.RLock()
        self._autodiscover: list[tuple[Any, str]] = []
        self._local = threading.local()
        self._fork_generation = forks.generation()
        self._transport: Transport | None = None
        self._backend: ResultBackend | None = None
        self._backend_ready = False
        self._declared: set[str] = set()
        self._router: Router | None = None
        self._queue_cache: dict[str, Queue] = {}
        self.on_configure = Signal("app.on_configure")
        self.on_after_configure = Signal("app.on_after_configure")
        self.on_after_finalize = Signal("app.on_after_finalize")
        self.on_after_fork = Signal("app.on_after_fork")
        self._task_base: type[BaseTask[Any, Any]] | None = None
        self._control: Control | None = None
        self._events: AppEvents | None = None
        with _state_lock:
            _apps.add(self)
            for constructor in list(_shared_constructors):
                constructor(self)
        if set_as_current:
            set_current(self)

    # -- configuration ---------------------------------------------------------------------------
    def config_from_object(
        self, obj: Any, silent: bool = False, force: bool = False, namespace: str | None = None
    ) -> None:
        """Load settings from a module path, ``"module:attr"``, a module, an object or a class."""
        self.conf.config_from_object(obj, namespace=namespace or self.namespace, silent=silent)
        self.conf.update(self._explicit)
        self._config_changed()

    def config_from_envvar(
        self,
        variable_name: str,
        silent: bool = False,
        force: bool = False,
    ) -> bool:
        """Load settings from the module named by an environment variable."""
        module_name = os.environ.get(variable_name)
        if not module_name:
            if silent:
                return False
            raise ImproperlyConfigured(
                f"The environment variable {variable_name!r} is not set, and as such the "
                "configuration could not be loaded."
            )
        self.config_from_object(module_name, silent=silent, force=force)
        return True

    def _config_changed(self) -> None:
        self._router = None
        self._queue_cache.clear()

    @property
    def broker_url(self) -> str:
        """The broker URL in use: the setting, or the embedded SQLite file by default."""
        return str(self.conf.broker_url or DEFAULT_BROKER_URL)

    @property
    def result_backend_url(self) -> str | None:
        """The result store URL in use (None: results are not stored)."""
        url = self.conf.result_backend
        if url is None:
            return default_results_url(self.broker_url)
        return str(url)

    @property
    def timezone(self) -> tzinfo:
        name = self.conf.timezone
        if not name:
            return UTC
        return ZoneInfo(str(name)) if isinstance(name, str) else name  # type: ignore[no-any-return]

    def now(self) -> datetime:
        """The current time, aware, in UTC when ``enable_utc`` (the default)."""
        if self.conf.enable_utc:
            return datetime.now(UTC)
        return datetime.now(self.timezone)

    def uuid(self) -> str:
        return new_task_id()

    # -- tasks -----------------------------------------------------------------------------------
    @property
    def Task(self) -> type[BaseTask[Any, Any]]:
        """The base task class bound to this app (``class MyTask(app.Task)``)."""
        if self._task_base is None:
            self._task_base = type(
                "Task", (self.task_cls,), {"app": self, "abstract": True, "__module__": __name__}
            )
        return self._task_base

    @property
    def tasks(self) -> TaskRegistry:
        """The task registry; reading it finalizes the app (imports ``include`` modules)."""
        if self.autofinalize and not self.finalized:
            self.finalize(auto=True)
        return self._tasks

    def gen_task_name(self, name: str, module: str) -> str:
        if module == "__main__" and self.main:
            module = self.main
        return f"{module}.{name}"

    @overload
    def task(self, fun: Callable[P, Coroutine[Any, Any, R]], /) -> BaseTask[P, R]: ...
    @overload
    def task(self, fun: Callable[P, R], /) -> BaseTask[P, R]: ...
    @overload
    def task(
        self, *, bind: Literal[True], **options: Any
    ) -> Callable[[Callable[Concatenate[Any, P], R]], BaseTask[P, R]]: ...
    @overload
    def task(self, **options: Any) -> Callable[[Callable[P, R]], BaseTask[P, R]]: ...

    def task(self, *args: Any, **options: Any) -> Any:
        """Decorator turning a function (sync or ``async def``) into a task of this app."""
        if len(args) == 1 and callable(args[0]) and not options:
            return self._task_from_fun(args[0])
        if args:
            raise TypeError("app.task() takes the function or keyword options only")

        def decorator(fun: Callable[..., Any]) -> BaseTask[Any, Any]:
            return self._task_from_fun(fun, **options)

        return decorator

    def _task_from_fun(
        self,
        fun: Callable[..., Any],
        name: str | None = None,
        base: type[BaseTask[Any, Any]] | None = None,
        bind: bool = False,
        **options: Any,
    ) -> BaseTask[Any, Any]:
        name = name or self.gen_task_name(fun.__name__, fun.__module__)
        existing = self._tasks.get(name)
        if existing is not None and getattr(existing, "__wrapped__", None) is fun:
            return existing
        base = base or self.Task
        options.pop("shared", None)
        options.pop("lazy", None)
        attrs: dict[str, Any] = {
            "app": self,
            "name": name,
            "run": fun if bind else staticmethod(fun),
            "_decorated": True,
            "__doc__": fun.__doc__,
            "__module__": fun.__module__,
            "__qualname__": getattr(fun, "__qualname__", fun.__name__),
            "__wrapped__": fun,
            "_is_async": inspect.iscoroutinefunction(fun),
            "_bound": bind,
            "abstract": False,
            **options,
        }
        if "typing" in attrs:
            attrs["typing"] = bool(attrs["typing"])
        task: BaseTask[Any, Any] = type(fun.__name__, (base,), attrs)()
        add_autoretry(task)
        self._tasks[name] = task
        if self.finalized:
            task.bind(self)
        return task

    def register_task(
        self,
        task: BaseTask[Any, Any] | type[BaseTask[Any, Any]],
        **options: Any,
    ) -> BaseTask[Any, Any]:
        """Register a class-based task (an instance or a class) with this app."""
        if isinstance(task, type):
            task = task()
        if getattr(task, "app", None) is None or task.app is not self:
            type(task).app = self
        if not task.name:
            cls = type(task)
            type(task).name = self.gen_task_name(cls.__name__, cls.__module__)
        for key, value in options.items():
            setattr(task, key, value)
        add_autoretry(task)
        self._tasks[task.name] = task
        if self.finalized:
            task.bind(self)
        return task

    def finalize(self, auto: bool = False) -> None:
        """Import task modules (``include``, ``imports``, autodiscovery); bind tasks to config."""
        with self._finalize_lock:
            if self.finalized:
                return
            self.finalized = True
            apply_fixups()
            if not self.configured:
                self.configured = True
                self.on_after_configure.send(sender=self, source=self.conf)
            self.import_task_modules()
            for task in list(self._tasks.values()):
                task.bind(self)
            self.on_after_finalize.send(sender=self)

    def import_task_modules(self) -> None:
        """Import every module in ``imports``/``include`` and run pending autodiscovery."""
        signals.import_modules.send(sender=self)
        for module_name in [*(self.conf.imports or ()), *(self.conf.include or ())]:
            importlib.import_module(module_name)
        pending, self._autodiscover = self._autodiscover, []
        for packages, related_name in pending:
            self._discover(packages, related_name)

    def autodiscover_tasks(
        self,
        packages: Iterable[str] | Callable[[], Iterable[str]] | None = None,
        related_name: str = "tasks",
        force: bool = False,
    ) -> None:
        """Import ``<package>.tasks`` for each package (Django's INSTALLED_APPS by default).

        Lazy as in Celery: runs when the app finalizes, or now with ``force=True``.
        """
        if force or self.finalized:
            self._discover(packages, related_name)
        else:
            self._autodiscover.append((packages, related_name))

    def _discover(self, packages: Any, related_name: str) -> None:
        if packages is None:
            packages = _django_app_modules
        if callable(packages):
            packages = packages()
        for package in packages:
            try:
                importlib.import_module(f"{package}.{related_name}")
            except ModuleNotFoundError as exc:
                # Only a missing tasks module is fine; an import error inside it is the user's bug.
                if exc.name != f"{package}.{related_name}":
                    raise

    def add_periodic_task(
        self,
        schedule: Any,
        sig: Signature[Any, Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        **opts: Any,
    ) -> str:
        """Add an entry to ``beat_schedule`` (Celery's ``app.add_periodic_task``)."""
        key = name or repr(sig)
        entry: dict[str, Any] = {
            "schedule": schedule,
            "task": sig.task,
            "args": tuple(sig.args or args),
            "kwargs": dict(sig.kwargs or kwargs or {}),
            "options": {**sig.options, **opts},
        }
        schedule_table = dict(self.conf.beat_schedule or {})
        schedule_table[key] = entry
        self.conf.beat_schedule = schedule_table
        return key

    # -- connections -----------------------------------------------------------------------------
    def _check_fork(self) -> None:
        if self._fork_generation != forks.generation():
            # A forked child must not share its parent's sockets.
            self._fork_generation = forks.generation()
            self._transport = None
            self._backend = None
            self._backend_ready = False
            self._declared = set()
            self.on_after_fork.send(sender=self)

    def transport_options(self) -> dict[str, Any]:
        conf = self.conf
        options = dict(conf.broker_transport_options or {})
        options.setdefault("dead_letter_queue", conf.broker_dead_letter_queue)
        options.setdefault("ssl", conf.broker_use_ssl)
        options.setdefault("max_connections", conf.redis_max_connections or conf.broker_pool_limit)
        options.setdefault("connect_timeout", conf.broker_connection_timeout)
        options.setdefault("heartbeat", conf.broker_heartbeat)
        options.setdefault("connection_retry", conf.broker_connection_retry)
        retry_on_startup = conf.broker_connection_retry_on_startup
        if retry_on_startup is None:  # Celery's default: follow broker_connection_retry
            retry_on_startup = conf.broker_connection_retry
        options.setdefault("connection_retry_on_startup", retry_on_startup)
        options.setdefault("connection_max_retries", conf.broker_connection_max_retries)
        return options

    @property
    def transport(self) -> Transport:
        """This process's broker connection (created on first use)."""
        self._check_fork()
        transport = self._transport
        if transport is None:
            with _state_lock:
                if self._transport is None:
                    self._transport = create_transport(self.broker_url, self.transport_options())
                transport = self._transport
        return transport

    def connection(self) -> Transport:
        """Celery-style access to the broker connection."""
        return self.transport

    connection_for_write = connection
    connection_for_read = connection
    broker_connection = connection

    def store_options(self) -> dict[str, Any]:
        conf = self.conf
        options = dict(conf.result_backend_transport_options or {})
        options.setdefault("ssl", conf.redis_backend_use_ssl)
        options.setdefault("max_connections", conf.redis_max_connections)
        options.setdefault("socket_timeout", conf.redis_socket_timeout)
        options.setdefault("socket_connect_timeout", conf.redis_socket_connect_timeout)
        options.setdefault("retry_on_timeout", conf.redis_retry_on_timeout)
        options.setdefault("socket_keepalive", conf.redis_socket_keepalive)
        # Read by Celery's Redis backend though not in its settings table.
        for name in ("redis_backend_health_check_interval", "redis_client_name"):
            if conf.get(name) is not None:
                options.setdefault(name, conf.get(name))
        if str(self.result_backend_url or "").startswith("rpc:"):
            # rpc:// results travel over the broker's connection settings.
            options.setdefault("broker_url", self.broker_url)
            options.setdefault("broker_options", self.transport_options())
            options.setdefault("expires", _seconds(conf.result_expires))
            options.setdefault("persistent", conf.result_persistent)
        return options

    @property
    def backend(self) -> ResultBackend | None:
        """This process's result backend, or None when results are not stored."""
        self._check_fork()
        if not self._backend_ready:
            with _state_lock:
                if not self._backend_ready:
                    url = self.result_backend_url
                    if url:
                        conf = self.conf
                        self._backend = ResultBackend(
                            create_store(url, self.store_options()),
                            serializer=conf.result_serializer,
                            accept=conf.result_accept_content or conf.accept_content,
                            expires=_seconds(conf.result_expires),
                            extended=bool(conf.result_extended),
                        )
                    self._backend_ready = True
        return self._backend

    def close(self) -> None:
        """Close the broker and result store connections."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        self._backend_ready = False

    def __enter__(self) -> Celery:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- routing ---------------------------------------------------------------------------------
    @property
    def router(self) -> Router:
        if self._router is None:
            self._router = Router(self.conf.task_routes)
        return self._router

    def queues(self) -> dict[str, Queue]:
        """The configured queues by name (``task_queues``, or the default queue)."""
        conf = self.conf
        configured = conf.task_queues
        if configured:
            return {q.name: q for q in configured}
        name = conf.task_default_queue
        exchange = Exchange(conf.task_default_exchange or name, conf.task_default_exchange_type)
        return {name: Queue(name, exchange, conf.task_default_routing_key or name)}

    def queue_for(self, name: str) -> Queue:
        """The Queue for *name*, created on demand when ``task_create_missing_queues``."""
        cached = self._queue_cache.get(name)
        if cached is not None:
            return cached
        queue = self.queues().get(name)
        if queue is None:
            if not self.conf.task_create_missing_queues:
                raise QueueNotFound(f"Queue {name!r} missing from task_queues")
            queue = Queue(
                name, Exchange(name, "direct"), name, max_priority=self.conf.task_queue_max_priority
            )
        self._queue_cache[name] = queue
        return queue

    def _destination(
        self, name: str, args: Any, kwargs: Any, options: dict[str, Any], task: Any
    ) -> tuple[str, str, Queue | None, dict[str, Any]]:
        """(exchange, routing key, queue, extra options) for a task message."""
        queue_opt = options.pop("queue", None)
        exchange_opt = options.pop("exchange", None)
        routing_key = options.pop("routing_key", None)
        route: dict[str, Any] = {}
        if queue_opt is None and not exchange_opt and routing_key is None:
            route = self.router.route(name, args, kwargs, options, task) or {}
            queue_opt = route.pop("queue", None)
            exchange_opt = route.pop("exchange", None)
            routing_key = route.pop("routing_key", None)
        if isinstance(queue_opt, Queue):
            queue = queue_opt
            self._queue_cache.setdefault(queue.name, queue)
        elif queue_opt is None and routing_key is not None and not exchange_opt:
            queue = self.queue_for(routing_key)  # a retry goes back where it came from
        else:
            queue = self.queue_for(
                queue_opt or getattr(task, "queue", None) or self.conf.task_default_queue
            )
        if isinstance(exchange_opt, Exchange):
            exchange_opt = exchange_opt.name
        if exchange_opt and exchange_opt != queue.exchange.name:
            return exchange_opt, routing_key or queue.routing_key, None, route
        if queue.exchange.type == "direct" and (routing_key in (None, queue.routing_key)):
            # Celery publishes direct-queue messages through the default exchange.
            return "", queue.name, queue, route
        return queue.exchange.name, routing_key or queue.routing_key, queue, route

    def _declare(self, queue: Queue) -> None:
        if queue.name not in self._declared:
            self.transport.declare(queue)
            self._declared.add(queue.name)

    # -- sending ---------------------------------------------------------------------------------
    def send_task(
        self,
        name: str,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        task_id: str | None = None,
        producer: Any = None,
        connection: Any = None,
        router: Any = None,
        result_cls: type[AsyncResult[Any]] | None = None,
        expires: float | datetime | str | None = None,
        publisher: Any = None,
        link: Any = None,
        link_error: Any = None,
        add_to_parent: bool = True,
        group_id: str | None = None,
        group_index: int | None = None,
        retries: int = 0,
        chord: Any = None,
        reply_to: str | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        route_name: str | None = None,
        shadow: str | None = None,
        chain: Any = None,
        task_type: BaseTask[Any, Any] | None = None,
        replaced_task_nesting: int = 0,
        **options: Any,
    ) -> AsyncResult[Any]:
        """Send a task message by name (the task need not be known here)."""
        conf = self.conf
        if conf.task_always_eager and task_type is None:
            warnings.warn(
                "send_task() ignores task_always_eager: the task is sent to the broker",
                AlwaysEagerIgnored,
                stacklevel=2,
            )
        task = task_type if task_type is not None else self._tasks.get(name)
        task_id = task_id or new_task_id()
        args = list(args) if args else []
        kwargs = dict(kwargs) if kwargs else {}
        parent = current_request.get() if add_to_parent else None
        if parent is not None and parent.id:
            parent_id = parent_id or parent.id
            root_id = root_id or parent.root_id or parent.id
        exchange, routing_key, queue, route = self._destination(name, args, kwargs, options, task)
        options = {**route, **options}
        if countdown is not None:
            eta = datetime.now(UTC) + timedelta(seconds=float(countdown))
        elif eta is not None and eta.tzinfo is None:
            eta = eta.replace(tzinfo=UTC if conf.enable_utc else self.timezone)
        if expires is None and task is not None:
            expires = task.expires
        expires_at, expires_in = self._expiry(expires, name)
        priority = options.pop("priority", None)
        if priority is None and task is not None:
            priority = task.priority
        if priority is None:
            priority = conf.task_default_priority
        ignore_result = options.pop("ignore_result", None)
        if ignore_result is None:
            ignore_result = bool(task.ignore_result) if task is not None else False
        serializer = options.pop("serializer", None) or (
            task.serializer if task is not None and task.serializer else conf.task_serializer
        )
        if time_limit is None and task is not None:
            time_limit = task.time_limit
        if soft_time_limit is None and task is not None:
            soft_time_limit = task.soft_time_limit
        message = build_v2(
            TaskRequest(
                name=name,
                id=task_id,
                args=args,
                kwargs=kwargs,
                eta=eta,
                expires=expires_at,
                expires_in=expires_in,
                group_id=group_id,
                group_index=group_index,
                retries=retries,
                time_limit=time_limit,
                soft_time_limit=soft_time_limit,
                root_id=root_id,
                parent_id=parent_id,
                shadow=shadow,
                origin=options.pop("origin", None) or self._origin,
                ignore_result=ignore_result,
                reply_to=reply_to or self.oid,
                priority=priority,
                callbacks=_sig_list(link),
                errbacks=_sig_list(link_error),
                chain=[dict(s) for s in chain] if chain else None,
                chord=dict(chord) if chord else None,
                replaced_task_nesting=replaced_task_nesting,
                stamped_headers=options.pop("stamped_headers", None),
                stamps=options.pop("stamps", None) or {},
                extra_headers=options.pop("headers", None),
                serializer=serializer,
                compression=options.pop("compression", None) or conf.task_compression,
                delivery_mode=2 if conf.task_default_delivery_mode in (2, "persistent") else 1,
            )
        )
        self._expect_reply(ignore_result, reply_to, task_id)
        self._publish_task(name, message, exchange, routing_key, queue, options)
        self.events.task_sent(message, exchange, routing_key, queue)  # with task_send_sent_event
        result = (result_cls or AsyncResult)(task_id, task_name=name, app=self)
        if parent is not None and add_to_parent:
            parent.children.append(result)
        return result

    @property
    def control(self) -> Control:
        """Remote control of workers: ``app.control.revoke(id)``, ``app.control.inspect()``."""
        if self._control is None:
            self._control = Control(self)
        return self._control

    @property
    def events(self) -> AppEvents:
        """Event helpers: ``app.events.Receiver(...)``, ``app.events.State()``."""
        if self._events is None:
            self._events = AppEvents(self)
        return self._events

    def _expect_reply(self, ignore_result: bool, reply_to: str | None, task_id: str) -> None:
        """Let the result store prepare for a result sent to this client (rpc:// declares its
        reply queue). Not for a message keeping another sender's reply_to (a worker's retry)."""
        expect = self._reply_expecter(ignore_result, reply_to)
        if expect is not None:
            expect(task_id)

    def _reply_expecter(
        self, ignore_result: bool, reply_to: str | None
    ) -> Callable[[str], None] | None:
        """What :meth:`_expect_reply` calls per task id for messages sent this way; None when
        there is nothing to prepare (no result, another sender's reply_to, or a result store
        with no use for it), so a batch need not ask again for each message."""
        if ignore_result:
            return None
        oid = self.oid
        if reply_to is not None and reply_to != oid:
            return None
        backend = self._backend if self._backend_ready else self.backend
        if backend is None or getattr(backend.store, "on_task_call", None) is None:
            return None
        return functools.partial(backend.on_task_call, oid)

    @property
    def _origin(self) -> str:
        self._check_fork()
        origin: str | None = getattr(self._local, "origin", None)
        if origin is None:
            origin = self._local.origin = anon_nodename()
        return origin

    @property
    def oid(self) -> str:
        """This client's id (``reply_to`` of its messages): stable per process and thread."""
        self._check_fork()
        oid: str | None = getattr(self._local, "oid", None)
        if oid is None:
            seed = f"{uuid.getnode()}-{os.getpid()}-{threading.get_ident()}-{id(self)}"
            oid = self._local.oid = str(uuid.uuid3(uuid.NAMESPACE_OID, seed))
        return oid

    def _expiry(
        self, expires: float | datetime | str | timedelta | None, name: str
    ) -> tuple[datetime | None, float | None]:
        if expires is None:
            return None, None
        now = datetime.now(UTC)
        if isinstance(expires, str):
            expires = datetime.fromisoformat(expires)
        if isinstance(expires, timedelta):
            expires = expires.total_seconds()
        if isinstance(expires, datetime):
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=UTC)
            seconds = (expires - now).total_seconds()
            at = expires
        else:
            seconds = float(expires)
            at = now + timedelta(seconds=seconds)
        if seconds < 0:
            logger.warning(
                "%s has an expiration date in the past (%.1fs ago); it will not run", name, -seconds
            )
            seconds = 0.0
        return at, seconds

    def _publish_task(
        self,
        name: str,
        message: Message,
        exchange: str,
        routing_key: str,
        queue: Queue | None,
        options: dict[str, Any],
    ) -> None:
        if signals.before_task_publish.has_listeners():
            signals.before_task_publish.send(
                sender=name,
                body=message.body,
                exchange=exchange,
                routing_key=routing_key,
                headers=message.headers,
                properties=message.properties,
                declare=[queue],
                retry_policy=options.get("retry_policy"),
            )
        if queue is not None:
            self._declare(queue)
        self.publish(
            [Outgoing(message, exchange, routing_key)],
            retry=options.get("retry"),
            retry_policy=options.get("retry_policy"),
        )
        if signals.after_task_publish.has_listeners():
            signals.after_task_publish.send(
                sender=name,
                body=message.body,
                exchange=exchange,
                routing_key=routing_key,
                headers=message.headers,
                properties=message.properties,
            )

    def publish(
        self,
        items: Sequence[Outgoing],
        retry: bool | None = None,
        retry_policy: Mapping[str, Any] | None = None,
    ) -> None:
        """Publish messages, retrying on connection errors per ``task_publish_retry_policy``
        (``retry`` None: the ``task_publish_retry`` setting)."""
        batch = _pending_batch.get()
        if batch is not None:
            batch.extend(items)
            return
        try:
            self.transport.publish(items)
            return
        except OperationalError:
            if retry is None:
                retry = bool(self.conf.task_publish_retry)
            if not retry:
                raise
        self._publish_retrying(items, retry_policy)

    def _publish_retrying(
        self, items: Sequence[Outgoing], retry_policy: Mapping[str, Any] | None
    ) -> None:
        policy = {**(self.conf.task_publish_retry_policy or {}), **(retry_policy or {})}
        max_retries = policy.get("max_retries", 3)
        interval = float(policy.get("interval_start", 0) or 0)
        step = float(policy.get("interval_step", 0.2) or 0)
        ceiling = float(policy.get("interval_max", 1) or 0)
        attempt = 0
        while True:
            try:
                self.transport.publish(items)
                return
            except OperationalError as exc:
                attempt += 1
                if max_retries is not None and attempt > max_retries:
                    raise
                logger.warning("publish failed (%s); retry %d in %.1fs", exc, attempt, interval)
                time.sleep(interval)
                interval = min(interval + step, ceiling)

    @contextmanager
    def publish_batch(self) -> Iterator[None]:
        """Hold back the messages published inside the block and send them in one transport
        call when it ends (nothing is sent if it raises). Nested blocks join the outer one."""
        if _pending_batch.get() is not None:
            yield
            return
        batch: list[Outgoing] = []
        token = _pending_batch.set(batch)
        try:
            yield
        finally:
            _pending_batch.reset(token)
        if batch:
            self.publish(batch, retry=bool(self.conf.task_publish_retry))

    # -- results ---------------------------------------------------------------------------------
    def AsyncResult(self, id: str, **kwargs: Any) -> AsyncResult[Any]:
        """The result object for task *id*."""
        return AsyncResult(id, app=self, **kwargs)

    def GroupResult(
        self, id: str | None = None, results: Iterable[Any] = (), **kwargs: Any
    ) -> GroupResult:
        return GroupResult(id, results, app=self, **kwargs)

    def signature(self, *args: Any, **kwargs: Any) -> Signature[Any, Any]:
        from celeriac.canvas import signature

        kwargs["app"] = self
        return signature(*args, **kwargs)

    def on_chord_part_return(self, request: Any, state: str, result: Any) -> None:
        """Count a finished chord header task; the last one sends the chord's body."""
        from celeriac.workflows import on_chord_part_return

        on_chord_part_return(self, request, state, result)

    @property
    def current_task(self) -> BaseTask[Any, Any] | None:
        return current_task_var.get()  # type: ignore[no-any-return]

    @property
    def current_worker_task(self) -> BaseTask[Any, Any] | None:
        request = current_request.get()
        return self.current_task if request is not None and not request.is_eager else None

    def set_current(self) -> None:
        set_current(self)

    def set_default(self) -> None:
        global _default
        _default = self

    def __repr__(self) -> str:
        return f"<Celery {self.main or '__main__'} at {id(self):#x}>"

    def __reduce__(self) -> Any:
        return _rebuild_app, (self.main, dict(self.conf.changes))


def _rebuild_app(main: str | None, changes: dict[str, Any]) -> Celery:
    return Celery(main, changes=changes, set_as_current=False)


def _sig_list(value: Any) -> list[dict[str, Any]] | None:
    if not value:
        return None
    items = value if isinstance(value, list | tuple) else [value]
    return [dict(item) for item in items]


def _django_app_modules() -> list[str]:
    from django.apps import apps

    return [config.name for config in apps.get_app_configs()]


def shared_task(*args: Any, **options: Any) -> Any:
    """Define a task for every app (Celery's ``shared_task``); calls use the current app."""

    def create(fun: Callable[..., Any]) -> BaseTask[Any, Any]:
        def constructor(app: Celery) -> BaseTask[Any, Any]:
            return app._task_from_fun(fun, **options)

        with _state_lock:
            _shared_constructors.append(constructor)
            for app in list(_apps):
                constructor(app)
        return SharedTask(fun, options.get("name"), constructor)  # type: ignore[return-value]

    if len(args) == 1 and callable(args[0]) and not options:
        return create(args[0])
    return create


class SharedTask:
    """Stands for a shared task: attribute access and calls go to the current app's task."""

    def __init__(
        self,
        fun: Callable[..., Any],
        name: str | None,
        constructor: Callable[[Celery], BaseTask[Any, Any]],
    ) -> None:
        self.__wrapped__ = fun
        self._name = name
        self._constructor = constructor
        self.__name__ = fun.__name__
        self.__doc__ = fun.__doc__
        self.__module__ = fun.__module__

    def _task(self) -> BaseTask[Any, Any]:
        app = current_app()
        name = self._name or app.gen_task_name(
            self.__wrapped__.__name__, self.__wrapped__.__module__
        )
        task = app._tasks.get(name)
        return task if task is not None else self._constructor(app)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._task(), attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._task()(*args, **kwargs)

    def __repr__(self) -> str:
        return repr(self._task())

    def __reduce__(self) -> Any:
        return self._task().__reduce__()
