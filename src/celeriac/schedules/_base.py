"""What every schedule shares: the clock, the time zone and the ``schedstate`` answer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, NamedTuple, Protocol

from ._wallclock import as_aware, get_zone, zone_key

__all__ = ["AppLike", "BaseSchedule", "NowFun", "schedstate"]

NowFun = Callable[[], datetime]


class schedstate(NamedTuple):
    """The answer of ``is_due``: whether to run now, and seconds until the next check."""

    is_due: bool
    next: float


class AppLike(Protocol):
    """What a schedule reads from an app: ``conf.timezone``, ``conf.enable_utc``, ``now()``."""

    @property
    def conf(self) -> Any: ...

    def now(self) -> datetime: ...


class BaseSchedule:
    """Base of all schedules: holds ``nowfun``, the time zone and an optional app.

    The time zone is, in order: the ``tz`` given here (a tzinfo or an IANA name),
    the app's ``conf.timezone``, or UTC. The current time comes from ``nowfun``,
    else the app's ``now()``, else the system clock. Naive datetimes are UTC.
    """

    def __init__(
        self,
        nowfun: NowFun | None = None,
        app: AppLike | None = None,
        tz: tzinfo | str | None = None,
    ) -> None:
        self.nowfun = nowfun
        self._app = app
        self._tz = get_zone(tz) if tz is not None else None

    @property
    def app(self) -> AppLike | None:
        """The app this schedule reads its time zone and clock from, if any."""
        return self._app

    @app.setter
    def app(self, app: AppLike | None) -> None:
        self._app = app

    @property
    def tz(self) -> tzinfo:
        """The time zone that wall-clock fields (crontab hours, days) are read in."""
        if self._tz is not None:
            return self._tz
        if self._app is not None:
            zone = getattr(self._app.conf, "timezone", None)
            if zone:
                return get_zone(zone)
        return UTC

    @property
    def utc_enabled(self) -> bool:
        """The app's ``enable_utc`` (True without an app)."""
        if self._app is None:
            return True
        return bool(getattr(self._app.conf, "enable_utc", True))

    def now(self) -> datetime:
        """The current time, from ``nowfun``, the app, or the system clock (aware)."""
        if self.nowfun is not None:
            return self.nowfun()
        if self._app is not None:
            return self._app.now()
        return datetime.now(UTC)

    def maybe_make_aware(self, dt: datetime, naive_as_utc: bool = True) -> datetime:
        """Return ``dt`` aware, in this schedule's zone.

        A naive ``dt`` is UTC, or with ``naive_as_utc=False`` a wall-clock time in the zone.
        """
        if not naive_as_utc and (dt.tzinfo is None or dt.utcoffset() is None):
            return dt.replace(tzinfo=self.tz)
        return as_aware(dt, self.tz)

    def _now_aware(self) -> datetime:
        return as_aware(self.now(), self.tz)

    def next_run_at(self, last_run_at: datetime) -> datetime:
        """The instant of the first run after ``last_run_at`` (aware, in the schedule's zone)."""
        raise NotImplementedError

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Time from now until the first run after ``last_run_at`` (negative when overdue)."""
        return self.next_run_at(last_run_at).astimezone(UTC) - self._now_aware().astimezone(UTC)

    def is_due(self, last_run_at: datetime) -> schedstate:
        """Whether to run now, and seconds until the next check: see the subclasses."""
        raise NotImplementedError

    def _zone_key(self) -> str | None:
        return zone_key(self._tz)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BaseSchedule):
            return other.nowfun == self.nowfun and other._zone_key() == self._zone_key()
        return NotImplemented

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._zone_key()))
