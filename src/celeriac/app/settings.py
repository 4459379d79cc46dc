"""The table of every setting: name, default, accepted type, old uppercase names, one-line doc.

This table is the single source for the defaults ``app.conf`` starts from, for validating what users
set, for translating Celery 3/4 uppercase names, and for the settings list in
``docs/configuration.md`` (see :func:`settings_markdown_table`).

Names and defaults are Celery 5.7's, so a Celery configuration module works unchanged. The only
additions are five celeriac settings (marked "celeriac" in the docs). ``broker_url`` and
``result_backend`` default to ``None`` as in Celery; the app layer reads ``None`` as "use the
embedded SQLite file" instead of Celery's AMQP on localhost.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from copy import deepcopy
from dataclasses import dataclass
from datetime import timedelta, tzinfo
from types import MappingProxyType
from typing import Any

from celeriac.exceptions import ImproperlyConfigured

__all__ = [
    "NAMESPACES",
    "OLD_NAMES",
    "SETTINGS",
    "Kind",
    "Setting",
    "closest_setting",
    "coerce_setting",
    "defaults",
    "new_name",
    "settings_markdown_table",
]


# -- kinds: what a setting accepts, and how text from the environment or CLI becomes that ----------


@dataclass(frozen=True, slots=True)
class Kind:
    """An accepted type: a check for ready values and an optional parser for text.

    ``parse`` is only used for ``str`` values that do not already pass ``check``: that is where
    Celery converts text coming from environment variables and command-line options.
    """

    label: str
    check: Callable[[Any], bool]
    parse: Callable[[str], Any] | None = None

    def convert(self, value: Any) -> Any:
        """Return ``value`` (parsed from text when needed); raise ``ValueError`` if not accepted."""
        if self.check(value):
            return value
        if isinstance(value, str) and self.parse is not None:
            return self.parse(value)
        raise ValueError(value)

    def __or__(self, other: Kind) -> Kind:
        parsers = [k.parse for k in (self, other) if k.parse is not None]
        return Kind(
            f"{self.label} or {other.label}",
            lambda v: self.check(v) or other.check(v),
            _first_parse(parsers) if parsers else None,
        )


def _first_parse(parsers: list[Callable[[str], Any]]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        for parser in parsers[:-1]:
            try:
                return parser(text)
            except ValueError:
                continue
        return parsers[-1](text)

    return parse


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(text)


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but True as a count or a port is always a mistake.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float)


def _split_words(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _is_str_sequence(value: Any) -> bool:
    return isinstance(value, list | tuple | set | frozenset) and all(
        isinstance(item, str) for item in value
    )


def _parse_concurrency(text: str) -> int | str:
    word = text.strip()
    return "auto" if word.lower() == "auto" else int(word)


BOOL = Kind("bool", lambda v: isinstance(v, bool), _parse_bool)
INT = Kind("int", _is_int, lambda s: int(s.strip()))
FLOAT = Kind("float", _is_number, lambda s: float(s.strip()))
STR = Kind("str", lambda v: isinstance(v, str))
BYTES = Kind("bytes", lambda v: isinstance(v, bytes))
DICT = Kind("dict", lambda v: isinstance(v, Mapping))
LIST = Kind("list of str", _is_str_sequence, _split_words)
TUPLE = Kind("tuple of str", _is_str_sequence, lambda s: tuple(_split_words(s)))
CLASS = Kind("class", lambda v: isinstance(v, type))
CALLABLE = Kind("callable", callable)
ANY = Kind("any", lambda v: True)
TIMEDELTA = Kind("timedelta", lambda v: isinstance(v, timedelta))
TZINFO = Kind("tzinfo", lambda v: isinstance(v, tzinfo))
# Queues are given as a list/tuple of Queue objects (most common) or a dict.
QUEUES = Kind("list or dict", lambda v: isinstance(v, list | tuple | set | frozenset | Mapping))
CONCURRENCY = Kind('int or "auto"', lambda v: _is_int(v) or v == "auto", _parse_concurrency)
URL = STR | LIST  # kombu also takes a list of URLs (failover)
SECONDS = FLOAT | TIMEDELTA
SYMBOL = STR | CLASS  # "module:Class" or the class itself


def choice(*words: str) -> Kind:
    """A string that must be one of ``words``."""
    return Kind(" | ".join(repr(w) for w in words), lambda v: v in words)


# -- the setting record ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its name, default, accepted kind, old names and a one-line description."""

    name: str
    default: Any
    kind: Kind
    doc: str
    old: tuple[str, ...] = ()
    nullable: bool = False
    celeriac_only: bool = False

    @property
    def expected(self) -> str:
        """The accepted form, for error messages and docs."""
        return f"{self.kind.label} or None" if self.nullable else self.kind.label

    def convert(self, value: Any) -> Any:
        """Return the value to store, parsing text; raise ImproperlyConfigured if not accepted."""
        if value is None and self.nullable:
            return None
        try:
            return self.kind.convert(value)
        except (ValueError, TypeError):
            raise ImproperlyConfigured(self.error(value)) from None

    def error(self, value: Any) -> str:
        """The message for a value this setting does not accept."""
        return (
            f"setting {self.name!r} got {value!r} ({type(value).__name__}); "
            f"expected {self.expected}"
        )


@dataclass(frozen=True, slots=True)
class _Entry:
    suffix: str
    default: Any
    kind: Kind
    doc: str
    old: tuple[str, ...] | None
    nullable: bool | None
    celeriac_only: bool


def _e(
    suffix: str,
    default: Any,
    kind: Kind,
    doc: str,
    *,
    old: str | tuple[str, ...] | None = None,
    nullable: bool | None = None,
    celeriac: bool = False,
) -> _Entry:
    old_names = (old,) if isinstance(old, str) else old
    return _Entry(suffix, default, kind, doc, old_names, nullable, celeriac)


def _group(prefix: str, old_pattern: str | None, *entries: _Entry) -> list[Setting]:
    """Build the settings of one namespace.

    The old uppercase name of an entry is, unless the entry names its own: ``old_pattern`` filled
    with the uppercased suffix (``"CELERYD_{}"`` gives ``CELERYD_CONCURRENCY``), or without a
    pattern the uppercased full name (``BROKER_URL``). Celeriac-only settings have no old name.
    """
    built = []
    for entry in entries:
        name = f"{prefix}_{entry.suffix}" if prefix else entry.suffix
        if entry.celeriac_only:
            old: tuple[str, ...] = ()
        elif entry.old is not None:
            old = entry.old
        elif old_pattern is not None:
            old = (old_pattern.format(entry.suffix.upper()),)
        else:
            old = (name.upper(),)
        nullable = entry.default is None if entry.nullable is None else entry.nullable
        built.append(
            Setting(name, entry.default, entry.kind, entry.doc, old, nullable, entry.celeriac_only)
        )
    return built


_LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
_TASK_LOG_FORMAT = (
    "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s"
)

# -- the table ---------------------------------------------------------------------------------

# fmt: off
_TABLE: list[Setting] = [
    *_group(
        "",
        None,
        _e("accept_content", ("json",), LIST, "Content types or serializer names a worker accepts.",
           old="CELERY_ACCEPT_CONTENT"),
        _e("result_accept_content", None, LIST,
           "Content types accepted for results; None means the same as accept_content."),
        _e("enable_utc", True, BOOL, "Keep dates in messages and schedules in UTC."),
        _e("imports", (), TUPLE, "Modules imported when the worker starts.",
           old="CELERY_IMPORTS"),
        _e("include", (), TUPLE, "More modules imported at start, after imports.",
           old="CELERY_INCLUDE"),
        _e("timezone", None, STR | TZINFO, "Time zone for schedules and local dates; None is UTC.",
           old="CELERY_TIMEZONE"),
    ),
    *_group(
        "broker",
        None,
        _e("url", None, URL,
           "Broker URL; None means the embedded SQLite file sqlite:///celeriac.db."),
        _e("read_url", None, URL, "Broker URL for consuming; None means broker_url."),
        _e("write_url", None, URL, "Broker URL for publishing; None means broker_url."),
        _e("transport", None, STR, "Transport name used when broker_url has no scheme."),
        _e("transport_options", {}, DICT, "Extra options passed to the transport."),
        _e("connection_timeout", 4, FLOAT, "Seconds to wait for a broker connection.",
           nullable=True),
        _e("connection_retry", True, BOOL, "Retry when the broker connection is lost."),
        _e("connection_retry_on_startup", None, BOOL,
           "Retry the first connection at start; None follows broker_connection_retry."),
        _e("connection_max_retries", 100, INT,
           "Connection attempts before giving up; 0 or None retries for ever.", nullable=True),
        _e("channel_error_retry", False, BOOL, "Also retry after channel errors."),
        _e("failover_strategy", None, STR | CALLABLE,
           "How to pick the next URL from a list: 'round-robin', 'shuffle' or a callable."),
        _e("heartbeat", 120, FLOAT, "Broker heartbeat interval in seconds (AMQP); 0 disables.",
           nullable=True),
        _e("heartbeat_checkrate", 3.0, FLOAT, "How many times per heartbeat interval to check."),
        _e("login_method", None, STR, "AMQP login method, e.g. AMQPLAIN."),
        _e("native_delayed_delivery_queue_type", "quorum", STR,
           "Queue type for RabbitMQ native delayed delivery."),
        _e("pool_limit", 10, INT, "Most broker connections kept open; 0 or None: no pool.",
           nullable=True),
        _e("pool_acquire_timeout", None, FLOAT,
           "Seconds to wait for a free pooled connection; None waits for ever."),
        _e("use_ssl", False, BOOL | DICT, "Use TLS to the broker; a dict gives the SSL options."),
        _e("host", None, STR, "Legacy: broker host name, used when broker_url is not set."),
        _e("port", None, INT, "Legacy: broker port."),
        _e("user", None, STR, "Legacy: broker user name."),
        _e("password", None, STR, "Legacy: broker password."),
        _e("vhost", None, STR, "Legacy: broker virtual host."),
        _e("dead_letter_queue", "celeriac.dlq", STR,
           "Where undecodable or unknown messages are moved, with the reason.", celeriac=True),
    ),
    *_group(
        "task",
        "CELERY_{}",
        _e("acks_late", False, BOOL, "Acknowledge the message after the task ran, not before."),
        _e("acks_on_failure_or_timeout", True, BOOL,
           "With acks_late, also acknowledge when the task failed or timed out."),
        _e("acks_on_failure", None, BOOL,
           "With acks_late, acknowledge failed tasks; None follows the combined setting."),
        _e("acks_on_timeout", None, BOOL,
           "With acks_late, acknowledge timed-out tasks; None follows the combined setting."),
        _e("always_eager", False, BOOL, "Run tasks in the caller at once instead of sending them."),
        _e("annotations", None, ANY, "Attribute overrides for tasks, by name or with a callable."),
        _e("compression", None, STR, "Compression for task messages, e.g. 'gzip'.",
           old="CELERY_MESSAGE_COMPRESSION"),
        _e("create_missing_queues", True, BOOL,
           "Declare queues a route names but task_queues lacks."),
        _e("create_missing_queue_type", "classic", STR,
           "RabbitMQ type of queues declared on the fly."),
        _e("create_missing_queue_exchange_type", None, STR,
           "Exchange type for queues declared on the fly; None: the default."),
        _e("inherit_parent_priority", False, BOOL, "Child tasks inherit the parent's priority."),
        _e("default_delivery_mode", 2, INT | STR,
           "2 or 'persistent' keeps messages on disk; 1 or 'transient' does not."),
        _e("default_queue", "celery", STR, "Queue for tasks with no route."),
        _e("default_queue_type", "classic", STR, "RabbitMQ type of the default queue."),
        _e("default_exchange", None, STR, "Exchange of the default queue; None means its name."),
        _e("default_exchange_type", "direct", STR, "Type of the default exchange."),
        _e("default_routing_key", None, STR,
           "Routing key of the default queue; None means its name."),
        _e("default_rate_limit", None, STR | FLOAT, "Rate limit for every task, e.g. '10/m'."),
        _e("default_priority", None, INT, "Priority of messages that set none."),
        _e("eager_propagates", False, BOOL, "Eager tasks re-raise their exceptions.",
           old="CELERY_EAGER_PROPAGATES_EXCEPTIONS"),
        _e("ignore_result", False, BOOL, "Do not store task results."),
        _e("store_eager_result", False, BOOL, "Store the results of eager tasks too."),
        _e("protocol", 2, INT, "Task message protocol version sent (1 or 2).",
           old="CELERY_TASK_PROTOCOL"),
        _e("publish_retry", True, BOOL, "Retry publishing when the broker connection fails.",
           old="CELERY_TASK_PUBLISH_RETRY"),
        _e("publish_retry_policy",
           {"max_retries": 3, "interval_start": 0, "interval_max": 1, "interval_step": 0.2},
           DICT, "How publishing is retried: max_retries and interval_* seconds.",
           old="CELERY_TASK_PUBLISH_RETRY_POLICY"),
        _e("queues", None, QUEUES, "Queues workers consume from; None: the default queue.",
           old="CELERY_QUEUES"),
        _e("queue_max_priority", None, INT, "x-max-priority of declared queues."),
        _e("reject_on_worker_lost", None, BOOL,
           "With acks_late, requeue the message when the pool process dies."),
        _e("retry_on_worker_lost", False, BOOL, "Retry tasks whose pool process died."),
        _e("remote_tracebacks", False, BOOL, "Show the worker's traceback when re-raising errors."),
        _e("repr_maxlevels", 3, INT, "Nesting depth shown when task arguments are printed."),
        _e("routes", None, ANY, "Routes from task names to queues: dict, list or router functions.",
           old="CELERY_ROUTES"),
        _e("send_sent_event", False, BOOL, "Send a task-sent event when a task is published.",
           old="CELERY_SEND_TASK_SENT_EVENT"),
        _e("serializer", "json", STR, "Serializer for task messages.",
           old="CELERY_TASK_SERIALIZER"),
        _e("soft_time_limit", None, FLOAT,
           "Seconds before SoftTimeLimitExceeded is raised in the task.",
           old="CELERYD_TASK_SOFT_TIME_LIMIT"),
        _e("time_limit", None, FLOAT, "Seconds before the task's process is killed.",
           old="CELERYD_TASK_TIME_LIMIT"),
        _e("store_errors_even_if_ignored", False, BOOL, "Store failures of ignore_result tasks."),
        _e("track_started", False, BOOL, "Record a STARTED state when a task begins."),
        _e("allow_error_cb_on_chord_header", False, BOOL,
           "Let error callbacks on a chord header run for each failing task."),
    ),
    *_group(
        "result",
        "CELERY_RESULT_{}",
        _e("backend", None, URL | CLASS,
           "Result store URL; None lets the app choose one to match the broker."),
        _e("cache_max", -1, INT, "Results kept in the client cache; -1 disables, 0 is unlimited.",
           old="CELERY_MAX_CACHED_RESULTS"),
        _e("compression", None, STR, "Compression for stored results."),
        _e("exchange", "celeryresults", STR, "Exchange for results sent as messages (rpc)."),
        _e("exchange_type", "direct", STR, "Type of the result exchange."),
        _e("expires", timedelta(days=1), SECONDS,
           "How long results are kept (seconds or timedelta); None or 0 keeps them.",
           old="CELERY_TASK_RESULT_EXPIRES", nullable=True),
        _e("chord_expires", None, SECONDS,
           "How long chord counters are kept; None: result_expires."),
        _e("failure_expires", None, SECONDS,
           "How long failure results are kept; None: result_expires."),
        _e("persistent", None, BOOL, "Keep result messages on disk (rpc results)."),
        _e("extended", False, BOOL, "Also store the task name, arguments, worker and queue."),
        _e("serializer", "json", STR, "Serializer for stored results."),
        _e("backend_transport_options", {}, DICT, "Extra options passed to the result store."),
        _e("chord_retry_interval", 1.0, FLOAT, "Seconds between checks of a chord's header."),
        _e("chord_join_timeout", 3.0, FLOAT, "Seconds to wait when joining a chord's header."),
        _e("backend_max_sleep_between_retries_ms", 10000, INT,
           "Longest pause between result store retries, in ms."),
        _e("backend_max_retries", math.inf, FLOAT, "Most result store retries."),
        _e("backend_base_sleep_between_retries_ms", 10, INT,
           "First pause between result store retries, in ms."),
        _e("backend_always_retry", False, BOOL, "Retry result store operations on errors."),
    ),
    *_group(
        "worker",
        "CELERYD_{}",
        _e("agent", None, STR, "Monitoring agent class started with the worker."),
        _e("autoscaler", "celery.worker.autoscale:Autoscaler", SYMBOL,
           "Class that grows and shrinks the pool."),
        _e("cancel_long_running_tasks_on_connection_loss", False, BOOL,
           "Cancel acks_late tasks still running when the broker connection is lost."),
        _e("soft_shutdown_timeout", 0.0, FLOAT,
           "Seconds running tasks get to finish at a cold shutdown."),
        _e("enable_soft_shutdown_on_idle", False, BOOL,
           "Wait soft_shutdown_timeout even when no task runs."),
        _e("concurrency", None, CONCURRENCY,
           "Pool processes or threads; None: the number of CPUs."),
        _e("consumer", "celery.worker.consumer:Consumer", SYMBOL, "Consumer class of the worker."),
        _e("direct", False, BOOL, "Give each worker its own queue named after the node.",
           old="CELERY_WORKER_DIRECT"),
        _e("disable_rate_limits", False, BOOL, "Ignore every task rate limit.",
           old="CELERY_DISABLE_RATE_LIMITS"),
        _e("deduplicate_successful_tasks", False, BOOL,
           "With acks_late, skip a redelivered task that already succeeded."),
        _e("enable_remote_control", True, BOOL, "Answer remote control commands.",
           old="CELERY_ENABLE_REMOTE_CONTROL"),
        _e("hijack_root_logger", True, BOOL, "Replace the root logger's handlers at start."),
        _e("log_color", None, BOOL, "Colour log output; None: when writing to a terminal."),
        _e("log_datefmt", None, STR, "Date format of log lines."),
        _e("log_format", _LOG_FORMAT, STR, "Format of worker log lines."),
        _e("lost_wait", 10.0, FLOAT, "Seconds to wait for a lost pool process's result.",
           old="CELERYD_WORKER_LOST_WAIT"),
        _e("max_memory_per_child", None, INT, "KiB a pool process may use before it is replaced."),
        _e("max_tasks_per_child", None, INT, "Tasks a pool process runs before it is replaced."),
        _e("pool", "prefork", SYMBOL, "Pool: prefork, threads, solo, asyncio, or a class."),
        _e("pool_putlocks", True, BOOL, "Wait for a free pool process before taking a message."),
        _e("pool_restarts", False, BOOL, "Allow the pool_restart remote control command."),
        _e("pool_start_method", "fork", STR, "multiprocessing start method of prefork pools."),
        _e("proc_alive_timeout", 4.0, FLOAT, "Seconds a new pool process has to report ready."),
        _e("prefetch_multiplier", 4, INT, "Messages reserved per pool process."),
        _e("eta_task_limit", None, INT, "Most ETA or countdown tasks a worker holds in memory."),
        _e("enable_prefetch_count_reduction", True, BOOL,
           "Lower prefetch after a connection loss until tasks finish."),
        _e("disable_prefetch", False, BOOL, "Only take a message when a pool process is free."),
        _e("redirect_stdouts", True, BOOL, "Send print output of tasks to the logger.",
           old="CELERY_REDIRECT_STDOUTS"),
        _e("redirect_stdouts_level", "WARNING", STR | INT, "Log level of redirected output.",
           old="CELERY_REDIRECT_STDOUTS_LEVEL"),
        _e("send_task_events", False, BOOL, "Send task events for monitors (-E).",
           old="CELERY_SEND_EVENTS"),
        _e("state_db", None, STR, "File keeping revoked task ids across restarts."),
        _e("task_log_datefmt", None, STR, "Date format of log lines inside tasks."),
        _e("task_log_format", _TASK_LOG_FORMAT, STR, "Format of log lines inside tasks."),
        _e("timer", None, STR, "Timer class for ETA and time limits."),
        _e("timer_precision", 1.0, FLOAT, "Longest sleep, in seconds, of the timer loop."),
        _e("detect_quorum_queues", True, BOOL,
           "Turn off global QoS when consuming RabbitMQ quorum queues."),
        _e("eta_park_threshold", 60.0, FLOAT,
           "Seconds: an ETA further away is parked in the broker, not held in memory.",
           celeriac=True),
        _e("pool_fetch", True, BOOL,
           "Prefork on Redis: pool processes fetch plain tasks themselves (see docs/worker.md).",
           celeriac=True),
    ),
    *_group(
        "beat",
        "CELERYBEAT_{}",
        _e("schedule", {}, DICT, "Periodic tasks: name to task, schedule, args and options."),
        _e("scheduler", "celery.beat:PersistentScheduler", SYMBOL, "Scheduler class of beat."),
        _e("schedule_filename", "celerybeat-schedule", STR,
           "File the default scheduler keeps its state in."),
        _e("sync_every", 0, INT, "Tasks sent between state syncs; 0 syncs on a timer."),
        _e("max_loop_interval", 0, FLOAT,
           "Longest sleep between schedule checks; 0 lets the scheduler pick."),
        _e("enable_remote_control", False, BOOL, "Answer remote control commands in beat."),
        _e("remote_control_max_tick_age", None, FLOAT,
           "Seconds since the last tick after which beat reports itself unhealthy."),
        _e("cron_starting_deadline", None, INT,
           "Seconds a missed crontab run may be late and still run at start."),
        _e("catch_up", "once", choice("once", "all", "skip"),
           "Missed runs after downtime: run once, run all, or skip them.", celeriac=True),
        _e("lock_url", None, STR,
           "Redis or SQLite URL for beat's leader lock and state; None: the broker.",
           celeriac=True),
    ),
    *_group(
        "event",
        "CELERY_EVENT_{}",
        _e("queue_expires", 60.0, FLOAT, "Seconds an unused event queue lives.", nullable=True),
        _e("queue_ttl", 5.0, FLOAT, "Seconds an event message lives in its queue.", nullable=True),
        _e("queue_prefix", "celeryev", STR, "Prefix of event queue names."),
        _e("queue_exclusive", True, BOOL, "Event queues are exclusive to their consumer."),
        _e("queue_durable", False, BOOL, "Event queues survive a broker restart."),
        _e("serializer", "json", STR, "Serializer for event messages."),
        _e("exchange", "celeryev", STR, "Exchange events are sent to."),
    ),
    *_group(
        "control",
        None,
        _e("queue_ttl", 300.0, FLOAT, "Seconds a control message lives.", nullable=True),
        _e("queue_expires", 10.0, FLOAT, "Seconds an unused reply queue lives.", nullable=True),
        _e("queue_exclusive", True, BOOL, "Control queues are exclusive to their consumer."),
        _e("queue_durable", False, BOOL, "Control queues survive a broker restart."),
        _e("exchange", "celery", STR, "Name prefix of the control exchanges."),
    ),
    *_group(
        "redis",
        "CELERY_REDIS_{}",
        _e("backend_use_ssl", None, DICT | BOOL, "TLS options for a Redis result store."),
        _e("db", None, INT, "Legacy: Redis database number."),
        _e("host", None, STR, "Legacy: Redis host name."),
        _e("max_connections", None, INT, "Most connections in the Redis pool."),
        _e("username", None, STR, "Legacy: Redis user name."),
        _e("password", None, STR, "Legacy: Redis password."),
        _e("port", None, INT, "Legacy: Redis port."),
        _e("socket_timeout", 120.0, FLOAT, "Seconds a Redis read or write may take.",
           nullable=True),
        _e("socket_connect_timeout", None, FLOAT, "Seconds a Redis connect may take."),
        _e("retry_on_timeout", False, BOOL, "Retry Redis commands that timed out."),
        _e("socket_keepalive", False, BOOL, "TCP keepalive on Redis connections."),
    ),
    *_group(
        "database",
        "DATABASE_{}",
        _e("url", None, STR, "SQLAlchemy URL of a database result store.",
           old="CELERY_RESULT_DBURI"),
        _e("engine_options", {"pool_pre_ping": True, "pool_recycle": 3600}, DICT,
           "Options for the SQLAlchemy engine.", old="CELERY_RESULT_ENGINE_OPTIONS"),
        _e("engine_callback", None, ANY, "Called with the engine after it is created."),
        _e("short_lived_sessions", False, BOOL, "Open a new session for each operation.",
           old="CELERY_RESULT_DB_SHORT_LIVED_SESSIONS"),
        _e("table_schemas", None, DICT, "Schemas of the result tables."),
        _e("table_names", None, DICT, "Names of the result tables.",
           old="CELERY_RESULT_DB_TABLENAMES"),
        _e("create_tables_at_setup", True, BOOL, "Create the result tables when the store starts."),
    ),
    *_group(
        "cache",
        "CELERY_CACHE_{}",
        _e("backend", None, STR, "Cache result store: memcached URL or 'memory'."),
        _e("backend_options", {}, DICT, "Options for the cache client."),
    ),
    *_group(
        "cassandra",
        None,
        _e("entry_ttl", None, FLOAT, "Seconds Cassandra keeps a result."),
        _e("keyspace", None, STR, "Cassandra keyspace of results."),
        _e("port", None, INT | STR, "Cassandra port."),
        _e("read_consistency", None, STR, "Cassandra read consistency level."),
        _e("servers", None, LIST, "Cassandra hosts."),
        _e("bundle_path", None, STR, "Secure connect bundle for DataStax Astra."),
        _e("table", None, STR, "Cassandra table of results."),
        _e("write_consistency", None, STR, "Cassandra write consistency level."),
        _e("auth_provider", None, STR, "Name of the Cassandra auth provider class."),
        _e("auth_kwargs", None, DICT | STR, "Arguments for the Cassandra auth provider."),
        _e("options", {}, DICT, "Extra options for the Cassandra cluster."),
    ),
    *_group(
        "s3",
        None,
        _e("access_key_id", None, STR, "S3 access key id."),
        _e("secret_access_key", None, STR, "S3 secret access key."),
        _e("bucket", None, STR, "S3 bucket of results."),
        _e("base_path", None, STR, "Key prefix of results in the bucket."),
        _e("endpoint_url", None, STR, "S3-compatible endpoint URL."),
        _e("region", None, STR, "S3 region."),
    ),
    *_group(
        "azureblockblob",
        None,
        _e("container_name", "celery", STR, "Azure container of results."),
        _e("retry_initial_backoff_sec", 2, INT, "First retry pause, in seconds."),
        _e("retry_increment_base", 2, INT, "Growth base of the retry pause."),
        _e("retry_max_attempts", 3, INT, "Most retries."),
        _e("base_path", "", STR, "Blob name prefix of results."),
        _e("connection_timeout", 20, INT, "Seconds to connect."),
        _e("read_timeout", 120, INT, "Seconds to read."),
    ),
    *_group(
        "gcs",
        None,
        _e("bucket", None, STR, "Google Cloud Storage bucket of results."),
        _e("project", None, STR, "Google Cloud project."),
        _e("base_path", "", STR, "Object name prefix of results."),
        _e("ttl", 0, FLOAT, "Seconds results are kept; 0 keeps them."),
    ),
    *_group(
        "cosmosdbsql",
        None,
        _e("database_name", "celerydb", STR, "CosmosDB database of results."),
        _e("collection_name", "celerycol", STR, "CosmosDB collection of results."),
        _e("consistency_level", "Session", STR, "CosmosDB consistency level."),
        _e("max_retry_attempts", 9, INT, "Most CosmosDB retries."),
        _e("max_retry_wait_time", 30, INT, "Seconds CosmosDB retries may take in total."),
    ),
    *_group(
        "couchbase",
        "CELERY_COUCHBASE_{}",
        _e("backend_settings", None, DICT, "Couchbase result store options."),
    ),
    *_group(
        "arangodb",
        "CELERY_ARANGODB_{}",
        _e("backend_settings", None, DICT, "ArangoDB result store options."),
    ),
    *_group(
        "mongodb",
        "CELERY_MONGODB_{}",
        _e("backend_settings", None, DICT, "MongoDB result store options."),
    ),
    *_group(
        "elasticsearch",
        "CELERY_ELASTICSEARCH_{}",
        _e("retry_on_timeout", None, BOOL, "Retry Elasticsearch requests that timed out."),
        _e("max_retries", None, INT, "Most Elasticsearch retries."),
        _e("timeout", None, FLOAT, "Seconds an Elasticsearch request may take."),
        _e("save_meta_as_text", True, BOOL, "Store result meta as text, not as an object."),
    ),
    *_group(
        "security",
        "CELERY_SECURITY_{}",
        _e("certificate", None, STR, "Path of the certificate that signs messages."),
        _e("cert_store", None, STR, "Glob of trusted certificates."),
        _e("key", None, STR, "Path of the private key that signs messages."),
        _e("key_password", None, BYTES | STR, "Password of the private key."),
        _e("digest", "sha256", STR, "Digest of message signatures."),
    ),
]
# fmt: on

SETTINGS: Mapping[str, Setting] = MappingProxyType({s.name: s for s in _TABLE})
"""Every setting by its lowercase name, in documentation order."""

OLD_NAMES: Mapping[str, str] = MappingProxyType({old: s.name for s in _TABLE for old in s.old})
"""Celery 3/4 uppercase names (``CELERY_ALWAYS_EAGER``) to today's names (``task_always_eager``)."""

NAMESPACES: tuple[str, ...] = tuple(
    dict.fromkeys(s.name.split("_", 1)[0] for s in _TABLE if "_" in s.name)
)
"""Name prefixes of setting groups (``broker``, ``task``, ...), for find_option and warnings."""

_DEFAULTS: Mapping[str, Any] = MappingProxyType({s.name: s.default for s in _TABLE})


def defaults() -> dict[str, Any]:
    """A fresh copy of every default (mutable ones copied, so callers may change them)."""
    return deepcopy(dict(_DEFAULTS))


def new_name(key: str) -> str:
    """Today's name for ``key``: old uppercase names are translated, others returned as they are."""
    return OLD_NAMES.get(key, key)


def coerce_setting(name: str, value: Any) -> Any:
    """Check ``value`` for setting ``name`` and convert text (from env or CLI) to its type.

    Unknown names are returned unchanged. Raises ImproperlyConfigured naming the setting, the value
    and the expected form.
    """
    spec = SETTINGS.get(new_name(name))
    return value if spec is None else spec.convert(value)


def closest_setting(key: str) -> str | None:
    """The known setting name most like ``key`` (a likely misspelling), or None."""
    if key.isupper():
        match = difflib.get_close_matches(key, list(OLD_NAMES), n=1, cutoff=0.8)
        if match:
            return OLD_NAMES[match[0]]
    match = difflib.get_close_matches(key.lower(), list(SETTINGS), n=1, cutoff=0.75)
    return match[0] if match else None


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default_text(setting: Setting) -> str:
    value = setting.default
    return f"`{value!r}`".replace("datetime.timedelta", "timedelta")


def settings_markdown_table(names: Iterable[str] | None = None) -> str:
    """The Markdown table of settings used in ``docs/configuration.md`` (all by default)."""
    rows = [
        "| Setting | Default | Accepts | Old name | Description |",
        "|---|---|---|---|---|",
    ]
    for name in SETTINGS if names is None else names:
        s = SETTINGS[name]
        old = ", ".join(f"`{o}`" for o in s.old) or "—"
        doc = f"*celeriac:* {s.doc}" if s.celeriac_only else s.doc
        cells = [f"`{s.name}`", _default_text(s), s.expected, old, doc]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows) + "\n"
