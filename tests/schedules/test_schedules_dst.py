"""crontab across DST changes: a skipped time runs once at the jump, a repeated one once."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from schedules_clock import Clock

from celeriac.schedules import crontab

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def beat(c: crontab, clock: Clock, until: datetime) -> list[datetime]:
    """Run is_due as a scheduler does (sleeping as told, at most 5 minutes) and collect runs."""
    fired: list[datetime] = []
    last = clock.now
    while clock.now < until:
        due, wait = c.is_due(last)
        if due:
            fired.append(clock.now.astimezone(c.tz))
            last = clock.now
        clock.advance(seconds=min(wait, 300.0) or 1.0)
    return fired


def test_berlin_spring_forward_runs_the_missing_time_once_at_the_jump() -> None:
    # 2024-03-31: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist.
    clock = Clock(datetime(2024, 3, 29, 12, tzinfo=BERLIN))
    c = crontab(minute=30, hour=2, tz="Europe/Berlin", nowfun=clock)
    fired = beat(c, clock, datetime(2024, 4, 2, 12, tzinfo=BERLIN))
    assert fired == [
        datetime(2024, 3, 30, 2, 30, tzinfo=BERLIN),
        datetime(2024, 3, 31, 3, 0, tzinfo=BERLIN),  # the moment the clocks jump
        datetime(2024, 4, 1, 2, 30, tzinfo=BERLIN),
        datetime(2024, 4, 2, 2, 30, tzinfo=BERLIN),
    ]
    assert [f.utcoffset() for f in fired] == [timedelta(hours=h) for h in (1, 2, 2, 2)]


def test_berlin_fall_back_runs_the_repeated_time_once_at_its_first_occurrence() -> None:
    # 2024-10-27: 03:00 CEST falls back to 02:00 CET, so 02:30 happens twice.
    clock = Clock(datetime(2024, 10, 25, 12, tzinfo=BERLIN))
    c = crontab(minute=30, hour=2, tz="Europe/Berlin", nowfun=clock)
    fired = beat(c, clock, datetime(2024, 10, 29, 12, tzinfo=BERLIN))
    assert [f.astimezone(UTC) for f in fired] == [
        datetime(2024, 10, 26, 0, 30, tzinfo=UTC),  # 02:30 CEST
        datetime(2024, 10, 27, 0, 30, tzinfo=UTC),  # 02:30 CEST, not again at 02:30 CET
        datetime(2024, 10, 28, 1, 30, tzinfo=UTC),  # 02:30 CET
        datetime(2024, 10, 29, 1, 30, tzinfo=UTC),
    ]


def test_restart_inside_the_repeated_hour_does_not_run_again() -> None:
    # Last run at 02:30 CEST; beat restarts during the second 02:00-03:00 (CET).
    last = datetime(2024, 10, 27, 0, 30, tzinfo=UTC)
    clock = Clock(datetime(2024, 10, 27, 1, 45, tzinfo=UTC))  # 02:45 CET
    c = crontab(minute=30, hour=2, tz="Europe/Berlin", nowfun=clock)
    assert c.next_run_at(last) == datetime(2024, 10, 28, 2, 30, tzinfo=BERLIN)
    assert not c.is_due(last).is_due


@pytest.mark.parametrize(
    ("first", "last"),
    [
        (datetime(2024, 3, 30, tzinfo=BERLIN), datetime(2024, 4, 2, tzinfo=BERLIN)),
        (datetime(2024, 10, 26, tzinfo=BERLIN), datetime(2024, 10, 29, tzinfo=BERLIN)),
    ],
)
def test_daily_job_runs_exactly_once_each_day(first: datetime, last: datetime) -> None:
    for hour in (1, 2, 3):
        clock = Clock(first.astimezone(UTC))
        c = crontab(minute=30, hour=hour, tz=BERLIN, nowfun=clock)
        days = Counter(f.date() for f in beat(c, clock, last))
        assert set(days.values()) == {1}, (hour, days)
        assert len(days) == (last - first).days


def test_every_15_minutes_over_spring_forward() -> None:
    clock = Clock(datetime(2024, 3, 31, 1, 30, tzinfo=BERLIN))
    c = crontab(minute="*/15", tz=BERLIN, nowfun=clock)
    fired = beat(c, clock, datetime(2024, 3, 31, 3, 20, tzinfo=BERLIN))
    # 02:00-02:45 do not exist: together with 03:00 they make one run at 03:00 CEST.
    assert [f.strftime("%H:%M %Z") for f in fired] == [
        "01:45 CET",
        "03:00 CEST",
        "03:15 CEST",
    ]


def test_every_15_minutes_over_fall_back() -> None:
    clock = Clock(datetime(2024, 10, 27, 1, 30, tzinfo=BERLIN))
    c = crontab(minute="*/15", tz=BERLIN, nowfun=clock)
    fired = beat(c, clock, datetime(2024, 10, 27, 3, 20, tzinfo=BERLIN))
    # Each wall-clock time runs once: the repeated 02:00-02:45 (CET) are not run again.
    assert [f.strftime("%H:%M %Z") for f in fired] == [
        "01:45 CEST",
        "02:00 CEST",
        "02:15 CEST",
        "02:30 CEST",
        "02:45 CEST",
        "03:00 CET",
        "03:15 CET",
    ]


def test_hourly_job_counts_on_the_change_days() -> None:
    for day, expected in ((datetime(2024, 3, 31), 23), (datetime(2024, 10, 27), 24)):
        start = day.replace(tzinfo=BERLIN) - timedelta(seconds=1)
        clock = Clock(start.astimezone(UTC))
        c = crontab(minute=0, tz=BERLIN, nowfun=clock)
        fired = beat(c, clock, (day + timedelta(days=1)).replace(tzinfo=BERLIN))
        assert len(fired) == expected
        assert len({f.astimezone(UTC) for f in fired}) == expected


def test_new_york_spring_forward() -> None:
    # 2025-03-09: 02:00 EST jumps to 03:00 EDT.
    c = crontab(minute=30, hour=2, tz="America/New_York")
    start = datetime(2025, 3, 8, 12, tzinfo=NEW_YORK)
    got = [c.next_run_at(start)]
    got.append(c.next_run_at(got[-1]))
    got.append(c.next_run_at(got[-1]))
    assert [g.strftime("%m-%d %H:%M %Z") for g in got] == [
        "03-09 03:00 EDT",
        "03-10 02:30 EDT",
        "03-11 02:30 EDT",
    ]


def test_new_york_fall_back() -> None:
    # 2025-11-02: 02:00 EDT falls back to 01:00 EST, so 01:30 happens twice.
    clock = Clock(datetime(2025, 11, 1, 12, tzinfo=NEW_YORK).astimezone(UTC))
    c = crontab(minute=30, hour=1, tz="America/New_York", nowfun=clock)
    fired = beat(c, clock, datetime(2025, 11, 3, 12, tzinfo=NEW_YORK))
    assert [f.strftime("%m-%d %H:%M %Z") for f in fired] == [
        "11-02 01:30 EDT",
        "11-03 01:30 EST",
    ]


def test_remaining_estimate_is_real_time_across_the_change() -> None:
    # 12:00 CET on the 30th to 03:00 CEST on the 31st is 14 real hours, not 15.
    now = datetime(2024, 3, 30, 12, tzinfo=BERLIN)
    c = crontab(minute=30, hour=2, tz=BERLIN, nowfun=lambda: now)
    assert c.remaining_estimate(datetime(2024, 3, 30, 2, 30, tzinfo=BERLIN)) == timedelta(hours=14)
    # 12:00 CEST on the 26th of October to 02:30 CET on the 28th: 39.5 real hours.
    now2 = datetime(2024, 10, 26, 12, tzinfo=BERLIN)
    c2 = crontab(minute=30, hour=2, tz=BERLIN, nowfun=lambda: now2)
    last = datetime(2024, 10, 27, 2, 30, tzinfo=BERLIN)
    assert c2.remaining_estimate(last) == timedelta(hours=39, minutes=30)


def test_midnight_gap_in_santiago() -> None:
    # 2024-09-08: 00:00 jumps to 01:00 in Chile, so a midnight job runs at 01:00.
    c = crontab(minute=0, hour=0, tz="America/Santiago")
    got = c.next_run_at(datetime(2024, 9, 7, 12, tzinfo=UTC))
    assert got.replace(tzinfo=None) == datetime(2024, 9, 8, 1, 0)
