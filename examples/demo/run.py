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
    worker = subprocess.Popen(
        [sys.executable, "-m", "celeriac", "-A", "demo_tasks", "worker", "-P", "prefork",
         "-c", "2", "-l", "warning", "-q"],
        cwd=workdir,
    )
    try:
        return run_demo(worker)
    finally:
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
    from celeriac import chain, group
    from demo_tasks import add, divide, double, fetch_price, flaky, total

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

    print("5. A workflow: chain(add(2, 3) | double) and a group summed by a chord-like step:")
    print(f"   chain -> {chain(add.s(2, 3), double.s()).apply_async().get(timeout=30)}")
    values = group(double.s(i) for i in range(10)).apply_async().get(timeout=30)
    print(f"   group -> {values}; total -> {total.delay(values).get(timeout=30)}")
    if worker.poll() is not None:
        print("the worker died unexpectedly", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
