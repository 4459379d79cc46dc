"""The RabbitMQ transport: the shared contract, plus AMQP declarations, routing and robustness."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiormq
import pytest
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec

from celeriac.exceptions import ImproperlyConfigured, TransportError
from celeriac.protocol.entities import Exchange, Queue
from celeriac.protocol.message import Message, Outgoing
from celeriac.transports import create_transport
from celeriac.transports.base import Transport
from celeriac.utils.amqp_conn import parse_amqp_url

from contract.transport_contract import TransportContract, drain, msg, qname, to_queue
from support.amqpvhost import list_exchanges, list_queues, private_vhost, rabbitmqctl
from support.waiting import wait_for
from support.workerproc import Project, kill_tree

pytestmark = pytest.mark.amqp


@pytest.fixture(scope="module")
def amqp_url() -> Iterator[str]:
    with private_vhost("celeriac-transport") as url:
        yield url


@pytest.fixture
def make_transport(amqp_url: str) -> Iterator[Callable[..., Transport]]:
    made: list[Transport] = []

    def make(**options: Any) -> Transport:
        t = create_transport(amqp_url, options)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


class TestAMQPTransport(TransportContract):
    def test_expired_lease_is_redelivered_to_another_consumer(
        self, make_transport: Callable[..., Transport]
    ) -> None:
        """On AMQP a lease lasts as long as the holder's connection, not visibility_timeout:
        while the holder lives nothing is redelivered; when it goes, RabbitMQ redelivers."""
        holder, other, q = make_transport(visibility_timeout=1), make_transport(), qname()
        holder.publish(to_queue(q, msg("x")))
        assert len(holder.fetch([q], 1, 2.0)) == 1
        assert other.fetch([q], 1, 1.5) == []
        holder.close()
        got = wait_for(lambda: other.fetch([q], 1, 0.5), timeout=10, what="redelivery")
        assert got[0].message.headers["n"] == "x"
        assert got[0].redelivered is True
        other.ack(got)

    def test_requeue_goes_to_head_marked_redelivered(
        self, make_transport: Callable[..., Transport]
    ) -> None:
        """RabbitMQ puts a requeued message back in its place, but a message already on its way
        to this consumer (prefetch) may still arrive before it: nothing lost, order not strict."""
        t, q = make_transport(), qname()
        t.publish(to_queue(q, msg(1), msg(2)))
        [first] = t.fetch([q], 1, 2.0)
        assert first.message.headers["n"] == 1
        t.requeue([first])
        got = drain(t, [q], 2)
        assert sorted(d.message.headers["n"] for d in got) == [1, 2]
        assert next(d for d in got if d.message.headers["n"] == 1).redelivered is True
        t.ack(got)


# -- helpers -------------------------------------------------------------------------------------
def vhost_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def raw_get(url: str, queue: str) -> DeliveredMessage:
    """basic.get one message with a plain aiormq client (not acked: it goes back on close)."""

    async def run() -> DeliveredMessage:
        conn = await aiormq.connect(url)
        try:
            ch = await conn.channel()
            for _ in range(50):
                got = await ch.basic_get(queue, no_ack=False)
                if isinstance(got.delivery, spec.Basic.GetOk):
                    return got
                await asyncio.sleep(0.1)
            raise AssertionError(f"nothing in {queue}")
        finally:
            await conn.close()

    return asyncio.run(run())


def queues_by_name(url: str) -> dict[str, list[str]]:
    rows = list_queues(vhost_of(url), "name", "durable", "auto_delete", "exclusive", "arguments")
    return {r[0]: r[1:] for r in rows}


def exchanges_by_name(url: str) -> dict[str, list[str]]:
    rows = list_exchanges(vhost_of(url), "name", "type", "durable", "auto_delete")
    return {r[0]: r[1:] for r in rows}


# -- declarations (what Celery declares, PROTOCOL §4.1) --------------------------------------------
def test_declarations_match_celery(make_transport: Callable[..., Transport], amqp_url: str) -> None:
    t = make_transport()
    t.declare(Queue("celery", Exchange("celery", "direct"), "celery"))
    t.declare(Queue("prio-q", max_priority=10))
    t.declare(Queue("qq", queue_arguments={"x-queue-type": "quorum"}))
    t.publish([Outgoing(msg("auto"), "", "email-auto")])  # created on demand, as Celery does
    t.broadcast("celeryev", "worker.heartbeat", msg("hb"))
    t.broadcast("celery.pidbox", "", msg("ping"))
    t.broadcast("reply.celery.pidbox", "some-oid", msg("pong"))
    queues, exchanges = queues_by_name(amqp_url), exchanges_by_name(amqp_url)
    assert queues["celery"] == ["true", "false", "false", "[]"]
    assert queues["email-auto"] == ["true", "false", "false", "[]"]
    assert queues["prio-q"][:3] == ["true", "false", "false"]
    assert '{"x-max-priority",10}' in queues["prio-q"][3]
    assert '"x-queue-type",<<"quorum">>' in queues["qq"][3] or "quorum" in queues["qq"][3]
    assert exchanges["celery"] == ["direct", "true", "false"]
    assert exchanges["email-auto"] == ["direct", "true", "false"]
    assert exchanges["celeryev"] == ["topic", "true", "false"]
    assert exchanges["celery.pidbox"] == ["fanout", "false", "false"]
    assert exchanges["reply.celery.pidbox"] == ["direct", "false", "false"]
    t.purge("email-auto")


def test_precondition_failed_names_queue_and_flag_and_keeps_working(
    make_transport: Callable[..., Transport],
) -> None:
    t, q = make_transport(), qname()
    t.declare(Queue(q))
    with pytest.raises(TransportError, match=rf"(?s){q}.*x-max-priority"):
        t.declare(Queue(q, max_priority=10))
    with pytest.raises(TransportError, match=rf"(?s){q}.*durable"):
        t.declare(Queue(q, durable=False))
    # The connection and the other channels live on.
    t.publish(to_queue(q, msg("still")))
    [d] = drain(t, [q], 1)
    assert d.message.headers["n"] == "still"
    t.ack([d])


def test_wire_format_is_plain_amqp(make_transport: Callable[..., Transport], amqp_url: str) -> None:
    t, q = make_transport(), qname()
    body = b'[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
    headers = {
        "lang": "py",
        "task": "t.add",
        "id": "abc",
        "eta": None,
        "retries": 0,
        "timelimit": [None, None],
        "stamps": {},
        "expires": 1795477075.123456,
    }
    props = {
        "correlation_id": "abc",
        "reply_to": "oid-1",
        "delivery_mode": 2,
        "priority": 3,
        "expiration": "3600000",
    }
    t.declare(Queue(q))
    t.publish([Outgoing(Message(body, headers, props), "", q)])
    got = raw_get(amqp_url, q)
    p = got.header.properties
    assert got.body == body  # raw, not base64
    assert (p.content_type, p.content_encoding) == ("application/json", "utf-8")
    assert (p.delivery_mode, p.priority, p.correlation_id, p.reply_to) == (2, 3, "abc", "oid-1")
    assert p.expiration == "3600000"
    assert p.message_id is None  # Celery sends none
    assert p.headers["expires"] == 1795477075.123456  # a double, not a single-precision float
    assert p.headers["timelimit"] == [None, None] and p.headers["stamps"] == {}


def test_reads_messages_published_by_kombu(
    make_transport: Callable[..., Transport], amqp_url: str
) -> None:
    kombu = pytest.importorskip("kombu")
    t, q = make_transport(), qname()
    t.declare(Queue(q))
    with kombu.Connection(amqp_url.replace("amqp://", "pyamqp://")) as conn:
        conn.Producer().publish(
            {"x": 1.5},
            exchange="",
            routing_key=q,
            headers={"f": 0.1, "n": None, "l": [1, "a"]},
            priority=4,
            expiration=60,
            correlation_id="c1",
            serializer="json",
        )
    [d] = drain(t, [q], 1)
    assert d.message.body == b'{"x": 1.5}'
    assert d.message.headers == {"f": 0.1, "n": None, "l": [1, "a"]}
    assert d.message.properties["priority"] == 4
    assert d.message.properties["expiration"] == "60000"
    assert d.message.properties["correlation_id"] == "c1"
    t.ack([d])


# -- routing -------------------------------------------------------------------------------------
def test_fanout_exchange_reaches_every_bound_queue(
    make_transport: Callable[..., Transport],
) -> None:
    t, q1, q2 = make_transport(), qname(), qname()
    ex = Exchange(f"fan-{q1}", "fanout")
    t.declare(Queue(q1, ex, routing_key=""))
    t.declare(Queue(q2, ex, routing_key=""))
    t.publish([Outgoing(msg("all"), ex.name, "whatever")])
    got = drain(t, [q1], 1) + drain(t, [q2], 1)
    assert sorted(d.queue for d in got) == sorted([q1, q2])
    t.ack(got)


def test_priorities_served_highest_first(make_transport: Callable[..., Transport]) -> None:
    t, q = make_transport(), qname()
    t.declare(Queue(q, max_priority=10))
    order = [0, 5, 9, 3, 9, 1]
    t.publish(to_queue(q, *(msg(f"{p}-{i}", priority=p) for i, p in enumerate(order))))
    got = drain(t, [q], len(order))
    assert [d.message.priority for d in got] == sorted(order, reverse=True)
    t.ack(got)


def test_prefetch_follows_the_window(make_transport: Callable[..., Transport]) -> None:
    """A consumer asking for 2 holds 2: the rest stays available to other consumers."""
    first, second, q = make_transport(), make_transport(), qname()
    first.publish(to_queue(q, *(msg(i) for i in range(10))))
    held = first.fetch([q], 2, 2.0)
    assert len(held) == 2
    rest = drain(second, [q], 8, timeout=5)
    assert len(rest) == 8
    second.ack(rest)
    first.ack(held)


def test_multiple_ack_batches_and_out_of_order_acks(
    make_transport: Callable[..., Transport],
) -> None:
    t, q = make_transport(), qname()
    t.publish(to_queue(q, *(msg(i) for i in range(6))))
    got = drain(t, [q], 6)
    t.ack([got[1], got[3]])  # not a prefix: acked one by one
    t.ack([got[0], got[2]])  # now a prefix of everything outstanding
    t.ack(got[4:])
    assert t.fetch([q], 1, 0.5) == []
    t.close()
    assert make_transport().queue_length(q) == 0


# -- parking ---------------------------------------------------------------------------------------
def test_park_uses_bucket_queue_and_hops_back_on_time(
    make_transport: Callable[..., Transport], amqp_url: str
) -> None:
    t, q = make_transport(), qname()
    t.publish(to_queue(q, msg("later")))
    [d] = t.fetch([q], 1, 2.0)
    due = time.time() + 1.5
    t.park(d, due)
    buckets = {n: a for n, a in queues_by_name(amqp_url).items() if n.endswith(f".{q}")}
    assert f"celeriac.park.1024.{q}" in buckets  # then 256, 128, ... as it hops back
    assert '{"x-message-ttl",1024}' in buckets[f"celeriac.park.1024.{q}"][3]
    assert t.fetch([q], 1, 0.5) == []
    [back] = drain(t, [q], 1, timeout=10)
    assert time.time() >= due - 0.01
    assert back.message.headers["n"] == "later"
    assert not any(k.startswith("x-celeriac") or k == "x-death" for k in back.message.headers)
    t.ack([back])


# -- dead letters ----------------------------------------------------------------------------------
def test_dead_letter_queue_is_a_durable_queue(
    make_transport: Callable[..., Transport], amqp_url: str
) -> None:
    dlq = f"dlq-{qname()}"
    t, q = make_transport(dead_letter_queue=dlq), qname()
    t.publish(to_queue(q, msg("bad")))
    [d] = drain(t, [q], 1)
    t.dead_letter(d, "kaboom")
    assert queues_by_name(amqp_url)[dlq][:2] == ["true", "false"]
    raw = raw_get(amqp_url, dlq)
    assert raw.header.properties.headers["x-celeriac-dead-reason"] == "kaboom"
    [dead] = t.dead_letters()
    assert (dead.reason, dead.queue, dead.message.headers["n"]) == ("kaboom", q, "bad")
    assert t.purge_dead([dead.id]) == 1


# -- connection loss -------------------------------------------------------------------------------
def close_connections(url: str) -> None:
    rabbitmqctl("close_all_connections", "-p", vhost_of(url), "test: connection loss")


def test_connection_loss_redelivers_held_and_resumes(
    make_transport: Callable[..., Transport], amqp_url: str
) -> None:
    t, q = make_transport(), qname()
    sub = t.subscribe(f"bcast-{q}", ["#"])
    t.publish(to_queue(q, msg(1), msg(2)))
    held = drain(t, [q], 2)
    close_connections(amqp_url)
    t.ack(held)  # stale leases: dropped quietly, RabbitMQ gives the messages back
    back = drain(t, [q], 2, timeout=20)
    assert sorted(d.message.headers["n"] for d in back) == [1, 2]
    assert all(d.redelivered for d in back)
    t.ack(back)
    t.publish(to_queue(q, msg(3)))
    assert [d.message.headers["n"] for d in drain(t, [q], 1)] == [3]
    # The subscription came back too.
    wait_for(
        lambda: t.broadcast(f"bcast-{q}", "x", msg("b")) or sub.get(0.3),
        timeout=10,
        what="broadcast after reconnect",
    )
    sub.close()


def test_unreachable_broker_raises_transport_error_naming_it() -> None:
    t = create_transport(
        "amqp://guest:guest@127.0.0.1:1//", {"retry_budget": 0.5, "connect_timeout": 0.3}
    )
    try:
        with pytest.raises(TransportError, match=r"127\.0\.0\.1:1"):
            t.publish(to_queue("q", msg(1)))
    finally:
        t.close()


def test_no_startup_retry_fails_at_once_from_the_app_setting() -> None:
    from celeriac import Celery

    app = Celery("noretry", broker="amqp://guest:guest@127.0.0.1:1//", set_as_current=False)
    app.conf.update(broker_connection_retry_on_startup=False, broker_connection_timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(TransportError, match=r"after 1 attempt"):
            app.transport.publish(to_queue("q", msg(1)))
        assert time.monotonic() - started < 5
    finally:
        app.close()


def test_failover_to_the_next_url(amqp_url: str) -> None:
    good = amqp_url.split("://", 1)[1]
    t = create_transport(
        f"amqp://guest:guest@127.0.0.1:1//;amqp://{good}", {"connect_timeout": 0.5}
    )
    try:
        q = qname()
        t.publish(to_queue(q, msg("via-second")))
        assert [d.message.headers["n"] for d in drain(t, [q], 1)] == ["via-second"]
    finally:
        t.close()


# -- configuration ---------------------------------------------------------------------------------
def test_url_parsing() -> None:
    p = parse_amqp_url("amqp://u%40x:p%2Fw@h:5673/v%2Fh", {"heartbeat": 30})
    [e] = p.endpoints
    assert (e.host, e.port, e.user, e.password, e.vhost, e.tls) == (
        "h",
        5673,
        "u@x",
        "p/w",
        "v/h",
        False,
    )
    assert p.heartbeat == 30
    assert parse_amqp_url("pyamqp://h//").endpoints[0].vhost == "/"
    assert parse_amqp_url("amqp://").endpoints[0].host == "localhost"
    s = parse_amqp_url("amqps://h/x").endpoints[0]
    assert (s.port, s.tls) == (5671, True)
    assert parse_amqp_url("amqp://h", {"ssl": {"cert_reqs": "none"}}).endpoints[0].tls
    two = parse_amqp_url("amqp://a//;amqp://b:5680//")
    assert [(e.host, e.port) for e in two.endpoints] == [("a", 5672), ("b", 5680)]
    with pytest.raises(ImproperlyConfigured, match="cert_reqs"):
        parse_amqp_url("amqp://h", {"ssl": {"cert_reqs": "maybe"}})
    with pytest.raises(ImproperlyConfigured, match="amqp://"):
        parse_amqp_url("redis://h")


# -- real worker processes -------------------------------------------------------------------------
@pytest.mark.slow
def test_worker_killed_mid_task_has_its_message_redelivered(amqp_url: str, tmp_path: Path) -> None:
    project = Project(tmp_path, broker=amqp_url)
    with project.worker("-c", "1", "-P", "prefork") as proc:
        project.app.send_task("proj.slow_late", ("k", 30), queue="celery")
        wait_for(lambda: "start:k" in project.executions(), timeout=20, what="task started")
        kill_tree(proc.pid)  # SIGKILL: no ack, no goodbye; RabbitMQ notices the closed socket
        proc.wait(10)
    project.app.close()
    with project.worker("-c", "1", "-P", "prefork"):
        wait_for(
            lambda: project.executions().count("start:k") == 2,
            timeout=30,
            what="redelivered task started again",
        )


# -- broker restart (keep last: it stops the whole RabbitMQ app for a few seconds) -----------------
@pytest.mark.slow
def test_broker_restart_mid_load_loses_nothing_confirmed(amqp_url: str) -> None:
    opts = {"retry_budget": 90, "connect_timeout": 2}
    producer, consumer = create_transport(amqp_url, opts), create_transport(amqp_url, opts)
    q = qname()
    producer.declare(Queue(q))
    confirmed: list[int] = []
    received: set[int] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def produce() -> None:
        n = 0
        while not stop.is_set() and n < 3000:
            try:
                producer.publish(to_queue(q, *(msg(i) for i in range(n, n + 10))))
            except TransportError as exc:
                errors.append(exc)
                return
            confirmed.extend(range(n, n + 10))
            n += 10
            time.sleep(0.005)

    def consume() -> None:
        while not stop.is_set():
            try:
                got = consumer.fetch([q], 50, 0.5)
                received.update(d.message.headers["n"] for d in got)
                consumer.ack(got)
            except TransportError:
                time.sleep(0.2)

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for th in threads:
        th.start()
    try:
        wait_for(lambda: len(confirmed) >= 300, timeout=30, what="load before the restart")
        rabbitmqctl("stop_app")
        try:
            time.sleep(1.0)  # the broker stays down a moment: clients must notice and wait
        finally:
            rabbitmqctl("start_app")
        wait_for(lambda: len(confirmed) >= 3000 or errors, timeout=90, what="load after restart")
        wait_for(lambda: received >= set(confirmed), timeout=60, what="every confirmed message")
    finally:
        stop.set()
        for th in threads:
            th.join(30)
        producer.close()
        consumer.close()
    assert not errors
    assert received >= set(confirmed)
