"""Time limits inside a pool, and per-worker rate limits."""

from __future__ import annotations

import ctypes
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from celeriac.exceptions import SoftTimeLimitExceeded


def _raise_soft_limit(signum: int, frame: FrameType | None) -> None:
    raise SoftTimeLimitExceeded()


@contextmanager
def soft_limit_alarm(seconds: float | None) -> Iterator[None]:
    """Raise SoftTimeLimitExceeded in this (main) thread after *seconds* (prefork children)."""
    if not seconds:
        yield
        return
    previous = signal.signal(signal.SIGALRM, _raise_soft_limit)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> bool:
    """Ask the interpreter to raise *exc_type* in another thread at its next bytecode.

    This is how thread pools deliver time limits: it interrupts Python code, not a blocking C call
    (a socket read or ``time.sleep`` returns first).
    """
    changed = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type)
    )
    if changed > 1:  # should never happen: undo rather than hit several threads
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
        return False
    return bool(changed == 1)


class ThreadLimits:
    """Arms timers that raise a time-limit exception in the thread running a job."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, str] = {}

    @contextmanager
    def guard(
        self,
        job_id: str,
        soft: float | None,
        hard: float | None,
        hard_exc: type[BaseException],
    ) -> Iterator[None]:
        thread_id = threading.get_ident()
        timers = []
        with self._lock:
            self._running[thread_id] = job_id
        for seconds, exc in ((soft, SoftTimeLimitExceeded), (hard, hard_exc)):
            if seconds:
                timer = threading.Timer(seconds, self._fire, (thread_id, job_id, exc))
                timer.daemon = True
                timer.start()
                timers.append(timer)
        try:
            yield
        finally:
            for timer in timers:
                timer.cancel()
            with self._lock:
                self._running.pop(thread_id, None)

    def _fire(self, thread_id: int, job_id: str, exc: type[BaseException]) -> None:
        with self._lock:
            if self._running.get(thread_id) == job_id:
                raise_in_thread(thread_id, exc)

    def interrupt(self, job_id: str, exc: type[BaseException]) -> bool:
        """Raise *exc* in the thread running *job_id* (revoke with terminate)."""
        with self._lock:
            for thread_id, running in self._running.items():
                if running == job_id:
                    return raise_in_thread(thread_id, exc)
        return False


class RateLimit:
    """A token bucket for Celery's ``"10/s"``, ``"100/m"``, ``"1000/h"`` or a number per second."""

    def __init__(self, spec: str | float | int) -> None:
        self.rate = parse_rate(spec)
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity if self.rate > 0 else 0.0
        self.updated = time.monotonic()

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def take(self) -> float:
        """Take a token; return 0 when allowed now, else the seconds to wait before retrying."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def parse_rate(spec: str | float | int | None) -> float:
    """Tasks per second from Celery's rate-limit syntax; 0 means unlimited."""
    if spec is None or spec == "":
        return 0.0
    if isinstance(spec, int | float):
        return float(spec)
    text = spec.strip()
    number, _, unit = text.partition("/")
    per = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}.get(unit.strip().lower())
    try:
        value = float(number)
    except ValueError:
        per = None
    if per is None:
        raise ValueError(
            f"rate limit {spec!r} is not valid: "
            "expected a number per second, or 'N/s', 'N/m', 'N/h'"
        )
    return value / per
