"""``celeriac beat`` command-line errors, in a subprocess (as users run it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROJ = """
from celeriac import Celery
app = Celery("proj", broker="sqlite:///broker.db")
"""


def run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celeriac", "-A", "proj", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["beat", "--detach"], 2, "--detach is not supported"),
        (["beat", "-S", "nosuch.module:Sched"], 1, "could not be imported"),
        (["beat", "--max-interval", "0"], 2, "--max-interval"),
        (["--config", "badconf", "beat"], 1, "beat entry 'x': 'schedule' 'often'"),
    ],
)
def test_beat_errors(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    (tmp_path / "proj.py").write_text(PROJ)
    (tmp_path / "badconf.py").write_text(
        "beat_schedule = {'x': {'task': 'proj.t', 'schedule': 'often'}}\n"
    )
    result = run(tmp_path, *args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr + result.stdout
