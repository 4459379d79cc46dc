"""A clock the schedule tests move by hand."""

from __future__ import annotations

from datetime import datetime, timedelta


class Clock:
    """A ``nowfun``: returns ``now``, which the test sets or advances."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now
