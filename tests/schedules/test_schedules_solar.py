"""solar: events, validation, polar days, and the same times as Celery's solar."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import pytest
from schedules_clock import Clock

from celeriac.schedules import solar

EVENTS = [
    "dawn_astronomical",
    "dawn_nautical",
    "dawn_civil",
    "sunrise",
    "solar_noon",
    "sunset",
    "dusk_civil",
    "dusk_nautical",
    "dusk_astronomical",
]


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_events_of_a_day_come_in_order() -> None:
    start = utc(2024, 3, 20, 0, 0)  # Berlin, near the equinox
    times = [solar(e, 52.52, 13.405).next_run_at(start) for e in EVENTS]
    assert times == sorted(times)
    assert all(start < t < start + timedelta(days=1) for t in times)
    sunrise = solar("sunrise", 52.52, 13.405).next_run_at(start)
    assert utc(2024, 3, 20, 4, 50) < sunrise < utc(2024, 3, 20, 5, 10)  # about 06:00 CET


def test_is_due_with_a_clock() -> None:
    clock = Clock(utc(2024, 6, 1, 0, 0))
    s = solar("sunrise", 52.52, 13.405, nowfun=clock)
    last = utc(2024, 5, 31, 12, 0)
    rise = s.next_run_at(last)
    due, wait = s.is_due(last)
    assert not due and wait == pytest.approx((rise - clock.now).total_seconds())
    clock.now = rise + timedelta(seconds=1)
    due, wait = s.is_due(last)
    assert due
    # Next check: tomorrow's sunrise, a little under a day away in June.
    assert timedelta(hours=23, minutes=55) < timedelta(seconds=wait) < timedelta(hours=24)


def test_polar_day_waits_for_the_next_sunset() -> None:
    # Tromsø: the sun does not set between late May and late July.
    s = solar("sunset", 69.65, 18.96)
    got = s.next_run_at(utc(2024, 6, 1))
    assert utc(2024, 7, 20) < got < utc(2024, 7, 31)
    # Svalbard in summer has no astronomical dusk for months.
    assert solar("dusk_astronomical", 78.2, 15.6).next_run_at(utc(2024, 6, 1)) > utc(2024, 8, 1)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("noon", 0, 0), "solar event 'noon' is invalid: expected one of dawn_astronomical"),
        (("sunrise", 91, 0), "latitude 91 is invalid: expected -90 to 90"),
        (("sunrise", -90.5, 0), "latitude -90.5 is invalid"),
        (("sunrise", 0, 180.1), "longitude 180.1 is invalid: expected -180 to 180"),
        (("sunrise", 0, float("nan")), "longitude nan is invalid"),
        (("sunrise", "52", 0), "latitude must be a number of degrees"),
        (("sunrise", True, 0), "latitude must be a number of degrees"),
    ],
)
def test_bad_arguments(args: tuple[object, object, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        solar(*args)  # type: ignore[arg-type]


def test_repr_equality_pickle() -> None:
    s = solar("sunset", 52, 13.4)
    assert repr(s) == "<solar: sunset at latitude 52, longitude: 13.4>"
    assert s == solar("sunset", 52.0, 13.4)
    assert hash(s) == hash(solar("sunset", 52.0, 13.4))
    assert s != solar("sunrise", 52, 13.4)
    back = pickle.loads(pickle.dumps(s))
    assert back == s and repr(back) == repr(s)
    assert back.next_run_at(utc(2024, 1, 1)) == s.next_run_at(utc(2024, 1, 1))


@pytest.mark.parametrize("event", EVENTS)
def test_same_times_as_celery(event: str) -> None:
    pytest.importorskip("ephem")
    celery = pytest.importorskip("celery")
    from celery.schedules import solar as celery_solar

    app = celery.Celery(set_as_current=False)
    places = [(52.52, 13.405), (-33.87, 151.21), (40.71, -74.0), (69.65, 18.96)]
    for lat, lon in places:
        for last in (utc(2024, 3, 20, 12), utc(2024, 6, 21, 3), utc(2024, 12, 1, 18)):
            theirs = celery_solar(event, lat, lon, nowfun=lambda last=last: last, app=app)
            ours = solar(event, lat, lon, nowfun=lambda last=last: last)
            diff = ours.remaining_estimate(last) - theirs.remaining_estimate(last)
            assert abs(diff) < timedelta(milliseconds=1), (event, lat, lon, last)
