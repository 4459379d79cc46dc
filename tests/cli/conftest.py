"""A throw-away Celery-style project (``proj/__init__.py`` + ``proj/celery.py`` + tasks)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_project import write_project


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Path]]:
    """Make a project in tmp_path (in-process: memory:// broker), chdir there, clean up imports."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in (
        "CELERY_APP",
        "CELERIAC_APP",
        "CELERY_BROKER_URL",
        "CELERIAC_BROKER_URL",
        "CELERY_RESULT_BACKEND",
        "CELERIAC_RESULT_BACKEND",
        "CELERY_CONFIG_MODULE",
        "CELERIAC_CONFIG_MODULE",
        "CELERY_SKIP_CHECKS",
        "NO_COLOR",
    ):
        # setenv first so the variable is restored to "unset" after the test even when a
        # command sets it (the CLI exports -b/--result-backend, as Celery does).
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)

    # memory:// state is shared per URL within the process, so each test gets its own.
    unique = uuid.uuid4().hex[:12]

    def make(
        broker: str = f"memory://{unique}", backend: str | None = f"memory://{unique}"
    ) -> Path:
        write_project(tmp_path, broker, backend)
        sys.path.insert(0, str(tmp_path))
        return tmp_path

    yield make
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]
