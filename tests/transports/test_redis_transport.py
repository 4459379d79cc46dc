"""The Redis transport: the shared contract plus Redis-specific layout and behaviour (DB 9)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from celeriac.exceptions import ImproperlyConfigured, TransportError
from celeriac.protocol.entities import Exchange, Queue
from celeriac.protocol.message import Outgoing
from celeriac.transports import create_transport
from celeriac.transports.base import Transport
from celeriac.transports.redis import (
    NOWAIT_SOCKET_TIMEOUT,
    RedisTransport,
    RedisTransportConfig,
    topic_pattern,
)
from celeriac.utils.redis_conn import parse_redis_url

from contract.transport_contract import TransportContract, drain, msg, qname, to_queue
from support.servers import clean_redis_db

DB = 9
pytestmark = pytest.mark.redis


@pytest.fixture
def redis_url() -> Iterator[str]:
    with clean_redis_db(DB) as url:
        yield url


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def make_transport(redis_url: str) -> Iterator[Callable[..., Transport]]:
    made: list[Transport] = []

    def make(**options: Any) -> Transport:
        t = create_transport(redis_url, options)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


class TestRedisTransport(TransportContract):
    pass


# -- layout --------------------------------------------------------------------------------------
def test_publish_writes_kombu_envelope(
    make_transport: Callable[..., Transport], raw: redis.Redis
) -> None:
    import base64
    import json

    t = make_transport()
    t.publish([Outgoing(msg("x"), "", "celery")])
    [stored] = raw.lrange("celery", 0, -1)
    env = json.loads(stored)
    assert set(env) == {"body", "content-encoding", "content-type", "headers", "properties"}
    assert base64.b64decode(env["body"]) == b'"x"'
    props = env["properties"]
    assert props["body_encoding"] == "base64"
    assert props["delivery_info"] == {"exchange": "", "routing_key": "celery"}
    assert len(props["delivery_tag"]) == 36


def test_priority_lists_and_order(
    make_transport: Callable[..., Transport], raw: redis.Redis
) -> None:
    t, q = make_transport(), qname()
    t.publish(to_queue(q, *(msg(p, priority=p) for p in (0, 2, 3, 5, 7, 9))))
    assert raw.llen(q) == 2
    assert raw.llen(f"{q}\x06\x163") == 2
    assert raw.llen(f"{q}\x06\x166") == 1
    assert raw.llen(f"{q}\x06\x169") == 1
    got = drain(t, [q], 6)
    assert [d.message.headers["n"] for d in got] == [0, 2, 3, 5, 7, 9]
    t.ack(got)


def test_fetch_records_unacked_and_ack_clears(
    make_transport: Callable[..., Transport], raw: redis.Redis
) -> None:
    t, q = make_transport(), qname()
    t.publish(to_queue(q, msg(1), msg(2)))
    got = drain(t, [q], 2)
    assert raw.hlen("unacked") == 2
    import json

    entry = json.loads(raw.hget("unacked", got[0].tag))
    assert entry[1:] == ["", q]
    assert entry[0]["properties"]["delivery_tag"] == got[0].tag
    assert raw.zcard("unacked_index") == 2
    t.ack(got)
    assert raw.hlen("unacked") == 0
    assert raw.zcard("unacked_index") == 0


def test_fetch_early_hands_the_waited_for_message_before_its_lease_is_recorded(
    make_transport: Callable[..., Transport], raw: redis.Redis
) -> None:
    """A fetch blocked in BRPOP hands the message it gets to ``early`` at once, records its
    lease in the same call, and returns only the others (here: one more waiting behind it)."""
    t, q = make_transport(), qname()
    t.declare(Queue(q))
    handed: list[Any] = []
    leased_when_handed: list[bool] = []

    def early(got: list[Any]) -> None:
        handed.extend(got)
        leased_when_handed.extend(bool(raw.hexists("unacked", d.tag)) for d in got)

    def publish_soon() -> None:
        time.sleep(0.3)
        t.publish(to_queue(q, msg(1)))

    import threading

    sender = threading.Thread(target=publish_soon)
    sender.start()
    try:
        rest = t.fetch_early([q], 10, 5.0, early)
    finally:
        sender.join()
    assert [d.message.body for d in handed] == [msg(1).body]
    assert leased_when_handed == [False]  # handed before the script ran
    assert rest == []
    assert raw.hexists("unacked", handed[0].tag)  # recorded by the time the fetch returned
    t.ack(handed)
    assert raw.hlen("unacked") == 0 and raw.zcard("unacked_index") == 0


def test_declare_writes_kombu_bindings(
    make_transport: Callable[..., Transport], raw: redis.Redis
) -> None:
    t = make_transport()
    t.declare(Queue("celery"))
    t.declare(Queue("feed", Exchange("events", "topic"), routing_key="feed.#"))
    t.declare(Queue("tmp", Exchange("tmpx"), routing_key="tmp", expires=10))
    assert raw.smembers("_kombu.binding.celery") == {b"celery\x06\x16\x06\x16celery"}
    assert raw.smembers("_kombu.binding_permanent.celery") == {b"celery\x06\x16\x06\x16celery"}
    assert raw.smembers("_kombu.binding.events") == {
        ("feed.#\x06\x16" + topic_pattern("feed.#") + "\x06\x16feed").encode()
    }
    assert raw.smembers("_kombu.binding.tmpx") == {b"tmp\x06\x16\x06\x16tmp"}
    assert not raw.exists("_kombu.binding_permanent.tmpx")
    assert raw.zscore("_kombu.binding_deadlines", "tmpx") is not None


def test_park_layout_and_return(make_transport: Callable[..., Transport], raw: redis.Redis) -> None:
    t, q = make_transport(), qname()
    t.publish(to_queue(q, msg("p")))
    [d] = t.fetch([q], 1, 2.0)
    t.park(d, time.time() + 0.5)
    assert raw.hlen("unacked") == 0
    assert raw.zcard("celeriac.delayed") == 1
    got = drain(t, [q], 1, timeout=5)
    assert got[0].tag == d.tag
    assert raw.zcard("celeriac.delayed") == 0
    t.ack(got)


def test_park_after_lease_lost_does_nothing(
    make_transport: Callable[..., Transport], raw: redis.Redis
) -> None:
    t, q = make_transport(), qname()
    t.publish(to_queue(q, msg("p")))
    [d] = t.fetch([q], 1, 2.0)
    t.ack([d])
    t.park(d, time.time() + 0.1)
    t.requeue([d])
    assert raw.zcard("celeriac.delayed") == 0
    assert t.queue_length(q) == 0


def test_round_robin_rotates_queues(make_transport: Callable[..., Transport]) -> None:
    t, q1, q2 = make_transport(), qname(), qname()
    t.publish(to_queue(q1, msg("a1"), msg("a2")))
    t.publish(to_queue(q2, msg("b1"), msg("b2")))
    got = [t.fetch([q1, q2], 1, 1.0)[0] for _ in range(4)]
    assert [d.message.headers["n"] for d in got] == ["a1", "b1", "a2", "b2"]
    t.ack(got)


def test_priority_strategy_drains_first_queue(make_transport: Callable[..., Transport]) -> None:
    t, q1, q2 = make_transport(queue_order_strategy="priority"), qname(), qname()
    t.publish(to_queue(q1, msg("a1"), msg("a2")))
    t.publish(to_queue(q2, msg("b1")))
    got = [t.fetch([q1, q2], 1, 1.0)[0] for _ in range(3)]
    assert [d.message.headers["n"] for d in got] == ["a1", "a2", "b1"]
    t.ack(got)


def test_global_keyprefix(make_transport: Callable[..., Transport], raw: redis.Redis) -> None:
    t, q = make_transport(global_keyprefix="pfx:"), qname()
    t.publish(to_queue(q, msg(1)))
    assert raw.llen(f"pfx:{q}") == 1
    [d] = t.fetch([q], 1, 1.0)
    assert raw.hexists("pfx:unacked", d.tag)
    t.ack([d])


def test_undecodable_message_goes_to_dead_letters(
    make_transport: Callable[..., Transport], raw: redis.Redis
) -> None:
    t, q = make_transport(), qname()
    raw.lpush(q, b"not json")
    t.publish(to_queue(q, msg("ok")))
    got = drain(t, [q], 1)
    assert [d.message.headers["n"] for d in got] == ["ok"]
    [dead] = t.dead_letters()
    assert dead.reason == "undecodable message envelope"
    assert dead.message.body == b"not json"
    t.ack(got)


def test_broken_envelope_with_a_readable_tag_goes_to_dead_letters(
    make_transport: Callable[..., Transport], raw: redis.Redis
) -> None:
    # The fetch script reads the tag from the text; the envelope is still checked after it.
    t, q = make_transport(), qname()
    broken = b'{"properties": {"delivery_tag": "t-1", "delivery_info": {"exchange": "", '
    broken += b'"routing_key": "x"}}, "body": '
    raw.lpush(q, broken)
    t.publish(to_queue(q, msg("ok")))
    got = drain(t, [q], 1)
    assert [d.message.headers["n"] for d in got] == ["ok"]
    [dead] = t.dead_letters()
    assert dead.reason.startswith("undecodable message envelope")
    assert dead.message.body == broken
    assert not raw.hexists("unacked", "t-1") and raw.zscore("unacked_index", "t-1") is None
    t.ack(got)


def test_tag_look_alike_in_a_header_does_not_fool_the_fetch(
    make_transport: Callable[..., Transport], raw: redis.Redis
) -> None:
    t, q = make_transport(), qname()
    m = msg("ok")
    m.headers["custom"] = {"delivery_tag": "fake", "routing_key": "elsewhere", "exchange": "x"}
    t.publish(to_queue(q, m))
    [d] = t.fetch([q], 1, 1.0)
    assert d.tag != "fake" and raw.hexists("unacked", d.tag)
    assert not raw.hexists("unacked", "fake")
    entry = raw.hget("unacked", d.tag)
    assert entry is not None and entry.endswith(f', "", "{q}"]'.encode())
    t.ack([d])


def test_redelivered_flags_match_kombu(
    make_transport: Callable[..., Transport], raw: redis.Redis
) -> None:
    import json

    t, q = make_transport(), qname()
    t.publish(to_queue(q, msg(1)))
    [d] = t.fetch([q], 1, 1.0)
    t.requeue([d])
    env = json.loads(raw.lindex(q, -1))
    assert env["headers"]["redelivered"] is True
    assert env["properties"]["delivery_info"]["redelivered"] is True
    [again] = t.fetch([q], 1, 1.0)
    assert again.redelivered
    t.ack([again])


# -- configuration -------------------------------------------------------------------------------
def test_url_parsing() -> None:
    p = parse_redis_url("redis://user:p%40ss@example:6380/3")
    assert (p.host, p.port, p.db, p.username, p.password) == ("example", 6380, 3, "user", "p@ss")
    s = parse_redis_url("redis+socket:///tmp/r.sock?virtual_host=4")
    assert (s.path, s.db) == ("/tmp/r.sock", 4)
    t = parse_redis_url("rediss://h/1?ssl_cert_reqs=CERT_NONE")
    assert t.ssl == {"ssl_cert_reqs": "none"}
    u = parse_redis_url(
        "redis://h/0", {"ssl": {"ssl_cert_reqs": "required", "ssl_ca_certs": "/ca"}}
    )
    assert u.ssl == {"ssl_cert_reqs": "required", "ssl_ca_certs": "/ca"}
    sen = parse_redis_url("sentinel://:pw@s1:26379/2;sentinel://s2:26380", {"master_name": "m"})
    assert sen.sentinels == (("s1", 26379), ("s2", 26380))
    assert (sen.master_name, sen.db, sen.password) == ("m", 2, "pw")
    assert "sentinel master 'm'" in sen.endpoint


@pytest.mark.parametrize(
    ("url", "options", "needle"),
    [
        ("redis://h/x", {}, "database 'x'"),
        ("sentinel://h:1", {}, "master_name"),
        ("redis://h/0?bogus=1", {}, "bogus"),
        ("redis://h/0", {"ssl": "yes"}, "ssl option"),
        ("redis://h/0", {"queue_order_strategy": "random"}, "random"),
        ("redis+socket://", {}, "socket path"),
    ],
)
def test_bad_configuration_names_the_value(url: str, options: dict[str, Any], needle: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=needle):
        RedisTransportConfig.parse(url, options, 3600.0, "celeriac.dlq")


def test_fanout_prefix_has_db() -> None:
    cfg = RedisTransportConfig.parse("redis://h:1/5", {}, 3600.0, "dlq")
    assert cfg.fanout_prefix == "/5."
    assert (
        RedisTransportConfig.parse("redis://h/5", {"fanout_prefix": False}, 1.0, "d").fanout_prefix
        == ""
    )


def test_unreachable_server_raises_transport_error_naming_host() -> None:
    from celeriac.exceptions import TransportError

    t = RedisTransport("redis://127.0.0.1:1/0", {"socket_connect_timeout": 0.2})
    t._retry.budget = 0.3
    with pytest.raises(TransportError, match=r"127\.0\.0\.1:1"):
        t.publish(to_queue("q", msg(1)))
    t.close()


def test_fetch_nowait_gives_up_on_a_server_that_does_not_answer() -> None:
    """fetch_nowait runs on the worker's event loop: a silent server must not hang it."""
    with socket.socket() as silent:  # accepts connections (backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        transport = RedisTransport(f"redis://127.0.0.1:{port}/0")
        try:
            start = time.monotonic()
            with pytest.raises(TransportError):
                transport.fetch_nowait(["q"], 4)
            assert time.monotonic() - start < NOWAIT_SOCKET_TIMEOUT * 3
        finally:
            transport.close()


# -- fetching for a pool process -----------------------------------------------------------------
def test_fetch_for_pool_acks_in_the_same_call_and_leases_the_next(
    make_transport: Callable[..., Transport], raw: redis.Redis
) -> None:
    t = make_transport()
    q = qname()
    t.publish(to_queue(q, *(msg(i) for i in range(5))))
    first = t.fetch_for_pool([q], 2, 0.0, [], lambda waker: None)
    assert [d.message.headers["n"] for d in first] == [0, 1]
    assert raw.hlen("unacked") == 2
    second = t.fetch_for_pool([q], 2, 0.0, first, lambda waker: None)
    assert [d.message.headers["n"] for d in second] == [2, 3]
    assert set(raw.hkeys("unacked")) == {d.tag.encode() for d in second}
    assert raw.zcard("unacked_index") == 2


def test_wake_fetch_ends_a_pool_process_wait(
    make_transport: Callable[..., Transport], raw: redis.Redis
) -> None:
    import threading

    waiter, other = make_transport(), make_transport()
    q = qname()
    wakers: list[int] = []
    got: list[Any] = []
    thread = threading.Thread(
        target=lambda: got.append(waiter.fetch_for_pool([q], 4, 1.0, [], wakers.append))
    )
    start = time.monotonic()
    thread.start()
    deadline = time.monotonic() + 5
    while not wakers and time.monotonic() < deadline:
        time.sleep(0.005)
    assert wakers and wakers[0] > 0  # the connection's client id while it waits
    other.wake_fetch(wakers[0])
    thread.join(5)
    assert got == [[]]
    assert time.monotonic() - start < 0.7  # well before the wait's second ran out
    assert wakers[-1] == 0  # the wait is over
    # Nothing was popped and dropped: a message sent now is fetched as usual.
    other.publish(to_queue(q, msg(7)))
    [d] = waiter.fetch_for_pool([q], 4, 1.0, [], lambda w: None)
    assert d.message.headers["n"] == 7


# -- a fetch whose reply is lost ------------------------------------------------------------------
def _reply_lost_once(lane: Any, name: str) -> None:
    """Make *lane*'s next *name* call run in Redis and then fail as a dropped connection."""
    real = getattr(lane, name)
    state = {"dropped": False}

    def dropped_after_running(*args: Any) -> Any:
        reply = real(*args)
        if not state["dropped"]:
            state["dropped"] = True
            raise redis.ConnectionError("connection dropped before the reply was read")
        return reply

    setattr(lane, name, dropped_after_running)


def test_fetch_that_ran_but_lost_its_reply_is_salvaged(
    make_transport: Callable[..., Transport], raw: redis.Redis
) -> None:
    t = make_transport()
    assert isinstance(t, RedisTransport)
    q = qname()
    t.publish(to_queue(q, *(msg(i) for i in range(3))))
    _reply_lost_once(t._fast, "script")
    got = t.fetch([q], 10, 0.0)
    # The retry found what the first attempt leased, rather than leaving it to lease expiry.
    assert sorted(d.message.headers["n"] for d in got) == [0, 1, 2]
    assert set(raw.hkeys("unacked")) == {d.tag.encode() for d in got}
    assert t.fetch([q], 10, 0.0) == []


def test_pool_fetch_that_ran_but_lost_its_reply_is_salvaged(
    make_transport: Callable[..., Transport], raw: redis.Redis
) -> None:
    t = make_transport()
    assert isinstance(t, RedisTransport)
    q = qname()
    t.publish(to_queue(q, *(msg(i) for i in range(4))))
    first = t.fetch_for_pool([q], 2, 0.0, [], lambda waker: None)
    _reply_lost_once(t._fast, "script_after")
    second = t.fetch_for_pool([q], 2, 0.0, first, lambda waker: None)
    assert [d.message.headers["n"] for d in second] == [2, 3]
    assert set(raw.hkeys("unacked")) == {d.tag.encode() for d in second}


def test_message_popped_by_brpop_is_kept_until_its_lease_is_recorded(
    make_transport: Callable[..., Transport], raw: redis.Redis
) -> None:
    t = make_transport()
    assert isinstance(t, RedisTransport)
    q = qname()
    fast = t._fast
    real_script = fast.script

    def brpop(announce: Any, *args: Any) -> Any:
        # Stands in for a BRPOP that returns a message sent while it waited.
        t.publish(to_queue(q, msg(5)))
        return [q.encode(), raw.rpop(q)]

    def unreachable_once_popped(source: str, keys: Any, args: Any) -> Any:
        if len(args) > 6:  # the script given the popped message: Redis is gone by then
            raise redis.ConnectionError("Redis went away")
        return real_script(source, keys, args)

    fast.execute_announced = brpop  # type: ignore[method-assign]
    fast.script = unreachable_once_popped  # type: ignore[method-assign]
    t._retry.budget = 0.2
    with pytest.raises(TransportError):
        t.fetch_for_pool([q], 2, 1.0, [], lambda waker: None)
    assert raw.llen(q) == 0 and raw.hlen("unacked") == 0  # only this process has it now
    fast.script = real_script  # type: ignore[method-assign]
    [d] = t.fetch_for_pool([q], 2, 0.0, [], lambda waker: None)
    assert d.message.headers["n"] == 5
    assert raw.hkeys("unacked") == [d.tag.encode()]
