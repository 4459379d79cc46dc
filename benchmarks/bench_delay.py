"""delay() throughput: celeriac on memory://, sqlite:// and Redis, next to Celery's delay() and a
plain redis-py LPUSH loop of the same payload on the same Redis, in one run.

Run: .venv/bin/python benchmarks/bench_delay.py [--n 10000]
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import uuid

import redis

sys.path.insert(0, os.path.dirname(__file__))
from common import REDIS, env_for, project_dir, rate, table


def fresh(module: str) -> object:
    sys.modules.pop(module, None)
    return importlib.import_module(module)


def bench_celeriac(broker: str, backend: str | None, n: int) -> tuple[float, float]:
    env_for(broker, backend)
    mod = fresh("celeriac_bench")
    app = mod.app  # type: ignore[attr-defined]
    noop = app.tasks["bench.noop"]
    noop.delay(0)  # connect, declare
    start = time.perf_counter()
    for i in range(n):
        noop.delay(i)
    single = rate(n, time.perf_counter() - start)
    try:
        from celeriac import group
    except ImportError:  # canvas not installed in this checkout
        batch = float("nan")
    else:
        start = time.perf_counter()
        group(noop.s(i) for i in range(n)).apply_async()
        batch = rate(n, time.perf_counter() - start)
    app.transport.purge("celery")
    app.close()
    return single, batch


def bench_celery(broker: str, n: int) -> float:
    env_for(broker, broker)
    mod = fresh("celery_bench")
    app = mod.app  # type: ignore[attr-defined]
    noop = app.tasks["bench.noop"]
    noop.delay(0)
    start = time.perf_counter()
    for i in range(n):
        noop.delay(i)
    result = rate(n, time.perf_counter() - start)
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("celery")
    app.close()
    return result


def bench_plain_redis(url: str, n: int) -> float:
    client = redis.Redis.from_url(url)
    # A payload the size of one task envelope.
    payload = b"x" * 900
    start = time.perf_counter()
    for _ in range(n):
        client.lpush("bench-plain", payload)
    result = rate(n, time.perf_counter() - start)
    client.delete("bench-plain")
    client.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10000)
    args = parser.parse_args()
    n = args.n
    root = project_dir()
    os.chdir(root)
    redis_url = f"{REDIS}/3"
    redis.Redis.from_url(redis_url).flushdb()
    plain = bench_plain_redis(redis_url, n)
    celery_rate = bench_celery(redis_url, n)
    redis_single, redis_batch = bench_celeriac(redis_url, redis_url, n)
    mem_single, mem_batch = bench_celeriac(f"memory://{uuid.uuid4().hex}", None, n)
    sqlite_single, sqlite_batch = bench_celeriac(
        f"sqlite:///{root}/b.db", f"sqlite:///{root}/r.db", n
    )
    table(
        f"delay() on Redis, {n} calls (ratio to the plain redis-py LPUSH loop)",
        [
            ("plain redis-py + hiredis LPUSH loop", plain, "/s"),
            ("Celery delay()", celery_rate, "/s"),
            ("celeriac delay()", redis_single, "/s"),
            ("celeriac group(...).apply_async() (one batch)", redis_batch, "/s"),
        ],
        baseline=plain,
    )
    print(f"  celeriac delay() vs Celery delay(): x{redis_single / celery_rate:.1f}")
    table(
        "celeriac delay() on the embedded brokers",
        [
            ("memory:// delay()", mem_single, "/s"),
            ("memory:// group batch", mem_batch, "/s"),
            ("sqlite:// delay() (durable commit per call)", sqlite_single, "/s"),
            ("sqlite:// group batch", sqlite_batch, "/s"),
        ],
    )
    redis.Redis.from_url(redis_url).flushdb()


if __name__ == "__main__":
    main()
