"""The scheduler loop under a controllable clock: intervals, crontab minutes, catch-up, dedup."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from celeriac import Celery
from celeriac.app.base import current_app, set_current
from celeriac.beat import PersistentScheduler, ScheduleEntry, Scheduler, SchedulingError
from celeriac.beat.connect import open_backend
from celeriac.beat.store import MemoryStateStore, StateStore
from celeriac.schedules import crontab, schedule, solar

START = datetime(2030, 1, 7, 11, 58, 30, tzinfo=UTC)  # a Monday


class Clock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Recording(Scheduler):
    """Records what it would send: (entry name, clock time, args, options)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sent: list[tuple[str, datetime, Any, dict[str, Any]]] = []
        super().__init__(*args, **kwargs)

    def apply_async(
        self, entry: ScheduleEntry, producer: Any = None, advance: bool = True, **kwargs: Any
    ) -> Any:
        self.sent.append((str(entry.name), self.app.now(), entry.args, dict(entry.options)))
        return None


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(clock: Clock) -> Iterator[Celery]:
    previous = current_app()
    app = Celery("clocked", broker=f"memory://{uuid.uuid4().hex}", set_as_current=False)
    app.now = clock  # type: ignore[method-assign]
    try:
        yield app
    finally:
        app.close()
        set_current(previous)


def run(sched: Scheduler, clock: Clock, seconds: float) -> None:
    """Drive the loop as the service does: tick, then jump the clock to the next wake-up."""
    end = clock.now + timedelta(seconds=seconds)
    while True:
        wait = sched.tick()
        if clock.now + timedelta(seconds=wait) > end:
            clock.now = end
            sched.tick()
            return
        clock.advance(max(wait, 0.001))


def names(sched: Recording) -> list[str]:
    return [s[0] for s in sched.sent]


def test_interval_runs_once_per_period_and_sleeps_until_due(app: Celery, clock: Clock) -> None:
    app.conf.beat_schedule = {"every-10": {"task": "t.a", "schedule": 10.0, "args": (1,)}}
    sched = Recording(app)
    assert sched.tick() == pytest.approx(10.0)
    clock.advance(9.9)
    assert sched.tick() == pytest.approx(0.1)
    assert sched.sent == []
    clock.advance(0.1)
    assert sched.tick() == pytest.approx(10.0)
    assert sched.sent == [("every-10", clock.now, (1,), {})]
    run(sched, clock, 100)
    assert len(sched.sent) == 11
    # No drift: each run is exactly one period after the previous.
    times = [s[1] for s in sched.sent]
    assert all(b - a == timedelta(seconds=10) for a, b in itertools.pairwise(times))


def test_schedule_forms_and_options(app: Celery, clock: Clock) -> None:
    app.conf.beat_schedule = {
        "float": {"task": "t.f", "schedule": 5.0},
        "td": {"task": "t.td", "schedule": timedelta(seconds=7)},
        "obj": {"task": "t.o", "schedule": schedule(11)},
        "rel": {"task": "t.r", "schedule": timedelta(minutes=1), "relative": True},
        "opts": {
            "task": "t.q",
            "schedule": 30,
            "kwargs": {"x": 1},
            "options": {"queue": "hi", "priority": 5, "expires": 20},
        },
    }
    sched = Recording(app)
    run(sched, clock, 60)
    sent = names(sched)
    assert sent.count("float") == 12
    assert sent.count("td") == 8
    assert sent.count("obj") == 5
    # Relative: on round minutes (12:00:00 and 12:01:00 within START + 60 s... only 12:00).
    rel = [s[1] for s in sched.sent if s[0] == "rel"]
    assert rel and all(t.second == 0 and t.microsecond == 0 for t in rel)
    opts = [s for s in sched.sent if s[0] == "opts"]
    assert opts[0][3] == {"queue": "hi", "priority": 5, "expires": 20}


def test_crontab_fires_at_the_right_minute(app: Celery, clock: Clock) -> None:
    app.conf.beat_schedule = {
        "at-12:05": {"task": "t.c", "schedule": crontab(minute=5, hour=12)},
        "every-2-min": {"task": "t.e", "schedule": crontab(minute="*/2")},
    }
    sched = Recording(app)
    wait = sched.tick()
    assert wait == pytest.approx(90.0)  # 11:58:30 -> 12:00:00 for */2
    run(sched, clock, 8 * 60)
    fired = {(s[0], s[1].strftime("%H:%M:%S")) for s in sched.sent}
    assert ("at-12:05", "12:05:00") in fired
    assert [s[1].strftime("%H:%M") for s in sched.sent if s[0] == "every-2-min"] == [
        "12:00",
        "12:02",
        "12:04",
        "12:06",
    ]


def test_crontab_in_the_app_timezone(clock: Clock) -> None:
    app = Celery("tz", broker=f"memory://{uuid.uuid4().hex}", set_as_current=False)
    app.conf.timezone = "Europe/Paris"  # UTC+1 in January
    app.now = clock  # type: ignore[method-assign]
    app.conf.beat_schedule = {"noon-paris": {"task": "t.n", "schedule": crontab(minute=0, hour=13)}}
    sched = Recording(app)
    run(sched, clock, 3600)  # 11:58:30 UTC .. 12:58:30 UTC: 13:00 Paris is 12:00 UTC
    assert [s[1] for s in sched.sent] == [datetime(2030, 1, 7, 12, 0, tzinfo=UTC)]


def test_solar_entry_is_accepted(app: Celery, clock: Clock) -> None:
    app.conf.beat_schedule = {"sunset": {"task": "t.s", "schedule": solar("sunset", 48.85, 2.35)}}
    sched = Recording(app)
    run(sched, clock, 24 * 3600)
    assert names(sched) == ["sunset"]
    assert 15 <= sched.sent[0][1].hour <= 17  # a January sunset in Paris, in UTC


def test_add_periodic_task_and_on_after_configure(clock: Clock) -> None:
    app = Celery("hooks", broker=f"memory://{uuid.uuid4().hex}", set_as_current=False)
    app.now = clock  # type: ignore[method-assign]

    @app.task
    def ping(x: int) -> int:
        return x

    @app.on_after_configure.connect
    def setup_periodic_tasks(sender: Celery, **kwargs: Any) -> None:
        sender.add_periodic_task(10.0, ping.s(1), name="ping every 10")
        sender.add_periodic_task(crontab(minute="*"), ping.s(2), expires=5)

    sched = Recording(app)
    assert "ping every 10" in sched.schedule
    run(sched, clock, 60)
    assert names(sched).count("ping every 10") == 6
    minute = [s for s in sched.sent if s[0] != "ping every 10"]
    assert [s[1].second for s in minute] == [0]
    assert minute[0][2] == (2,) and minute[0][3] == {"expires": 5}


def _restart(app: Celery, store: StateStore, policy: str) -> Recording:
    return Recording(app, store=store, catch_up=policy)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("once", 1), ("all", 6), ("skip", 0)],
)
def test_catch_up_after_downtime(app: Celery, clock: Clock, policy: str, expected: int) -> None:
    store = MemoryStateStore(uuid.uuid4().hex)
    app.conf.beat_schedule = {"e": {"task": "t.e", "schedule": 10.0}}
    first = _restart(app, store, policy)
    run(first, clock, 30)
    assert len(first.sent) == 3
    last = first.sent[-1][1]
    clock.advance(67)  # down: 6 occurrences fall due meanwhile, the last 7 s ago
    second = _restart(app, store, policy)
    second.tick()
    while True:  # "all" sends back to back: tick until nothing more is due now
        if second.tick() > 0:
            break
    assert len(second.sent) == expected
    # The schedule keeps its cadence after the catch-up: the next run is on the grid.
    before = len(second.sent)
    run(second, clock, 10)
    assert len(second.sent) == before + 1
    assert (second.sent[-1][1] - last).total_seconds() % 10 == 0


def test_restart_neither_repeats_nor_skips(app: Celery, clock: Clock) -> None:
    store = MemoryStateStore(uuid.uuid4().hex)
    app.conf.beat_schedule = {"hourly": {"task": "t.h", "schedule": crontab(minute=0)}}
    first = Recording(app, store=store)
    run(first, clock, 120)  # 12:00 sent
    assert [s[1].strftime("%H:%M") for s in first.sent] == ["12:00"]
    again = Recording(app, store=store)  # restart at once: 12:00 must not be sent again
    run(again, clock, 60)
    assert again.sent == []
    clock.advance(3600)  # down over 13:00
    later = Recording(app, store=store)
    later.tick()
    assert len(later.sent) == 1  # 13:00, sent late, once


def test_new_entry_anchor_survives_restart(app: Celery, clock: Clock) -> None:
    store = MemoryStateStore(uuid.uuid4().hex)
    app.conf.beat_schedule = {"daily": {"task": "t.d", "schedule": timedelta(days=1)}}
    Recording(app, store=store).tick()  # first seen now
    clock.advance(23 * 3600)
    again = Recording(app, store=store)
    assert again.tick() == pytest.approx(300)  # capped by max_interval
    # Counted from the first sighting, not from the restart.
    assert again.schedule["daily"].is_due()[1] == pytest.approx(3600)
    clock.advance(3600)
    again.tick()
    assert names(again) == ["daily"]


def test_two_schedulers_on_one_store_send_each_run_once(app: Celery, clock: Clock) -> None:
    """Both believe they lead (a lock lost mid-tick): claims still let one send."""
    store = MemoryStateStore(uuid.uuid4().hex)
    app.conf.beat_schedule = {
        "e": {"task": "t.e", "schedule": 1.0},
        "c": {"task": "t.c", "schedule": crontab()},
    }
    a = Recording(app, store=store)
    b = Recording(app, store=store)
    for _ in range(300):
        clock.advance(0.5)
        a.tick()
        b.tick()
    sent = [(s[0], s[1]) for s in a.sent + b.sent]
    assert len(sent) == len(set(sent))
    assert sum(1 for s in sent if s[0] == "e") == 150
    assert sum(1 for s in sent if s[0] == "c") == 3  # 11:59, 12:00, 12:01


def test_stale_view_cannot_claim(app: Celery, clock: Clock) -> None:
    store = MemoryStateStore(uuid.uuid4().hex)
    app.conf.beat_schedule = {"e": {"task": "t.e", "schedule": 1.0}}
    a = Recording(app, store=store)
    b = Recording(app, store=store)
    a.tick()
    clock.advance(1)
    state = store.load(["e"])["e"]
    a.tick()  # a claims the run b is about to decide on
    entry = b.schedule["e"]
    assert b._run(entry, state) is False
    assert b.sent == [] and len(a.sent) == 1


def test_scheduler_sends_real_messages(app: Celery, clock: Clock) -> None:
    app.conf.beat_schedule = {
        "e": {"task": "t.e", "schedule": 1.0, "args": (3,), "options": {"queue": "beatq"}}
    }
    sched = Scheduler(app)
    run(sched, clock, 3)
    assert app.transport.queue_length("beatq") == 3


def test_bad_entries_are_named(app: Celery) -> None:
    app.conf.beat_schedule = {"oops": {"task": "t.x", "schedule": "often"}}
    with pytest.raises(SchedulingError, match="oops"):
        Scheduler(app)
    app.conf.beat_schedule = {"oops": {"task": "t.x", "schedule": 1, "every": 2}}
    with pytest.raises(SchedulingError, match="'every'"):
        Scheduler(app)
    app.conf.beat_schedule = {"oops": {"schedule": 1}}
    with pytest.raises(SchedulingError, match="task"):
        Scheduler(app)
    with pytest.raises(SchedulingError, match="beat_catch_up"):
        Scheduler(app, catch_up="sometimes", lazy=True)


def test_entry_api_is_celerys(app: Celery, clock: Clock) -> None:
    entry = ScheduleEntry("n", "t.x", schedule=5, args=(1,), kwargs={"a": 2}, app=app)
    assert entry.last_run_at == clock.now and entry.total_run_count == 0
    clock.advance(5)
    assert entry.is_due()[0]
    nxt = next(entry)
    assert nxt.total_run_count == 1 and nxt.last_run_at == clock.now and nxt == entry
    assert dict(entry)["task"] == "t.x"
    changed = ScheduleEntry("n", "t.y", schedule=6, app=app)
    entry.update(changed)
    assert entry.task == "t.y" and entry.last_run_at == START
    assert "t.y" in repr(entry)


def test_persistent_scheduler_uses_the_local_file_without_a_shared_store(
    tmp_path: Any, clock: Clock
) -> None:
    app = Celery("amqpish", broker="amqp://guest@localhost//", set_as_current=False)
    app.now = clock  # type: ignore[method-assign]
    app.conf.beat_schedule = {"e": {"task": "t.e", "schedule": 1.0}}
    path = str(tmp_path / "celerybeat-schedule")
    backend = open_backend(app, path)
    try:
        assert not backend.shared and "this machine only" in backend.where
    finally:
        backend.close()
    sched = PersistentScheduler(app, schedule_filename=path, lazy=True)
    assert "celerybeat-schedule" in sched.info
    sched.close()


def test_old_shelve_file_is_explained(tmp_path: Any) -> None:
    path = tmp_path / "celerybeat-schedule"
    path.write_bytes(b"\x00not sqlite at all" * 100)
    app = Celery("amqpish", broker="amqp://guest@localhost//", set_as_current=False)
    with pytest.raises(SchedulingError, match="shelve"):
        open_backend(app, str(path))
