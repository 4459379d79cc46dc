"""Writing a throw-away Celery-style project (``proj/__init__.py``, ``proj/celery.py``, tasks)."""

from __future__ import annotations

import textwrap
from pathlib import Path

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
