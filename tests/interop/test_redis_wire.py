"""Wire-level interoperability with kombu 5.7 / Celery 5.7 on one Redis (DB 11).

kombu and celery are test-only dependencies: they play the other side of every exchange here.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from celeriac.backends.redis import RedisResultStore
from celeriac.protocol.entities import Queue
from celeriac.protocol.message import Message, Outgoing
from celeriac.transports.redis import RedisTransport

from contract.transport_contract import drain
from support.servers import clean_redis_db
from support.waiting import wait_for

kombu = pytest.importorskip("kombu")
celery = pytest.importorskip("celery")

DB = 11
SAMPLES = Path("/work/shared/wire-samples")
pytestmark = [pytest.mark.redis, pytest.mark.interop]


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
def make_transport(redis_url: str) -> Iterator[Callable[..., RedisTransport]]:
    made: list[RedisTransport] = []

    def make(**options: Any) -> RedisTransport:
        t = RedisTransport(redis_url, options)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


@pytest.fixture
def kombu_conn(redis_url: str) -> Iterator[Any]:
    conns: list[Any] = []

    def make(**transport_options: Any) -> Any:
        conn = kombu.Connection(redis_url, transport_options=transport_options)
        conns.append(conn)
        return conn

    yield make
    for conn in conns:
        conn.release()


@pytest.fixture
def celery_app(redis_url: str) -> Iterator[Any]:
    app = celery.Celery("interop", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = False
    yield app
    app.close()


def _stored_envelope(raw: redis.Redis, key: str) -> dict[str, Any]:
    [value] = raw.lrange(key, 0, -1)
    env: dict[str, Any] = json.loads(value)
    return env


# -- kombu / Celery publish, celeriac fetches -----------------------------------------------------
def test_kombu_producer_message_is_fetched_identically(
    raw: redis.Redis, kombu_conn: Callable[..., Any], make_transport: Callable[..., RedisTransport]
) -> None:
    conn = kombu_conn()
    with conn.Producer() as producer:
        producer.publish(
            {"x": [1, 2.5, "é"]},
            routing_key="kq",
            serializer="json",
            headers={"task": "t.x", "nested": {"a": None}},
            correlation_id="c-1",
            reply_to="r-1",
            priority=4,
            delivery_mode=2,
        )
    env = _stored_envelope(raw, "kq\x06\x163")  # kombu rounds 4 down to step 3
    t = make_transport()
    [d] = drain(t, ["kq"], 1)
    assert d.message.body == base64.b64decode(env["body"])
    assert json.loads(d.message.body) == {"x": [1, 2.5, "é"]}
    assert d.message.headers == env["headers"]
    props = dict(env["properties"])
    info = props.pop("delivery_info")
    props.pop("body_encoding")
    assert d.message.properties == props
    assert d.message.content_type == env["content-type"] == "application/json"
    assert d.message.content_encoding == env["content-encoding"] == "utf-8"
    assert d.tag == props["delivery_tag"]
    assert (d.exchange, d.routing_key) == (info["exchange"], info["routing_key"])
    entry = json.loads(raw.hget("unacked", d.tag) or b"null")
    assert entry == [env, "", "kq"]
    t.ack([d])


def test_celery_send_task_is_fetched(
    raw: redis.Redis, celery_app: Any, make_transport: Callable[..., RedisTransport]
) -> None:
    res = celery_app.send_task("capapp.add", args=(2, 3), priority=7, queue="email")
    assert raw.smembers("_kombu.binding.email") == {b"email\x06\x16\x06\x16email"}
    env = _stored_envelope(raw, "email\x06\x166")
    t = make_transport()
    [d] = drain(t, ["email"], 1)
    assert d.message.headers == env["headers"]
    assert d.message.headers["id"] == res.id
    assert d.message.headers["task"] == "capapp.add"
    body = json.loads(d.message.body)
    assert body[0] == [2, 3]
    assert set(body[2]) == {"callbacks", "errbacks", "chain", "chord"}
    assert d.message.properties["priority"] == 7
    assert d.message.properties["correlation_id"] == res.id
    t.ack([d])


# -- celeriac publishes, kombu consumes -----------------------------------------------------------
def test_celeriac_message_is_consumed_by_kombu(
    kombu_conn: Callable[..., Any], make_transport: Callable[..., RedisTransport]
) -> None:
    t = make_transport()
    body = json.dumps(
        [[2, 3], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    )
    headers = {
        "lang": "py",
        "task": "capapp.add",
        "id": "abc",
        "eta": None,
        "retries": 0,
        "timelimit": [None, None],
        "stamps": {},
    }
    props = {"correlation_id": "abc", "reply_to": "oid", "delivery_mode": 2, "priority": 0}
    t.publish([Outgoing(Message(body.encode(), headers, props), "", "cq")])
    conn = kombu_conn()
    sq = conn.SimpleQueue("cq")
    m = sq.get(timeout=5)
    assert m.body == body.encode()
    assert m.decode() == json.loads(body)
    assert m.headers == headers
    assert m.properties["correlation_id"] == "abc"
    assert m.properties["reply_to"] == "oid"
    assert m.properties["delivery_mode"] == 2
    assert m.properties["priority"] == 0
    assert m.content_type == "application/json"
    assert m.delivery_info["routing_key"] == "cq"
    m.ack()
    sq.close()


def test_priority_and_binding_layout_matches_capture(
    raw: redis.Redis, make_transport: Callable[..., RedisTransport]
) -> None:
    capture = json.loads((SAMPLES / "redis-tasks/priority_steps.json").read_text())["broker_db5"]
    t = make_transport()
    t.declare(Queue("celery"))
    pri = {
        key: [e["envelope"]["properties"]["priority"] for e in v["value"]]
        for key, v in capture.items()
        if v["type"] == "list"
    }
    for priorities in pri.values():
        for p in reversed(priorities):  # LRANGE shows the newest first
            t.publish([Outgoing(Message(b"1", properties={"priority": p}), "", "celery")])
    ours = {k.decode(): raw.type(k).decode() for k in raw.keys("*")}
    assert ours == {k: v["type"] for k, v in capture.items()}
    for key in ("_kombu.binding.celery", "_kombu.binding_permanent.celery"):
        assert {m.decode() for m in raw.smembers(key)} == set(capture[key]["value"])
    for key, priorities in pri.items():
        stored = [json.loads(v)["properties"]["priority"] for v in raw.lrange(key, 0, -1)]
        assert stored == priorities


# -- restoring each other's abandoned messages ----------------------------------------------------
def test_kombu_restores_message_held_by_dead_celeriac_consumer(
    kombu_conn: Callable[..., Any], make_transport: Callable[..., RedisTransport]
) -> None:
    producer = make_transport()
    producer.publish([Outgoing(Message(b'"held"', {"n": 1}), "", "rq")])
    holder = make_transport(visibility_timeout=1)
    [held] = holder.fetch(["rq"], 1, 2.0)
    holder.close()  # gone without ack or renew
    conn = kombu_conn(visibility_timeout=1)
    channel = conn.default_channel
    wait_for(lambda: _restore(channel), timeout=10, what="kombu restore")
    m = conn.SimpleQueue("rq").get(timeout=5)
    assert m.headers["n"] == 1
    assert m.delivery_info.get("redelivered") is True
    assert m.properties["delivery_tag"] == held.tag
    m.ack()


def _restore(channel: Any) -> bool:
    before = channel.client.hlen("unacked")
    channel.qos.restore_visible(num=10, interval=1)
    return bool(before) and channel.client.hlen("unacked") == 0


def test_celeriac_restores_message_held_by_dead_kombu_consumer(
    raw: redis.Redis, kombu_conn: Callable[..., Any], make_transport: Callable[..., RedisTransport]
) -> None:
    conn = kombu_conn(visibility_timeout=1)
    with conn.Producer() as producer:
        producer.publish({"v": 1}, routing_key="kr", serializer="json", headers={"n": 2})
    channel = conn.default_channel
    channel.qos.restore_at_shutdown = False  # the holder "dies": no clean-shutdown restore
    m = conn.SimpleQueue("kr").get(timeout=5)
    assert raw.hexists("unacked", m.delivery_tag)
    t = make_transport(visibility_timeout=1)
    got = wait_for(lambda: t.fetch(["kr"], 1, 0.5), timeout=10, what="celeriac restore")
    assert got[0].tag == m.delivery_tag
    assert got[0].redelivered is True
    assert got[0].message.headers["n"] == 2
    t.ack(got)


def test_renewed_lease_is_left_alone_by_kombu(
    raw: redis.Redis, kombu_conn: Callable[..., Any], make_transport: Callable[..., RedisTransport]
) -> None:
    t = make_transport(visibility_timeout=1)
    t.publish([Outgoing(Message(b"1"), "", "lq")])
    held = t.fetch(["lq"], 1, 2.0)
    channel = kombu_conn(visibility_timeout=1).default_channel
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        t.renew(held)
        channel.qos.restore_visible(num=10, interval=1)
        assert raw.hexists("unacked", held[0].tag)
        time.sleep(0.2)
    t.ack(held)


# -- fanout ---------------------------------------------------------------------------------------
def test_broadcast_both_ways(
    kombu_conn: Callable[..., Any], make_transport: Callable[..., RedisTransport]
) -> None:
    t = make_transport()
    sub = t.subscribe("celeryev", ["worker.#"])
    conn = kombu_conn()
    ex = kombu.Exchange("celeryev", type="fanout")
    with conn.Producer() as producer:
        producer.publish(
            {"type": "worker-heartbeat"},
            exchange=ex,
            routing_key="worker.heartbeat",
            serializer="json",
            declare=[ex],
        )
    got: list[Any] = []
    wait_for(lambda: got.extend(sub.get(0.2)) or got, timeout=5, what="kombu broadcast")
    assert got[0][0] == "worker.heartbeat"
    assert json.loads(got[0][1].body) == {"type": "worker-heartbeat"}
    sub.close()

    q = kombu.Queue(f"celeryev.{uuid.uuid4()}", ex, routing_key="worker.#", auto_delete=True)
    consumer_conn = kombu_conn()
    received: list[Any] = []
    with consumer_conn.Consumer(q, callbacks=[lambda body, m: received.append((body, m))]):
        for _ in range(3):
            try:
                consumer_conn.drain_events(timeout=0.1)
            except TimeoutError:
                pass
        t.broadcast("celeryev", "worker.online", Message(b'{"type": "worker-online"}'))
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            try:
                consumer_conn.drain_events(timeout=0.2)
            except TimeoutError:
                pass
    assert received and received[0][0] == {"type": "worker-online"}


# -- result store ---------------------------------------------------------------------------------
def _meta(task_id: str, result: Any) -> bytes:
    return json.dumps(
        {
            "status": "SUCCESS",
            "result": result,
            "traceback": None,
            "children": [],
            "date_done": "2026-01-01T00:00:00+00:00",
            "task_id": task_id,
        }
    ).encode()


def test_celery_client_gets_our_result_through_pubsub(redis_url: str, celery_app: Any) -> None:
    store = RedisResultStore(redis_url)
    tid = str(uuid.uuid4())
    res = celery_app.AsyncResult(tid)
    timer = threading.Timer(0.5, lambda: store.set(f"celery-task-meta-{tid}", _meta(tid, 5), 86400))
    timer.start()
    try:
        assert res.get(timeout=10) == 5
    finally:
        timer.join()
        store.close()


def test_we_read_and_watch_celery_results(redis_url: str, celery_app: Any) -> None:
    store = RedisResultStore(redis_url)
    tid = str(uuid.uuid4())
    key = f"celery-task-meta-{tid}"
    try:
        with store.watch([key]) as w:
            assert store.get(key) is None
            timer = threading.Timer(0.3, lambda: celery_app.backend.store_result(tid, 7, "SUCCESS"))
            timer.start()
            assert w.wait(5.0) is True
            timer.join()
        meta = json.loads(store.get(key) or b"{}")
        assert (meta["status"], meta["result"], meta["task_id"]) == ("SUCCESS", 7, tid)
    finally:
        store.close()


@pytest.mark.parametrize("celery_last", [True, False])
def test_chord_completed_half_by_celery_publishes_once(
    redis_url: str, celery_app: Any, celery_last: bool
) -> None:
    backend = celery_app.backend
    store = RedisResultStore(redis_url)
    published: list[Any] = []
    celery_app.amqp._retry_publish = lambda fn, *args, **kw: published.append(args)
    gid = str(uuid.uuid4())
    callback = celery_app.signature("capapp.tsum", options={"task_id": str(uuid.uuid4())})
    n = 4
    if celery_last:
        store.chord_init(gid, n, 86400)
    else:
        backend.set_chord_size(gid, n)
    ours_won: list[list[bytes]] = []

    def celery_part(i: int) -> None:
        req = SimpleNamespace(id=f"t{i}", group=gid, group_index=i, chord=dict(callback))
        backend.on_chord_part_return(req, "SUCCESS", i * 10)

    def our_part(i: int) -> None:
        value = backend.encode([1, f"t{i}", "SUCCESS", i * 10])
        got = store.chord_part(
            gid, f"t{i}", i, value.encode() if isinstance(value, str) else value, 86400
        )
        if got is not None:
            ours_won.append(got)
            published.append(([json.loads(v)[3] for v in got],))
            store.chord_release(gid)

    order = (
        [our_part, our_part, celery_part, celery_part]
        if celery_last
        else [celery_part, celery_part, our_part, our_part]
    )
    for i, part in enumerate(order):
        part(i)
    part(n - 1)  # a redelivered last part must not publish again
    store.close()
    assert len(published) == 1
    assert list(published[0][0]) == [0, 10, 20, 30]
    assert bool(ours_won) is not celery_last
