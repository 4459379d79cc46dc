"""Many OS processes on one SQLite broker file: nothing lost, nothing doubled, dead holders' leases
come back. Every process started here is killed by PID in teardown, also when a test fails."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac.protocol.message import Message, Outgoing
from celeriac.transports.sqlite import SQLiteTransport

from support.waiting import wait_for

pytestmark = pytest.mark.slow

# One script for every role; argv: role, db url, work dir, then role arguments.
CHILD = r"""
import json, os, sys, time
from celeriac.protocol.message import Message, Outgoing
from celeriac.transports.sqlite import SQLiteTransport

role, url, work = sys.argv[1], sys.argv[2], sys.argv[3]
if role == "produce":
    first, count, batch = map(int, sys.argv[4:7])
    t = SQLiteTransport(url)
    n = first
    while n < first + count:
        size = 1 if n % 3 else batch  # single publishes and batches interleaved
        size = min(size, first + count - n)
        t.publish([Outgoing(Message(str(i).encode(), {"n": i}), "", "load")
                   for i in range(n, n + size)])
        n += size
    t.close()
elif role == "consume":
    name = sys.argv[4]
    t = SQLiteTransport(url)
    seen = []
    stop = os.path.join(work, "stop")
    while not os.path.exists(stop):
        got = t.fetch(["load"], 50, 0.2)
        seen.extend(d.message.headers["n"] for d in got)
        t.ack(got)
    with open(os.path.join(work, f"{name}.json"), "w") as f:
        json.dump(seen, f)
    t.close()
elif role == "hold":
    t = SQLiteTransport(url, {"visibility_timeout": 1})
    held = t.fetch(["hold"], 10, 10.0)
    with open(os.path.join(work, "held.json.tmp"), "w") as f:
        json.dump([d.message.headers["n"] for d in held], f)
    os.rename(os.path.join(work, "held.json.tmp"), os.path.join(work, "held.json"))
    while True:  # a live holder: renews its leases, never acks, until it is killed
        t.renew(held)
        time.sleep(0.2)
"""


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[tuple[str, Path, list[subprocess.Popen[bytes]]]]:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    procs: list[subprocess.Popen[bytes]] = []
    yield url, tmp_path, procs
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def start(procs: list[subprocess.Popen[bytes]], *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *args])
    procs.append(proc)
    return proc


def test_many_producers_and_consumers_exactly_once(
    spawn: tuple[str, Path, list[subprocess.Popen[bytes]]],
) -> None:
    url, work, procs = spawn
    producers, per_producer, consumers = 3, 6_700, 3
    SQLiteTransport(url).close()  # create the file once, before the crowd arrives
    for c in range(consumers):
        start(procs, "consume", url, str(work), f"c{c}")
    producing = [
        start(procs, "produce", url, str(work), str(p * per_producer), str(per_producer), "20")
        for p in range(producers)
    ]
    wait_for(lambda: all(p.poll() is not None for p in producing), timeout=90, what="producers")
    assert [p.returncode for p in producing] == [0] * producers
    path = url.removeprefix("sqlite:///")

    def drained() -> bool:
        with sqlite3.connect(path, timeout=30) as conn:
            return conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0

    wait_for(drained, timeout=90, interval=0.2, what="consumers to drain the queue")
    (work / "stop").touch()
    for proc in procs[:consumers]:
        proc.wait(timeout=30)
        assert proc.returncode == 0
    seen: list[int] = []
    for c in range(consumers):
        seen += json.loads((work / f"c{c}.json").read_text())
    total = producers * per_producer
    assert len(seen) == total, "a message was lost or delivered twice"
    assert sorted(seen) == list(range(total))


def test_killed_holders_messages_are_redelivered(
    spawn: tuple[str, Path, list[subprocess.Popen[bytes]]],
) -> None:
    url, work, procs = spawn
    other = SQLiteTransport(url, {"visibility_timeout": 1})
    try:
        other.publish([Outgoing(Message(b"x", {"n": i}), "", "hold") for i in range(10)])
        holder = start(procs, "hold", url, str(work))
        wait_for((work / "held.json").exists, timeout=30, what="the holder to lease messages")
        held = json.loads((work / "held.json").read_text())
        assert sorted(held) == list(range(10))
        assert other.fetch(["hold"], 10, 1.5) == []  # leased to a live, renewing process
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        got: list[int] = []
        redelivered: list[bool] = []
        deadline = time.monotonic() + 15
        while len(got) < 10 and time.monotonic() < deadline:
            deliveries = other.fetch(["hold"], 10, 0.5)
            got += [d.message.headers["n"] for d in deliveries]
            redelivered += [d.redelivered for d in deliveries]
            other.ack(deliveries)
        assert sorted(got) == list(range(10))
        assert all(redelivered)
    finally:
        other.close()
