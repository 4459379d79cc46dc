"""Eager mode as Celery's testing docs describe it."""

from __future__ import annotations

from typing import Any

import pytest

from celeriac import Celery, Task, states
from celeriac.exceptions import MaxRetriesExceededError
from celeriac.result import EagerResult


def test_always_eager_runs_inline(app: Celery) -> None:
    app.conf.task_always_eager = True

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(2, 2)
    assert isinstance(result, EagerResult)
    assert result.successful()
    assert result.get() == 4
    assert result.state == states.SUCCESS


def test_eager_failure_without_propagation(app: Celery) -> None:
    app.conf.task_always_eager = True

    @app.task
    def boom() -> None:
        raise ValueError("kaboom")

    result = boom.delay()
    assert result.failed()
    assert isinstance(result.result, ValueError)
    assert "kaboom" in (result.traceback or "")
    with pytest.raises(ValueError, match="kaboom"):
        result.get()


def test_eager_propagates(app: Celery) -> None:
    app.conf.update(task_always_eager=True, task_eager_propagates=True)

    @app.task
    def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        boom.delay()


def test_eager_retry_until_success(app: Celery) -> None:
    app.conf.task_always_eager = True
    calls: list[int] = []

    @app.task(bind=True, max_retries=5)
    def flaky(self: Task[Any, Any]) -> str:
        calls.append(self.request.retries)
        if len(calls) < 3:
            raise self.retry(countdown=10)
        return "ok"

    assert flaky.delay().get() == "ok"
    assert calls == [0, 1, 2]


def test_eager_max_retries_exceeded(app: Celery) -> None:
    app.conf.task_always_eager = True

    @app.task(bind=True, max_retries=2)
    def always(self: Task[Any, Any]) -> None:
        raise self.retry(countdown=1)

    result = always.delay()
    assert result.failed()
    assert isinstance(result.result, MaxRetriesExceededError)


def test_autoretry_for_with_backoff(app: Celery) -> None:
    app.conf.task_always_eager = True
    attempts: list[int] = []

    @app.task(
        bind=True,
        autoretry_for=(ConnectionError,),
        retry_backoff=True,
        retry_kwargs={"max_retries": 3},
    )
    def fetch(self: Task[Any, Any]) -> int:
        attempts.append(self.request.retries)
        raise ConnectionError("down")

    result = fetch.delay()
    assert attempts == [0, 1, 2, 3]
    assert isinstance(result.result, ConnectionError)


def test_dont_autoretry_for(app: Celery) -> None:
    app.conf.task_always_eager = True
    attempts: list[int] = []

    @app.task(autoretry_for=(Exception,), dont_autoretry_for=(ValueError,))
    def fetch() -> None:
        attempts.append(1)
        raise ValueError("bad input")

    assert fetch.delay().failed()
    assert attempts == [1]


def test_hooks_called_once_in_order(app: Celery) -> None:
    app.conf.task_always_eager = True
    seen: list[str] = []

    class Hooked(Task[Any, Any]):
        def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
            seen.append("before_start")

        def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
            seen.append(f"on_success:{retval}")

        def on_failure(
            self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
        ) -> None:
            seen.append(f"on_failure:{type(exc).__name__}:{'Traceback' in einfo.traceback}")

        def after_return(
            self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any
        ) -> None:
            seen.append(f"after_return:{status}")

    @app.task(base=Hooked)
    def ok() -> int:
        return 1

    @app.task(base=Hooked)
    def bad() -> None:
        raise RuntimeError("x")

    ok.delay()
    assert seen == ["before_start", "on_success:1", "after_return:SUCCESS"]
    seen.clear()
    bad.delay()
    assert seen == ["before_start", "on_failure:RuntimeError:True", "after_return:FAILURE"]


def test_eager_link_callback(app: Celery) -> None:
    app.conf.task_always_eager = True
    got: list[int] = []

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def record(value: int) -> None:
        got.append(value)

    add.apply_async((2, 3), link=record.s())
    assert got == [5]


def test_update_state_custom_state(app: Celery) -> None:
    @app.task(bind=True)
    def progress(self: Task[Any, Any]) -> None:
        self.update_state(state="PROGRESS", meta={"done": 3, "total": 10})

    progress.apply(task_id="p1")
    result = app.AsyncResult("p1")
    assert result.state == "PROGRESS"
    assert result.info == {"done": 3, "total": 10}
