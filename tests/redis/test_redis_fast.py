"""FastLane: hot-path commands on pooled connections, against the real Redis (DB 4)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
import redis
import redis.exceptions as rexc

from celeriac.utils.redis_conn import parse_redis_url
from celeriac.utils.redis_fast import KEEP_IDLE, FastLane

from support.servers import clean_redis_db
from support.waiting import wait_for

DB = 4
pytestmark = pytest.mark.redis


@pytest.fixture
def url() -> Iterator[str]:
    with clean_redis_db(DB) as url:
        yield url


@pytest.fixture
def lane(url: str) -> Iterator[FastLane]:
    lane = FastLane(parse_redis_url(url).pool(blocking=False), 4)
    yield lane
    lane.close()


@pytest.fixture
def raw(url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url)
    yield client
    client.close()


def test_commands_reach_the_selected_db(lane: FastLane, raw: redis.Redis) -> None:
    assert lane.execute("LPUSH", "q", b"a", b"b") == 2
    assert raw.lrange("q", 0, -1) == [b"b", b"a"]
    assert lane.execute("GET", "missing") is None
    assert lane.execute("MGET", "q-none", "other") == [None, None]


def test_pipeline_reads_every_reply_then_raises_the_first_error(
    lane: FastLane, raw: redis.Redis
) -> None:
    raw.set("text", "x")
    with pytest.raises(rexc.ResponseError, match="WRONGTYPE"):
        lane.pipeline([("SET", "a", 1), ("LPUSH", "text", "y"), ("SET", "b", 2)])
    # The commands around the error ran, and the connection is still in step.
    assert raw.mget("a", "b") == [b"1", b"2"]
    assert lane.pipeline([("INCR", "n"), ("INCR", "n")]) == [1, 2]


def test_transaction_returns_the_exec_replies(lane: FastLane, raw: redis.Redis) -> None:
    raw.hset("h", mapping={"t1": "x", "t2": "y"})
    raw.zadd("z", {"t1": 1, "t2": 2})
    replies = lane.pipeline([("HDEL", "h", "t1", "t2"), ("ZREM", "z", "t1")], transaction=True)
    assert replies == [2, 1]
    assert raw.zrange("z", 0, -1) == [b"t2"]
    raw.set("text", "x")
    # An error at run time comes back inside EXEC's reply; it is raised all the same.
    with pytest.raises(rexc.ResponseError, match="WRONGTYPE"):
        lane.pipeline([("LPUSH", "text", "y"), ("SET", "after", 1)], transaction=True)
    assert raw.get("after") == b"1"  # MULTI/EXEC does not roll back


def test_script_is_loaded_again_after_a_flush(lane: FastLane, raw: redis.Redis) -> None:
    source = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
    assert lane.script(source, ["n"], [2]) == 2
    raw.script_flush()  # as after a Redis restart
    assert lane.script(source, ["n"], [3]) == 5


def test_a_killed_connection_raises_and_the_next_call_reconnects(
    lane: FastLane, raw: redis.Redis
) -> None:
    raw.client_kill_filter(_id=lane.execute("CLIENT", "ID"))
    with pytest.raises((rexc.ConnectionError, rexc.TimeoutError)):
        lane.execute("PING")
    assert lane.execute("PING") in (b"PONG", True, "PONG")


def test_idle_connections_are_reused_and_capped(url: str) -> None:
    lane = FastLane(parse_redis_url(url).pool(blocking=False), 64)
    try:
        lane.execute("PING")
        first = lane._idle[0]
        lane.execute("PING")
        assert lane._idle == [first]  # one caller at a time: one connection
        start = threading.Barrier(KEEP_IDLE + 4)
        names: list[bytes] = []

        def call() -> None:
            start.wait()
            names.append(lane.execute("CLIENT", "ID"))

        threads = [threading.Thread(target=call) for _ in range(KEEP_IDLE + 4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(10)
        assert len(names) == KEEP_IDLE + 4
        assert len(lane._idle) <= KEEP_IDLE
    finally:
        lane.close()


def test_a_forked_child_does_not_reuse_the_parents_connections(lane: FastLane) -> None:
    parent_id = lane.execute("CLIENT", "ID")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the connection id it gets, then leave at once
        try:
            os.write(write, str(lane.execute("CLIENT", "ID")).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        child_id = int(os.read(read, 64) or b"-1")
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert child_id not in (-1, parent_id)
    assert lane.execute("CLIENT", "ID") == parent_id  # the parent's connection still in step


def test_close_interrupts_a_blocking_command(url: str, raw: redis.Redis) -> None:
    lane = FastLane(parse_redis_url(url).pool(blocking=False), 4)
    outcome: list[BaseException | object] = []

    def block() -> None:
        try:
            outcome.append(lane.execute("BRPOP", "never-pushed", 30))
        except BaseException as exc:
            outcome.append(exc)

    th = threading.Thread(target=block)
    th.start()
    wait_for(
        lambda: any(c.get("cmd") == "brpop" for c in raw.client_list()),
        timeout=5,
        what="the BRPOP to block in Redis",
    )
    lane.close()
    th.join(5)
    assert not th.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], rexc.RedisError | OSError)


def test_after_a_lost_connection_the_other_idle_ones_are_not_tried(
    url: str, raw: redis.Redis
) -> None:
    lane = FastLane(parse_redis_url(url).pool(blocking=False), 8)
    try:
        conns = [lane._take() for _ in range(3)]  # three connected, then idle
        ids = []
        for conn in conns:
            conn.send_packed_command((b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n",))
            ids.append(conn.read_response())
        for conn in conns:
            lane._give_back(conn)
        assert len(lane._idle) == 3
        for client_id in set(ids):  # as a Redis restart would
            raw.client_kill_filter(_id=client_id)
        with pytest.raises((rexc.ConnectionError, rexc.TimeoutError)):
            lane.execute("PING")
        assert lane._idle == []  # the next call connects afresh instead of failing again
        assert lane.execute("PING") in (b"PONG", True, "PONG")
    finally:
        lane.close()
