"""The worker's side of remote control: its pidbox node, the command handlers, mingle, statedb.

The node subscribes to the ``celery.pidbox`` fanout exchange, drops requests that expired or are
meant for other nodes, runs the handler on the worker's event loop (where the consumer's state
lives) and, when the request has a ``reply_to``, publishes ``{<nodename>: <result>}`` to the
``reply.celery.pidbox`` exchange with the request's ``ticket``. Handler names, arguments and reply
shapes are Celery's, so ``celery inspect``/``celery control`` and Flower work against this worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import re
import resource
import signal as signal_module
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from celeriac import states
from celeriac.app.control import Mailbox
from celeriac.protocol import serialization
from celeriac.protocol.message import Message, Outgoing
from celeriac.transports.base import Subscription
from celeriac.worker.limits import parse_rate
from celeriac.worker.request import Request

if TYPE_CHECKING:
    from celeriac.worker.worker import Worker

logger = logging.getLogger("celeriac.worker.control")

Handler = Callable[..., Any]
#: Requests accepted from these content types only (never pickle from the control channel).
CONTROL_ACCEPT = frozenset({"application/json", "application/x-msgpack"})
#: Task attributes ``inspect registered`` shows when none are asked for (Celery's default).
DEFAULT_TASK_INFO_ITEMS = ("exchange", "routing_key", "rate_limit")
#: Backend states a revoke may overwrite: the task has not started anywhere yet.
REVOCABLE_STATES = frozenset({states.PENDING, states.RECEIVED, states.RETRY, states.REJECTED})
#: No reply is sent for results of this type (``shutdown``; a ``hello`` from ourselves).
NO_REPLY = object()

HANDLERS: dict[str, Handler] = {}


def command(name: str | None = None) -> Callable[[Handler], Handler]:
    """Register a handler ``fn(node, **arguments)`` under *name* (default: the function name)."""

    def register(fn: Handler) -> Handler:
        HANDLERS[name or fn.__name__.rstrip("_")] = fn
        return fn

    return register


def ok(value: Any) -> dict[str, Any]:
    return {"ok": value}


def nok(value: Any) -> dict[str, Any]:
    return {"error": value}


def signum_of(value: str | int | None) -> int:
    """``"SIGTERM"``, ``"TERM"``, ``"term"``, ``15`` or ``"15"`` → 15."""
    if value is None or value == "":
        return int(signal_module.SIGTERM)
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    name = str(value).upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return int(signal_module.Signals[name])
    except KeyError:
        raise ValueError(
            f"unknown signal {value!r}; expected a name like 'SIGTERM' or 'KILL', or a number"
        ) from None


def _ids(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def matches(hostname: str, pattern: str, matcher: str | None) -> bool:
    """kombu's node selection by pattern: ``glob`` (default) or ``pcre``."""
    if matcher == "pcre":
        return re.search(pattern, hostname) is not None
    return fnmatchcase(hostname, pattern)


class StateDB:
    """``--statedb``: revoked ids and the logical clock kept in a JSON file across restarts."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def load(self) -> tuple[dict[str, float], int]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}, 0
        except (OSError, ValueError) as exc:
            logger.warning("statedb %s unreadable (%s); starting without it", self.path, exc)
            return {}, 0
        revoked = data.get("revoked") if isinstance(data, dict) else None
        clock = data.get("clock", 0) if isinstance(data, dict) else 0
        if isinstance(revoked, list):
            revoked = dict.fromkeys(revoked, time.time())
        if not isinstance(revoked, dict):
            revoked = {}
        return {str(k): float(v) for k, v in revoked.items()}, int(clock or 0)

    def save(self, revoked: Mapping[str, float], clock: int) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"revoked": dict(revoked), "clock": clock}))
        os.replace(tmp, self.path)


class ControlNode:
    """The pidbox node of one worker. See the module docstring."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.app = worker.app
        self.hostname = worker.hostname
        self.mailbox = Mailbox(str(self.app.conf.control_exchange or "celery"))
        #: Task id → signal number, for running tasks stopped by ``revoke(terminate=True)``.
        self.terminated: dict[str, int] = {}
        #: Stamp name → revoked values (``revoke_by_stamped_headers``).
        self.revoked_stamps: dict[str, set[str]] = {}
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="celeriac-control")
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        statedb = worker.options.extra.get("statedb") or self.app.conf.worker_state_db
        self.statedb = StateDB(str(statedb)) if statedb else None
        if self.statedb is not None:
            revoked, clock = self.statedb.load()
            for task_id, stamp in sorted(revoked.items(), key=lambda kv: kv[1]):
                worker.state.revoked.add(task_id, stamp)
            self.clock.adjust(clock)

    @property
    def clock(self) -> Any:
        return self.worker.events.dispatcher.clock

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Declare the node's queue binding, subscribe, and start serving requests."""
        loop = asyncio.get_running_loop()
        transport = self.app.transport
        try:
            await loop.run_in_executor(
                self._executor, transport.declare, self.mailbox.node_queue(self.hostname)
            )
        except Exception as exc:  # the binding is informational; commands work without it
            logger.debug("declaring the pidbox queue failed: %r", exc)
        self._subscription = await loop.run_in_executor(
            self._executor, transport.subscribe, self.mailbox.exchange, ("#",)
        )
        self._task = asyncio.create_task(self._serve(), name="control")

    async def stop(self) -> None:
        """Stop serving; save the statedb."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        sub, self._subscription = self._subscription, None
        if sub is not None:
            # Queued behind any get() still running on the executor thread.
            self._executor.submit(sub.close)
            # As kombu deletes an auto-delete pidbox queue: the next worker's mingle then
            # does not wait for this one.
            await asyncio.get_running_loop().run_in_executor(None, self._unbind)
        self.save_state()
        self._executor.shutdown(wait=False)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        sub = self._subscription
        assert sub is not None
        while True:
            try:
                items = await loop.run_in_executor(self._executor, sub.get, 1.0)
            except Exception as exc:
                logger.error("control: receiving commands failed (%r); retrying", exc)
                await asyncio.sleep(1.0)
                continue
            for _, message in items:
                answer = self.handle(message)
                if answer is not None:
                    await loop.run_in_executor(self._executor, self._send_reply, *answer)

    # -- requests ------------------------------------------------------------------------------
    def handle(self, message: Message) -> tuple[dict[str, Any], str, Any] | None:
        """Run the request in *message*; return ``(reply_to, ticket, result)`` when one is due."""
        expires = message.headers.get("expires")
        if isinstance(expires, int | float) and expires and time.time() > expires:
            return None
        clock = message.headers.get("clock")
        if isinstance(clock, int):
            self.clock.adjust(clock)
        try:
            body = serialization.loads(
                message.body, message.content_type, message.content_encoding, accept=CONTROL_ACCEPT
            )
        except Exception as exc:
            logger.warning("control: undecodable request ignored: %r", exc)
            return None
        if not isinstance(body, dict) or not self._for_me(body):
            return None
        method = str(body.get("method") or "")
        arguments = body.get("arguments") or {}
        result = self.dispatch(method, arguments if isinstance(arguments, dict) else {})
        reply_to = body.get("reply_to")
        if result is NO_REPLY or not isinstance(reply_to, dict) or not body.get("ticket"):
            return None
        return reply_to, str(body["ticket"]), result

    def _for_me(self, body: Mapping[str, Any]) -> bool:
        destination = body.get("destination")
        if destination and self.hostname not in destination:
            return False
        pattern = body.get("pattern")
        return not pattern or matches(self.hostname, str(pattern), body.get("matcher"))

    def dispatch(self, method: str, arguments: Mapping[str, Any]) -> Any:
        """Call the handler for *method*; errors become ``{"error": ...}`` replies."""
        handler = HANDLERS.get(method)
        if handler is None:
            return nok(f"No such command: {method!r}")
        try:
            return handler(self, **arguments)
        except TypeError as exc:
            return nok(f"{method}: bad arguments {dict(arguments)!r}: {exc}")
        except Exception as exc:
            logger.exception("control command %s failed", method)
            return nok(repr(exc))

    def _send_reply(self, reply_to: Mapping[str, Any], ticket: str, result: Any) -> None:
        content_type, encoding, data = serialization.dumps({self.hostname: result}, "json")
        message = Message(
            data,
            headers={"ticket": ticket, "clock": self.clock.forward()},
            properties={"delivery_mode": 1, "priority": 0},
            content_type=content_type,
            content_encoding=encoding,
        )
        exchange = str(reply_to.get("exchange") or self.mailbox.reply_exchange)
        routing_key = str(reply_to.get("routing_key") or "")
        try:
            self.app.transport.publish([Outgoing(message, exchange, routing_key)])
        except Exception as exc:
            logger.error("control: reply to %s not sent: %r", routing_key, exc)

    # -- mingle and statedb ----------------------------------------------------------------------
    async def mingle(self, timeout: float = 1.0) -> int:
        """Get revoked ids from running workers (Celery's ``hello``); return how many replied."""
        loop = asyncio.get_running_loop()
        others = await loop.run_in_executor(self._executor, self._other_nodes)
        if others is not None and not others:
            logger.info("mingle: all alone")
            return 0
        # Stop waiting once every node bound to the pidbox answered (stale bindings of
        # workers that died still cost the full timeout, as in Celery).
        limit = len(others) if others is not None else None
        inspect = self.app.control.inspect(timeout=timeout, limit=limit)
        ours = list(self.worker.state.revoked)
        try:
            replies = await loop.run_in_executor(self._executor, inspect.hello, self.hostname, ours)
        except Exception as exc:
            logger.warning("mingle: no sync with other workers (%r)", exc)
            return 0
        replies = {k: v for k, v in (replies or {}).items() if k != self.hostname and v}
        for node, reply in replies.items():
            if not isinstance(reply, dict):
                continue
            logger.debug("mingle: sync with %s", node)
            clock = reply.get("clock")
            if isinstance(clock, int):
                self.clock.adjust(clock)
            self.merge_revoked(reply.get("revoked"))
        logger.info("mingle: %s", f"synced with {len(replies)} node(s)" if replies else "all alone")
        return len(replies)

    def _unbind(self) -> None:
        try:
            self.app.transport.unbind(self.mailbox.node_queue(self.hostname))
        except Exception as exc:
            logger.debug("removing the pidbox binding failed: %r", exc)

    def _other_nodes(self) -> list[str] | None:
        """Pidbox queues of other workers, or None when the broker cannot list them."""
        try:
            bound = self.app.transport.bound_queues(self.mailbox.exchange)
        except Exception as exc:
            logger.debug("mingle: listing the pidbox bindings failed: %r", exc)
            return None
        if bound is None:
            return None
        own = self.mailbox.node_queue(self.hostname).name
        return [name for name in bound if name != own]

    def merge_revoked(self, ids: Iterable[str] | Mapping[str, Any] | None) -> None:
        """Add ids revoked elsewhere (a list, or a mapping whose keys are ids)."""
        if not ids:
            return
        self.worker.state.revoked.update(str(i) for i in ids)
        self.save_state()

    def save_state(self) -> None:
        if self.statedb is None:
            return
        try:
            self.statedb.save(self.worker.state.revoked.as_dict(), int(self.clock.value))
        except OSError as exc:
            logger.error("statedb %s not written: %s", self.statedb.path, exc)

    # -- helpers for handlers ------------------------------------------------------------------
    def requests(self) -> dict[str, tuple[str, Request]]:
        """Every request the worker holds, by id, with Celery's state name for it."""
        consumer = self.worker.consumer
        if consumer is None:
            return {}
        found: dict[str, tuple[str, Request]] = {}
        for request in consumer.held.values():
            found[request.id] = ("scheduled" if request.message.eta else "reserved", request)
        for request in consumer.ready:
            found[request.id] = ("reserved", request)
        for request in consumer.active.values():
            found[request.id] = ("active", request)
        for state, delivery in self.worker.pool.self_fetched():
            fetched = consumer._request(delivery, quiet=True)
            if fetched is not None:
                found.setdefault(fetched.id, (state, fetched))
        return found

    def revoked_by_stamp(self, request: Request) -> bool:
        """True when *request* carries a stamp value revoked by ``revoke_by_stamped_headers``."""
        if not self.revoked_stamps:
            return False
        stamps = request.message.headers.get("stamps") or {}
        for name, revoked in self.revoked_stamps.items():
            values = stamps.get(name) if isinstance(stamps, dict) else None
            if values is None:
                values = request.message.headers.get(name)
            if values is None:
                continue
            values = values if isinstance(values, list | tuple) else [values]
            if revoked & {str(v) for v in values}:
                return True
        return False

    def terminate(self, request_id: str, signum: int) -> bool:
        """Stop a running task (prefork: signal its process; threads/asyncio: interrupt it)."""
        consumer = self.worker.consumer
        if consumer is None:
            return False
        if request_id not in consumer.active and not any(
            d.message.headers.get("id") == request_id for _, d in self.worker.pool.self_fetched()
        ):
            return False
        self.terminated[request_id] = signum
        if not self.worker.pool.terminate_job(request_id, signum):
            self.terminated.pop(request_id, None)
            return False
        return True

    def mark_revoked_later(self, ids: list[str]) -> None:
        """Store REVOKED for tasks that have not started anywhere (off the event loop)."""
        backend = self.app.backend
        if backend is None or not ids:
            return

        def mark() -> None:
            for task_id in ids:
                try:
                    if backend.get_task_meta(task_id).get("status") in REVOCABLE_STATES:
                        backend.mark_as_revoked(task_id, "revoked")
                except Exception as exc:
                    logger.warning("storing REVOKED for %s failed: %r", task_id, exc)

        try:
            self._executor.submit(mark)
        except RuntimeError:  # shutting down
            pass


# -- inspect commands ----------------------------------------------------------------------------
@command()
def ping(node: ControlNode, **_: Any) -> Any:
    return ok("pong")


@command()
def hello(node: ControlNode, from_node: str, revoked: Any = None, **_: Any) -> Any:
    if from_node == node.hostname:
        return NO_REPLY
    logger.info("sync with %s", from_node)
    node.merge_revoked(revoked)
    node.worker.state.revoked.purge()
    return {"revoked": list(node.worker.state.revoked), "clock": node.clock.forward()}


@command()
def clock(node: ControlNode, **_: Any) -> Any:
    return {"clock": node.clock.value}


@command()
def active(node: ControlNode, safe: Any = None, **_: Any) -> Any:
    return [r.info() for state, r in node.requests().values() if state == "active"]


@command()
def reserved(node: ControlNode, safe: Any = None, **_: Any) -> Any:
    return [r.info() for state, r in node.requests().values() if state == "reserved"]


@command()
def scheduled(node: ControlNode, safe: Any = None, **_: Any) -> Any:
    out = []
    for state, request in node.requests().values():
        if state == "scheduled" and request.message.eta is not None:
            out.append(
                {
                    "eta": request.message.eta.isoformat(),
                    "priority": request.delivery.message.priority,
                    "request": request.info(),
                }
            )
    return out


@command()
def revoked(node: ControlNode, **_: Any) -> Any:
    return list(node.worker.state.revoked)


@command()
def query_task(node: ControlNode, ids: Any = None, **_: Any) -> Any:
    held = node.requests()
    return {
        task_id: [held[task_id][0], held[task_id][1].info()]
        for task_id in _ids(ids)
        if task_id in held
    }


@command()
def registered(
    node: ControlNode, taskinfoitems: Any = None, builtins: bool = False, **_: Any
) -> Any:
    items = [
        i
        for i in (taskinfoitems or DEFAULT_TASK_INFO_ITEMS)
        if isinstance(i, str) and not i.startswith("_")
    ]
    tasks = node.app.tasks
    out = []
    for name in sorted(tasks):
        if not builtins and name.startswith(("celery.", "celeriac.")):
            continue
        task = tasks[name]
        fields = [f"{i}={getattr(task, i)}" for i in items if getattr(task, i, None) is not None]
        out.append(f"{name} [{' '.join(fields)}]" if fields else name)
    return out


@command()
def stats(node: ControlNode, **_: Any) -> Any:
    worker = node.worker
    consumer = worker.consumer
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "total": dict(worker.state.processed),
        "pid": os.getpid(),
        "clock": str(node.clock.value),
        "uptime": int(time.time() - worker.state.started),
        "pool": worker.pool.info(),
        "broker": _broker_info(node),
        "prefetch_count": consumer.window if consumer else 0,
        "rusage": {name[3:]: getattr(usage, name) for name in dir(usage) if name.startswith("ru_")},
    }


def _broker_info(node: ControlNode) -> dict[str, Any]:
    transport = node.app.transport
    parts = urlsplit(transport.url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return {
        "hostname": parts.hostname or "",
        "userid": unquote(parts.username) if parts.username else None,
        "virtual_host": parts.path.lstrip("/") or "/",
        "port": port,
        "insist": False,
        "ssl": parts.scheme in ("rediss", "amqps"),
        "transport": parts.scheme,
        "connect_timeout": transport.options.get("connect_timeout"),
        "transport_options": dict(node.app.conf.broker_transport_options or {}),
        "login_method": None,
        "uri_prefix": None,
        "heartbeat": transport.options.get("heartbeat"),
        "failover_strategy": "round-robin",
        "alternates": [],
    }


@command()
def active_queues(node: ControlNode, **_: Any) -> Any:
    return [node.app.queue_for(name).as_dict() for name in node.worker.queue_names]


@command()
def conf(node: ControlNode, with_defaults: Any = False, **_: Any) -> Any:
    settings = node.app.conf
    # Only what the app changed unless asked; Settings keeps those in _changes.
    keys = list(settings) if _truthy(with_defaults) else list(getattr(settings, "_changes", {}))
    out: dict[str, Any] = {}
    for key in keys:
        if not isinstance(key, str) or key.startswith("__"):
            continue
        out[key] = _jsonable(settings.get(key))
    return out


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on", "y")
    return bool(value)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


@command()
def report(node: ControlNode, **_: Any) -> Any:
    app = node.app
    lines = [
        "software -> celeriac:0.1.0 (Celery 5 compatible)",
        f"platform -> system:{platform.system()} arch:{platform.machine()} "
        f"imp:{platform.python_implementation()}",
        f"python -> {sys.version.split()[0]}",
        f"broker -> {app.transport.describe()}",
        f"results -> {_censor(app.result_backend_url) if app.result_backend_url else 'disabled'}",
        f"pool -> {node.worker.pool_name} ({node.worker.pool.concurrency})",
    ]
    lines += [
        f"{k}: {v!r}"
        for k, v in sorted(conf(node).items())
        if not any(s in k.lower() for s in ("password", "secret", "key", "url"))
    ]
    return ok("\n".join(lines) + "\n")


def _censor(url: str) -> str:
    from celeriac.transports.base import censor_url

    return censor_url(url)


@command()
def memsample(node: ControlNode, **_: Any) -> Any:
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.2f}MB"


@command()
def memdump(node: ControlNode, samples: int = 10, **_: Any) -> Any:
    return memsample(node)


@command()
def objgraph(node: ControlNode, **_: Any) -> Any:
    return nok("objgraph is not supported by celeriac workers")


# -- control commands ----------------------------------------------------------------------------
@command()
def revoke(
    node: ControlNode, task_id: Any, terminate: bool = False, signal: Any = None, **_: Any
) -> Any:
    ids = _ids(task_id)
    node.worker.state.revoked.update(ids)
    node.worker.pool.forward_revoked(ids)
    node.save_state()
    running = node.requests()
    node.mark_revoked_later([i for i in ids if running.get(i, ("", None))[0] != "active"])
    if terminate:
        signum = signum_of(signal)
        done = [i for i in ids if node.terminate(i, signum)]
        for task_id_ in done:
            logger.info("Terminating %s (%s)", task_id_, signum)
        return ok(f"terminate: {', '.join(done)}" if done else "terminate: tasks unknown")
    logger.info("Tasks flagged as revoked: %s", ", ".join(ids))
    return ok(f"tasks {ids} flagged as revoked")


@command()
def terminate(node: ControlNode, signal: Any, task_id: Any, **_: Any) -> Any:
    return revoke(node, task_id, terminate=True, signal=signal)


@command()
def revoke_by_stamped_headers(
    node: ControlNode, headers: Any, terminate: bool = False, signal: Any = None, **_: Any
) -> Any:
    if isinstance(headers, list):
        headers = dict(str(h).split("=", 1) for h in headers if "=" in str(h))
    if not isinstance(headers, dict):
        return nok(f"headers {headers!r}: expected a mapping like {{'stamp': ['v1']}}")
    for name, values in headers.items():
        values = values if isinstance(values, list | tuple) else [values]
        node.revoked_stamps.setdefault(str(name), set()).update(str(v) for v in values)
    node.worker.stop_self_fetch("tasks are revoked by stamped headers")
    if not terminate:
        return ok(f"headers {headers} flagged as revoked, but not terminated")
    signum = signum_of(signal)
    done = [
        r.id
        for state, r in node.requests().values()
        if state == "active" and node.revoked_by_stamp(r) and node.terminate(r.id, signum)
    ]
    if not done:
        return ok(f"headers {headers} were not terminated")
    return ok(f"headers {headers} revoked; terminated: {', '.join(done)}")


@command()
def rate_limit(node: ControlNode, task_name: str, rate_limit: Any = None, **_: Any) -> Any:
    try:
        parse_rate(rate_limit)
    except ValueError as exc:
        return nok(f"Invalid rate limit string: {exc!r}")
    task = node.app.tasks.get(task_name)
    if task is None:
        return nok("unknown task")
    task.rate_limit = rate_limit or None
    if rate_limit:
        node.worker.stop_self_fetch(f"{task_name} has a rate limit now")
    consumer = node.worker.consumer
    if consumer is not None:
        consumer.set_rate_limit(task_name, rate_limit)
    if not rate_limit:
        return ok("rate limit disabled successfully")
    return ok("new rate limit set successfully")


@command()
def time_limit(
    node: ControlNode, task_name: str | None = None, hard: Any = None, soft: Any = None, **_: Any
) -> Any:
    task = node.app.tasks.get(task_name or "")
    if task is None:
        return nok("unknown task")
    task.soft_time_limit = float(soft) if soft is not None else None
    task.time_limit = float(hard) if hard is not None else None
    if hard is not None or soft is not None:
        node.worker.stop_self_fetch(f"{task.name} has time limits now")
    return ok("time limits set successfully")


@command()
def enable_events(node: ControlNode, **_: Any) -> Any:
    events = node.worker.events
    if events.task_events:
        return ok("task events already enabled")
    events.task_events = True
    node.worker.stop_self_fetch("task events are on")
    return ok("task events enabled")


@command()
def disable_events(node: ControlNode, **_: Any) -> Any:
    events = node.worker.events
    if not events.task_events:
        return ok("task events already disabled")
    events.dispatcher.flush()
    events.task_events = False
    return ok("task events disabled")


@command()
def heartbeat(node: ControlNode, **_: Any) -> Any:
    events = node.worker.events
    node._executor.submit(events.dispatcher.send, "worker-heartbeat", **events.worker_fields())
    return None


@command()
def pool_grow(node: ControlNode, n: Any = 1, **_: Any) -> Any:
    if node.worker.options.autoscale:
        return nok("pool_grow is not supported with autoscale. Adjust autoscale range instead.")
    node.worker.pool.grow(int(n))
    if node.worker.consumer is not None:
        node.worker.consumer.wake()
    return ok("pool will grow")


@command()
def pool_shrink(node: ControlNode, n: Any = 1, **_: Any) -> Any:
    if node.worker.options.autoscale:
        return nok("pool_shrink is not supported with autoscale. Adjust autoscale range instead.")
    node.worker.pool.shrink(int(n))
    return ok("pool will shrink")


@command()
def pool_restart(node: ControlNode, **_: Any) -> Any:
    return nok("pool_restart is not supported by celeriac workers; restart the worker")


@command()
def autoscale(node: ControlNode, max: Any = None, min: Any = None, **_: Any) -> Any:
    current = node.worker.options.autoscale
    if not current:
        raise ValueError("Autoscale not enabled")
    high = int(max) if max is not None else current[0]
    low = int(min) if min is not None else current[1]
    if low > high:
        return nok(f"autoscale: min ({low}) is larger than max ({high})")
    node.worker.options.autoscale = (high, low)
    return ok(f"autoscale now max={high} min={low}")


@command()
def shutdown(node: ControlNode, msg: str = "Got shutdown from remote", **_: Any) -> Any:
    logger.warning(msg)
    node.worker.request_shutdown(None)
    return NO_REPLY


@command()
def add_consumer(
    node: ControlNode,
    queue: str,
    exchange: str | None = None,
    exchange_type: str | None = None,
    routing_key: str | None = None,
    **options: Any,
) -> Any:
    from celeriac.protocol.entities import Exchange, Queue

    worker = node.worker
    if queue in worker.queue_names:
        return ok(f"already consuming from {queue!r}")
    app = node.app
    if exchange or exchange_type or routing_key:
        entity = Queue(
            queue, Exchange(exchange or queue, exchange_type or "direct"), routing_key or queue
        )
        app._queue_cache.setdefault(queue, entity)
    else:
        entity = app.queue_for(queue)
    node._executor.submit(app.transport.declare, entity)
    worker.queue_names.append(queue)
    if worker.consumer is not None:
        worker.consumer.queues_changed()
    logger.info("Started consuming from %s", queue)
    return ok(f"add consumer {queue}")


@command()
def cancel_consumer(node: ControlNode, queue: str, **_: Any) -> Any:
    names = node.worker.queue_names
    if queue in names:
        names.remove(queue)
        if node.worker.consumer is not None:
            node.worker.consumer.queues_changed()
    return ok(f"no longer consuming from {queue}")


@command()
def election(node: ControlNode, **_: Any) -> Any:
    return None
