"""The worker, side by side with Celery's on the same broker, in one run:

* drain: 20,000 no-op tasks with 2 prefork processes, results stored, then results ignored,
  timed from the worker's first fetch to the last task done;
* ``delay().get()`` round trip (median of sequential calls);
* worker start to first task done;
* idle CPU over 3 s and resident memory (main process plus pool processes).

Run: .venv/bin/python benchmarks/bench_worker.py [--n 20000] [--broker redis|sqlite]
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, os.path.dirname(__file__))
from common import REDIS, env_for, p50_ms, project_dir, table, worker

TICK = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    out = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in children:
        out += tree(int(child))
    return out


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def rss_mb(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def fresh(module: str) -> Any:
    sys.modules.pop(module, None)
    return importlib.import_module(module)


def fill(n: int, task: str, broker: str, backend: str | None) -> list[str]:
    """Queue n messages with celeriac's batch publish (the wire format is Celery's either way)."""
    env_for(broker, backend)
    app = fresh("celeriac_bench").app
    ids: list[str] = []
    with app.publish_batch():
        for i in range(n):
            ids.append(app.send_task(task, args=[i]).id)
    app.close()
    return ids


def wait_results(kind: str, ids: list[str], timeout: float = 600) -> None:
    app = fresh("celeriac_bench").app
    backend = app.backend
    deadline = time.monotonic() + timeout
    pending = ids
    # Check the oldest 1,000 outstanding ids at a time: re-reading every result on each poll
    # would take more CPU from the 2-core machine than the worker under test.
    while pending and time.monotonic() < deadline:
        head = pending[:1000]
        metas = backend.get_many_meta(head)
        still = [m["task_id"] for m in metas if m["status"] != "SUCCESS"]
        pending = still + pending[len(head) :]
        if still:
            time.sleep(0.05)
    app.close()
    if pending:
        raise RuntimeError(f"{kind}: {len(pending)} results missing")


def queue_empty(broker: str) -> bool:
    if broker.startswith("redis"):
        client = redis.Redis.from_url(broker)
        try:
            return client.llen("celery") == 0 and client.hlen("unacked") == 0
        finally:
            client.close()
    return queued(broker) == 0


def queued(broker: str) -> int:
    """Messages still in the queue (not yet fetched by a worker)."""
    if broker.startswith("redis"):
        client = redis.Redis.from_url(broker)
        try:
            return int(client.llen("celery"))
        finally:
            client.close()
    app = fresh("celeriac_bench").app
    try:
        return app.transport.queue_length("celery")
    finally:
        app.close()


def first_fetch(broker: str, n: int, timeout: float = 60) -> None:
    """Wait until the worker took its first message: the drain is timed from there, so the
    worker's start-up (measured on its own) is not counted as drain time."""
    deadline = time.monotonic() + timeout
    while queued(broker) >= n:
        if time.monotonic() > deadline:
            raise RuntimeError("the worker took no message")
        time.sleep(0.005)


def drain(kind: str, root: Path, broker: str, backend: str | None, n: int, stored: bool) -> float:
    task = "bench.noop" if stored else "bench.noop_ignored"
    ids = fill(n, task, broker, backend)
    env = env_for(broker, backend)
    with worker(kind, root, env, "-P", "prefork", "-c", "2"):
        first_fetch(broker, n)
        start = time.monotonic()
        if stored:
            wait_results(kind, ids)
        else:
            while not queue_empty(broker):
                time.sleep(0.05)
        elapsed = time.monotonic() - start
    return n / elapsed


def interactive(kind: str, root: Path, broker: str, backend: str | None) -> dict[str, float]:
    env = env_for(broker, backend)
    first = fill(1, "bench.noop", broker, backend)
    started = time.monotonic()
    with worker(kind, root, env, "-P", "prefork", "-c", "2") as proc:
        wait_results(kind, first, timeout=60)
        startup = time.monotonic() - started
        mod = fresh(f"{kind}_bench")
        noop = mod.app.tasks["bench.noop"]
        noop.delay(0).get(timeout=30)
        samples = []
        for i in range(200):
            t0 = time.perf_counter()
            noop.delay(i).get(timeout=30)
            samples.append(time.perf_counter() - t0)
        mod.app.close()
        time.sleep(1.0)
        cpu0 = cpu_seconds(proc.pid)
        time.sleep(3.0)
        idle = cpu_seconds(proc.pid) - cpu0
        memory = rss_mb(proc.pid)
    return {"startup": startup, "p50": p50_ms(samples), "idle": idle, "rss": memory}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--broker", choices=["redis", "sqlite"], default="redis")
    args = parser.parse_args()
    root = project_dir()
    os.chdir(root)
    if args.broker == "redis":
        broker = f"{REDIS}/4"
        backend = broker
        redis.Redis.from_url(broker).flushdb()
        kinds = ["celery", "celeriac"]
    else:
        broker, backend = f"sqlite:///{root}/broker.db", f"sqlite:///{root}/results.db"
        kinds = ["celeriac"]  # Celery has no SQLite broker
    drains: dict[str, dict[str, float]] = {}
    other: dict[str, dict[str, float]] = {}
    for kind in kinds:
        drains[kind] = {
            "stored": drain(kind, root, broker, backend, args.n, stored=True),
            "ignored": drain(kind, root, broker, backend, args.n, stored=False),
        }
        other[kind] = interactive(kind, root, broker, backend)
        if args.broker == "redis":
            redis.Redis.from_url(broker).flushdb()
    base = drains.get("celery")
    for mode in ("stored", "ignored"):
        rows = [(f"{k} drain, results {mode}", drains[k][mode], "tasks/s") for k in kinds]
        table(
            f"drain {args.n} no-op tasks, prefork -c 2, {args.broker}",
            rows,
            baseline=base[mode] if base else None,
        )
    for metric, unit in (("startup", "s"), ("p50", "ms"), ("idle", "s CPU in 3 s"), ("rss", "MiB")):
        rows = [(f"{k} {metric}", other[k][metric], unit) for k in kinds]
        table(metric, rows, baseline=other["celery"][metric] if base else None)


if __name__ == "__main__":
    main()
