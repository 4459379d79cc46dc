"""Canvas workflows, side by side with Celery on the same Redis (DB 13), in one run:

* a group of 10,000 no-op tasks: time to publish, and time until every result is in;
* a chord of 1,000 no-op tasks into a counting body: time until the body's result is in.

Each implementation's client drives its own worker (a process this script starts and stops).

Run: .venv/bin/python benchmarks/bench_canvas.py [--group 10000] [--chord 1000]
     [--pool prefork] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, os.path.dirname(__file__))
from common import REDIS, env_for, worker

DB = 13

TASKS = """
import os
from {package} import Celery

app = Celery("bench", broker=os.environ["B_BROKER"], backend=os.environ["B_BACKEND"])


@app.task(name="bench.noop")
def noop(i=0):
    return i


@app.task(name="bench.count")
def count(values):
    return len(values)
"""


def project() -> Path:
    """A temp dir with ``celeriac_bench.py`` and ``celery_bench.py`` defining the same tasks."""
    root = Path(tempfile.mkdtemp(prefix="celeriac-bench-canvas-"))
    (root / "celeriac_bench.py").write_text(textwrap.dedent(TASKS.format(package="celeriac")))
    (root / "celery_bench.py").write_text(textwrap.dedent(TASKS.format(package="celery")))
    sys.path.insert(0, str(root))
    return root


def wait_ready(app: Any, timeout: float = 60.0) -> None:
    """Block until the worker answers one task (it is then consuming)."""
    app.signature("bench.noop", args=(0,)).apply_async().get(timeout=timeout)


def run(
    kind: str,
    root: Path,
    env: dict[str, str],
    url: str,
    args: argparse.Namespace,
) -> dict[str, float]:
    canvas = importlib.import_module(kind)
    app = importlib.import_module(f"{kind}_bench").app
    client = redis.Redis.from_url(url)
    client.flushdb()
    timings: dict[str, float] = {}
    with worker(kind, root, env, "-P", args.pool, "-c", str(args.concurrency)):
        wait_ready(app)
        noop = app.signature("bench.noop")

        started = time.perf_counter()
        members = canvas.group(noop.clone((i,)) for i in range(args.group))
        result = members.apply_async()
        timings["group publish"] = time.perf_counter() - started
        values = result.get(timeout=600)
        timings["group total"] = time.perf_counter() - started
        assert values == list(range(args.group)), f"{kind}: wrong group result"

        started = time.perf_counter()
        header = [noop.clone((i,)) for i in range(args.chord)]
        body_result = canvas.chord(header, app.signature("bench.count")).apply_async()
        assert body_result.get(timeout=600) == args.chord, f"{kind}: wrong chord result"
        timings["chord total"] = time.perf_counter() - started
    client.flushdb()
    client.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", type=int, default=10_000)
    parser.add_argument("--chord", type=int, default=1_000)
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    url = f"{REDIS}/{DB}"
    root = project()
    env = env_for(url, url)
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    results = {kind: run(kind, root, env, url, args) for kind in ("celery", "celeriac")}
    print(
        f"\n== canvas on {url}: group of {args.group:,}, chord of {args.chord:,} "
        f"({args.pool} x{args.concurrency})"
    )
    print(f"  {'':<16} {'celery':>10} {'celeriac':>10} {'celery/celeriac':>16}")
    for name in results["celery"]:
        theirs, ours = results["celery"][name], results["celeriac"][name]
        ratio = theirs / ours if ours > 0 else float("inf")
        print(f"  {name:<16} {theirs:>9.2f}s {ours:>9.2f}s {ratio:>15.2f}x")


if __name__ == "__main__":
    main()
