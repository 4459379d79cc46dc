"""Finding the real servers tests need: a missing one fails under CI=true and skips elsewhere."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

REDIS_HOST = os.environ.get("CELERIAC_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("CELERIAC_TEST_REDIS_PORT", "6379"))
AMQP_HOST = os.environ.get("CELERIAC_TEST_AMQP_HOST", "127.0.0.1")
AMQP_PORT = int(os.environ.get("CELERIAC_TEST_AMQP_PORT", "5672"))


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def missing_server(what: str, how_to_start: str) -> None:
    """Fail (CI) or skip (laptop) because a server the test needs is not running."""
    message = f"{what} is not running; start it with: {how_to_start}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def redis_url_or_skip() -> str:
    """The real Redis's base URL, without a DB number."""
    if not port_open(REDIS_HOST, REDIS_PORT):
        missing_server(
            f"Redis at {REDIS_HOST}:{REDIS_PORT}",
            "redis-server --daemonize yes --port 6379 --save '' --appendonly no",
        )
    return f"redis://{REDIS_HOST}:{REDIS_PORT}"


@contextmanager
def clean_redis_db(db: int) -> Iterator[str]:
    """The real Redis's URL for DB *db*, emptied before and after (also when the test fails)."""
    import redis  # only the Redis tests need it

    url = f"{redis_url_or_skip()}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


def amqp_url_or_skip() -> str:
    """The real RabbitMQ's base URL, without a vhost."""
    if not port_open(AMQP_HOST, AMQP_PORT):
        missing_server(f"RabbitMQ at {AMQP_HOST}:{AMQP_PORT}", "rabbitmq-server -detached")
    return f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}"
