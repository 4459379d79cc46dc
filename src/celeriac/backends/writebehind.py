"""Write-behind for result stores: writes go out in batches on a thread.

A pool process wraps its store in :class:`WriteBehindStore` so running the next task does not wait
for the previous result's round trip; under load, the results that piled up meanwhile are written
in one batch. Chord parts are counted behind the writes the same way (``chord_part_then``).
Order is kept: every read, chord operation or delete first waits for the writes
queued before it, and :meth:`WriteBehindStore.report` hands a message (the pool process telling
the supervisor a task finished, which may ack it) to ``deliver`` only after the writes queued
before it landed; the reports of one batch are delivered together.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from celeriac.backends.base import ChordPartArgs, ResultStore, Watch

logger = logging.getLogger("celeriac.backends")

#: Most writes sent in one batch.
BATCH_LIMIT = 500

_Write = tuple[str, bytes, float | None]


class _Report:
    __slots__ = ("message",)

    def __init__(self, message: Any) -> None:
        self.message = message


class _ChordPart:
    __slots__ = ("args", "then")

    def __init__(self, args: ChordPartArgs, then: Callable[[list[bytes] | None], None]) -> None:
        self.args = args
        self.then = then


_Item = _Write | _Report | _ChordPart


class WriteBehindStore(ResultStore):
    """Wraps *inner*: ``set``/``set_many`` are queued and written by a background thread.

    Waiting through it polls (``pushes_notifications`` is False) though the inner store's
    watch still wakes it early.
    """

    def __init__(
        self,
        inner: ResultStore,
        deliver: Callable[[list[Any]], None] | None = None,
        idle: Callable[[], bool] | None = None,
    ) -> None:
        self.inner = inner
        self._deliver = deliver
        #: True when the caller has nothing else to do: a write then goes out on its thread, as
        #: the hand-off to the writer thread would only add to the result's latency.
        self._idle = idle
        self.url = inner.url
        self.options: Mapping[str, Any] = inner.options
        self._cond = threading.Condition()
        self._items: list[_Item] = []
        self._busy = False
        self._closed = False
        #: True: writes wait for :meth:`push` (or a full batch) instead of waking the writer
        #: thread each, which costs more than the write when results come in a flood.
        self.gather = False
        self._thread = threading.Thread(target=self._run, name="celeriac-results", daemon=True)
        self._thread.start()

    # -- queued ------------------------------------------------------------------------------------
    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        if self._idle is not None and self._idle():
            with self._cond:
                if not self._items and not self._busy:
                    self._check_open()
                    self._write([(key, value, ttl)])
                    return
        self._put((key, value, ttl))

    def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        with self._cond:
            self._check_open()
            self._items.extend((key, value, ttl) for key, value in items)
            self._cond.notify()

    def report(self, message: Any) -> None:
        """Hand *message* to ``deliver`` once every write queued before it landed: here and now
        when nothing is queued, else on the writer thread with the other reports of its batch."""
        assert self._deliver is not None, "report() needs a deliver function"
        with self._cond:
            if not self._items and not self._busy:
                # Under the lock: the writer thread cannot start a batch meanwhile.
                self._deliver([message])
                return
            self._check_open()
            self._items.append(_Report(message))
            self._cond.notify()

    def push(self) -> None:
        """Start writing what is queued (see ``gather``)."""
        with self._cond:
            if self._items:
                self._cond.notify()

    def take_writes(self) -> list[_Write]:
        """Every queued write, for the caller to send itself, when nothing but writes is queued
        and none is in flight (else nothing: :meth:`push` them). Ordering holds as the caller
        sends them before anything it queues next."""
        with self._cond:
            if self._busy or not all(isinstance(item, tuple) for item in self._items):
                return []
            writes, self._items = self._items, []
            return writes  # type: ignore[return-value]

    def put_back(self, writes: Sequence[_Write]) -> None:
        """Queue *writes* taken with :meth:`take_writes` again, ahead of the rest (not sent)."""
        if writes:
            with self._cond:
                self._items[:0] = writes
                self._cond.notify()

    def quiet(self) -> bool:
        """True when no write or report is queued or in flight."""
        return not self._items and not self._busy

    def flush(self) -> None:
        """Block until every queued write and callback is done."""
        if threading.current_thread() is self._thread:
            return  # deliver() reading the store: everything before it is written already
        with self._cond:
            if self._items:
                self._cond.notify()
            while self._items or self._busy:
                self._cond.wait()

    # -- passed through after a flush --------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        self.flush()
        return self.inner.get(key)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self.flush()
        return self.inner.get_many(keys)

    def delete(self, keys: Sequence[str]) -> None:
        self.flush()
        self.inner.delete(keys)

    def watch(self, keys: Sequence[str]) -> Watch:
        self.flush()
        return self.inner.watch(keys)

    def chord_init(self, group_id: str, size: int, ttl: float | None) -> None:
        self.flush()
        self.inner.chord_init(group_id, size, ttl)

    def chord_grow(self, group_id: str, delta: int, ttl: float | None) -> None:
        self.flush()
        self.inner.chord_grow(group_id, delta, ttl)

    def chord_part_then(
        self,
        group_id: str,
        task_id: str,
        index: int,
        value: bytes,
        ttl: float | None,
        then: Callable[[list[bytes] | None], None],
    ) -> None:
        """Count a chord part (as ``chord_part``) once the writes queued before it landed, and
        call ``then`` with what it returned: here and now when nothing is queued and the caller
        is idle, else on the writer thread. The task need not wait for the round trip."""
        args = (group_id, task_id, index, value, ttl)
        with self._cond:
            self._check_open()
            if not self._items and not self._busy and (self._idle is None or self._idle()):
                then(self.inner.chord_part(*args))
                return
            self._items.append(_ChordPart(args, then))
            self._cond.notify()

    def chord_part(self, *args: Any, **kwargs: Any) -> Any:
        # The counter must not count this task before its result is readable.
        self.flush()
        return self.inner.chord_part(*args, **kwargs)

    def chord_release(self, group_id: str) -> None:
        self.flush()
        self.inner.chord_release(group_id)

    def cleanup(self) -> int:
        self.flush()
        return self.inner.cleanup()

    def close(self) -> None:
        """Write what is queued, stop the thread, close the inner store."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        self.inner.close()

    # -- the writer thread -------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the result store is closed")

    def _put(self, item: _Item) -> None:
        with self._cond:
            self._check_open()
            self._items.append(item)
            if not self.gather or len(self._items) >= BATCH_LIMIT:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closed:
                    self._cond.wait()
                if not self._items:
                    return
                batch, self._items = self._items, []
                self._busy = True
            try:
                self._process(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _process(self, batch: list[_Item]) -> None:
        # Every write of the batch first, then its reports in order: each report still follows
        # the writes queued before it, and the batch costs one round trip per chunk.
        writes = [item for item in batch if isinstance(item, tuple)]
        for start in range(0, len(writes), BATCH_LIMIT):
            self._write(writes[start : start + BATCH_LIMIT])
        # Chord parts next, counted together: a report (which may ack the task) must follow
        # its part's count.
        parts = [item for item in batch if isinstance(item, _ChordPart)]
        for start in range(0, len(parts), BATCH_LIMIT):
            self._count(parts[start : start + BATCH_LIMIT])
        reports = [item.message for item in batch if isinstance(item, _Report)]
        if reports and self._deliver is not None:
            try:
                self._deliver(reports)
            except Exception:
                logger.exception("delivering %d report(s) after result writes failed", len(reports))

    def _count(self, parts: list[_ChordPart]) -> None:
        try:
            outcomes = self.inner.chord_parts([part.args for part in parts])
        except Exception:
            first = parts[0].args
            logger.exception(
                "counting %d chord part(s) failed (chord %s part %s first)", len(parts), *first[:2]
            )
            return
        for part, outcome in zip(parts, outcomes, strict=True):
            try:
                part.then(outcome)
            except Exception:
                logger.exception("after counting chord %s part %s", *part.args[:2])

    def _write(self, writes: list[_Write]) -> None:
        if not writes:
            return
        try:
            if len(writes) == 1:
                key, value, ttl = writes[0]
                self.inner.set(key, value, ttl)
                return
            by_ttl: dict[float | None, list[tuple[str, bytes]]] = {}
            for key, value, ttl in writes:
                by_ttl.setdefault(ttl, []).append((key, value))
            for ttl, items in by_ttl.items():
                self.inner.set_many(items, ttl)
        except Exception as exc:
            # The store already retried for its budget: say which results are lost.
            keys = ", ".join(key for key, _, _ in writes[:5])
            more = f" and {len(writes) - 5} more" if len(writes) > 5 else ""
            logger.error("storing %d result(s) failed (%s%s): %r", len(writes), keys, more, exc)
