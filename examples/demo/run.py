"""celeriac demo: start a worker on the embedded SQLite broker, send work, show what happens.

Run it with ``bash scripts/demo.sh`` (or ``python examples/demo/run.py`` inside the venv).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BATCH = 500


def bar(done: int, total: int, started: float) -> str:
    width = 40
    filled = int(width * done / total)
    rate = done / max(time.monotonic() - started, 1e-6)
    return f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{total}  {rate:,.0f} tasks/s"


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="celeriac-demo-"))
    shutil.copy(HERE / "demo_tasks.py", workdir / "demo_tasks.py")
    os.chdir(workdir)
    sys.path.insert(0, str(workdir))
    print(f"celeriac demo in {workdir} (broker: sqlite:///celeriac.db, no server needed)\n")
    log = open(workdir / "worker.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celeriac", "-q", "-A", "demo_tasks", "worker", "-P", "prefork",
         "-c", "2", "-l", "info"],
        cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
    )
    code = 1
    try:
        code = run_demo(worker)
        return code
    finally:
        if code:
            print("\nworker log:\n" + (workdir / "worker.log").read_text()[-3000:])
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                code = worker.wait(timeout=20)
                print(f"\nWorker stopped cleanly (exit code {code}).")
            except subprocess.TimeoutExpired:
                worker.kill()
                print("\nWorker did not stop in time; killed.")
        shutil.rmtree(workdir, ignore_errors=True)


def run_demo(worker: subprocess.Popen[bytes]) -> int:
    from celeriac import chain, chord, group
    from demo_tasks import add, divide, double, fetch_price, flaky, total

    started = time.monotonic()
    add.delay(0, 0).get(timeout=60)
    print(f"Worker (prefork, 2 processes) answering after {time.monotonic() - started:.2f}s.\n")
    print(f"1. Sending {BATCH} tasks (add.delay(i, i)) and waiting for their results:")
    started = time.monotonic()
    results = [add.delay(i, i) for i in range(BATCH)]
    done = 0
    for result in results:
        result.get(timeout=60)
        done += 1
        if done % 10 == 0 or done == BATCH:
            print(bar(done, BATCH, started), end="", flush=True)
    print(f"\n   first results: {[r.get() for r in results[:5]]} ... last: {results[-1].get()}\n")

    print("2. An async def task:")
    print(f"   fetch_price('apple') -> {fetch_price.delay('apple').get(timeout=30)}\n")

    print("3. A task that fails twice, then succeeds on retry:")
    print(f"   flaky(2) -> {flaky.delay(2).get(timeout=30)}\n")

    print("4. A task that fails; its exception and traceback come back to the caller:")
    failing = divide.delay(1, 0)
    try:
        failing.get(timeout=30)
    except ZeroDivisionError as exc:
        print(f"   divide(1, 0) raised {type(exc).__name__}: {exc}")
        print("   " + "\n   ".join((failing.traceback or "").strip().splitlines()[-3:]) + "\n")

    print("5. Workflows:")
    print(f"   chain(add.s(2, 3), double.s())            -> "
          f"{chain(add.s(2, 3), double.s()).apply_async().get(timeout=30)}")
    values = group(double.s(i) for i in range(10)).apply_async().get(timeout=30)
    print(f"   group(double.s(i) for i in range(10))     -> {values}")
    summed = chord(double.s(i) for i in range(10))(total.s()).get(timeout=30)
    print(f"   chord(double.s(i) ...)(total.s())        -> {summed}")
    if worker.poll() is not None:
        print("the worker died unexpectedly", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
