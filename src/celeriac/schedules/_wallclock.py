"""Time zone helpers: naming zones, and turning local wall-clock times into instants.

A local wall-clock time can be missing (skipped when clocks spring forward) or
happen twice (when clocks fall back). Schedules use one rule for both, see
:func:`resolve_local`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["as_aware", "get_zone", "resolve_local", "zone_key"]


def get_zone(zone: str | tzinfo) -> tzinfo:
    """Return a tzinfo for an IANA zone name (``"Europe/Berlin"``) or a tzinfo as is."""
    if isinstance(zone, tzinfo):
        return zone
    if isinstance(zone, str):
        if zone.upper() == "UTC":
            return UTC
        try:
            return ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {zone!r}: expected an IANA name like 'Europe/Berlin' or 'UTC'"
            ) from None
    raise TypeError(f"time zone must be a str or a tzinfo, not {type(zone).__name__}")


def zone_key(zone: tzinfo | None) -> str | None:
    """A stable name for a zone, for equality, hashing and repr."""
    if zone is None:
        return None
    if zone is UTC:
        return "UTC"
    key = getattr(zone, "key", None)
    return key if isinstance(key, str) else repr(zone)


def as_aware(dt: datetime, zone: tzinfo) -> datetime:
    """Return ``dt`` in ``zone``; a naive ``dt`` is taken to be UTC (as Celery does)."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(zone)


def resolve_local(naive: datetime, zone: tzinfo) -> datetime:
    """Turn a local wall-clock time into an aware datetime in ``zone``.

    - A time that exists once maps to itself.
    - A time that happens twice (clocks fall back) maps to its first occurrence.
    - A time that does not exist (clocks spring forward) maps to the instant the
      clocks jump, i.e. the first wall-clock time after the gap (03:00 for a
      02:00-03:00 gap). So a skipped time still runs, as late as it must and no later.

    The result is non-decreasing in ``naive``, which schedules rely on to find the
    first run after an instant.
    """
    first = naive.replace(tzinfo=zone, fold=0)
    second = naive.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first
    first_utc = first.astimezone(UTC)
    if first_utc.astimezone(zone).replace(tzinfo=None, fold=0) == naive.replace(fold=0):
        # The time exists, twice: fold=0 is the earlier occurrence.
        return first
    return _gap_end(naive, zone)


def _gap_end(naive: datetime, zone: tzinfo) -> datetime:
    """The instant the clocks jump over the gap that contains ``naive``."""
    # Read with the offsets from before and after the jump, a missing time gives
    # one instant on each side of the transition; bisect between them to the second.
    a = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    b = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    lo, hi = min(a, b), max(a, b)
    after_offset = hi.astimezone(zone).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).utcoffset() == after_offset:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0).astimezone(zone)
