"""Beat: sends periodic tasks on schedule, with one leader among any number of beat processes.

The public names of ``celery.beat``: ``Scheduler``, ``PersistentScheduler``, ``ScheduleEntry``,
``Service``, ``EmbeddedService`` and ``SchedulingError``. See docs/beat.md.
"""

from celeriac.beat.scheduler import PersistentScheduler, ScheduleEntry, Scheduler
from celeriac.beat.service import EmbeddedService, Service
from celeriac.beat.store import SchedulingError

__all__ = [
    "EmbeddedService",
    "PersistentScheduler",
    "ScheduleEntry",
    "Scheduler",
    "SchedulingError",
    "Service",
]
