"""The contract every transport must pass.

A transport's test module subclasses :class:`TransportContract` and provides a ``make_transport``
fixture: a factory ``make_transport(**options) -> Transport`` whose transports share one broker
and are closed after the test.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from celeriac.protocol.entities import Exchange, Queue
from celeriac.protocol.message import Delivery, Message, Outgoing
from celeriac.transports.base import Transport

from support.waiting import wait_for

MakeTransport = Callable[..., Transport]


def msg(n: Any, priority: int | None = None, **headers: Any) -> Message:
    props: dict[str, Any] = {"correlation_id": str(n), "delivery_mode": 2}
    if priority is not None:
        props["priority"] = priority
    return Message(body=f'"{n}"'.encode(), headers={"n": n, **headers}, properties=props)


def qname() -> str:
    return f"q-{uuid.uuid4().hex[:10]}"


def to_queue(q: str, *messages: Message) -> list[Outgoing]:
    return [Outgoing(m, "", q) for m in messages]


def drain(t: Transport, queues: list[str], expect: int, timeout: float = 10.0) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < expect and time.monotonic() < deadline:
        got += t.fetch(queues, expect - len(got), 0.5)
    return got


class TransportContract:
    """Behaviour every transport shares. See the module docstring for the fixture it needs."""

    def test_roundtrip_keeps_message_exactly(self, make_transport: MakeTransport) -> None:
        t, q = make_transport(), qname()
        original = Message(
            body=b'[[1, "\xc3\xa9"], {}, {"chain": null}]',
            headers={
                "task": "t.add",
                "id": "abc",
                "eta": None,
                "timelimit": [None, 5],
                "stamps": {},
                "retries": 0,
                "nested": {"a": [1, 2.5, True]},
            },
            properties={
                "correlation_id": "abc",
                "reply_to": "r",
                "delivery_mode": 2,
                "priority": 0,
            },
            content_type="application/json",
            content_encoding="utf-8",
        )
        t.publish(to_queue(q, original))
        [d] = drain(t, [q], 1)
        assert d.message.body == original.body
        assert d.message.content_type == "application/json"
        assert d.message.content_encoding == "utf-8"
        for key, value in original.headers.items():
            assert d.message.headers[key] == value
        for key in ("correlation_id", "reply_to", "delivery_mode"):
            assert d.message.properties[key] == original.properties[key]
        assert d.queue == q
        assert d.redelivered is False
        t.ack([d])

    def test_binary_body(self, make_transport: MakeTransport) -> None:
        t, q = make_transport(), qname()
        body = bytes(range(256))
        t.publish(
            [
                Outgoing(
                    Message(body, content_type="application/x-msgpack", content_encoding="binary"),
                    "",
                    q,
                )
            ]
        )
        [d] = drain(t, [q], 1)
        assert d.message.body == body
        t.ack([d])

    def test_fifo_and_limit(self, make_transport: MakeTransport) -> None:
        t, q = make_transport(), qname()
        t.publish(to_queue(q, *(msg(i) for i in range(10))))
        # A fetch returns what has arrived, never more than asked: a push transport may hand
        # the first of a burst before the rest is in.
        first: list[Delivery] = []
        deadline = time.monotonic() + 10
        while len(first) < 4 and time.monotonic() < deadline:
            got = t.fetch([q], 4 - len(first), 2.0)
            assert len(got) <= 4 - len(first)
            first += got
        assert [d.message.headers["n"] for d in first] == [0, 1, 2, 3]
        rest = drain(t, [q], 6)
        assert [d.message.headers["n"] for d in rest] == [4, 5, 6, 7, 8, 9]
        t.ack(first + rest)

    def test_fetch_nowait_takes_what_is_ready_in_order(self, make_transport: MakeTransport) -> None:
        t, q = make_transport(), qname()
        t.publish(to_queue(q, *(msg(i) for i in range(6))))
        first = t.fetch([q], 2, 2.0)  # a consumer is set up by the first fetch
        taken = list(first)
        deadline = time.monotonic() + 5
        while len(taken) < 6 and time.monotonic() < deadline:
            got = t.fetch_nowait([q], 2)
            if got is None:  # this transport has no such call: fetch() serves
                got = t.fetch([q], 2, 0.5)
            assert len(got) <= 2
            taken += got
        assert [d.message.headers["n"] for d in taken] == [0, 1, 2, 3, 4, 5]
        start = time.monotonic()
        assert not t.fetch_nowait([q], 2)  # nothing left: no waiting
        assert time.monotonic() - start < 1.0
        t.ack(taken)

    def test_fetch_times_out_empty(self, make_transport: MakeTransport) -> None:
        t = make_transport()
        start = time.monotonic()
        assert t.fetch([qname()], 5, 0.3) == []
        assert 0.2 <= time.monotonic() - start < 3.0

    def test_fetch_wakes_on_publish(self, make_transport: MakeTransport) -> None:
        consumer, producer, q = make_transport(), make_transport(), qname()
        timer = threading.Timer(0.3, lambda: producer.publish(to_queue(q, msg("late"))))
        timer.start()
        start = time.monotonic()
        got = consumer.fetch([q], 1, 8.0)
        elapsed = time.monotonic() - start
        timer.join()
        assert [d.message.headers["n"] for d in got] == ["late"]
        assert elapsed < 3.0
        consumer.ack(got)

    def test_priority_higher_first(self, make_transport: MakeTransport) -> None:
        t, q = make_transport(), qname()
        t.declare(Queue(q, max_priority=10))
        t.publish(to_queue(q, msg("low", priority=0), msg("high", priority=9)))
        got = drain(t, [q], 2)
        expected = ["low", "high"] if t.priority_reversed else ["high", "low"]
        assert [d.message.headers["n"] for d in got] == expected
        t.ack(got)

    def test_queue_order_preference(self, make_transport: MakeTransport) -> None:
        t, q1, q2 = make_transport(), qname(), qname()
        t.publish(to_queue(q2, msg("b")))
        t.publish(to_queue(q1, msg("a")))
        got = drain(t, [q1, q2], 2)
        assert {d.message.headers["n"] for d in got} == {"a", "b"}
        assert got[0].queue == q1
        t.ack(got)

    def test_direct_exchange_binding(self, make_transport: MakeTransport) -> None:
        t, q = make_transport(), qname()
        ex = f"ex-{q}"
        t.declare(Queue(q, Exchange(ex, "direct"), routing_key="rk"))
        t.publish([Outgoing(msg("via-ex"), ex, "rk")])
        [d] = drain(t, [q], 1)
        assert d.message.headers["n"] == "via-ex"
        t.ack([d])

    def test_topic_exchange_binding(self, make_transport: MakeTransport) -> None:
        t, q1, q2 = make_transport(), qname(), qname()
        ex = f"topic-{q1}"
        t.declare(Queue(q1, Exchange(ex, "topic"), routing_key="feed.#"))
        t.declare(Queue(q2, Exchange(ex, "topic"), routing_key="*.news"))
        t.publish([Outgoing(msg("both"), ex, "feed.news")])
        t.publish([Outgoing(msg("only1"), ex, "feed.sport.x")])
        got1 = drain(t, [q1], 2)
        got2 = drain(t, [q2], 1)
        assert sorted(d.message.headers["n"] for d in got1) == ["both", "only1"]
        assert [d.message.headers["n"] for d in got2] == ["both"]
        t.ack(got1 + got2)

    def test_ack_removes(self, make_transport: MakeTransport) -> None:
        t, q = make_transport(visibility_timeout=1), qname()
        t.publish(to_queue(q, msg(1)))
        got = drain(t, [q], 1)
        t.ack(got)
        assert t.fetch([q], 1, 1.8) == []
        assert t.queue_length(q) == 0

    def test_requeue_goes_to_head_marked_redelivered(self, make_transport: MakeTransport) -> None:
        t, q = make_transport(), qname()
        t.publish(to_queue(q, msg(1), msg(2)))
        [first] = t.fetch([q], 1, 2.0)
        t.requeue([first])
        got = drain(t, [q], 2)
        assert [d.message.headers["n"] for d in got] == [1, 2]
        assert got[0].redelivered is True
        t.ack(got)

    def test_expired_lease_is_redelivered_to_another_consumer(
        self, make_transport: MakeTransport
    ) -> None:
        holder, other, q = (
            make_transport(visibility_timeout=1),
            make_transport(visibility_timeout=1),
            qname(),
        )
        holder.publish(to_queue(q, msg("x")))
        assert len(holder.fetch([q], 1, 2.0)) == 1
        got = wait_for(lambda: other.fetch([q], 1, 0.5), timeout=10, what="lease expiry")
        assert got[0].message.headers["n"] == "x"
        assert got[0].redelivered is True
        other.ack(got)

    def test_renewed_lease_is_not_redelivered(self, make_transport: MakeTransport) -> None:
        holder, other, q = (
            make_transport(visibility_timeout=1),
            make_transport(visibility_timeout=1),
            qname(),
        )
        holder.publish(to_queue(q, msg("held")))
        held = holder.fetch([q], 1, 2.0)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            holder.renew(held)
            assert other.fetch([q], 1, 0.25) == []
        holder.ack(held)

    def test_park_hides_until_due(self, make_transport: MakeTransport) -> None:
        t, q = make_transport(), qname()
        t.publish(to_queue(q, msg("later")))
        [d] = t.fetch([q], 1, 2.0)
        t.park(d, time.time() + 1.0)
        assert t.fetch([q], 1, 0.3) == []
        got = drain(t, [q], 1, timeout=5.0)
        assert [g.message.headers["n"] for g in got] == ["later"]
        t.ack(got)

    def test_dead_letter_inspect_requeue_purge(self, make_transport: MakeTransport) -> None:
        t, q = make_transport(), qname()
        t.purge_dead()
        t.publish(to_queue(q, msg("bad1"), msg("bad2")))
        got = drain(t, [q], 2)
        for d in got:
            t.dead_letter(d, f"reason for {d.message.headers['n']}")
        dead = t.dead_letters()
        assert sorted(x.reason for x in dead) == ["reason for bad1", "reason for bad2"]
        assert {x.queue for x in dead} == {q}
        one = next(x for x in dead if x.message.headers["n"] == "bad1")
        assert t.requeue_dead([one.id]) == 1
        [back] = drain(t, [q], 1)
        assert back.message.headers["n"] == "bad1"
        t.ack([back])
        assert t.purge_dead() == 1
        assert t.dead_letters() == []

    def test_queue_length_and_purge(self, make_transport: MakeTransport) -> None:
        t, q = make_transport(), qname()
        t.publish(to_queue(q, *(msg(i) for i in range(5))))
        assert t.queue_length(q) == 5
        assert t.purge(q) == 5
        assert t.queue_length(q) == 0
        assert t.fetch([q], 1, 0.2) == []

    def test_each_message_to_exactly_one_consumer(self, make_transport: MakeTransport) -> None:
        q, total = qname(), 600
        producer = make_transport()
        consumers = [make_transport() for _ in range(3)]
        seen: list[int] = []
        lock = threading.Lock()
        done = threading.Event()

        def consume(t: Transport) -> None:
            while not done.is_set():
                got = t.fetch([q], 16, 0.2)
                with lock:
                    seen.extend(d.message.headers["n"] for d in got)
                t.ack(got)

        threads = [threading.Thread(target=consume, args=(c,)) for c in consumers]
        for th in threads:
            th.start()
        for start in range(0, total, 50):
            producer.publish(to_queue(q, *(msg(i) for i in range(start, start + 50))))
        wait_for(lambda: len(seen) >= total, timeout=30, what="all messages consumed")
        done.set()
        for th in threads:
            th.join()
        assert sorted(seen) == list(range(total))

    def test_broadcast_reaches_current_subscribers(self, make_transport: MakeTransport) -> None:
        t = make_transport()
        ex = f"bcast-{uuid.uuid4().hex[:8]}"
        sub_all = t.subscribe(ex, ["#"])
        sub_worker = make_transport().subscribe(ex, ["worker.*"])
        try:
            time.sleep(0.05)  # pub/sub brokers need the subscription registered server-side
            t.broadcast(ex, "worker.heartbeat", msg("hb"))
            t.broadcast(ex, "task.multi", msg("tasks"))
            got_all: list[Any] = []
            wait_for(lambda: got_all.extend(sub_all.get(0.2)) or len(got_all) >= 2, timeout=5)
            assert sorted(rk for rk, _ in got_all) == ["task.multi", "worker.heartbeat"]
            got_worker: list[Any] = []
            wait_for(lambda: got_worker.extend(sub_worker.get(0.2)) or got_worker, timeout=5)
            assert [m.headers["n"] for _, m in got_worker] == ["hb"]
            assert sub_worker.get(0.3) == []
        finally:
            sub_all.close()
            sub_worker.close()

    def test_bound_queues_lists_the_fanout_members(self, make_transport: MakeTransport) -> None:
        t = make_transport()
        ex = Exchange(f"fan-{uuid.uuid4().hex[:8]}", "fanout", durable=False)
        if t.bound_queues(ex.name) is None:
            pytest.skip(f"{type(t).__name__} cannot list bindings (mingle waits its timeout)")
        assert t.bound_queues(ex.name) == []
        for name in ("b.node", "a.node"):
            t.declare(Queue(name, ex, routing_key="", durable=False))
        assert sorted(make_transport().bound_queues(ex.name) or []) == ["a.node", "b.node"]
        t.unbind(Queue("a.node", ex, routing_key="", durable=False))
        assert make_transport().bound_queues(ex.name) == ["b.node"]

    @pytest.mark.parametrize("count", [1, 200])
    def test_batch_publish(self, make_transport: MakeTransport, count: int) -> None:
        t, q = make_transport(), qname()
        t.publish(to_queue(q, *(msg(i) for i in range(count))))
        assert t.queue_length(q) == count
        got = drain(t, [q], count)
        assert len(got) == count
        t.ack(got)
