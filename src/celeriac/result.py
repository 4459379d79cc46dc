"""Task results: :class:`AsyncResult`, :class:`EagerResult`, :class:`ResultSet` and
:class:`GroupResult`."""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from celeriac import states
from celeriac.exceptions import ImproperlyConfigured, TaskRevokedError

if TYPE_CHECKING:
    from celeriac.app.backend import Meta, ResultBackend
    from celeriac.app.base import Celery

R = TypeVar("R")

#: True while a worker runs a task in this context: blocking on another result there can deadlock.
in_worker_task: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "celeriac_in_worker_task", default=False
)


def assert_will_not_block() -> None:
    """Refuse ``get()`` inside a task, as Celery does (``disable_sync_subtasks``)."""
    if in_worker_task.get():
        raise RuntimeError(
            "Never call result.get() within a task! "
            "See https://docs.celeryq.dev/en/latest/userguide/tasks.html#avoid-launching-synchronous-subtasks"
        )


class AsyncResult(Generic[R]):
    """The result of a task sent to workers, read from the result store."""

    def __init__(
        self,
        id: str,
        backend: ResultBackend | None = None,
        task_name: str | None = None,
        app: Celery | None = None,
        parent: AsyncResult[Any] | None = None,
    ) -> None:
        if id is None:
            raise ValueError(f"AsyncResult needs a task id, got {id!r}")
        if app is None:
            from celeriac.app.base import current_app

            app = current_app()
        self.app = app
        self.id = str(id)
        self._backend = backend
        self.task_name = task_name
        self.parent = parent
        self._cache: Meta | None = None

    # -- plumbing --------------------------------------------------------------------------------
    @property
    def backend(self) -> ResultBackend:
        if self._backend is None:
            self._backend = self.app.backend
        if self._backend is None:
            raise ImproperlyConfigured(
                "No result backend is configured: set result_backend "
                "(e.g. 'redis://localhost/1' or "
                "'sqlite:///celeriac-results.db') to read task results."
            )
        return self._backend

    @property
    def task_id(self) -> str:
        return self.id

    def _get_meta(self) -> Meta:
        if self._cache is not None:
            return self._cache
        meta = self.backend.get_task_meta(self.id)
        if meta["status"] in states.READY_STATES:
            self._cache = meta
        return meta

    def _set_cache(self, meta: Meta) -> Meta:
        if meta["status"] in states.READY_STATES:
            self._cache = meta
        return meta

    # -- state -----------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        return str(self._get_meta()["status"])

    status = state

    @property
    def result(self) -> Any:
        return self._get_meta()["result"]

    info = result

    @property
    def traceback(self) -> str | None:
        tb: str | None = self._get_meta().get("traceback")
        return tb

    @property
    def date_done(self) -> dt.datetime | None:
        value = self._get_meta().get("date_done")
        if isinstance(value, str):
            return dt.datetime.fromisoformat(value)
        return value if isinstance(value, dt.datetime) else None

    @property
    def children(self) -> list[AsyncResult[Any]]:
        return [result_from_tuple(c, self.app) for c in self._get_meta().get("children") or []]

    def _extended(self, field: str) -> Any:
        return self._get_meta().get(field)

    name = property(lambda self: self._extended("name"))
    args = property(lambda self: self._extended("args"))
    kwargs = property(lambda self: self._extended("kwargs"))
    worker = property(lambda self: self._extended("worker"))
    retries = property(lambda self: self._extended("retries"))
    queue = property(lambda self: self._extended("queue"))

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def exists(self) -> bool:
        """True when the result store knows this id (PENDING alone cannot tell)."""
        return self.backend.exists(self.id)

    # -- waiting ---------------------------------------------------------------------------------
    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        no_ack: bool = True,
        follow_parents: bool = True,
        callback: Callable[[str, Any], Any] | None = None,
        on_message: Callable[[Meta], Any] | None = None,
        on_interval: Callable[[], Any] | None = None,
        disable_sync_subtasks: bool = True,
        EXCEPTION_STATES: frozenset[str] = states.EXCEPTION_STATES,
        PROPAGATE_STATES: frozenset[str] = states.PROPAGATE_STATES,
    ) -> R:
        """Wait for the task to finish and return its value (re-raising its exception)."""
        if disable_sync_subtasks:
            assert_will_not_block()
        if follow_parents and propagate and self.parent is not None:
            self.parent.maybe_throw()
        meta = self._cache or self._set_cache(self.backend.wait_for(self.id, timeout, interval))
        if on_message is not None:
            on_message(meta)
        if callback is not None:
            callback(self.id, meta["result"])
        return self._value_of(meta, propagate, PROPAGATE_STATES)

    wait = get

    async def aget(
        self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5
    ) -> R:
        """``get()`` for asyncio programs: waits without blocking the event loop."""
        meta = self._cache
        if meta is None:
            meta = await asyncio.to_thread(self.backend.wait_for, self.id, timeout, interval)
            self._set_cache(meta)
        return self._value_of(meta, propagate, states.PROPAGATE_STATES)

    def _value_of(self, meta: Meta, propagate: bool, propagate_states: frozenset[str]) -> R:
        value = meta["result"]
        if meta["status"] in propagate_states and propagate:
            raise self._as_exception(value, meta)
        return value  # type: ignore[no-any-return]

    @staticmethod
    def _as_exception(value: Any, meta: Meta) -> BaseException:
        if isinstance(value, BaseException):
            return value
        if meta["status"] == states.REVOKED:
            return TaskRevokedError(value)
        return Exception(value)

    def maybe_throw(self, propagate: bool = True) -> None:
        """Raise the task's exception if it failed (without waiting)."""
        meta = self._get_meta()
        if propagate and meta["status"] in states.PROPAGATE_STATES:
            raise self._as_exception(meta["result"], meta)

    throw = maybe_throw

    def forget(self) -> None:
        """Remove the result from the store."""
        self._cache = None
        self.backend.forget(self.id)

    def revoke(
        self,
        connection: Any = None,
        terminate: bool = False,
        signal: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Ask workers not to run (or, with *terminate*, to stop) this task."""
        self.app.control.revoke(
            self.id, terminate=terminate, signal=signal, reply=wait, timeout=timeout
        )

    def as_tuple(self) -> tuple[tuple[str, Any], None]:
        parent = self.parent.as_tuple() if self.parent is not None else None
        return (self.id, parent), None

    def as_list(self) -> list[str]:
        return [self.id]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"

    def __str__(self) -> str:
        return self.id

    def __reduce__(self) -> Any:
        return _rebuild_async_result, (self.id, self.task_name, self.parent)


def _rebuild_async_result(
    task_id: str, task_name: str | None, parent: AsyncResult[Any] | None
) -> AsyncResult[Any]:
    return AsyncResult(task_id, task_name=task_name, parent=parent)


class EagerResult(AsyncResult[R]):
    """The result of a task run in this process (``apply()`` or eager mode)."""

    def __init__(
        self,
        id: str,
        ret_value: Any,
        state: str,
        traceback: str | None = None,
        name: str | None = None,
        app: Celery | None = None,
    ) -> None:
        super().__init__(id, task_name=name, app=app)
        self._result = ret_value
        self._state = state
        self._traceback = traceback
        self._cache = {
            "status": state,
            "result": ret_value,
            "traceback": traceback,
            "children": [],
            "date_done": None,
            "task_id": id,
            "name": name,
        }

    def _get_meta(self) -> Meta:
        assert self._cache is not None
        return self._cache

    def get(  # type: ignore[override]
        self,
        timeout: float | None = None,
        propagate: bool = True,
        disable_sync_subtasks: bool = True,
        **kwargs: Any,
    ) -> R:
        if disable_sync_subtasks:
            assert_will_not_block()
        return self._value_of(self._get_meta(), propagate, states.PROPAGATE_STATES)

    wait = get  # type: ignore[assignment]

    async def aget(
        self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5
    ) -> R:
        return self._value_of(self._get_meta(), propagate, states.PROPAGATE_STATES)

    def forget(self) -> None:
        pass

    def revoke(self, *args: Any, **kwargs: Any) -> None:
        self._state = states.REVOKED
        self._cache = {**self._get_meta(), "status": states.REVOKED}

    def __repr__(self) -> str:
        return f"<EagerResult: {self.id}>"


class ResultSet:
    """Several results waited on together."""

    def __init__(
        self, results: Iterable[AsyncResult[Any]], app: Celery | None = None, **kwargs: Any
    ) -> None:
        self.results: list[AsyncResult[Any]] = list(results)
        if app is None:
            from celeriac.app.base import current_app

            app = current_app()
        self.app = app

    def add(self, result: AsyncResult[Any]) -> None:
        if result not in self.results:
            self.results.append(result)

    def _metas(self) -> list[Meta]:
        pending = [r for r in self.results if r._cache is None]
        fresh: dict[str, Meta] = {}
        if pending:
            metas = pending[0].backend.get_many_meta([r.id for r in pending])
            for result, meta in zip(pending, metas, strict=True):
                fresh[result.id] = result._set_cache(meta)
        return [r._cache or fresh[r.id] for r in self.results]

    def ready(self) -> bool:
        return all(m["status"] in states.READY_STATES for m in self._metas())

    def successful(self) -> bool:
        return all(m["status"] == states.SUCCESS for m in self._metas())

    def failed(self) -> bool:
        return any(m["status"] == states.FAILURE for m in self._metas())

    def waiting(self) -> bool:
        return not self.ready()

    def completed_count(self) -> int:
        return sum(1 for m in self._metas() if m["status"] == states.SUCCESS)

    def forget(self) -> None:
        for result in self.results:
            result.forget()

    def maybe_throw(self, propagate: bool = True) -> None:
        """Raise the first failed member's exception (without waiting)."""
        for result, meta in zip(self.results, self._metas(), strict=True):
            if propagate and meta["status"] in states.PROPAGATE_STATES:
                raise result._as_exception(meta["result"], meta)

    maybe_reraise = maybe_throw

    def revoke(self, terminate: bool = False, signal: str | None = None, **kwargs: Any) -> None:
        self.app.control.revoke([r.id for r in self.results], terminate=terminate, signal=signal)

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        callback: Callable[[str, Any], Any] | None = None,
        disable_sync_subtasks: bool = True,
        **kwargs: Any,
    ) -> list[Any]:
        """Wait for every result; values in order."""
        return self.join(
            timeout, propagate, interval, callback, disable_sync_subtasks=disable_sync_subtasks
        )

    def join(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        callback: Callable[[str, Any], Any] | None = None,
        no_ack: bool = True,
        on_message: Any = None,
        disable_sync_subtasks: bool = True,
        on_interval: Any = None,
    ) -> list[Any]:
        if disable_sync_subtasks:
            assert_will_not_block()
        pending = [r for r in self.results if r._cache is None]
        if pending:
            metas = pending[0].backend.wait_for_many([r.id for r in pending], timeout, interval)
            for result, meta in zip(pending, metas, strict=True):
                result._set_cache(meta)
        values = []
        for result in self.results:
            meta = result._get_meta()
            if callback is not None:
                callback(result.id, meta["result"])
            values.append(result._value_of(meta, propagate, states.PROPAGATE_STATES))
        return values

    join_native = join

    async def aget(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        return await asyncio.to_thread(self.get, timeout, propagate, 0.5, None, False)

    def __iter__(self) -> Iterator[AsyncResult[Any]]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> AsyncResult[Any]:
        return self.results[index]

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(r.id for r in self.results)}]>"


class GroupResult(ResultSet):
    """The results of a group, with the group's id; ``save()``/``restore()`` keep it by id."""

    def __init__(
        self,
        id: str | None = None,
        results: Iterable[AsyncResult[Any]] = (),
        parent: AsyncResult[Any] | None = None,
        app: Celery | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(results, app=app)
        self.id = id
        self.parent = parent

    def save(self, backend: ResultBackend | None = None) -> GroupResult:
        # Celery stores the whole tuple: [[gid, parent], [member tuples]].
        (backend or self.app.backend).save_group(str(self.id), self.as_tuple())  # type: ignore[union-attr]
        return self

    def delete(self, backend: ResultBackend | None = None) -> None:
        (backend or self.app.backend).delete_group(str(self.id))  # type: ignore[union-attr]

    @classmethod
    def restore(
        cls, id: str, backend: ResultBackend | None = None, app: Celery | None = None
    ) -> GroupResult | None:
        if app is None:
            from celeriac.app.base import current_app

            app = current_app()
        stored = (backend or app.backend).restore_group(id)  # type: ignore[union-attr]
        if stored is None:
            return None
        members = stored[1] if _is_group_tuple(stored) else stored
        return cls(id, [result_from_tuple(t, app) for t in members], app=app)

    def as_tuple(self) -> tuple[tuple[str | None, Any], list[Any]]:  # type: ignore[override]
        parent = self.parent.as_tuple() if self.parent is not None else None
        return (self.id, parent), [r.as_tuple() for r in self.results]

    @property
    def children(self) -> list[AsyncResult[Any]]:
        return self.results

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and other.results == self.results
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"


def _is_group_tuple(value: Any) -> bool:
    """True for Celery's stored group form ``[[gid, parent], [members]]``."""
    return (
        isinstance(value, list | tuple)
        and len(value) == 2
        and isinstance(value[0], list | tuple)
        and len(value[0]) == 2
        and isinstance(value[0][0], str)
        and isinstance(value[1], list | tuple)
    )


def result_from_tuple(value: Any, app: Celery | None = None) -> Any:
    """Rebuild an AsyncResult or GroupResult from its tuple form (as stored in ``children``)."""
    if isinstance(value, AsyncResult | ResultSet):
        return value
    (task_id, parent), nodes = value
    if nodes is not None and isinstance(nodes, Sequence):
        return GroupResult(
            task_id,
            [result_from_tuple(n, app) for n in nodes],
            parent=result_from_tuple(parent, app) if parent else None,
            app=app,
        )
    return AsyncResult(task_id, app=app, parent=result_from_tuple(parent, app) if parent else None)
