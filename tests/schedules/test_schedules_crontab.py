"""crontab: next runs, is_due and remaining_estimate with a hand-moved clock."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from schedules_clock import Clock

from celeriac.schedules import crontab, schedstate


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def runs(c: crontab, start: datetime, count: int) -> list[datetime]:
    out, t = [], start
    for _ in range(count):
        t = c.next_run_at(t)
        out.append(t)
    return out


@pytest.mark.parametrize(
    ("c", "start", "expected"),
    [
        (crontab(), utc(2024, 5, 1, 10, 5, 30), [utc(2024, 5, 1, 10, 6), utc(2024, 5, 1, 10, 7)]),
        (
            crontab(minute="*/15"),
            utc(2024, 5, 1, 10, 0),
            [utc(2024, 5, 1, 10, 15), utc(2024, 5, 1, 10, 30), utc(2024, 5, 1, 10, 45)],
        ),
        (
            crontab(minute="1-30/10", hour="1,5"),
            utc(2024, 5, 1, 1, 25),
            [utc(2024, 5, 1, 5, 1), utc(2024, 5, 1, 5, 11), utc(2024, 5, 1, 5, 21)],
        ),
        (  # 2024-05-03 is a Friday
            crontab(minute=0, hour=9, day_of_week="mon-fri"),
            utc(2024, 5, 3, 9, 0),
            [utc(2024, 5, 6, 9), utc(2024, 5, 7, 9)],
        ),
        (
            crontab(minute=0, hour=0, day_of_week="sun"),
            utc(2024, 5, 1),
            [utc(2024, 5, 5), utc(2024, 5, 12)],
        ),
        (  # the 31st, skipping months without one
            crontab(minute=0, hour=0, day_of_month=31),
            utc(2024, 1, 31, 12),
            [utc(2024, 3, 31), utc(2024, 5, 31), utc(2024, 7, 31), utc(2024, 8, 31)],
        ),
        (  # Feb 29 only in leap years
            crontab(minute=0, hour=12, day_of_month=29, month_of_year=2),
            utc(2023, 3, 1),
            [utc(2024, 2, 29, 12), utc(2028, 2, 29, 12)],
        ),
        (  # 2100 is no leap year
            crontab(minute=0, hour=0, day_of_month=29, month_of_year="feb"),
            utc(2096, 3, 1),
            [utc(2104, 2, 29)],
        ),
        (  # last days of February
            crontab(minute=0, hour=0, day_of_month="28-31", month_of_year=2),
            utc(2023, 2, 27),
            [utc(2023, 2, 28), utc(2024, 2, 28), utc(2024, 2, 29), utc(2025, 2, 28)],
        ),
        (  # day of month AND day of week (Celery's rule): Friday the 13th
            crontab(minute=0, hour=0, day_of_week="fri", day_of_month=13),
            utc(2024, 1, 1),
            [utc(2024, 9, 13), utc(2024, 12, 13), utc(2025, 6, 13)],
        ),
        (  # first Monday of the quarter's months
            crontab(minute=0, hour=8, day_of_week=1, day_of_month="1-7", month_of_year="*/3"),
            utc(2024, 1, 1, 9),
            [utc(2024, 4, 1, 8), utc(2024, 7, 1, 8), utc(2024, 10, 7, 8)],
        ),
        (
            crontab(minute=59, hour=23, day_of_month=31, month_of_year=12),
            utc(2024, 12, 31, 23, 59),
            [utc(2025, 12, 31, 23, 59)],
        ),
    ],
)
def test_next_runs(c: crontab, start: datetime, expected: list[datetime]) -> None:
    assert runs(c, start, len(expected)) == expected


def test_runs_are_in_the_schedule_zone() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    c = crontab(minute=0, hour=9, tz="Asia/Tokyo")
    got = c.next_run_at(utc(2024, 5, 1, 1, 0))  # 10:00 in Tokyo
    assert got == datetime(2024, 5, 2, 9, tzinfo=tokyo)
    assert got.tzinfo == tokyo


def test_naive_datetimes_are_utc() -> None:
    c = crontab(minute=0, hour=9, tz="Asia/Tokyo")
    assert c.next_run_at(datetime(2024, 5, 1, 1, 0)) == c.next_run_at(utc(2024, 5, 1, 1, 0))


def test_is_due_and_remaining_estimate() -> None:
    clock = Clock(utc(2024, 5, 1))
    c = crontab(minute="*/15", nowfun=clock)
    last = utc(2024, 5, 1, 10, 0)
    clock.now = utc(2024, 5, 1, 10, 10)
    assert c.remaining_estimate(last) == timedelta(minutes=5)
    assert c.is_due(last) == schedstate(False, 300.0)
    assert isinstance(c.is_due(last).next, float)
    clock.now = utc(2024, 5, 1, 10, 15)
    assert c.is_due(last) == (True, 900.0)
    clock.now = utc(2024, 5, 1, 10, 16, 30)
    state = c.is_due(last)
    assert state.is_due and state.next == 13 * 60 + 30
    # Late by hours: due once, then measured from now.
    clock.now = utc(2024, 5, 1, 13, 1)
    assert c.is_due(last) == (True, 14 * 60.0)
    assert c.remaining_estimate(last) == -timedelta(hours=2, minutes=46)


def test_beat_loop_runs_each_time_once() -> None:
    """Drive is_due as a scheduler would and collect the run times."""
    clock = Clock(utc(2024, 5, 1))
    c = crontab(minute="0,30", hour="8-9", nowfun=clock)
    clock.now = last = utc(2024, 5, 1, 7, 0)
    fired = []
    while clock.now < utc(2024, 5, 2, 10, 0):
        due, wait = c.is_due(last)
        if due:
            fired.append(clock.now)
            last = clock.now
        clock.advance(seconds=min(wait, 300) or 1)
    assert fired == [
        utc(2024, 5, 1, 8, 0),
        utc(2024, 5, 1, 8, 30),
        utc(2024, 5, 1, 9, 0),
        utc(2024, 5, 1, 9, 30),
        utc(2024, 5, 2, 8, 0),
        utc(2024, 5, 2, 8, 30),
        utc(2024, 5, 2, 9, 0),
        utc(2024, 5, 2, 9, 30),
    ]


class FakeApp:
    """Any object with conf.timezone, conf.enable_utc and now() will do."""

    def __init__(self, now: datetime, **conf: Any) -> None:
        self.conf = SimpleNamespace(**{"timezone": None, "enable_utc": True, **conf})
        self._now = now

    def now(self) -> datetime:
        return self._now


def test_app_gives_zone_and_clock() -> None:
    app = FakeApp(utc(2024, 5, 1, 6, 0), timezone="Europe/Berlin")
    c = crontab(minute=0, hour=9, app=app)
    assert c.tz == ZoneInfo("Europe/Berlin")
    assert c.now() == utc(2024, 5, 1, 6, 0)
    assert c.remaining_estimate(utc(2024, 5, 1, 5, 0)) == timedelta(hours=1)  # 09:00 CEST
    # An explicit tz wins over the app's.
    assert crontab(minute=0, hour=9, app=app, tz="UTC").tz == UTC
    assert crontab(app=FakeApp(utc(2024, 1, 1))).tz == UTC
    assert crontab(app=app).utc_enabled and crontab().utc_enabled


def test_starting_deadline_from_app() -> None:
    # Last run yesterday, the 09:00 run missed by an hour.
    now = utc(2024, 5, 1, 10, 0)
    last = utc(2024, 4, 30, 9, 0)
    strict = crontab(minute=0, hour=9, app=FakeApp(now, beat_cron_starting_deadline=600))
    assert strict.is_due(last) == (False, 23 * 3600.0)
    lenient = crontab(minute=0, hour=9, app=FakeApp(now, beat_cron_starting_deadline=3600))
    assert lenient.is_due(last) == (True, 23 * 3600.0)
    assert crontab(minute=0, hour=9, app=FakeApp(now)).is_due(last).is_due


def test_unknown_zone_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown time zone 'Mars/Olympus'.*IANA"):
        crontab(tz="Mars/Olympus")


def test_equality_hash_and_repr() -> None:
    assert crontab(minute="*/15") == crontab(minute=[0, 15, 30, 45])
    assert hash(crontab(minute="*/15")) == hash(crontab(minute="0,15,30,45"))
    assert crontab(day_of_week=7) == crontab(day_of_week="sun")
    assert crontab(minute=1) != crontab(minute=2)
    assert crontab(hour=2, tz="Europe/Berlin") != crontab(hour=2, tz="UTC")
    assert crontab(hour=2, tz="Europe/Berlin") == crontab(hour=2, tz=ZoneInfo("Europe/Berlin"))
    assert crontab() != "* * * * *"
    assert repr(crontab(minute="*/15", hour={1, 2})) == (
        "<crontab: */15 {1, 2} * * * (m/h/dM/MY/d)>"
    )


def test_pickles() -> None:
    c = crontab("0", "*/3", "mon-fri", "1-7", "*", tz="Europe/Berlin")
    back = pickle.loads(pickle.dumps(c))
    assert back == c
    assert back.tz == ZoneInfo("Europe/Berlin")
    assert repr(back) == repr(c)
    start = utc(2024, 5, 1)
    assert back.next_run_at(start) == c.next_run_at(start)
