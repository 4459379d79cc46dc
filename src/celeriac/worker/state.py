"""What a worker remembers while it runs: revoked ids, counters, the requests it holds."""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator

REVOKES_MAX = 50000
REVOKE_EXPIRES = 10800.0


class LimitedSet:
    """A set whose members expire after *expires* seconds and which keeps at most *maxlen*."""

    def __init__(self, maxlen: int = REVOKES_MAX, expires: float = REVOKE_EXPIRES) -> None:
        self.maxlen = maxlen
        self.expires = expires
        self._data: OrderedDict[str, float] = OrderedDict()

    def add(self, item: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self._data.pop(item, None)
        self._data[item] = now
        self.purge(now)

    def update(self, items: Iterable[str]) -> None:
        for item in items:
            self.add(item)

    def discard(self, item: str) -> None:
        self._data.pop(item, None)

    def purge(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        while self._data:
            _, added = next(iter(self._data.items()))
            if len(self._data) > self.maxlen or (self.expires and now - added > self.expires):
                self._data.popitem(last=False)
            else:
                break

    def __contains__(self, item: object) -> bool:
        added = self._data.get(item)  # type: ignore[call-overload]
        if added is None:
            return False
        if self.expires and time.time() - added > self.expires:
            self._data.pop(item, None)  # type: ignore[call-overload]
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)

    def as_dict(self) -> dict[str, float]:
        return dict(self._data)


class WorkerState:
    """Counters and revoked ids of one worker."""

    def __init__(self) -> None:
        self.revoked = LimitedSet()
        self.processed: Counter[str] = Counter()
        self.total_count = 0
        self.started = time.time()

    def task_done(self, name: str) -> None:
        self.processed[name] += 1
        self.total_count += 1
