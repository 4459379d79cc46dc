"""``crontab``: run at wall-clock times matching cron fields, in a time zone."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from croniter import croniter

from ._base import AppLike, BaseSchedule, NowFun, schedstate
from ._parser import Cronspec, expand_cronspec
from ._wallclock import as_aware, resolve_local

__all__ = ["crontab"]

# Longest month lengths (February in a leap year), to reject dates that never happen.
_DAYS_IN_MONTH = dict(enumerate((31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31), 1))

# Every allowed (month, day, weekday) recurs within the 400-year Gregorian cycle.
_MAX_YEARS = 400
# A repeated hour holds at most a few hundred candidate minutes to step over.
_MAX_STEPS = 2000


class crontab(BaseSchedule):
    """Run at the local wall-clock times that match every field, like cron(5).

    Fields take an int, a string expression (``"*/15"``, ``"1-5"``, ``"1,2,5"``,
    ``"mon-fri"``, ``"jan"``) or an iterable of ints. Days of the week run 0-6 from
    Sunday; 7 is Sunday too. As in Celery, a day must match ``day_of_week`` AND
    ``day_of_month`` AND ``month_of_year`` (cron uses OR for the two day fields).

    Fields are read in ``tz`` (else the app's ``timezone``, else UTC). A wall-clock
    time skipped by a DST change runs once when the clocks jump; one repeated by a
    DST change runs once, at its first occurrence. See docs/schedules.md.
    """

    def __init__(
        self,
        minute: Cronspec | None = "*",
        hour: Cronspec | None = "*",
        day_of_week: Cronspec | None = "*",
        day_of_month: Cronspec | None = "*",
        month_of_year: Cronspec | None = "*",
        nowfun: NowFun | None = None,
        tz: tzinfo | str | None = None,
        app: AppLike | None = None,
    ) -> None:
        self._orig_minute = "*" if minute is None else minute
        self._orig_hour = "*" if hour is None else hour
        self._orig_day_of_week = "*" if day_of_week is None else day_of_week
        self._orig_day_of_month = "*" if day_of_month is None else day_of_month
        self._orig_month_of_year = "*" if month_of_year is None else month_of_year
        self.minute = expand_cronspec(self._orig_minute, "minute", 60)
        self.hour = expand_cronspec(self._orig_hour, "hour", 24)
        self.day_of_week = expand_cronspec(self._orig_day_of_week, "day_of_week", 7)
        self.day_of_month = expand_cronspec(self._orig_day_of_month, "day_of_month", 31, 1)
        self.month_of_year = expand_cronspec(self._orig_month_of_year, "month_of_year", 12, 1)
        if not any(
            day <= _DAYS_IN_MONTH[month]
            for month in self.month_of_year
            for day in self.day_of_month
        ):
            raise ValueError(
                f"crontab day_of_month={self._orig_day_of_month!r} never occurs in "
                f"month_of_year={self._orig_month_of_year!r}"
            )
        self._expression = " ".join(
            _cron_field(values, full)
            for values, full in (
                (self.minute, 60),
                (self.hour, 24),
                (self.day_of_month, 31),
                (self.month_of_year, 12),
                (self.day_of_week, 7),
            )
        )
        super().__init__(nowfun=nowfun, app=app, tz=tz)

    @classmethod
    def from_string(cls, crontab: str, **kwargs: Any) -> crontab:
        """Build from a five-field cron line: ``"minute hour day_of_month month day_of_week"``.

        Extra keywords (``tz``, ``nowfun``, ``app``) go to the constructor.
        """
        fields = crontab.split()
        if len(fields) != 5:
            raise ValueError(
                f"invalid cron line {crontab!r}: expected 5 fields "
                f"'minute hour day_of_month month_of_year day_of_week', e.g. '*/5 * * * *'"
            )
        minute, hour, day_of_month, month_of_year, day_of_week = fields
        return cls(minute, hour, day_of_week, day_of_month, month_of_year, **kwargs)

    def next_run_at(self, last_run_at: datetime) -> datetime:
        """The first matching time strictly after ``last_run_at``, aware in the schedule's zone."""
        zone = self.tz
        after = as_aware(last_run_at, zone)
        after_utc = after.astimezone(UTC)
        start = after.replace(tzinfo=None, fold=0, second=0, microsecond=0)
        # croniter walks naive wall-clock times (pure calendar, no DST); each candidate
        # is then placed in the zone. Candidates at or before `after` are stepped over:
        # that happens in a repeated hour, whose wall-clock times already ran.
        times = croniter(
            self._expression, start, day_or=False, max_years_between_matches=_MAX_YEARS
        )
        for _ in range(_MAX_STEPS):
            candidate = resolve_local(times.get_next(datetime), zone)
            if candidate.astimezone(UTC) > after_utc:
                return candidate
        raise RuntimeError(f"{self!r}: no run time found after {last_run_at.isoformat()}")

    def is_due(self, last_run_at: datetime) -> schedstate:
        """``(due, seconds)``: due when a matching time has passed since ``last_run_at``.

        Seconds are until the next matching time after ``last_run_at`` when not due, or
        after now when due. With the app setting ``beat_cron_starting_deadline``, a run
        missed by more than that many seconds is not due (the schedule moves on).
        """
        remaining = self.remaining_estimate(last_run_at).total_seconds()
        due = remaining <= 0
        if due and self._missed_deadline():
            due = False
            remaining = 0
        if remaining <= 0:
            remaining = self.remaining_estimate(self._now_aware()).total_seconds()
        return schedstate(due, max(remaining, 0.0))

    def _missed_deadline(self) -> bool:
        deadline = self._starting_deadline()
        if deadline is None:
            return False
        now = self._now_aware()
        # A run exactly `deadline` seconds ago still counts, hence the extra microsecond.
        since = now - timedelta(seconds=deadline, microseconds=1)
        return self.next_run_at(since) > now

    def _starting_deadline(self) -> float | None:
        if self.app is None:
            return None
        value = getattr(self.app.conf, "beat_cron_starting_deadline", None)
        return None if value is None else float(value)

    def __repr__(self) -> str:
        return (
            f"<crontab: {self._orig_minute} {self._orig_hour} {self._orig_day_of_month} "
            f"{self._orig_month_of_year} {self._orig_day_of_week} (m/h/dM/MY/d)>"
        )

    def _key(self) -> tuple[frozenset[int], ...]:
        return tuple(
            frozenset(values)
            for values in (
                self.minute,
                self.hour,
                self.day_of_week,
                self.day_of_month,
                self.month_of_year,
            )
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, crontab):
            return self._key() == other._key() and super().__eq__(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self._key(), self._zone_key()))

    def __reduce__(self) -> tuple[Callable[..., crontab], tuple[Any, ...]]:
        return (
            functools.partial(type(self), nowfun=self.nowfun, tz=self._tz),
            (
                self._orig_minute,
                self._orig_hour,
                self._orig_day_of_week,
                self._orig_day_of_month,
                self._orig_month_of_year,
            ),
        )


def _cron_field(values: set[int], full: int) -> str:
    """One croniter field: ``*`` when every value is there, else an explicit list."""
    return "*" if len(values) == full else ",".join(str(v) for v in sorted(values))
