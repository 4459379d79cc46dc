"""crontab next-run times against a brute-force oracle and against Celery's own crontab."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celeriac.schedules import crontab

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # half-hour DST shift
    "America/Santiago",  # DST changes at midnight
    "Asia/Kolkata",  # half-hour offset, no DST
]
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
HORIZON = timedelta(days=3 * 366)


# --- the oracle: walks real time minute by minute, knowing nothing of croniter ----------


class Spec:
    def __init__(
        self, minute: set[int], hour: set[int], dow: set[int], dom: set[int], moy: set[int]
    ):
        self.minute, self.hour, self.dow, self.dom, self.moy = minute, hour, dow, dom, moy

    def day_matches(self, d: datetime) -> bool:
        return d.month in self.moy and d.day in self.dom and d.isoweekday() % 7 in self.dow

    def matches(self, d: datetime) -> bool:
        return self.day_matches(d) and d.hour in self.hour and d.minute in self.minute


def _walls_between(before: datetime, after: datetime) -> list[datetime]:
    """Naive wall-clock minutes strictly between two local readings (those a jump skipped)."""
    out, wall = [], before.replace(tzinfo=None, fold=0) + MINUTE
    end = after.replace(tzinfo=None, fold=0)
    while wall < end:
        out.append(wall)
        wall += MINUTE
    return out


def _is_repeat(local: datetime) -> bool:
    """True for the second occurrence of a wall-clock time repeated by a DST change."""
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


def oracle_next(spec: Spec, after: datetime, zone: ZoneInfo) -> datetime | None:
    """First instant after `after` at which the documented rules say the crontab runs.

    A run happens at real minute u when the local reading at u matches (and is not
    the second occurrence of a repeated time), or when the clock jumped forward into
    u over wall-clock times of which one matches.
    """
    u = after.astimezone(UTC).replace(second=0, microsecond=0) + MINUTE
    limit = after.astimezone(UTC) + HORIZON
    while u <= limit:
        local = u.astimezone(zone)
        if not spec.day_matches(local) and not spec.day_matches((u + HOUR).astimezone(zone)):
            # Neither this local date nor the next hour's matches: move on an hour at
            # a time (a skipped wall time within those dates cannot match either).
            u += HOUR
            continue
        previous = (u - MINUTE).astimezone(zone)
        skipped = _walls_between(previous, local)
        if (spec.matches(local) and not _is_repeat(local)) or any(map(spec.matches, skipped)):
            return u
        u += MINUTE
    return None


# --- strategies -------------------------------------------------------------------------


def _field(lo: int, hi: int, names: list[str] | None = None) -> st.SearchStrategy[str]:
    """A cron field string over lo..hi: '*', steps, ranges, lists, names."""
    number = st.integers(lo, hi)
    word = (
        number.map(str)
        if names is None
        else st.one_of(number.map(str), st.integers(0, len(names) - 1).map(lambda i: names[i]))
    )
    step = st.integers(1, max(1, (hi - lo) // 2))
    part = st.one_of(
        word,
        st.tuples(word, word).map(lambda t: f"{t[0]}-{t[1]}"),
        st.tuples(number, number, step).map(lambda t: f"{min(t[:2])}-{max(t[:2])}/{t[2]}"),
        step.map(lambda s: f"*/{s}"),
    )
    return st.one_of(
        st.just("*"),
        st.lists(part, min_size=1, max_size=3).map(",".join),
    )


DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]

# Hours around which clocks change are drawn more often, to land in gaps and repeats.
_HOURS = st.one_of(_field(0, 23), st.sampled_from(["0", "1", "2", "3", "23", "1-3", "*/2", "2,3"]))

specs = st.tuples(
    _field(0, 59),
    _HOURS,
    st.one_of(_field(0, 7, DAYS), st.just("*")),
    st.one_of(st.just("*"), _field(1, 31), st.sampled_from(["29", "31", "28-31", "1,15"])),
    st.one_of(st.just("*"), _field(1, 12, MONTHS)),
)

# Instants near each zone's DST changes, month ends and leap days.
_ANCHORS = {
    "UTC": [datetime(2024, 2, 29, 12, 0, tzinfo=UTC), datetime(2023, 12, 31, 23, 0, tzinfo=UTC)],
    "Europe/Berlin": [
        datetime(2024, 3, 31, 1, 0, tzinfo=UTC),  # 02:00 -> 03:00
        datetime(2024, 10, 27, 1, 0, tzinfo=UTC),  # 03:00 -> 02:00
    ],
    "America/New_York": [
        datetime(2025, 3, 9, 7, 0, tzinfo=UTC),  # 02:00 -> 03:00
        datetime(2025, 11, 2, 6, 0, tzinfo=UTC),  # 02:00 -> 01:00
    ],
    "Australia/Lord_Howe": [
        datetime(2024, 4, 6, 15, 0, tzinfo=UTC),  # 02:00 -> 01:30
        datetime(2024, 10, 5, 15, 30, tzinfo=UTC),  # 02:00 -> 02:30
    ],
    "America/Santiago": [
        datetime(2024, 9, 8, 4, 0, tzinfo=UTC),  # 00:00 -> 01:00
        datetime(2024, 4, 7, 3, 0, tzinfo=UTC),  # 00:00 -> 23:00 the day before
    ],
    "Asia/Kolkata": [datetime(2025, 2, 28, 18, 0, tzinfo=UTC)],  # month end, no leap day
}


@st.composite
def zoned_instants(draw: st.DrawFn) -> tuple[str, datetime]:
    zone = draw(st.sampled_from(ZONES))
    if draw(st.booleans()):
        anywhere = st.datetimes(
            min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
        )
        return zone, draw(anywhere)
    anchor = draw(st.sampled_from(_ANCHORS[zone]))
    spread = draw(st.sampled_from([3 * 60, 2 * 24 * 60]))
    return zone, anchor + timedelta(minutes=draw(st.integers(-spread, spread)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs, where=zoned_instants())
def test_next_run_matches_brute_force_oracle(
    spec: tuple[str, str, str, str, str], where: tuple[str, datetime]
) -> None:
    minute, hour, dow, dom, moy = spec
    zone_name, after = where
    try:
        schedule = crontab(minute, hour, dow, dom, moy, tz=zone_name)
    except ValueError:
        return  # e.g. day 31 in February only: rejected up front, as Celery does
    zone = ZoneInfo(zone_name)
    oracle = Spec(
        schedule.minute,
        schedule.hour,
        schedule.day_of_week,
        schedule.day_of_month,
        schedule.month_of_year,
    )
    expected = oracle_next(oracle, after, zone)
    got = schedule.next_run_at(after)
    if expected is None:
        assert got.astimezone(UTC) > after + HORIZON
    else:
        assert got.astimezone(UTC) == expected, (schedule, zone_name, after.isoformat())
        assert got.tzinfo is not None and got.utcoffset() == expected.astimezone(zone).utcoffset()


# --- Celery's own crontab on a sample of specs ------------------------------------------

CELERY_SPECS = [
    ("*", "*", "*", "*", "*"),
    ("*/15", "*", "*", "*", "*"),
    ("0", "*/3", "*", "*", "*"),
    ("30", "2", "*", "*", "*"),
    ("0", "9-17", "mon-fri", "*", "*"),
    ("1,13,30-45,50-59/2", "0,8-17/2", "*", "*", "*"),
    ("0", "0", "sun", "*", "*"),
    ("0", "0", "fri-mon", "*", "*"),
    ("0", "12", "*", "1", "*"),
    ("0", "0", "*", "31", "*"),
    ("0", "0", "*", "29", "2"),
    ("15", "6", "*", "1-7,15-21", "*"),
    ("0", "0", "1", "1-7", "*"),
    ("45", "23", "*", "28-31", "*/3"),
    ("5", "4", "*", "*", "jan,jul"),
    ("0", "0", "sat", "13", "*"),
    ("*/20", "1-3", "*", "*", "2-12/2"),
]
CELERY_STARTS = [
    datetime(2023, 1, 1, 0, 0, tzinfo=UTC),
    datetime(2023, 6, 15, 13, 7, 30, tzinfo=UTC),
    datetime(2024, 2, 28, 23, 59, tzinfo=UTC),
    datetime(2024, 2, 29, 12, 0, tzinfo=UTC),
    datetime(2024, 12, 31, 23, 45, tzinfo=UTC),
    datetime(2025, 7, 31, 8, 0, tzinfo=UTC),
    datetime(2025, 8, 16, 2, 30, tzinfo=UTC),
]


@pytest.fixture(scope="module")
def celery_apps() -> dict[str, object]:
    celery = pytest.importorskip("celery")
    apps = {}
    for zone in ("UTC", "Europe/Berlin", "Asia/Tokyo"):
        app = celery.Celery(set_as_current=False)
        app.conf.timezone = zone
        apps[zone] = app
    return apps


@pytest.mark.parametrize("zone_name", ["UTC", "Europe/Berlin", "Asia/Tokyo"])
@pytest.mark.parametrize("spec", CELERY_SPECS, ids=" ".join)
def test_same_next_run_as_celery(
    spec: tuple[str, str, str, str, str], zone_name: str, celery_apps: dict[str, object]
) -> None:
    from celery.schedules import crontab as celery_crontab

    minute, hour, dow, dom, moy = spec

    def clock(at: datetime) -> Callable[[], datetime]:
        return lambda: at

    for start in CELERY_STARTS:
        # Celery's remaining time from `now == last_run_at` is the distance to the next run.
        theirs = celery_crontab(
            minute, hour, dow, dom, moy, nowfun=clock(start), app=celery_apps[zone_name]
        )
        ours = crontab(minute, hour, dow, dom, moy, nowfun=clock(start), tz=zone_name)
        assert ours.remaining_estimate(start) == theirs.remaining_estimate(start), (
            spec,
            zone_name,
            start,
        )
        assert ours.is_due(start) == tuple(theirs.is_due(start))
        later = start + timedelta(days=40)
        ours_late = crontab(minute, hour, dow, dom, moy, nowfun=clock(later), tz=zone_name)
        theirs_late = celery_crontab(
            minute, hour, dow, dom, moy, nowfun=clock(later), app=celery_apps[zone_name]
        )
        assert ours_late.is_due(start) == tuple(theirs_late.is_due(start))
