"""Task results on top of a :class:`~celeriac.backends.base.ResultStore`, in Celery's format.

Keys are ``celery-task-meta-<id>`` and ``celery-taskset-meta-<group id>``; values are the JSON
meta Celery writes (``status``, ``result``, ``traceback``, ``children``, ``date_done``, ``task_id``,
and with ``result_extended`` the task's name, args, kwargs, worker, retries and queue), so Celery
clients read celeriac's results and the other way round.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from celeriac import states
from celeriac.backends.base import ResultStore
from celeriac.exceptions import TimeoutError as CeleriacTimeoutError
from celeriac.protocol import serialization
from celeriac.protocol.errors import exception_to_meta, meta_to_exception

TASK_KEY_PREFIX = "celery-task-meta-"
GROUP_KEY_PREFIX = "celery-taskset-meta-"

Meta = dict[str, Any]

#: Above this many unfinished results, ``wait_for_many`` lets writes pile up for
#: ``BIG_WAIT_COALESCE`` seconds after each wake-up before reading again.
BIG_WAIT = 64
BIG_WAIT_COALESCE = 0.02


def task_key(task_id: str) -> str:
    return TASK_KEY_PREFIX + task_id


def group_key(group_id: str) -> str:
    return GROUP_KEY_PREFIX + group_id


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def pending_meta(task_id: str) -> Meta:
    """What an unknown id reads as: PENDING, as in Celery."""
    return {
        "status": states.PENDING,
        "result": None,
        "traceback": None,
        "children": [],
        "date_done": None,
        "task_id": task_id,
    }


class ResultBackend:
    """Stores and reads task results through a result store. One per app per process."""

    def __init__(
        self,
        store: ResultStore,
        *,
        serializer: str = "json",
        accept: Collection[str] | None = None,
        expires: float | None = 86400.0,
        extended: bool = False,
    ) -> None:
        self.store = store
        self.serializer = serializer
        self.content_type, self.content_encoding, _ = serialization.dumps(None, serializer)
        self.accept = accept
        self.expires = expires
        self.extended = extended

    # -- encoding --------------------------------------------------------------------------------
    def encode(self, meta: Mapping[str, Any]) -> bytes:
        return serialization.dumps(meta, self.serializer)[2]

    def decode(self, data: bytes) -> Any:
        return serialization.loads(data, self.content_type, self.content_encoding, self.accept)

    def make_meta(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        children: list[Any] | None = None,
    ) -> Meta:
        """The meta dict Celery stores for *state*; exceptions are encoded as Celery does."""
        if state in states.EXCEPTION_STATES and isinstance(result, BaseException):
            result = exception_to_meta(result)
        meta: Meta = {
            "status": state,
            "result": result,
            "traceback": traceback,
            "children": children or [],
            "date_done": now_iso() if state in states.READY_STATES else None,
        }
        if request is not None:
            group_id = getattr(request, "group", None)
            parent_id = getattr(request, "parent_id", None)
            if group_id:
                meta["group_id"] = group_id
            if parent_id:
                meta["parent_id"] = parent_id
            if self.extended:
                delivery_info = getattr(request, "delivery_info", None) or {}
                meta.update(
                    name=getattr(request, "task", None),
                    args=list(getattr(request, "args", None) or ()),
                    kwargs=dict(getattr(request, "kwargs", None) or {}),
                    worker=getattr(request, "hostname", None),
                    retries=getattr(request, "retries", 0),
                    queue=delivery_info.get("routing_key"),
                )
        meta["task_id"] = task_id
        return meta

    # -- writing ---------------------------------------------------------------------------------
    def store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        children: list[Any] | None = None,
    ) -> Meta:
        """Write a task's state and result (and notify waiters)."""
        meta = self.make_meta(task_id, result, state, traceback, request, children)
        send_reply = getattr(self.store, "send_reply", None)
        if send_reply is not None:
            # Stores that route results to the sending client (rpc://) need its reply_to.
            send_reply(
                getattr(request, "reply_to", None),
                task_key(task_id),
                self.encode(meta),
                self.expires,
            )
        else:
            self.store.set(task_key(task_id), self.encode(meta), self.expires)
        return meta

    def on_task_call(self, reply_to: str | None, task_id: str) -> None:
        """Called before a task message is published; rpc:// declares the reply queue here."""
        hook = getattr(self.store, "on_task_call", None)
        if hook is not None and reply_to:
            hook(reply_to, task_id)

    def store_many(self, metas: Sequence[Meta]) -> None:
        """Write several metas in one round trip (the worker batches result writes)."""
        self.store.set_many([(task_key(m["task_id"]), self.encode(m)) for m in metas], self.expires)

    def mark_as_started(self, task_id: str, request: Any = None, **meta: Any) -> Meta:
        return self.store_result(task_id, meta, states.STARTED, request=request)

    def mark_as_done(self, task_id: str, result: Any, request: Any = None) -> Meta:
        return self.store_result(task_id, result, states.SUCCESS, request=request)

    def mark_as_failure(
        self, task_id: str, exc: BaseException, traceback: str | None = None, request: Any = None
    ) -> Meta:
        return self.store_result(task_id, exc, states.FAILURE, traceback, request)

    def mark_as_retry(
        self, task_id: str, exc: BaseException, traceback: str | None = None, request: Any = None
    ) -> Meta:
        return self.store_result(task_id, exc, states.RETRY, traceback, request)

    def mark_as_revoked(self, task_id: str, reason: str = "revoked", request: Any = None) -> Meta:
        from celeriac.exceptions import TaskRevokedError

        return self.store_result(task_id, TaskRevokedError(reason), states.REVOKED, None, request)

    def forget(self, task_id: str) -> None:
        self.store.delete([task_key(task_id)])

    # -- reading ---------------------------------------------------------------------------------
    def _meta_from(self, task_id: str, raw: bytes | None) -> Meta:
        if raw is None:
            return pending_meta(task_id)
        meta = self.decode(raw)
        if not isinstance(meta, dict):
            return {**pending_meta(task_id), "result": meta}
        meta.setdefault("task_id", task_id)
        meta.setdefault("children", [])
        meta.setdefault("traceback", None)
        meta.setdefault("date_done", None)
        if meta.get("status") in states.EXCEPTION_STATES:
            meta["result"] = self.exception_from(meta.get("result"))
        return meta

    @staticmethod
    def exception_from(value: Any) -> Any:
        if isinstance(value, Mapping) and "exc_type" in value:
            return meta_to_exception(value)
        return value

    def get_task_meta(self, task_id: str) -> Meta:
        """The task's meta; PENDING when nothing is stored."""
        return self._meta_from(task_id, self.store.get(task_key(task_id)))

    def get_many_meta(self, task_ids: Sequence[str]) -> list[Meta]:
        raws = self.store.get_many([task_key(t) for t in task_ids])
        return [self._meta_from(t, raw) for t, raw in zip(task_ids, raws, strict=True)]

    def _ready_metas(
        self,
        task_ids: Sequence[str],
        pending: dict[str, list[int]],
        pushed: dict[str, bytes] | None,
    ) -> list[tuple[str, Meta]]:
        """(key, meta) of the pending results now ready: from the values *pushed* with their
        notifications, or, with None, read from the store."""
        out: list[tuple[str, Meta]] = []
        if pushed is None:
            keys = list(pending)
            ids = [task_ids[pending[key][0]] for key in keys]
            for key, meta in zip(keys, self.get_many_meta(ids), strict=True):
                if meta["status"] in states.READY_STATES:
                    out.append((key, meta))
            return out
        for key, raw in pushed.items():
            where = pending.get(key)
            ready = None if where is None else self._ready_meta(task_ids[where[0]], raw)
            if ready is not None:
                out.append((key, ready))
        return out

    def _ready_meta(self, task_id: str, raw: bytes | None) -> Meta | None:
        """The meta in a pushed value when it is a ready one, else None."""
        if raw is None:
            return None
        try:
            meta = self._meta_from(task_id, raw)
        except Exception:
            return None
        return meta if meta["status"] in states.READY_STATES else None

    def exists(self, task_id: str) -> bool:
        """True when anything is stored for *task_id* (PENDING is also "unknown id")."""
        return self.store.get(task_key(task_id)) is not None

    def wait_for(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> Meta:
        """Block until the task is ready and return its meta; TimeoutError after *timeout*."""
        return self.wait_for_many([task_id], timeout, interval)[0]

    def wait_for_many(
        self, task_ids: Sequence[str], timeout: float | None = None, interval: float = 0.5
    ) -> list[Meta]:
        """Block until every task in *task_ids* is ready.

        Every result is read once after the watch starts; after that, a wake-up that brought the
        written values (Redis: a result's PUBLISH carries it) costs only those values, else the
        tasks not ready yet are read again. For big sets wake-ups are spaced a little so that a
        stream of single writes costs linear, not quadratic, work.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        found: list[Meta | None] = [None] * len(task_ids)
        pending: dict[str, list[int]] = {}  # key -> where it is in task_ids (ids may repeat)
        for i, task_id in enumerate(task_ids):
            pending.setdefault(task_key(task_id), []).append(i)
        with self.store.watch(list(pending)) as watch:
            pushed: dict[str, bytes] | None = None  # None: read every pending result
            while True:
                for key, meta in self._ready_metas(task_ids, pending, pushed):
                    for i in pending.pop(key):
                        found[i] = meta
                if not pending:
                    return [m for m in found if m is not None]
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise CeleriacTimeoutError("The operation timed out.")
                wait = (
                    remaining
                    if self.store.pushes_notifications
                    else (interval if remaining is None else min(interval, remaining))
                )
                if watch.wait(wait) and len(pending) > BIG_WAIT:
                    time.sleep(BIG_WAIT_COALESCE)
                pushed = watch.take_values()

    # -- groups ----------------------------------------------------------------------------------
    def save_group(self, group_id: str, result_tuple: Any) -> None:
        self.store.set(group_key(group_id), self.encode({"result": result_tuple}), self.expires)

    def restore_group(self, group_id: str) -> Any:
        raw = self.store.get(group_key(group_id))
        if raw is None:
            return None
        return self.decode(raw).get("result")

    def delete_group(self, group_id: str) -> None:
        self.store.delete([group_key(group_id)])

    def cleanup(self) -> int:
        return self.store.cleanup()

    def close(self) -> None:
        self.store.close()
