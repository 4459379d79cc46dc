"""Apps and tasks for the canvas tests: eager, in-memory broker+store, SQLite broker+store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery, Task
from celeriac.app.base import current_app, set_current
from celeriac.contrib.testing import start_worker

#: Errback calls seen in this process: (errback name, first argument).
ERRBACK_CALLS: list[tuple[str, Any]] = []


@dataclass
class Tasks:
    """The tasks every scenario uses, registered on one app."""

    app: Celery
    add: Any
    mul: Any
    tsum: Any
    boom: Any
    identity: Any
    record_error: Any
    on_error_request: Any
    replace_with_chain: Any
    replace_with_group: Any
    grows_chord: Any


def define_tasks(app: Celery) -> Tasks:
    @app.task(name="canvas.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="canvas.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    @app.task(name="canvas.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    @app.task(name="canvas.boom")
    def boom(*args: Any) -> None:
        raise ValueError("kaboom")

    @app.task(name="canvas.identity")
    def identity(value: Any) -> Any:
        return value

    @app.task(name="canvas.record_error")
    def record_error(task_id: str) -> str:
        ERRBACK_CALLS.append(("record_error", task_id))
        return task_id

    @app.task(name="canvas.on_error_request")
    def on_error_request(request: Any, exc: BaseException, traceback: Any) -> None:
        ERRBACK_CALLS.append(("on_error_request", (request.id, repr(exc))))

    @app.task(name="canvas.replace_with_chain", bind=True)
    def replace_with_chain(self: Task[Any, Any], x: int) -> Any:
        return self.replace(add.s(x, 1) | mul.s(10))

    @app.task(name="canvas.replace_with_group", bind=True)
    def replace_with_group(self: Task[Any, Any], x: int) -> Any:
        from celeriac import group

        return self.replace(group(add.s(x, i) for i in range(3)))

    @app.task(name="canvas.grows_chord", bind=True)
    def grows_chord(self: Task[Any, Any], x: int) -> int:
        self.add_to_chord(add.si(x, 100))
        return x

    return Tasks(app, add, mul, tsum, boom, identity, record_error, on_error_request,
                 replace_with_chain, replace_with_group, grows_chord)


def _app(broker: str, backend: str, **conf: Any) -> Celery:
    app = Celery("canvas", broker=broker, backend=backend, set_as_current=True)
    app.conf.update(conf)
    return app


@pytest.fixture
def memory_app() -> Iterator[Celery]:
    private = uuid.uuid4().hex
    previous = current_app()
    app = _app(f"memory://{private}", f"memory://{private}")
    try:
        yield app
    finally:
        app.close()
        set_current(previous)


@pytest.fixture(scope="module", params=["eager", "memory", "sqlite"])
def module_env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               ) -> Iterator[Tasks]:
    """Tasks on an app in each mode; the broker modes run one thread-pool worker per module."""
    previous = current_app()
    if request.param == "eager":
        private = uuid.uuid4().hex
        app = _app(f"memory://{private}", f"memory://{private}", task_always_eager=True)
    elif request.param == "memory":
        private = uuid.uuid4().hex
        app = _app(f"memory://{private}", f"memory://{private}")
    else:
        path = tmp_path_factory.mktemp("canvas-sqlite")
        app = _app(f"sqlite:///{path / 'broker.db'}", f"sqlite:///{path / 'results.db'}")
    tasks = define_tasks(app)
    try:
        if request.param == "eager":
            yield tasks
        else:
            with start_worker(app, pool="threads", concurrency=4):
                yield tasks
    finally:
        app.close()
        set_current(previous)


@pytest.fixture
def env(module_env: Tasks) -> Tasks:
    ERRBACK_CALLS.clear()
    set_current(module_env.app)
    return module_env
