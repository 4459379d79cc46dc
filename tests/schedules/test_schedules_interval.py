"""schedule (every N seconds, optionally relative) and maybe_schedule."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from schedules_clock import Clock

from celeriac.schedules import BaseSchedule, crontab, maybe_schedule, schedstate, schedule

BERLIN = ZoneInfo("Europe/Berlin")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_is_due_counts_from_the_last_run() -> None:
    clock = Clock(utc(2024, 5, 1, 10, 0, 20))
    s = schedule(30, nowfun=clock)
    last = utc(2024, 5, 1, 10, 0, 0)
    assert s.remaining_estimate(last) == timedelta(seconds=10)
    assert s.is_due(last) == schedstate(False, 10.0)
    clock.advance(seconds=10)
    assert s.is_due(last) == (True, 30.0)
    clock.advance(seconds=100)  # late: due, and the next check is a full interval away
    assert s.is_due(last) == (True, 30.0)
    assert s.is_due(last).next.__class__ is float


def test_timedelta_and_seconds() -> None:
    assert schedule(timedelta(minutes=5)) == schedule(300)
    assert schedule(1.5).run_every == timedelta(seconds=1.5)
    assert schedule(timedelta(minutes=5)).seconds == 300
    assert schedule(-5).seconds == 0
    with pytest.raises(TypeError, match="run_every must be seconds"):
        schedule("5")  # type: ignore[arg-type]


def test_naive_last_run_is_utc() -> None:
    clock = Clock(utc(2024, 5, 1, 10, 0, 20))
    s = schedule(30, nowfun=clock, tz="Europe/Berlin")
    assert s.remaining_estimate(datetime(2024, 5, 1, 10, 0, 0)) == timedelta(seconds=10)


def test_interval_is_real_time_across_dst() -> None:
    # 01:30 CET + 1 hour is 03:30 CEST on the spring-forward day.
    s = schedule(timedelta(hours=1), tz=BERLIN)
    got = s.next_run_at(datetime(2024, 3, 31, 1, 30, tzinfo=BERLIN))
    assert got == datetime(2024, 3, 31, 3, 30, tzinfo=BERLIN)
    assert got.tzinfo == BERLIN


@pytest.mark.parametrize(
    ("every", "last", "expected"),
    [
        (timedelta(hours=1), utc(2024, 5, 1, 10, 17), utc(2024, 5, 1, 11, 0)),
        (timedelta(minutes=5), utc(2024, 5, 1, 10, 17, 40), utc(2024, 5, 1, 10, 22)),
        (timedelta(hours=2), utc(2024, 5, 1, 10, 17), utc(2024, 5, 1, 12, 0)),
        (timedelta(days=1), utc(2024, 5, 1, 10, 17), utc(2024, 5, 2)),
        (timedelta(days=2), utc(2024, 5, 31, 23, 59), utc(2024, 6, 2)),
        (timedelta(seconds=30), utc(2024, 5, 1, 10, 17, 5), utc(2024, 5, 1, 10, 17, 35)),
    ],
)
def test_relative_rounds_to_the_interval_resolution(
    every: timedelta, last: datetime, expected: datetime
) -> None:
    assert schedule(every, relative=True).next_run_at(last) == expected


def test_relative_day_interval_is_local_midnight() -> None:
    s = schedule(timedelta(days=1), relative=True, tz=BERLIN)
    # Rounded in the schedule's zone, whatever zone last_run_at is given in.
    assert s.next_run_at(utc(2024, 5, 1, 10)) == datetime(2024, 5, 2, tzinfo=BERLIN)
    # The night the clocks spring forward, and the night they fall back.
    assert s.next_run_at(datetime(2024, 3, 30, 15, tzinfo=BERLIN)) == datetime(
        2024, 3, 31, tzinfo=BERLIN
    )
    assert s.next_run_at(datetime(2024, 3, 31, 0, 0, tzinfo=BERLIN)) == datetime(
        2024, 4, 1, tzinfo=BERLIN
    )
    assert s.next_run_at(datetime(2024, 10, 27, 0, 0, tzinfo=BERLIN)) == datetime(
        2024, 10, 28, tzinfo=BERLIN
    )


def test_relative_hourly_through_the_repeated_hour() -> None:
    s = schedule(timedelta(hours=1), relative=True, tz=BERLIN)
    t = datetime(2024, 10, 27, 0, 0, tzinfo=UTC)  # 02:00 CEST
    seen = []
    for _ in range(3):
        t = s.next_run_at(t)
        seen.append(t.astimezone(UTC))
    # Every real hour, including the second 02:00 (CET).
    assert seen == [utc(2024, 10, 27, 1), utc(2024, 10, 27, 2), utc(2024, 10, 27, 3)]


def test_relative_is_due_checks_again_at_the_next_boundary() -> None:
    clock = Clock(utc(2024, 5, 1, 11, 0, 0))
    s = schedule(timedelta(hours=1), relative=True, nowfun=clock)
    last = utc(2024, 5, 1, 10, 17)
    assert s.is_due(last) == (True, 3600.0)
    clock.now = utc(2024, 5, 1, 11, 20)  # late: the next boundary is 12:00
    assert s.is_due(last) == (True, 40 * 60.0)


@pytest.fixture(scope="module")
def celery_app() -> object:
    celery = pytest.importorskip("celery")
    app = celery.Celery(set_as_current=False)
    app.conf.timezone = "Europe/Berlin"
    return app


@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("seconds", [1, 45, 60, 90, 300, 3600, 5400, 86400, 2 * 86400])
def test_same_as_celery(seconds: int, relative: bool, celery_app: object) -> None:
    from celery.schedules import schedule as celery_schedule

    # Celery rounds a relative interval in the zone of the aware last_run_at it gets;
    # we round in the schedule's zone. Given last_run_at in that zone, both agree.
    starts = [
        utc(2024, 5, 1, 10, 17, 5).astimezone(BERLIN),
        utc(2024, 6, 30, 23, 59, 59).astimezone(BERLIN),
        utc(2024, 2, 28, 23, 30).astimezone(BERLIN),
        utc(2024, 12, 31, 22, 0).astimezone(BERLIN),
    ]
    for last in starts:
        for after in (0, 30, 3000, 90000):
            now = last + timedelta(seconds=after)

            def clock(now: datetime = now) -> datetime:
                return now

            theirs = celery_schedule(seconds, relative, nowfun=clock, app=celery_app)
            ours = schedule(seconds, relative, nowfun=clock, tz="Europe/Berlin")
            assert ours.remaining_estimate(last) == theirs.remaining_estimate(last), (last, now)
            assert ours.is_due(last) == tuple(theirs.is_due(last)), (last, now)


def test_repr_matches_celery() -> None:
    assert repr(schedule(60)) == "<freq: 1.00 minute>"
    assert repr(schedule(30)) == "<freq: 30.00 seconds>"
    assert repr(schedule(7200)) == "<freq: 2.00 hours>"
    assert repr(schedule(3600 * 25)) == "<freq: 1.04 days>"
    assert repr(schedule(0)) == "<freq: now>"
    assert schedule(300).human_seconds == "5.00 minutes"


def test_equality_hash_pickle() -> None:
    assert schedule(60) == timedelta(minutes=1)
    assert hash(schedule(60)) == hash(timedelta(minutes=1))
    assert schedule(60) != schedule(61)
    assert schedule(60) != 60
    s = schedule(90, relative=True, tz="Europe/Berlin")
    back = pickle.loads(pickle.dumps(s))
    assert back == s
    assert back.relative and back.tz == BERLIN


class _App:
    class conf:
        timezone = "Asia/Tokyo"
        enable_utc = True

    def now(self) -> datetime:
        return utc(2024, 1, 1)


def test_maybe_schedule() -> None:
    assert maybe_schedule(None) is None
    assert maybe_schedule(10) == schedule(10)
    assert maybe_schedule(2.5) == schedule(2.5)
    relative = maybe_schedule(timedelta(hours=1), relative=True)
    assert isinstance(relative, schedule) and relative.relative
    c = crontab(minute=5)
    app = _App()
    assert maybe_schedule(c, app=app) is c
    assert c.app is app and c.tz == ZoneInfo("Asia/Tokyo")
    # Without an app, a schedule keeps the one it has.
    assert maybe_schedule(c) is c and c.app is app
    made = maybe_schedule(30, app=app)
    assert isinstance(made, BaseSchedule) and made.app is app
    with pytest.raises(TypeError, match="expected seconds, a timedelta or a schedule"):
        maybe_schedule("10")  # type: ignore[arg-type]


def test_now_defaults_to_an_aware_utc_clock() -> None:
    now = schedule(10).now()
    assert now.tzinfo is not None
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)
