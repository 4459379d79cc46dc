"""Sending events in Celery's format so Flower and ``celery events`` understand them.

Task events from a worker are buffered and sent as one ``task.multi`` message holding a list;
worker events and the client's ``task-sent`` go one by one (``PROTOCOL.md`` §5).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from celeriac.protocol import serialization
from celeriac.protocol.message import Message

EXCHANGE = "celeryev"
BUFFER_LIMIT = 24


def event(type_: str, **fields: Any) -> dict[str, Any]:
    """An event dict with Celery's common fields (``hostname`` etc. are added when sent)."""
    return {"type": type_, **fields}


def utcoffset_hours() -> float:
    offset = time.altzone if time.daylight and time.localtime().tm_isdst > 0 else time.timezone
    return -offset / 3600.0


class LamportClock:
    """Celery's logical clock: increments on every send, jumps forward on receipt."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def forward(self) -> int:
        with self._lock:
            self.value += 1
            return self.value

    def adjust(self, other: int) -> int:
        with self._lock:
            self.value = max(self.value, int(other)) + 1
            return self.value


class EventDispatcher:
    """Sends events through a broadcast function ``(exchange, routing_key, message)``."""

    def __init__(
        self,
        broadcast: Callable[[str, str, Message], None],
        hostname: str,
        enabled: bool = True,
        buffer_limit: int = BUFFER_LIMIT,
        clock: LamportClock | None = None,
        serializer: str = "json",
    ) -> None:
        self._broadcast = broadcast
        self.hostname = hostname
        self.enabled = enabled
        self.buffer_limit = buffer_limit
        self.clock = clock or LamportClock()
        self.serializer = serializer
        self.pid = os.getpid()
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def _complete(self, type_: str, fields: dict[str, Any]) -> dict[str, Any]:
        return {
            "hostname": self.hostname,
            "utcoffset": utcoffset_hours(),
            "pid": self.pid,
            "clock": self.clock.forward(),
            **fields,
            "type": type_,
            "timestamp": fields.get("timestamp") or time.time(),
        }

    def _message(self, body: Any) -> Message:
        content_type, encoding, data = serialization.dumps(body, self.serializer)
        return Message(
            data,
            headers={"hostname": self.hostname},
            properties={"delivery_mode": 1, "priority": 0},
            content_type=content_type,
            content_encoding=encoding,
        )

    def send(self, type_: str, buffered: bool = False, **fields: Any) -> None:
        """Send one event now, or buffer a task event to send in the next ``task.multi`` batch."""
        if not self.enabled:
            return
        evt = self._complete(type_, fields)
        if buffered:
            with self._lock:
                self._buffer.append(evt)
                full = len(self._buffer) >= self.buffer_limit
            if full:
                self.flush()
            return
        self._broadcast(EXCHANGE, type_.replace("-", "."), self._message(evt))

    def flush(self) -> None:
        """Send buffered task events as one ``task.multi`` message."""
        with self._lock:
            batch, self._buffer = self._buffer, []
        if batch:
            self._broadcast(EXCHANGE, "task.multi", self._message(batch))

    def hostname_for(self) -> str:
        return self.hostname or f"gen{os.getpid()}@{socket.gethostname()}"
