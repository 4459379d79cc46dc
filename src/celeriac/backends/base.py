"""The result store contract every backend implements.

A result store is a key/value store of bytes with expiry and change notification, plus the atomic
chord counter. It knows nothing of tasks: the API layer (``celeriac.app.backend``) encodes task
meta with Celery's key names (``celery-task-meta-<id>``) and JSON, so Celery and celeriac processes
read each other's results. Methods are synchronous and thread-safe; the asyncio client calls them
from threads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar

#: A chord part's arguments to :meth:`ResultStore.chord_part`: (group id, task id, header index,
#: value, ttl).
ChordPartArgs = tuple[str, str, int, bytes, float | None]


class Watch(ABC):
    """Notification of writes to a set of keys, registered before the caller reads them.

    The order subscribe → read → wait means a write between the read and the wait is never missed.
    """

    @abstractmethod
    def wait(self, timeout: float | None) -> bool:
        """Block until one of the keys was written since the watch began or the last ``wait``
        returned True; False on timeout."""

    @abstractmethod
    def close(self) -> None:
        """Stop watching."""

    def take_values(self) -> dict[str, bytes] | None:
        """The values written to watched keys since the last call, each taken once (key →
        value), when every write came with its value: then a key not listed was not written.
        None where notifications carry no values or some may have been missed (the caller
        reads the keys again)."""
        return None

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ResultStore(ABC):
    """Bytes by key, with TTLs, notification and chord counting. See the module docstring."""

    schemes: ClassVar[tuple[str, ...]] = ()
    #: True when waiting is by push notification (Redis pub/sub) rather than polling.
    pushes_notifications: ClassVar[bool] = False

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.url = url
        self.options: Mapping[str, Any] = dict(options or {})

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The value at *key*, or None if missing or expired."""

    @abstractmethod
    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values for *keys*, in order."""

    @abstractmethod
    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Write *value* (expiring after *ttl* seconds; None = never) and notify watchers."""

    @abstractmethod
    def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        """Write several values at once (one round trip where possible) and notify watchers."""

    @abstractmethod
    def delete(self, keys: Sequence[str]) -> None:
        """Remove *keys*."""

    @abstractmethod
    def watch(self, keys: Sequence[str]) -> Watch:
        """Start watching *keys* for writes. Read after this, then ``wait``."""

    # -- chords ------------------------------------------------------------------------------------
    @abstractmethod
    def chord_init(self, group_id: str, size: int, ttl: float | None) -> None:
        """Record that chord *group_id* waits for *size* header results."""

    @abstractmethod
    def chord_grow(self, group_id: str, delta: int, ttl: float | None) -> None:
        """Add *delta* to the chord's expected size (tasks added to a running chord)."""

    @abstractmethod
    def chord_part(
        self, group_id: str, task_id: str, index: int, value: bytes, ttl: float | None
    ) -> list[bytes] | None:
        """Record one header result, atomically; a redelivered (task_id, index) counts once.

        Returns every part's value ordered by index to exactly one caller: the one whose part
        completed the count (it then publishes the body and calls ``chord_release``). Others
        get None.
        """

    def chord_parts(self, parts: Sequence[ChordPartArgs]) -> list[list[bytes] | None]:
        """:meth:`chord_part` for each of *parts* (its arguments), in order; what each returned.

        A store may send them in one round trip."""
        return [self.chord_part(*part) for part in parts]

    @abstractmethod
    def chord_release(self, group_id: str) -> None:
        """Drop the chord's counting state after its body was sent."""

    # -- housekeeping ------------------------------------------------------------------------------
    def cleanup(self) -> int:
        """Remove expired entries where the store has no native expiry; return how many."""
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
