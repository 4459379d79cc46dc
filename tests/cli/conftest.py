"""A throw-away Celery-style project (``proj/__init__.py`` + ``proj/celery.py`` + tasks)."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

CELERY_PY = """\
from celeriac import Celery

app = Celery("proj", broker={broker!r}, backend={backend!r}, include=["proj.tasks"])
app.conf.worker_redirect_stdouts = False
"""

TASKS_PY = """\
from celeriac.utils.log import get_task_logger

from proj.celery import app

logger = get_task_logger(__name__)


@app.task
def add(x, y):
    logger.info("adding %s + %s", x, y)
    return x + y


@app.task
def fail():
    raise ValueError("boom")
"""


def write_project(root: Path, broker: str, backend: str | None, package: str = "proj") -> Path:
    """Write the project under *root*; returns the package directory."""
    pkg = root / package
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("from .celery import app as celery_app\n")
    (pkg / "celery.py").write_text(CELERY_PY.format(broker=broker, backend=backend))
    (pkg / "tasks.py").write_text(TASKS_PY)
    (pkg / "broken.py").write_text("raise RuntimeError('this module is broken on purpose')\n")
    (pkg / "noapp.py").write_text("VALUE = 1\n")
    (pkg / "settings.py").write_text(
        textwrap.dedent("""\
        task_default_queue = "from-config"
    """)
    )
    return pkg


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
        monkeypatch.delenv(name, raising=False)
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
