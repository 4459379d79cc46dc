"""The beat loop: hold the leader lock, tick the scheduler, sleep until the next due time.

Every beat process runs this loop. The one that holds the lock ticks the scheduler; the others
(standbys) only try to take the lock, once a second, and take over within about the lock's time to
live when the leader dies. Sleeps are plain waits on an event until the next entry is due, the lock
needs renewing, or ``max_interval`` passes: an idle beat uses no CPU.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from celeriac import signals
from celeriac.beat.connect import BeatBackend, open_backend
from celeriac.beat.scheduler import DEFAULT_MAX_INTERVAL, PersistentScheduler, Scheduler
from celeriac.exceptions import ImproperlyConfigured
from celeriac.schedules._interval import humanize_seconds

if TYPE_CHECKING:
    from celeriac.app.base import Celery

__all__ = ["EmbeddedService", "Service", "resolve_scheduler"]

logger = logging.getLogger("celeriac.beat")

#: Celery's names for its schedulers, read as ours.
SCHEDULER_ALIASES = {
    "celery.beat:PersistentScheduler": PersistentScheduler,
    "celery.beat.PersistentScheduler": PersistentScheduler,
    "celery.beat:Scheduler": Scheduler,
    "celery.beat.Scheduler": Scheduler,
    "celeriac.beat:PersistentScheduler": PersistentScheduler,
    "celeriac.beat:Scheduler": Scheduler,
}
#: How often a standby tries the lock: with the lock's ttl, bounds the takeover time.
STANDBY_POLL = 1.0


def resolve_scheduler(spec: str | type[Scheduler] | None) -> type[Scheduler]:
    """The scheduler class for ``-S``/``beat_scheduler``: a class, or ``module:Class``."""
    if spec is None:
        return PersistentScheduler
    if not isinstance(spec, str):
        return spec
    alias = SCHEDULER_ALIASES.get(spec)
    if alias is not None:
        return alias
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ImproperlyConfigured(
            f"beat scheduler {spec!r} could not be imported ({exc}); expected 'module:Class', "
            "e.g. 'celery.beat:PersistentScheduler'"
        ) from exc
    if not isinstance(cls, type):
        raise ImproperlyConfigured(f"beat scheduler {spec!r} is not a class")
    return cls  # type: ignore[no-any-return]


class Service:
    """One beat process's loop (Celery's ``celery.beat.Service``): ``start()`` runs it."""

    def __init__(
        self,
        app: Celery,
        max_interval: float | None = None,
        schedule_filename: str | None = None,
        scheduler_cls: str | type[Scheduler] | None = None,
        *,
        lock_ttl: float | None = None,
        backend: BeatBackend | None = None,
    ) -> None:
        self.app = app
        conf = app.conf
        self.max_interval = float(
            max_interval or conf.get("beat_max_loop_interval") or DEFAULT_MAX_INTERVAL
        )
        self.scheduler_cls = resolve_scheduler(scheduler_cls or conf.get("beat_scheduler"))
        self.schedule_filename = str(
            schedule_filename or conf.get("beat_schedule_filename") or "celerybeat-schedule"
        )
        self.lock_ttl = lock_ttl
        self._backend = backend
        self._scheduler: Scheduler | None = None
        self._is_shutdown = threading.Event()
        self._is_stopped = threading.Event()
        self.is_leader = False
        self._renew_at = 0.0
        self._standby_told = False

    # -- parts -------------------------------------------------------------------------------------
    @property
    def backend(self) -> BeatBackend:
        """The lock and state store (opened on first use)."""
        if self._backend is None:
            self._backend = open_backend(self.app, self.schedule_filename, self.lock_ttl)
        return self._backend

    def get_scheduler(self, lazy: bool = False, **kwargs: Any) -> Scheduler:
        """A new scheduler of ``scheduler_cls`` on this service's state store."""
        return self.scheduler_cls(
            app=self.app,
            schedule_filename=self.schedule_filename,
            max_interval=self.max_interval,
            lazy=lazy,
            store=self.backend.store,
        )

    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            self._scheduler = self.get_scheduler()
        return self._scheduler

    # -- running -----------------------------------------------------------------------------------
    def start(self, embedded_process: bool = False) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT in the ``celeriac beat`` command)."""
        logger.info("beat: Starting...")
        scheduler = self.scheduler
        logger.debug(
            "beat: Ticking with max interval->%s", humanize_seconds(scheduler.max_interval)
        )
        signals.beat_init.send(sender=self)
        if embedded_process:
            signals.beat_embedded_init.send(sender=self)
        try:
            while not self._is_shutdown.is_set():
                wait = self.step()
                if wait > 0:
                    self._is_shutdown.wait(wait)
        except (KeyboardInterrupt, SystemExit):
            self._is_shutdown.set()
        finally:
            self._finish()

    def step(self) -> float:
        """One turn of the loop: keep or try the lock, tick if leading; return seconds to sleep."""
        lock = self.backend.lock
        renew_every = lock.ttl / 3.0
        now = time.monotonic()
        if not self.is_leader or now >= self._renew_at:
            self._renew_at = now + renew_every
            self._set_leader(self._try_lock())
        if not self.is_leader:
            return min(STANDBY_POLL, renew_every)
        try:
            interval = self.scheduler.tick()
        except Exception as exc:
            logger.error(
                "beat: tick failed, retrying in %.1fs: %r", renew_every, exc, exc_info=True
            )
            interval = renew_every
        if interval > 0:
            logger.debug("beat: Waking up in %s.", humanize_seconds(interval))
        until_renewal = self._renew_at - time.monotonic()
        return max(0.0, min(interval, until_renewal, self.max_interval))

    def _try_lock(self) -> bool:
        try:
            return self.backend.lock.acquire()
        except Exception as exc:
            logger.error("beat: cannot reach the lock at %s: %r", self.backend.where, exc)
            return False

    def _set_leader(self, held: bool) -> None:
        if held and not self.is_leader:
            logger.info("beat: Leading (lock %s at %s)", self.backend.lock.name, self.backend.where)
        elif self.is_leader and not held:
            logger.warning("beat: Lost the lock %s; standing by", self.backend.lock.name)
        elif not held and not self._standby_told:
            self._standby_told = True
            logger.info("beat: Standing by: another beat holds the lock %s", self.backend.lock.name)
        self.is_leader = held

    def sync(self) -> None:
        if self._scheduler is not None:
            self._scheduler.sync()

    def _finish(self) -> None:
        try:
            if self._scheduler is not None:
                self._scheduler.close()
            if self.is_leader:
                self.backend.lock.release()
                self.is_leader = False
        except Exception as exc:
            logger.warning("beat: error while stopping: %r", exc)
        finally:
            if self._backend is not None:
                self._backend.close()
            self._is_stopped.set()

    def stop(self, wait: bool = False) -> None:
        """Ask the loop to end (thread- and signal-safe); with *wait*, until it has."""
        logger.info("beat: Shutting down...")
        self._is_shutdown.set()
        if wait:
            self._is_stopped.wait()


class EmbeddedService:
    """Beat on a thread inside another process (``worker -B``)."""

    def __init__(self, app: Celery, max_interval: float | None = None, **kwargs: Any) -> None:
        self.service = Service(app, max_interval=max_interval, **kwargs)
        self.thread = threading.Thread(target=self.run, name="Beat", daemon=True)

    def run(self) -> None:
        try:
            self.service.start(embedded_process=True)
        except Exception:
            logger.exception("beat: the embedded beat stopped on an error")

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.service.stop()
        self.thread.join(timeout)
