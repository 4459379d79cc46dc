"""A Redis restart mid-publish loses nothing confirmed, and the transport reconnects by itself.

Runs its own redis-server (AOF on) on a free port, and always stops it by PID.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac.exceptions import TransportError
from celeriac.protocol.message import Outgoing
from celeriac.transports.redis import RedisTransport

from contract.transport_contract import msg
from support.redisserver import RedisServer, free_port
from support.waiting import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed; install the redis-server package")
    srv = RedisServer(free_port(), tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_restart_mid_publish_loses_nothing_confirmed(server: RedisServer) -> None:
    url = f"redis://127.0.0.1:{server.port}/0"
    t = RedisTransport(url, {"socket_connect_timeout": 0.5, "socket_timeout": 2})
    q = "restart-q"
    t.publish([Outgoing(msg(i), "", q) for i in range(5)])
    held = t.fetch([q], 5, 2.0)
    assert len(held) == 5
    confirmed: list[int] = list(range(5))
    failures: list[BaseException] = []
    stop = threading.Event()

    def publisher() -> None:
        n = 5
        while not stop.is_set() and n < 400:
            try:
                t.publish([Outgoing(msg(n), "", q)])
            except TransportError as exc:
                failures.append(exc)
                return
            confirmed.append(n)
            n += 1
            time.sleep(0.002)

    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        wait_for(lambda: len(confirmed) >= 100, timeout=10, what="publishing before restart")
        server.stop()
        time.sleep(0.3)  # the publisher now retries against a dead server
        server.start()
        thread.join(timeout=30)
    finally:
        stop.set()
        thread.join()
    assert not failures
    assert len(confirmed) == 400
    # The held messages are still recorded as unacked after the restart.
    assert t._client.hlen("unacked") == 5
    consumer = RedisTransport(url)
    got: list[int] = []
    deadline = time.monotonic() + 20
    while len(got) < 395 and time.monotonic() < deadline:
        batch = consumer.fetch([q], 100, 0.5)
        got += [d.message.headers["n"] for d in batch]
        consumer.ack(batch)
    assert set(got) | {d.message.headers["n"] for d in held} >= set(confirmed)
    t.ack(held)
    assert t._client.hlen("unacked") == 0
    consumer.close()
    t.close()


def test_fetch_reconnects_after_restart(server: RedisServer) -> None:
    url = f"redis://127.0.0.1:{server.port}/0"
    t = RedisTransport(url, {"socket_connect_timeout": 0.5})
    assert t.fetch(["rq"], 1, 0.2) == []
    server.stop()
    server.start()
    t.publish([Outgoing(msg("after"), "", "rq")])
    [d] = t.fetch(["rq"], 1, 2.0)
    assert d.message.headers["n"] == "after"
    t.ack([d])
    t.close()
