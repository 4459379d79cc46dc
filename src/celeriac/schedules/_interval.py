"""``schedule``: run every N seconds, optionally on round clock boundaries."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from ._base import AppLike, BaseSchedule, NowFun, schedstate
from ._wallclock import as_aware, resolve_local

__all__ = ["humanize_seconds", "maybe_schedule", "schedule"]

_UNITS = (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0), ("second", 1.0))


def humanize_seconds(secs: float) -> str:
    """Seconds in words as Celery shows them: ``60`` -> ``"1.00 minute"``, ``0`` -> ``"now"``."""
    secs = float(format(float(secs), ".2f"))
    for unit, size in _UNITS:
        if secs >= size:
            amount = secs / size
            return f"{amount:.2f} {unit}{'' if amount == 1 else 's'}"
    return "now"


class schedule(BaseSchedule):
    """Run every ``run_every`` (seconds or a timedelta) after the last run.

    With ``relative=True`` the run time is rounded down to the interval's resolution
    on the local clock (whole days, hours or minutes), so ``schedule(3600,
    relative=True)`` runs on the hour rather than an hour after the last run.
    Intervals are real elapsed time, so DST changes do not stretch or shrink them;
    relative day intervals step by calendar days (local midnight).
    """

    def __init__(
        self,
        run_every: float | timedelta,
        relative: bool = False,
        nowfun: NowFun | None = None,
        tz: tzinfo | str | None = None,
        app: AppLike | None = None,
    ) -> None:
        if isinstance(run_every, bool) or not isinstance(run_every, (int, float, timedelta)):
            raise TypeError(
                f"run_every must be seconds (int or float) or a timedelta, not {run_every!r}"
            )
        self.run_every = (
            run_every if isinstance(run_every, timedelta) else timedelta(seconds=run_every)
        )
        self.relative = relative
        super().__init__(nowfun=nowfun, app=app, tz=tz)

    @property
    def seconds(self) -> float:
        """The interval in seconds (never negative)."""
        return max(self.run_every.total_seconds(), 0)

    @property
    def human_seconds(self) -> str:
        """The interval in words, e.g. ``"5.00 minutes"``."""
        return humanize_seconds(self.seconds)

    def next_run_at(self, last_run_at: datetime) -> datetime:
        """``last_run_at`` plus the interval, rounded when ``relative``."""
        start = as_aware(last_run_at, self.tz)
        if not self.relative or self.seconds < 60:
            return (start.astimezone(UTC) + self.run_every).astimezone(self.tz)
        return _relative_deadline(start, self.run_every)

    def is_due(self, last_run_at: datetime) -> schedstate:
        """``(True, interval)`` once the interval has passed, else ``(False, seconds left)``.

        For a relative schedule the next check is the next rounded boundary after now.
        """
        remaining = max(self.remaining_estimate(last_run_at).total_seconds(), 0.0)
        if remaining > 0:
            return schedstate(False, remaining)
        next_check = self.seconds
        if self.relative:
            ahead = self.remaining_estimate(self._now_aware()).total_seconds()
            if ahead > 0:
                next_check = ahead
        return schedstate(True, next_check)

    def __repr__(self) -> str:
        return f"<freq: {self.human_seconds}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, schedule):
            return self.run_every == other.run_every
        if isinstance(other, timedelta):
            return self.run_every == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.run_every)

    def __reduce__(self) -> tuple[Callable[..., schedule], tuple[Any, ...]]:
        return (
            functools.partial(type(self), nowfun=self.nowfun, tz=self._tz),
            (self.run_every, self.relative),
        )


def _floor(naive: datetime, unit: timedelta) -> datetime:
    if unit >= timedelta(days=1):
        return naive.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit >= timedelta(hours=1):
        return naive.replace(minute=0, second=0, microsecond=0)
    return naive.replace(second=0, microsecond=0)


def _instants(naive: datetime, zone: tzinfo) -> list[datetime]:
    """Every instant a local wall-clock time stands for (two in a repeated hour)."""
    options = {resolve_local(naive, zone).astimezone(UTC)}
    later = naive.replace(tzinfo=zone, fold=1)
    if later.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive:
        options.add(later.astimezone(UTC))
    return sorted(options)


def _relative_deadline(start: datetime, every: timedelta) -> datetime:
    """The last round boundary at or before ``start + every``, but after ``start``."""
    zone = start.tzinfo
    assert zone is not None
    if every >= timedelta(days=1):
        unit = timedelta(days=1)
        # Day intervals count calendar days, so DST cannot move the date.
        end_utc = resolve_local(start.replace(tzinfo=None) + every, zone).astimezone(UTC)
    else:
        unit = timedelta(hours=1) if every >= timedelta(hours=1) else timedelta(minutes=1)
        end_utc = start.astimezone(UTC) + every
    start_utc = start.astimezone(UTC)
    end_wall = end_utc.astimezone(zone).replace(tzinfo=None)
    fitting = [t for t in _instants(_floor(end_wall, unit), zone) if start_utc < t <= end_utc]
    if fitting:
        return fitting[-1].astimezone(zone)
    # Rounding down landed on or before the last run: take the next boundary after it.
    boundary = _floor(start.replace(tzinfo=None), unit)
    for _ in range(4):
        boundary += unit
        later = [t for t in _instants(boundary, zone) if t > start_utc]
        if later:
            return later[0].astimezone(zone)
    return end_utc.astimezone(zone)


def maybe_schedule(
    s: float | timedelta | BaseSchedule | None,
    relative: bool = False,
    app: AppLike | None = None,
) -> BaseSchedule | None:
    """Return a schedule for a number of seconds, a timedelta, or a schedule (given an app)."""
    if s is None:
        return None
    if isinstance(s, (int, float, timedelta)) and not isinstance(s, bool):
        return schedule(s, relative, app=app)
    if isinstance(s, BaseSchedule):
        if app is not None:
            s.app = app
        return s
    raise TypeError(f"expected seconds, a timedelta or a schedule, not {s!r}")
