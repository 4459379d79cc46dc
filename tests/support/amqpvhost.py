"""A private RabbitMQ vhost per test module, created and deleted with ``rabbitmqctl``."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from support.servers import amqp_url_or_skip, missing_server


def rabbitmqctl(*args: str, timeout: float = 60.0) -> str:
    """Run ``rabbitmqctl ARGS`` and return its output (raises on failure)."""
    return subprocess.run(
        ["rabbitmqctl", *args], check=True, capture_output=True, text=True, timeout=timeout
    ).stdout


@contextmanager
def private_vhost(prefix: str) -> Iterator[str]:
    """Yield ``amqp://guest:guest@host:port/<new vhost>``; the vhost is deleted afterwards."""
    base = amqp_url_or_skip()
    if shutil.which("rabbitmqctl") is None:
        missing_server("rabbitmqctl (to create test vhosts)", "apt-get install rabbitmq-server")
    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"{base}/{vhost}"
    finally:
        subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=60)


def list_queues(vhost: str, *columns: str) -> list[list[str]]:
    """``rabbitmqctl list_queues -p VHOST COLUMNS`` as rows of strings."""
    out = rabbitmqctl("list_queues", "-q", "--no-table-headers", "-p", vhost, *columns)
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def list_exchanges(vhost: str, *columns: str) -> list[list[str]]:
    out = rabbitmqctl("list_exchanges", "-q", "--no-table-headers", "-p", vhost, *columns)
    return [line.split("\t") for line in out.splitlines() if line.strip()]
