"""A clock the schedule tests move by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    """A ``nowfun`` returning ``now``, which the test sets or advances.

    Kept in UTC, so advancing it moves real time (adding a timedelta to a zoned
    datetime would move its wall clock instead).
    """

    def __init__(self, now: datetime) -> None:
        self.now = now

    @property
    def now(self) -> datetime:
        return self._now

    @now.setter
    def now(self, value: datetime) -> None:
        self._now = value.astimezone(UTC)

    def __call__(self) -> datetime:
        return self._now

    def advance(self, **delta: float) -> datetime:
        self._now += timedelta(**delta)
        return self._now
