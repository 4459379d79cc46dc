"""The rpc:// result store: replies travel as AMQP messages to the sending client's queue."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import aiormq
import pytest

from celeriac.backends import create_store
from celeriac.backends.rpc import RPCResultStore
from celeriac.exceptions import ImproperlyConfigured

from support.amqpvhost import list_queues, private_vhost

pytestmark = pytest.mark.amqp


@pytest.fixture(scope="module")
def amqp_url() -> Iterator[str]:
    with private_vhost("celeriac-rpc") as url:
        yield url


@pytest.fixture
def stores(amqp_url: str) -> Iterator[list[RPCResultStore]]:
    made: list[RPCResultStore] = []
    yield made
    for s in made:
        s.close()


def make(stores: list[RPCResultStore], url: str, **options: object) -> RPCResultStore:
    s = create_store("rpc://", {"broker_url": url, **options})
    assert isinstance(s, RPCResultStore)
    stores.append(s)
    return s


def meta(task_id: str, status: str, result: object = None) -> bytes:
    return json.dumps(
        {
            "status": status,
            "result": result,
            "traceback": None,
            "children": [],
            "date_done": None,
            "task_id": task_id,
        }
    ).encode()


def test_reply_reaches_the_client_and_latest_state_wins(
    stores: list[RPCResultStore], amqp_url: str
) -> None:
    client, worker = make(stores, amqp_url), make(stores, amqp_url)
    oid, tid = str(uuid.uuid4()), str(uuid.uuid4())
    key = f"celery-task-meta-{tid}"
    client.on_task_call(oid, tid)
    with client.watch([key]) as w:
        assert client.get(key) is None
        worker.send_reply(oid, key, meta(tid, "STARTED"), 60)
        worker.send_reply(oid, key, meta(tid, "SUCCESS", 5), 60)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            raw = client.get(key)
            if raw is not None and json.loads(raw)["status"] == "SUCCESS":
                break
            w.wait(0.5)
    assert json.loads(client.get(key) or b"{}")["result"] == 5
    assert client.get_many([key, "celery-task-meta-other"])[1] is None


def test_watch_wakes_on_reply_from_another_thread(
    stores: list[RPCResultStore], amqp_url: str
) -> None:
    client, worker = make(stores, amqp_url), make(stores, amqp_url)
    oid, tid = str(uuid.uuid4()), str(uuid.uuid4())
    key = f"celery-task-meta-{tid}"
    client.on_task_call(oid, tid)
    with client.watch([key]) as w:
        timer = threading.Timer(0.2, worker.send_reply, (oid, key, meta(tid, "SUCCESS"), 60))
        timer.start()
        start = time.monotonic()
        assert w.wait(5.0) is True
        assert time.monotonic() - start < 3
        timer.join()


def test_reply_queue_declared_as_celery_does(stores: list[RPCResultStore], amqp_url: str) -> None:
    client = make(stores, amqp_url, expires=120)
    oid = str(uuid.uuid4())
    client.on_task_call(oid, "t")
    vhost = amqp_url.rsplit("/", 1)[1]
    rows = {r[0]: r[1:] for r in list_queues(vhost, "name", "durable", "auto_delete", "arguments")}
    durable, auto_delete, arguments = rows[oid]
    assert (durable, auto_delete) == ("true", "true")
    assert "x-expires" in arguments and "120000" in arguments


def test_wire_format_matches_celery(stores: list[RPCResultStore], amqp_url: str) -> None:
    """What a worker sends: default exchange, routing key = reply_to, correlation_id, mode 1."""
    import asyncio

    worker = make(stores, amqp_url)
    oid, tid = f"probe-{uuid.uuid4()}", str(uuid.uuid4())

    async def probe() -> aiormq.abc.DeliveredMessage:
        conn = await aiormq.connect(amqp_url)
        ch = await conn.channel()
        await ch.queue_declare(oid, auto_delete=False)
        await asyncio.get_running_loop().run_in_executor(
            None, worker.send_reply, oid, f"celery-task-meta-{tid}", meta(tid, "SUCCESS", 3), 60
        )
        for _ in range(50):
            got = await ch.basic_get(oid, no_ack=True)
            if got.body:
                await conn.close()
                return got
            await asyncio.sleep(0.1)
        raise AssertionError("no reply arrived")

    got = asyncio.run(probe())
    props = got.header.properties
    assert got.delivery.exchange == "" and got.delivery.routing_key == oid
    assert props.correlation_id == tid
    assert props.delivery_mode == 1
    assert props.content_type == "application/json"
    assert props.headers == {}
    assert json.loads(got.body)["result"] == 3


def test_chords_are_refused_with_a_clear_error(stores: list[RPCResultStore], amqp_url: str) -> None:
    s = make(stores, amqp_url)
    with pytest.raises(NotImplementedError, match="does not support chords"):
        s.chord_init("g", 2, 60)


def test_needs_an_amqp_broker() -> None:
    with pytest.raises(ImproperlyConfigured, match="RabbitMQ broker_url"):
        RPCResultStore("rpc://", {"broker_url": "redis://localhost"})
