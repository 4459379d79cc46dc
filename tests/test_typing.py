"""Type hints that work: the checker sees a task's parameters through delay() and s()."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SNIPPET = """
from celeriac import Celery
from celeriac.result import AsyncResult

app = Celery("typed")

@app.task
def add(x: int, y: int) -> int:
    return x + y

@app.task
async def fetch(url: str) -> bytes:
    return b""

ok: AsyncResult[int] = add.delay(1, 2)
ok_async: AsyncResult[bytes] = fetch.delay("http://x")
sig = add.s(1, 2)
add.delay("one", 2)        # error: str is not int
add.delay(1)               # error: missing y
fetch.delay(3)             # error: int is not str
"""


def test_mypy_checks_task_arguments(tmp_path: Path) -> None:
    path = tmp_path / "typed_tasks.py"
    path.write_text(textwrap.dedent(SNIPPET))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--follow-imports=silent",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [
        line
        for line in run.stdout.splitlines()
        if ": error:" in line and line.startswith(str(path))
    ]
    lines = sorted({int(line.split(":")[1]) for line in errors})
    text = path.read_text().splitlines()
    flagged = {text[n - 1].split("#")[0].strip() for n in lines}
    assert flagged == {'add.delay("one", 2)', "add.delay(1)", "fetch.delay(3)"}, run.stdout
