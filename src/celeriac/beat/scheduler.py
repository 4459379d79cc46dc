"""The scheduler: which periodic entries are due, and sending each due run exactly once.

``Scheduler`` and ``ScheduleEntry`` keep the names and methods of ``celery.beat`` (``tick``,
``is_due``, ``reserve``, ``apply_entry``, ``apply_async``, ``setup_schedule``, ``sync``,
``merge_inplace``, ``update_from_dict``, the ``schedule`` property, ``Entry``), so a scheduler
reading its entries from a database is written as a subclass, the way django-celery-beat does.

What differs: the last run of every entry lives in a :class:`~celeriac.beat.store.StateStore`
shared by all beat processes, and every run is *claimed* there before it is sent. Runs missed
while no beat was running follow ``beat_catch_up`` (see ``docs/beat.md``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping, MutableMapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from celeriac.beat.store import EntryState, MemoryStateStore, SchedulingError, StateStore
from celeriac.schedules import BaseSchedule, maybe_schedule, schedstate, schedule
from celeriac.schedules._interval import humanize_seconds

if TYPE_CHECKING:
    from celeriac.app.base import Celery

__all__ = [
    "CATCH_UP_POLICIES",
    "DEFAULT_MAX_INTERVAL",
    "PersistentScheduler",
    "ScheduleEntry",
    "Scheduler",
    "SchedulingError",
]

logger = logging.getLogger("celeriac.beat")

#: Longest sleep between two ticks, in seconds (Celery's default).
DEFAULT_MAX_INTERVAL = 300.0
CATCH_UP_POLICIES = ("once", "all", "skip")
#: Walking missed occurrences one by one stops here (a per-second entry down for hours).
_MAX_CATCH_UP_STEPS = 10_000
_ENTRY_FIELDS = (
    "name",
    "task",
    "last_run_at",
    "total_run_count",
    "schedule",
    "args",
    "kwargs",
    "options",
)


def _ts(dt: datetime) -> float:
    return dt.timestamp() if dt.tzinfo is not None else dt.replace(tzinfo=UTC).timestamp()


def _from_ts(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class ScheduleEntry:
    """One periodic task: what to send (``task``, ``args``, ``kwargs``, ``options``) and when.

    ``schedule`` is a number of seconds, a ``timedelta`` or a schedule (``schedule``, ``crontab``,
    ``solar``); with ``relative=True`` an interval is rounded to the clock. ``last_run_at``
    defaults to now: a new entry runs one period after it is first seen.
    """

    #: The fields ``update`` copies from a changed definition (the run history is kept).
    editable_fields = ("task", "schedule", "args", "kwargs", "options")

    def __init__(
        self,
        name: str | None = None,
        task: str | None = None,
        last_run_at: datetime | None = None,
        total_run_count: int | None = None,
        schedule: float | timedelta | BaseSchedule | None = None,
        args: Any = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        relative: bool = False,
        app: Celery | None = None,
    ) -> None:
        if not isinstance(task, str) or not task:
            raise SchedulingError(
                f"beat entry {name!r}: 'task' must be a task name such as 'proj.tasks.add', "
                f"not {task!r}"
            )
        self.app = app
        self.name = name
        self.task = task
        self.args = args
        self.kwargs = dict(kwargs or {})
        self.options = dict(options or {})
        try:
            checked = maybe_schedule(schedule, relative, app=app)
        except TypeError as exc:
            raise SchedulingError(
                f"beat entry {name!r}: 'schedule' {schedule!r} is not seconds, a timedelta, "
                "schedule(...), crontab(...) or solar(...)"
            ) from exc
        if checked is None:
            raise SchedulingError(
                f"beat entry {name!r} has no 'schedule'; expected seconds, a timedelta, "
                "schedule(...), crontab(...) or solar(...)"
            )
        self.schedule: BaseSchedule = checked
        self.last_run_at = last_run_at or self.default_now()
        self.total_run_count = total_run_count or 0

    def default_now(self) -> datetime:
        """Now, by the schedule's clock (which is the app's unless the schedule has its own)."""
        return self.schedule.now()

    _default_now = default_now

    def _next_instance(self, last_run_at: datetime | None = None) -> ScheduleEntry:
        """A copy that ran once more, last at *last_run_at* (default: now)."""
        return self.__class__(
            **dict(
                self,
                last_run_at=last_run_at or self.default_now(),
                total_run_count=self.total_run_count + 1,
                app=self.app,
            )
        )

    __next__ = next = _next_instance

    def update(self, other: ScheduleEntry) -> None:
        """Take *other*'s definition (task, schedule, arguments, options), keeping the history."""
        for field in self.editable_fields:
            setattr(self, field, getattr(other, field))

    def editable_fields_equal(self, other: ScheduleEntry) -> bool:
        return all(getattr(self, f) == getattr(other, f) for f in self.editable_fields)

    def is_due(self) -> schedstate:
        """``(due, seconds until the next check)``, from the schedule and ``last_run_at``."""
        return self.schedule.is_due(self.last_run_at)

    def due_at(self) -> datetime | None:
        """The instant of the first run after ``last_run_at``; None when the schedule cannot say."""
        try:
            return self.schedule.next_run_at(self.last_run_at)
        except (NotImplementedError, AttributeError):
            return None

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter([(field, getattr(self, field)) for field in _ENTRY_FIELDS])

    def __repr__(self) -> str:
        call = ", ".join(
            [*(repr(a) for a in self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())]
        )
        return f"<ScheduleEntry: {self.name} {self.task}({call}) {self.schedule!r}>"

    def __lt__(self, other: object) -> bool:
        if isinstance(other, ScheduleEntry):
            return id(self) < id(other)
        return NotImplemented

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ScheduleEntry):
            return self.editable_fields_equal(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by definition


class Scheduler:
    """Decides which entries are due and sends them, claiming each run in ``store`` first.

    ``schedule`` is the mapping of name to entry (``setup_schedule`` fills it from
    ``beat_schedule``); ``tick()`` sends what is due and returns how long to sleep.
    Without a ``store`` the state lives in this object only (nothing survives the process).
    """

    Entry: type[ScheduleEntry] = ScheduleEntry
    #: Seconds between ``sync()`` calls (for subclasses that persist the schedule themselves).
    sync_every = 3 * 60
    #: Runs missed longer ago than this are dropped under ``beat_catch_up = "skip"``.
    catch_up_grace = 5.0

    def __init__(
        self,
        app: Celery,
        schedule: MutableMapping[str, ScheduleEntry] | None = None,
        max_interval: float | None = None,
        Producer: Any = None,
        lazy: bool = False,
        sync_every_tasks: int | None = None,
        *,
        store: StateStore | None = None,
        catch_up: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.app = app
        self.data: MutableMapping[str, ScheduleEntry] = {} if schedule is None else schedule
        conf = app.conf
        self.max_interval = float(
            max_interval or conf.get("beat_max_loop_interval") or DEFAULT_MAX_INTERVAL
        )
        self.Producer = Producer
        self.sync_every_tasks = (
            conf.get("beat_sync_every") if sync_every_tasks is None else sync_every_tasks
        )
        self.store = store if store is not None else MemoryStateStore(f"scheduler-{id(self)}")
        policy = catch_up or conf.get("beat_catch_up") or "once"
        if policy not in CATCH_UP_POLICIES:
            raise SchedulingError(
                f"beat_catch_up={policy!r}: expected one of {', '.join(CATCH_UP_POLICIES)}"
            )
        self.catch_up = policy
        self._last_sync: float | None = None
        self._tasks_since_sync = 0
        self.producer = Producer
        if not lazy:
            self.setup_schedule()

    # -- the schedule ------------------------------------------------------------------------------
    def setup_schedule(self) -> None:
        """Fill the schedule from ``beat_schedule`` once the app's setup hooks have run.

        Finalizing the app first runs ``on_after_configure``/``on_after_finalize`` receivers,
        where ``add_periodic_task`` calls usually live.
        """
        self.app.finalize()
        self.install_default_entries(self.data)
        self.merge_inplace(self.app.conf.beat_schedule or {})

    def install_default_entries(self, data: MutableMapping[str, ScheduleEntry]) -> None:
        """Celery adds ``celery.backend_cleanup`` here; our result stores expire on their own."""

    def get_schedule(self) -> MutableMapping[str, ScheduleEntry]:
        return self.data

    def set_schedule(self, schedule: MutableMapping[str, ScheduleEntry]) -> None:
        self.data = schedule

    @property
    def schedule(self) -> MutableMapping[str, ScheduleEntry]:
        """The entries by name (a subclass may reload them from elsewhere on each read)."""
        return self.get_schedule()

    @schedule.setter
    def schedule(self, value: MutableMapping[str, ScheduleEntry]) -> None:
        self.set_schedule(value)

    def _maybe_entry(self, name: str, entry: Any) -> ScheduleEntry:
        if isinstance(entry, self.Entry):
            entry.app = self.app
            return entry
        if not isinstance(entry, Mapping):
            raise SchedulingError(
                f"beat_schedule[{name!r}] is {entry!r}; expected a dict with 'task' and "
                "'schedule' (and optionally 'args', 'kwargs', 'options', 'relative')"
            )
        try:
            return self.Entry(**{**entry, "name": name, "app": self.app})
        except TypeError as exc:
            raise SchedulingError(
                f"beat_schedule[{name!r}]: {exc}; the keys are 'task', 'schedule', 'args', "
                "'kwargs', 'options' and 'relative'"
            ) from exc

    def add(self, **kwargs: Any) -> ScheduleEntry:
        """Add one entry from keyword arguments (``name``, ``task``, ``schedule``, ...)."""
        entry = self.Entry(app=self.app, **kwargs)
        self.schedule[str(entry.name)] = entry
        return entry

    def update_from_dict(self, dict_: Mapping[str, Any]) -> None:
        """Add or replace entries from a ``beat_schedule``-style mapping."""
        self.schedule.update({n: self._maybe_entry(n, e) for n, e in dict_.items()})

    def merge_inplace(self, b: Mapping[str, Any]) -> None:
        """Make the schedule hold exactly the entries of *b*, keeping the run history of each."""
        schedule = self.schedule
        for key in set(schedule) - set(b):
            schedule.pop(key, None)
        for key, value in b.items():
            entry = self._maybe_entry(key, value)
            if key in schedule:
                schedule[key].update(entry)
            else:
                schedule[key] = entry

    # -- deciding ----------------------------------------------------------------------------------
    def is_due(self, entry: ScheduleEntry) -> schedstate:
        """Whether *entry* is due now, and seconds until it should be checked again."""
        return entry.is_due()

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Send every entry that is due (each run claimed first); return seconds to sleep.

        The shared state is read first, so a run another beat process sent is seen here.
        """
        entries = list(self.schedule.values())
        states = self._load(entries)
        wait = self.max_interval
        for entry in entries:
            due, next_in = self.is_due(entry)
            if due:
                if not self._run(entry, states.get(str(entry.name))):
                    return 0.0  # another process claimed it: read the state again
                current = self.schedule.get(str(entry.name), entry)
                due, next_in = self.is_due(current)
                if due:
                    next_in = 0.0  # more missed runs to send (beat_catch_up = "all")
            wait = min(wait, next_in)
        return max(wait, 0.0)

    def _load(self, entries: list[ScheduleEntry]) -> dict[str, EntryState]:
        """Read the shared state into the entries; record entries seen for the first time."""
        states = self.store.load(str(e.name) for e in entries)
        for entry in entries:
            name = str(entry.name)
            state = states.get(name)
            if state is None:
                # The first sighting is stored, so a restart counts from it instead of from now.
                first = EntryState(1, _ts(entry.last_run_at), None, entry.total_run_count)
                if self.store.claim(name, 0, first):
                    states[name] = first
                    continue
                state = self.store.load([name]).get(name)
                if state is None:
                    continue
                states[name] = state
            if state.last_run_at is not None:
                entry.last_run_at = _from_ts(state.last_run_at)
            entry.total_run_count = state.total_run_count
        return states

    def _run(self, entry: ScheduleEntry, state: EntryState | None) -> bool:
        """Claim and send one due run of *entry*; False when another process claimed it."""
        now = self.app.now()
        first = entry.due_at()
        if first is None or first > now:
            first = now
        latest = self._latest_due(entry, first, now)
        send = True
        if self.catch_up == "all":
            run_at = first
        else:
            run_at = latest
            if self.catch_up == "skip" and (now - latest).total_seconds() > self.catch_up_grace:
                send = False
        seen = state.version if state is not None else 0
        count = entry.total_run_count + (1 if send else 0)
        new = EntryState(seen + 1, _ts(run_at), _ts(run_at), count)
        if not self.store.claim(str(entry.name), seen, new):
            logger.debug("Scheduler: %s at %s was claimed by another beat", entry.name, run_at)
            return False
        if not send:
            logger.info(
                "Scheduler: Skipping missed run(s) of %s due since %s (beat_catch_up=skip)",
                entry.name,
                first.isoformat(),
            )
            entry.last_run_at = run_at
            return True
        if latest > first and self.catch_up == "once":
            logger.info(
                "Scheduler: %s missed runs from %s to %s; sending one (beat_catch_up=once)",
                entry.name,
                first.isoformat(),
                latest.isoformat(),
            )
        self.reserve(entry)
        self.apply_entry(entry, producer=self.producer, due=run_at)
        current = self.schedule.get(str(entry.name))
        if isinstance(current, ScheduleEntry):
            current.last_run_at = run_at
        return True

    def _latest_due(self, entry: ScheduleEntry, first: datetime, now: datetime) -> datetime:
        """The newest occurrence at or before *now*, walking on from *first*."""
        sched = entry.schedule
        if isinstance(sched, schedule) and not sched.relative and sched.seconds > 0:
            steps = math.floor((now - first).total_seconds() / sched.seconds)
            return first + sched.run_every * max(steps, 0)
        current = first
        for _ in range(_MAX_CATCH_UP_STEPS):
            try:
                following = sched.next_run_at(current)
            except (NotImplementedError, AttributeError):
                return now
            if following > now or following <= current:
                return current
            current = following
        return now

    # -- sending -----------------------------------------------------------------------------------
    def reserve(self, entry: ScheduleEntry) -> ScheduleEntry:
        """Put the entry's next instance (one more run, last run now) in the schedule."""
        new = self.schedule[str(entry.name)] = next(entry)
        return new

    def apply_entry(
        self, entry: ScheduleEntry, producer: Any = None, due: datetime | None = None
    ) -> None:
        """Send *entry*'s task, logging (not raising) a failure: beat goes on with the others."""
        logger.info(
            "Scheduler: Sending due task %s (%s) due=%s",
            entry.name,
            entry.task,
            (due or self.app.now()).isoformat(),
        )
        try:
            result = self.apply_async(entry, producer=producer, advance=False)
        except Exception as exc:
            logger.error("Message Error: %s", exc, exc_info=True)
        else:
            if result is not None and getattr(result, "id", None):
                logger.debug("%s sent. id->%s", entry.task, result.id)

    def apply_async(
        self, entry: ScheduleEntry, producer: Any = None, advance: bool = True, **kwargs: Any
    ) -> Any:
        """Send the entry's task by its registered task, or by name when not registered here."""
        entry = self.reserve(entry) if advance else entry
        task = self.app.tasks.get(entry.task)
        try:
            if task is not None:
                return task.apply_async(
                    entry.args, entry.kwargs, producer=producer, **entry.options
                )
            return self.send_task(
                entry.task, entry.args, entry.kwargs, producer=producer, **entry.options
            )
        except Exception as exc:
            raise SchedulingError(f"Couldn't apply scheduled task {entry.name}: {exc}") from exc
        finally:
            self._tasks_since_sync += 1
            if self.should_sync():
                self._do_sync()

    def send_task(self, *args: Any, **kwargs: Any) -> Any:
        return self.app.send_task(*args, **kwargs)

    # -- syncing and closing -----------------------------------------------------------------------
    def should_sync(self) -> bool:
        """True when ``sync()`` is due: every ``sync_every`` seconds or ``beat_sync_every`` runs."""
        if self.sync_every_tasks and self._tasks_since_sync >= self.sync_every_tasks:
            return True
        return not self._last_sync or (time.monotonic() - self._last_sync) > self.sync_every

    def _do_sync(self) -> None:
        try:
            logger.debug("beat: Synchronizing schedule...")
            self.sync()
        finally:
            self._last_sync = time.monotonic()
            self._tasks_since_sync = 0

    def sync(self) -> None:
        """Persist what the store does not hold yet (nothing here: claims are written at once)."""

    def close(self) -> None:
        """Sync and release the store."""
        self.sync()
        self.store.close()

    @property
    def info(self) -> str:
        """Extra banner lines."""
        return ""

    def describe_interval(self) -> str:
        return humanize_seconds(self.max_interval)


class PersistentScheduler(Scheduler):
    """The default scheduler (``celery.beat:PersistentScheduler`` maps here).

    Its state is in the shared store beat opens (the broker, or ``beat_lock_url``);
    ``schedule_filename`` is used only when the broker offers no such store.
    """

    def __init__(self, *args: Any, schedule_filename: str | None = None, **kwargs: Any) -> None:
        self.schedule_filename = schedule_filename
        if kwargs.get("store") is None:
            from celeriac.beat.connect import open_backend

            app = kwargs["app"] if "app" in kwargs else args[0]
            self._backend = open_backend(app, schedule_filename)
            kwargs["store"] = self._backend.store
        super().__init__(*args, **kwargs)

    @property
    def info(self) -> str:
        return f"    . db -> {self.store.where}"
