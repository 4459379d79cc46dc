"""A Redis restart mid-publish loses nothing confirmed, and the transport reconnects by itself.

Runs its own redis-server (AOF on) on a free port, and always stops it by PID.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac.exceptions import TransportError
from celeriac.protocol.message import Outgoing
from celeriac.transports.redis import RedisTransport
from contract.transport_contract import msg
from support.servers import port_open
from support.waiting import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Server:
    def __init__(self, port: int, data_dir: Path) -> None:
        self.port = port
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--dir",
                str(self.data_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: port_open("127.0.0.1", self.port, 0.2), timeout=10, what="redis-server up")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # SIGTERM: Redis flushes the AOF and exits
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed; install the redis-server package")
    srv = _Server(_free_port(), tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_restart_mid_publish_loses_nothing_confirmed(server: _Server) -> None:
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


def test_fetch_reconnects_after_restart(server: _Server) -> None:
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
