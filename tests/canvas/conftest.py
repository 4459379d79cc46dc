"""Apps for the canvas tests: eager, in-memory broker+store, SQLite broker+store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from canvas_tasks import ERRBACK_CALLS, Tasks, define_tasks

from celeriac import Celery
from celeriac.app.base import current_app, set_current
from celeriac.contrib.testing import start_worker


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
def module_env(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
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
