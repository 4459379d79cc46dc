"""``solar``: run at a solar event (sunrise, dusk, ...) seen from a place on Earth."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import Any, NamedTuple

from ._base import AppLike, BaseSchedule, NowFun, schedstate
from ._wallclock import as_aware

__all__ = ["solar"]


class _Event(NamedTuple):
    horizon: str  # degrees:minutes of the sun's altitude at the event
    method: str  # the ephem.Observer search to use
    use_center: bool  # the sun's centre (twilights) or its upper limb (sunrise/sunset)


# Sunrise and sunset use the upper limb at -0:34 (standard refraction, with pressure 0
# so ephem adds none of its own); twilights use the centre at -6, -12 and -18 degrees.
_EVENTS: dict[str, _Event] = {
    "dawn_astronomical": _Event("-18", "next_rising", True),
    "dawn_nautical": _Event("-12", "next_rising", True),
    "dawn_civil": _Event("-6", "next_rising", True),
    "sunrise": _Event("-0:34", "next_rising", False),
    "solar_noon": _Event("0", "next_transit", False),
    "sunset": _Event("-0:34", "next_setting", False),
    "dusk_civil": _Event("-6", "next_setting", True),
    "dusk_nautical": _Event("-12", "next_setting", True),
    "dusk_astronomical": _Event("-18", "next_setting", True),
}


def _coordinate(name: str, value: object, limit: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"solar {name} must be a number of degrees, not {value!r}")
    if not math.isfinite(value) or not -limit <= value <= limit:
        raise ValueError(f"solar {name} {value!r} is invalid: expected -{limit} to {limit} degrees")
    return float(value)


class solar(BaseSchedule):
    """Run at a solar event seen from latitude ``lat``, longitude ``lon`` (degrees).

    Events: ``dawn_astronomical``, ``dawn_nautical``, ``dawn_civil``, ``sunrise``,
    ``solar_noon``, ``sunset``, ``dusk_civil``, ``dusk_nautical``,
    ``dusk_astronomical``. Times come from the ``ephem`` library with Celery's
    horizons, so they match Celery's. Where an event does not happen on a day (polar
    day or night), the next day it does is used; if none within a year, the
    schedule asks to be checked again a year on.
    """

    #: Days to look ahead for an event that does not happen every day.
    max_search_days = 366

    def __init__(
        self,
        event: str,
        lat: float,
        lon: float,
        nowfun: NowFun | None = None,
        tz: tzinfo | str | None = None,
        app: AppLike | None = None,
    ) -> None:
        if event not in _EVENTS:
            raise ValueError(
                f"solar event {event!r} is invalid: expected one of {', '.join(sorted(_EVENTS))}"
            )
        self.event = event
        self.lat = _coordinate("latitude", lat, 90)
        self.lon = _coordinate("longitude", lon, 180)
        self._lat_given, self._lon_given = lat, lon
        try:
            import ephem  # type: ignore[import-untyped]
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise ImportError(
                "solar schedules need the 'ephem' package: pip install ephem"
            ) from exc
        self._ephem: Any = ephem
        super().__init__(nowfun=nowfun, app=app, tz=tz)

    @property
    def method(self) -> str:
        """The ephem search this event uses (``next_rising``, ``next_setting``, ...)."""
        return _EVENTS[self.event].method

    @property
    def use_center(self) -> bool:
        """Whether the event is timed by the sun's centre rather than its upper limb."""
        return _EVENTS[self.event].use_center

    def _observer(self) -> Any:
        # A fresh observer per search: ephem observers are mutable, so sharing one
        # between threads (or calls) would mix up their dates.
        observer = self._ephem.Observer()
        observer.lat = str(self.lat)  # a str is degrees; a float would be radians
        observer.lon = str(self.lon)
        observer.elev = 0
        observer.pressure = 0
        observer.horizon = _EVENTS[self.event].horizon
        return observer

    def next_run_at(self, last_run_at: datetime) -> datetime:
        """The first occurrence of the event after ``last_run_at`` (aware, in the zone)."""
        start_utc = as_aware(last_run_at, UTC).replace(tzinfo=None)
        ephem = self._ephem
        observer = self._observer()
        observer.date = start_utc
        search = getattr(observer, self.method)
        sun = ephem.Sun()
        start = ephem.Date(start_utc)
        options = {"use_center": True} if self.use_center else {}
        for _ in range(self.max_search_days):
            try:
                found = search(sun, start=start, **options)
                break
            except ephem.CircumpolarError:
                # No such event in this circuit of the sky: try the next day's.
                start = observer.next_antitransit(sun, start=start)
        else:
            found = start
        when: datetime = found.datetime()
        return when.replace(tzinfo=UTC).astimezone(self.tz)

    def is_due(self, last_run_at: datetime) -> schedstate:
        """``(due, seconds)``: due once the event after ``last_run_at`` has passed.

        Seconds are until that event when not due, or until the next one after now.
        """
        remaining = self.remaining_estimate(last_run_at).total_seconds()
        due = remaining <= 0
        if due:
            remaining = self.remaining_estimate(self._now_aware()).total_seconds()
        return schedstate(due, max(remaining, 0.0))

    def __repr__(self) -> str:
        return f"<solar: {self.event} at latitude {self._lat_given}, longitude: {self._lon_given}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, solar):
            return (self.event, self.lat, self.lon) == (other.event, other.lat, other.lon)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.event, self.lat, self.lon))

    def __reduce__(self) -> tuple[Callable[..., solar], tuple[Any, ...]]:
        return (
            functools.partial(type(self), nowfun=self.nowfun, tz=self._tz),
            (self.event, self._lat_given, self._lon_given),
        )
