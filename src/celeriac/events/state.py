"""An in-memory picture of the cluster built from events: workers, tasks, rates, failures.

Feed it with ``state.event(evt)`` (e.g. as an :class:`~celeriac.events.receiver.EventReceiver`
handler). A worker counts as online while its last heartbeat is younger than twice its ``freq``,
the rule Celery's ``events.state`` and Flower use.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

#: A worker is alive while now < last heartbeat + freq * this (Celery's 200 % window).
HEARTBEAT_EXPIRE_WINDOW = 2.0
#: Task state names by event type.
TASK_STATES = {
    "task-sent": "PENDING",
    "task-received": "RECEIVED",
    "task-started": "STARTED",
    "task-succeeded": "SUCCESS",
    "task-failed": "FAILURE",
    "task-retried": "RETRY",
    "task-revoked": "REVOKED",
    "task-rejected": "REJECTED",
}


@dataclass
class WorkerInfo:
    """What the events said about one worker."""

    hostname: str
    freq: float = 2.0
    last_heartbeat: float | None = None
    active: int = 0
    processed: int = 0
    loadavg: list[float] = field(default_factory=list)
    sw_ident: str | None = None
    sw_ver: str | None = None
    offline: bool = False

    def alive(self, now: float | None = None) -> bool:
        """True while the last heartbeat is recent enough and no worker-offline came after it."""
        if self.offline or self.last_heartbeat is None:
            return False
        now = time.time() if now is None else now
        return now < self.last_heartbeat + self.freq * HEARTBEAT_EXPIRE_WINDOW

    def heartbeat_age(self, now: float | None = None) -> float | None:
        """Seconds since the last heartbeat (None before the first)."""
        if self.last_heartbeat is None:
            return None
        return (time.time() if now is None else now) - self.last_heartbeat


@dataclass
class TaskInfo:
    """What the events said about one task."""

    uuid: str
    name: str | None = None
    state: str = "PENDING"
    worker: str | None = None
    args: str | None = None
    kwargs: str | None = None
    result: str | None = None
    exception: str | None = None
    runtime: float | None = None
    timestamp: float = 0.0


class State:
    """Workers and tasks seen in events, plus per-state counts and recent failures."""

    def __init__(
        self, max_tasks: int = 10000, max_failures: int = 20, rate_window: float = 10.0
    ) -> None:
        self.workers: dict[str, WorkerInfo] = {}
        self.tasks: OrderedDict[str, TaskInfo] = OrderedDict()
        self.max_tasks = max_tasks
        self.failures: deque[TaskInfo] = deque(maxlen=max_failures)
        self.counts: Counter[str] = Counter()
        self.event_count = 0
        self.rate_window = rate_window
        self._recent: deque[tuple[float, str]] = deque()

    def event(self, event: dict[str, Any]) -> None:
        """Apply one event."""
        self.event_count += 1
        type_ = str(event.get("type") or "")
        if type_.startswith("worker-"):
            self._worker_event(type_, event)
        elif type_.startswith("task-"):
            self._task_event(type_, event)

    def _worker_event(self, type_: str, event: dict[str, Any]) -> None:
        hostname = str(event.get("hostname") or "")
        worker = self.workers.get(hostname)
        if worker is None:
            worker = self.workers[hostname] = WorkerInfo(hostname)
        worker.freq = float(event.get("freq") or worker.freq)
        worker.active = int(event.get("active") or 0)
        worker.processed = int(event.get("processed") or worker.processed)
        worker.loadavg = list(event.get("loadavg") or worker.loadavg)
        worker.sw_ident = event.get("sw_ident") or worker.sw_ident
        worker.sw_ver = event.get("sw_ver") or worker.sw_ver
        if type_ == "worker-offline":
            worker.offline = True
        else:
            worker.offline = False
            worker.last_heartbeat = float(event.get("timestamp") or time.time())

    def _task_event(self, type_: str, event: dict[str, Any]) -> None:
        uuid = str(event.get("uuid") or "")
        if not uuid:
            return
        task = self.tasks.get(uuid)
        if task is None:
            task = self.tasks[uuid] = TaskInfo(uuid)
            while len(self.tasks) > self.max_tasks:
                self.tasks.popitem(last=False)
        state = TASK_STATES.get(type_)
        if state is not None:
            task.state = state
            self.counts[state] += 1
            now = float(event.get("timestamp") or time.time())
            self._recent.append((now, state))
        task.timestamp = float(event.get("timestamp") or task.timestamp)
        for attr in ("name", "args", "kwargs", "result", "exception", "runtime"):
            if event.get(attr) is not None:
                setattr(task, attr, event[attr])
        if type_ != "task-sent":
            task.worker = str(event.get("hostname") or task.worker or "")
        if type_ == "task-failed":
            self.failures.append(task)

    def rates(self, now: float | None = None) -> dict[str, float]:
        """Events per second by task state over the last ``rate_window`` seconds."""
        now = time.time() if now is None else now
        cutoff = now - self.rate_window
        while self._recent and self._recent[0][0] < cutoff:
            self._recent.popleft()
        counts = Counter(state for _, state in self._recent)
        return {state: n / self.rate_window for state, n in counts.items()}

    def alive_workers(self, now: float | None = None) -> list[WorkerInfo]:
        """Workers whose heartbeat is recent, by name."""
        return sorted((w for w in self.workers.values() if w.alive(now)), key=lambda w: w.hostname)
