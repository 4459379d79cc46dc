"""Schedules for periodic tasks: intervals, crontab lines and solar events.

The same public names as ``celery.schedules``; pure time arithmetic, no I/O.
Time zones and DST changes are handled as described in docs/schedules.md.
"""

from ._base import BaseSchedule, schedstate
from ._cron import crontab
from ._interval import maybe_schedule, schedule
from ._parser import ParseException, crontab_parser
from ._solar import solar

__all__ = [
    "BaseSchedule",
    "ParseException",
    "crontab",
    "crontab_parser",
    "maybe_schedule",
    "schedstate",
    "schedule",
    "solar",
]
