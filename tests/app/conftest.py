from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from celeriac import Celery
from celeriac.app.base import current_app, set_current


@pytest.fixture
def app() -> Iterator[Celery]:
    """An app on a private in-memory broker and result store."""
    private = uuid.uuid4().hex
    previous = current_app()
    app = Celery("t", broker=f"memory://{private}", backend=f"memory://{private}")
    try:
        yield app
    finally:
        app.close()
        set_current(previous)


@pytest.fixture(autouse=True)
def forget_shared_tasks() -> Iterator[None]:
    """``@shared_task`` registers with every app made later; keep tests' ones from leaking."""
    from celeriac.app import base

    before = list(base._shared_constructors)
    yield
    base._shared_constructors[:] = before
