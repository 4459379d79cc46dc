"""Running a helper process (a Celery worker, Flower) for one test: output to a log file, stopped
by PID when the block ends, also when the test fails."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from support.workerproc import kill_tree, stop


@contextmanager
def background(
    cmd: Sequence[str], cwd: Path, env: Mapping[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start *cmd*; SIGTERM it (SIGKILL its tree if it lingers) when the block ends."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            list(cmd), cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield proc
        finally:
            try:
                stop(proc)
            finally:
                if proc.poll() is None:
                    kill_tree(proc.pid)
                    proc.wait(5)
