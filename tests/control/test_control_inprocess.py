"""Control commands against a worker on a thread (memory broker): each command's effect and
reply shape, request filtering (destination, pattern, expiry), and the wire shape of requests."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celery
from celeriac.app.control import Mailbox, flatten_reply
from celeriac.contrib.testing import start_worker
from celeriac.protocol.message import Message
from celeriac.worker.control import matches, signum_of
from celeriac.worker.worker import Worker

from support.waiting import wait_for


@pytest.fixture
def worker(app: Celery) -> Iterator[Worker]:
    @app.task(name="ctl.add", rate_limit="100/s")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="ctl.nap")
    def nap(seconds: float) -> float:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.02)
        return seconds

    with start_worker(app, pool="threads", concurrency=2, hostname="ctl@host") as w:
        yield w


def ask(app: Celery, command: str, **arguments: Any) -> Any:
    replies = app.control.broadcast(
        command, arguments=arguments, reply=True, destination=["ctl@host"], timeout=3
    )
    assert replies, f"no reply to {command}"
    return replies[0]["ctl@host"]


def test_ping_and_inspect_shapes(app: Celery, worker: Worker) -> None:
    inspect = app.control.inspect(destination=["ctl@host"], timeout=3)
    assert inspect.ping() == {"ctl@host": {"ok": "pong"}}
    assert app.control.inspect(destination="ctl@host", timeout=3).ping() == {"ok": "pong"}
    # Only our tasks: shared tasks other test modules defined are registered in every app.
    mine = [t for t in inspect.registered()["ctl@host"] if t.startswith("ctl.")]
    assert mine == ["ctl.add [rate_limit=100/s]", "ctl.nap"]
    assert "ctl.nap" in inspect.registered("rate_limit")["ctl@host"]
    assert isinstance(inspect.clock()["ctl@host"]["clock"], int)
    assert "software -> celeriac" in inspect.report()["ctl@host"]["ok"]
    assert inspect.conf()["ctl@host"]["broker_url"].startswith("memory://")
    assert "task_serializer" in inspect.conf(with_defaults=True)["ctl@host"]
    assert inspect.memsample()["ctl@host"].endswith("MB")
    stats = inspect.stats()["ctl@host"]
    assert stats["pool"]["max-concurrency"] == 2 and stats["prefetch_count"] == 8
    assert isinstance(stats["clock"], str) and stats["broker"]["transport"] == "memory"


def test_active_reserved_scheduled_query_task(app: Celery, worker: Worker) -> None:
    running = [app.send_task("ctl.nap", [2]) for _ in range(2)]
    waiting = app.send_task("ctl.nap", [0])
    later = app.send_task("ctl.add", [1, 2], countdown=30)
    inspect = app.control.inspect(destination=["ctl@host"], timeout=3)
    wait_for(lambda: len(inspect.active()["ctl@host"]) == 2, timeout=5, what="two active")
    active = inspect.active()["ctl@host"]
    assert {t["id"] for t in active} == {r.id for r in running}
    assert active[0]["hostname"] == "ctl@host" and active[0]["time_start"]
    assert [t["id"] for t in inspect.reserved()["ctl@host"]] == [waiting.id]
    (entry,) = inspect.scheduled()["ctl@host"]
    assert entry["request"]["id"] == later.id and entry["eta"] and entry["priority"] == 0
    found = inspect.query_task(running[0].id, [waiting.id, later.id, "unknown"])["ctl@host"]
    assert {k: v[0] for k, v in found.items()} == {
        running[0].id: "active",
        waiting.id: "reserved",
        later.id: "scheduled",
    }
    app.control.revoke(later.id)
    for r in running:
        assert r.get(timeout=10) == 2


def test_revoke_terminate_and_stamped_headers(app: Celery, worker: Worker) -> None:
    result = app.send_task("ctl.nap", [30])
    wait_for(lambda: result.id in worker.consumer.active, timeout=5, what="running")  # type: ignore[union-attr]
    reply = ask(app, "revoke", task_id=[result.id], terminate=True, signal="KILL")
    assert reply == {"ok": f"terminate: {result.id}"}
    wait_for(lambda: app.AsyncResult(result.id).state == "REVOKED", timeout=10, what="REVOKED")
    assert (
        result.id in app.control.inspect(destination=["ctl@host"], timeout=3).revoked()["ctl@host"]
    )
    assert ask(app, "revoke", task_id="not-running", terminate=True) == {
        "ok": "terminate: tasks unknown"
    }
    stamped = app.send_task(
        "ctl.add", [1, 1], countdown=1, stamps={"batch": "b1"}, stamped_headers=["batch"]
    )
    assert "flagged as revoked" in ask(app, "revoke_by_stamped_headers", headers=["batch=b1"])["ok"]
    wait_for(lambda: stamped.state == "REVOKED", timeout=10, what="stamped task REVOKED")


def test_rate_and_time_limits_events_pool_consumers(app: Celery, worker: Worker) -> None:
    assert ask(app, "rate_limit", task_name="ctl.add", rate_limit="5/m") == {
        "ok": "new rate limit set successfully"
    }
    assert app.tasks["ctl.add"].rate_limit == "5/m"
    assert ask(app, "rate_limit", task_name="ctl.add", rate_limit=None)["ok"].startswith(
        "rate limit disabled"
    )
    assert ask(app, "rate_limit", task_name="nope", rate_limit="1/s") == {"error": "unknown task"}
    assert (
        "Invalid rate limit"
        in ask(app, "rate_limit", task_name="ctl.add", rate_limit="x/y")["error"]
    )
    assert ask(app, "time_limit", task_name="ctl.nap", soft=1, hard=2)["ok"]
    assert (app.tasks["ctl.nap"].soft_time_limit, app.tasks["ctl.nap"].time_limit) == (1.0, 2.0)
    assert worker.events.task_events is False
    assert ask(app, "enable_events") == {"ok": "task events enabled"}
    assert worker.events.task_events is True
    assert ask(app, "disable_events") == {"ok": "task events disabled"}
    assert ask(app, "pool_grow", n=2) == {"ok": "pool will grow"}
    assert worker.pool.concurrency == 4
    assert ask(app, "pool_shrink", n=1) == {"ok": "pool will shrink"}
    assert worker.pool.concurrency == 3
    assert "Autoscale not enabled" in ask(app, "autoscale", max=4, min=1)["error"]
    assert ask(app, "add_consumer", queue="extra") == {"ok": "add consumer extra"}
    assert "extra" in worker.queue_names
    queues = app.control.inspect(destination=["ctl@host"], timeout=3).active_queues()
    assert [q["name"] for q in queues["ctl@host"]] == ["celery", "extra"]
    assert app.send_task("ctl.add", [2, 2], queue="extra").get(timeout=10) == 4
    assert ask(app, "cancel_consumer", queue="extra") == {"ok": "no longer consuming from extra"}
    assert "extra" not in worker.queue_names
    assert ask(app, "no_such_thing") == {"error": "No such command: 'no_such_thing'"}
    assert "bad arguments" in ask(app, "rate_limit")["error"]


def test_heartbeat_and_shutdown(app: Celery) -> None:
    with start_worker(app, pool="threads", hostname="bye@host") as w:
        with app.events.Receiver() as receiver:
            app.control.heartbeat(destination=["bye@host"])
            events = wait_for(
                lambda: [e for e in receiver.events(0.5) if e["type"] == "worker-heartbeat"],
                timeout=5,
                what="heartbeat",
            )
            assert events[0]["hostname"] == "bye@host"
        assert app.control.shutdown(destination=["bye@host"]) is None
        assert w.stopped.wait(10)


def test_requests_filtered_by_destination_pattern_and_expiry(app: Celery, worker: Worker) -> None:
    assert app.control.ping(destination=["other@host"], timeout=0.3) == []
    assert app.control.inspect(pattern="ctl@*", timeout=0.5).ping() == {"ctl@host": {"ok": "pong"}}
    assert app.control.inspect(pattern="^ctl@h", matcher="pcre", timeout=0.5).ping()
    assert app.control.inspect(pattern="x*", timeout=0.3).ping() is None
    node = worker.control
    expired = _request(
        {
            "method": "ping",
            "arguments": {},
            "ticket": "t",
            "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "o"},
        },
        expires=time.time() - 1,
    )
    assert node.handle(expired) is None
    fresh = _request(
        {
            "method": "ping",
            "arguments": {},
            "ticket": "t",
            "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "o"},
        },
        expires=time.time() + 5,
    )
    assert node.handle(fresh) == (
        {"exchange": "reply.celery.pidbox", "routing_key": "o"},
        "t",
        {"ok": "pong"},
    )
    no_reply = _request({"method": "ping", "arguments": {}}, expires=0)
    assert node.handle(no_reply) is None


def _request(body: dict[str, Any], expires: float) -> Message:
    return Message(json.dumps(body).encode(), headers={"clock": 1, "expires": expires})


def test_request_wire_shape(app: Celery) -> None:
    sub = app.transport.subscribe("celery.pidbox")
    try:
        app.control.revoke("some-id")
        app.control.broadcast("ping", reply=True, timeout=0.1, destination=["n1@h"])
        (rk1, revoke), (_, ping) = wait_for(lambda: sub.get(1.0), timeout=5, what="requests")
    finally:
        sub.close()
    assert rk1 == ""
    body = json.loads(revoke.body)
    assert body == {
        "method": "revoke",
        "arguments": {"task_id": "some-id", "terminate": False, "signal": "SIGTERM"},
        "destination": None,
        "pattern": None,
        "matcher": None,
    }
    assert set(revoke.headers) == {"clock", "expires"}
    assert revoke.headers["expires"] > time.time()
    body = json.loads(ping.body)
    assert body["destination"] == ["n1@h"] and body["reply_to"] == {
        "exchange": "reply.celery.pidbox",
        "routing_key": app.oid,
    }
    assert len(body["ticket"]) == 36


def test_helpers() -> None:
    assert flatten_reply([{"a": 1}, {"b": 2}]) == {"a": 1, "b": 2}
    assert signum_of("KILL") == signum_of("SIGKILL") == signum_of(9) == signum_of("9") == 9
    assert signum_of(None) == 15
    with pytest.raises(ValueError, match="unknown signal 'NOPE'"):
        signum_of("NOPE")
    assert matches("w1@host", "w1@*", "glob") and not matches("w1@host", "w2@*", None)
    assert matches("w1@host", r"^w\d@", "pcre")
    box = Mailbox("celery")
    reply = box.reply_queue("abc")
    assert (reply.name, reply.routing_key, reply.exchange.name) == (
        "abc.reply.celery.pidbox",
        "abc",
        "reply.celery.pidbox",
    )
    assert not reply.durable and reply.auto_delete and reply.expires == 10.0
    assert not reply.exchange.durable
    node = box.node_queue("w@h")
    assert (node.name, node.exchange.type, node.exchange.durable) == (
        "w@h.celery.pidbox",
        "fanout",
        False,
    )
    with pytest.raises(ValueError, match="matcher"):
        Celery("x", broker="memory://").control.broadcast("ping", matcher="regex")
