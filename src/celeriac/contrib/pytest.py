"""pytest plugin with Celery's fixture names.

Enable it as Celery's: ``pytest_plugins = ("celeriac.contrib.pytest",)`` in ``conftest.py``
(or ``-p celeriac.contrib.pytest``). Override ``celery_config`` to configure the test app, e.g.
``{"task_always_eager": True}``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from celeriac.app.base import Celery, current_app, set_current
from celeriac.contrib.testing import start_worker
from celeriac.worker.worker import Worker

#: What every test app starts from: in-process broker and results, no logging takeover.
DEFAULT_TEST_CONFIG: dict[str, Any] = {
    "worker_hijack_root_logger": False,
    "worker_log_color": False,
    "accept_content": ["json"],
    "enable_utc": True,
    "timezone": "UTC",
    "broker_url": "memory://",
    "result_backend": "cache+memory://",
    "broker_heartbeat": 0,
}


def _make_app(
    config: Mapping[str, Any], parameters: Mapping[str, Any], includes: Sequence[str]
) -> Celery:
    params = {"set_as_current": False, **parameters}
    app = Celery(params.pop("main", "celery.tests"), **params)
    # A private in-process broker and result store per app: tests never see each other's messages.
    private = uuid.uuid4().hex
    app.conf.update(
        {
            **DEFAULT_TEST_CONFIG,
            "broker_url": f"memory://{private}",
            "result_backend": f"cache+memory://{private}",
            **config,
        }
    )
    if includes:
        app.conf.update(include=tuple(includes))
    return app


@pytest.fixture(scope="session")
def celery_config() -> Mapping[str, Any]:
    """Override to give the test app settings."""
    return {}


@pytest.fixture(scope="session")
def celery_parameters() -> Mapping[str, Any]:
    """Override to pass arguments to ``Celery(...)``."""
    return {}


@pytest.fixture(scope="session")
def celery_includes() -> Sequence[str]:
    """Override to import task modules into the test app."""
    return ()


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    """The pool of the test worker (thread-based: ``solo``, ``threads`` or ``asyncio``)."""
    return "solo"


@pytest.fixture(scope="session")
def celery_worker_parameters() -> Mapping[str, Any]:
    """Override to pass options to the test worker."""
    return {}


@pytest.fixture(scope="session")
def celery_enable_logging() -> bool:
    return False


@pytest.fixture(scope="session")
def use_celery_app_trap() -> bool:
    return False


@pytest.fixture(scope="session")
def celery_session_app(
    celery_config: Mapping[str, Any],
    celery_parameters: Mapping[str, Any],
    celery_includes: Sequence[str],
) -> Iterator[Celery]:
    """One test app for the whole session."""
    app = _make_app(celery_config, celery_parameters, celery_includes)
    previous = current_app()
    set_current(app)
    try:
        yield app
    finally:
        set_current(previous)
        app.close()


@pytest.fixture
def celery_app(
    celery_config: Mapping[str, Any],
    celery_parameters: Mapping[str, Any],
    celery_includes: Sequence[str],
) -> Iterator[Celery]:
    """A fresh test app for one test, set as the current app (so ``shared_task`` uses it)."""
    app = _make_app(celery_config, celery_parameters, celery_includes)
    previous = current_app()
    set_current(app)
    try:
        yield app
    finally:
        set_current(previous)
        app.close()


@pytest.fixture(scope="session")
def celery_session_worker(
    celery_session_app: Celery,
    celery_worker_pool: str,
    celery_worker_parameters: Mapping[str, Any],
) -> Iterator[Worker]:
    """A worker running for the whole session."""
    with start_worker(
        celery_session_app, pool=celery_worker_pool, **celery_worker_parameters
    ) as worker:
        yield worker


@pytest.fixture
def celery_worker(
    celery_app: Celery,
    celery_worker_pool: str,
    celery_worker_parameters: Mapping[str, Any],
) -> Iterator[Worker]:
    """A worker for one test, consuming from ``celery_app``."""
    with start_worker(celery_app, pool=celery_worker_pool, **celery_worker_parameters) as worker:
        yield worker


@pytest.fixture
def depends_on_current_app(celery_app: Celery) -> None:
    """Makes ``celery_app`` the current app for the test."""
    set_current(celery_app)
