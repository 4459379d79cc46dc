"""RabbitMQ, celeriac beside Celery 5.7 on the same broker, in one run:

* ``delay()``: sequential calls from one thread (celeriac waits for the publisher confirm of each
  message; Celery, by default, does not ask for confirms at all);
* drain: 20,000 no-op tasks (results ignored) with 2 prefork processes, from a full queue to an
  empty one.

Each run uses a fresh vhost (``rabbitmqctl add_vhost``), deleted at the end.

Run: .venv/bin/python benchmarks/bench_amqp.py [--n 20000] [--delay-n 5000]
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from common import env_for, project_dir, rate, table, worker

AMQP = os.environ.get("BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672")


def fresh(module: str) -> object:
    sys.modules.pop(module, None)
    return importlib.import_module(module)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


def celery_url(url: str) -> str:
    return url.replace("amqp://", "pyamqp://", 1)


def queue_length(broker: str) -> int:
    app = fresh("celeriac_bench").app  # type: ignore[attr-defined]
    try:
        return int(app.transport.queue_length("celery"))
    finally:
        app.close()


def bench_delay(kind: str, broker: str, n: int) -> float:
    env_for(broker if kind == "celeriac" else celery_url(broker), None)
    app = fresh(f"{kind}_bench").app  # type: ignore[attr-defined]
    noop = app.tasks["bench.noop_ignored"]
    noop.delay(0)  # connect and declare
    start = time.perf_counter()
    for i in range(n):
        noop.delay(i)
    result = rate(n, time.perf_counter() - start)
    app.close()
    return result


def fill(broker: str, n: int) -> None:
    """Queue n messages with celeriac's batch publish (Celery's wire format either way)."""
    env_for(broker, None)
    app = fresh("celeriac_bench").app  # type: ignore[attr-defined]
    with app.publish_batch():
        for i in range(n):
            app.send_task("bench.noop_ignored", args=[i])
    app.close()


def bench_drain(kind: str, root: object, broker: str, n: int) -> float:
    fill(broker, n)
    deadline = time.monotonic() + 30
    while (count := queue_length(broker)) != n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{kind}: {count} messages queued, expected {n}")
        time.sleep(0.2)
    env = env_for(broker if kind == "celeriac" else celery_url(broker), None)
    with worker(kind, root, env, "-P", "prefork", "-c", "2"):  # type: ignore[arg-type]
        start = time.monotonic()
        while queue_length(broker) > 0:
            time.sleep(0.05)
        elapsed = time.monotonic() - start
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--delay-n", type=int, default=5000)
    args = parser.parse_args()
    root = project_dir()
    os.chdir(root)
    vhost = f"bench-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        broker = f"{AMQP}/{vhost}"
        kinds = ["celery", "celeriac"]
        delays = {k: bench_delay(k, broker, args.delay_n) for k in kinds}
        app = fresh("celeriac_bench").app  # type: ignore[attr-defined]
        try:
            # The delay runs left messages behind, some perhaps still on their way in.
            quiet = 0
            while quiet < 3:
                quiet = quiet + 1 if app.transport.purge("celery") == 0 else 0
                time.sleep(0.2)
        finally:
            app.close()  # before the vhost goes: no reconnect attempts once it is deleted
        drains = {k: bench_drain(k, root, broker, args.n) for k in kinds}
    finally:
        subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=60)
    table(
        f"delay() x {args.delay_n}, one thread, RabbitMQ",
        [(f"{k} delay()", delays[k], "calls/s") for k in kinds],
        baseline=delays["celery"],
    )
    table(
        f"drain {args.n} no-op tasks, prefork -c 2, RabbitMQ",
        [(f"{k} drain", drains[k], "tasks/s") for k in kinds],
        baseline=drains["celery"],
    )


if __name__ == "__main__":
    main()
