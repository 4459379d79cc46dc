"""``memory://`` (also ``cache+memory://``): an in-process result store for tests and eager mode."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from celeriac.backends.base import ResultStore, Watch


class _MemoryWatch(Watch):
    def __init__(self, state: _State, keys: Sequence[str]) -> None:
        self._state = state
        self._keys = frozenset(keys)
        self._seen = {k: state.versions.get(k, 0) for k in self._keys}

    def _changed(self) -> bool:
        versions = self._state.versions
        return any(versions.get(k, 0) != v for k, v in self._seen.items())

    def wait(self, timeout: float | None) -> bool:
        with self._state.cond:
            ok = self._state.cond.wait_for(self._changed, timeout)
            self._seen = {k: self._state.versions.get(k, 0) for k in self._keys}
            return ok

    def close(self) -> None:
        pass


class _State:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.data: dict[str, tuple[bytes, float | None]] = {}
        self.versions: dict[str, int] = {}
        self.chords: dict[str, dict[str, Any]] = {}


_states: dict[str, _State] = {}
_states_lock = threading.Lock()


def _state_for(url: str) -> _State:
    key = url.split("://", 1)[-1].rstrip("/")
    with _states_lock:
        return _states.setdefault(key, _State())


class MemoryResultStore(ResultStore):
    """Results kept in this process, shared by every store with the same URL."""

    schemes: ClassVar[tuple[str, ...]] = ("memory", "cache+memory")
    pushes_notifications: ClassVar[bool] = True

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, options)
        self._s = _state_for(url)

    def _live(self, key: str, now: float) -> bytes | None:
        item = self._s.data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= now:
            del self._s.data[key]
            return None
        return value

    def get(self, key: str) -> bytes | None:
        with self._s.cond:
            return self._live(key, time.time())

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = time.time()
        with self._s.cond:
            return [self._live(k, now) for k in keys]

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self.set_many([(key, value)], ttl)

    def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        expires = None if ttl is None else time.time() + ttl
        s = self._s
        with s.cond:
            for key, value in items:
                s.data[key] = (value, expires)
                s.versions[key] = s.versions.get(key, 0) + 1
            s.cond.notify_all()

    def delete(self, keys: Sequence[str]) -> None:
        with self._s.cond:
            for key in keys:
                self._s.data.pop(key, None)

    def watch(self, keys: Sequence[str]) -> Watch:
        with self._s.cond:
            return _MemoryWatch(self._s, keys)

    def _chord(self, group_id: str) -> dict[str, Any]:
        return self._s.chords.setdefault(
            group_id, {"size": None, "extra": 0, "parts": {}, "claimed": False}
        )

    def chord_init(self, group_id: str, size: int, ttl: float | None) -> None:
        with self._s.cond:
            self._chord(group_id)["size"] = size

    def chord_grow(self, group_id: str, delta: int, ttl: float | None) -> None:
        with self._s.cond:
            self._chord(group_id)["extra"] += delta

    def chord_part(
        self, group_id: str, task_id: str, index: int, value: bytes, ttl: float | None
    ) -> list[bytes] | None:
        with self._s.cond:
            chord = self._chord(group_id)
            if chord["claimed"]:
                return None
            chord["parts"].setdefault((task_id, index), value)
            size = chord["size"]
            if size is None or len(chord["parts"]) < size + chord["extra"]:
                return None
            chord["claimed"] = True
            return [v for (_, _), v in sorted(chord["parts"].items(), key=lambda kv: kv[0][1])]

    def chord_release(self, group_id: str) -> None:
        with self._s.cond:
            chord = self._s.chords.get(group_id)
            if chord is not None:
                chord["parts"].clear()


def reset(url: str = "memory://") -> None:
    """Forget every result kept under *url* (tests use this between cases)."""
    key = url.split("://", 1)[-1].rstrip("/")
    with _states_lock:
        _states.pop(key, None)
