"""Events: the receiver takes single events and task.multi batches (also from Celery's own
dispatcher), task-sent from the client, task events from a worker with -E or after
enable_events, and the cluster State behind ``celeriac events``."""

from __future__ import annotations

import json
import time

import pytest

from celeriac import Celery
from celeriac.contrib.testing import start_worker
from celeriac.events.dispatcher import EventDispatcher
from celeriac.events.receiver import EventReceiver, events_from_message
from celeriac.events.state import State
from celeriac.protocol.message import Message

from support.waiting import wait_for

SAMPLE = "/work/shared/wire-samples/redis-worker/event_task_multi_envelope.json"


def test_events_from_message_accepts_dicts_and_lists() -> None:
    one = Message(json.dumps({"type": "worker-online", "hostname": "a"}).encode())
    many = Message(
        json.dumps(
            [
                {"type": "task-received", "uuid": "1"},
                {"type": "task-started", "uuid": "1"},
                {"no": "type"},
            ]
        ).encode()
    )
    assert [e["type"] for e in events_from_message(one)] == ["worker-online"]
    assert [e["type"] for e in events_from_message(many)] == ["task-received", "task-started"]
    assert events_from_message(Message(b"not json")) == []
    try:
        with open(SAMPLE) as fh:
            captured = json.load(fh)["decoded_body"]
    except FileNotFoundError:
        pytest.skip("wire samples not present")
    body = Message(json.dumps(captured).encode())
    assert events_from_message(body)[0]["type"] == "task-received"


def test_receiver_capture_with_handlers(app: Celery) -> None:
    seen: list[str] = []
    receiver = EventReceiver(
        app,
        handlers={
            "task-succeeded": lambda e: seen.append("ok"),
            "*": lambda e: seen.append(e["type"]),
        },
    )
    with receiver:
        sender = EventDispatcher(app.transport.broadcast, "w@h")
        sender.send("worker-online", freq=2.0)
        sender.send("task-started", buffered=True, uuid="u")
        sender.send("task-succeeded", buffered=True, uuid="u", result="1", runtime=0.1)
        sender.flush()
        receiver.capture(limit=3, timeout=5)
    assert seen == ["worker-online", "task-started", "ok"]


def test_task_sent_event_from_the_client(app: Celery) -> None:
    app.conf.task_send_sent_event = True
    with app.events.Receiver() as receiver:
        result = app.send_task("ctl.add", [2, 3], kwargs={"z": 1}, countdown=60)
        (event,) = wait_for(lambda: receiver.events(0.5), timeout=5, what="task-sent")
    assert event["type"] == "task-sent" and event["uuid"] == result.id
    assert event["hostname"].startswith("gen") and event["name"] == "ctl.add"
    assert (event["args"], event["kwargs"]) == ("(2, 3)", "{'z': 1}")
    assert (event["queue"], event["exchange"], event["routing_key"]) == ("celery", "", "celery")
    assert event["retries"] == 0 and event["eta"] and event["expires"] is None
    assert {"utcoffset", "pid", "clock", "timestamp", "root_id", "parent_id"} <= set(event)


def test_worker_task_events_after_enable_events(app: Celery) -> None:
    @app.task(name="ctl.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="ctl.fail")
    def fail() -> None:
        raise ValueError("kaboom")

    state = State()
    with (
        start_worker(app, pool="threads", hostname="ev@host") as worker,
        app.events.Receiver(handlers={"*": state.event}) as receiver,
    ):
        assert add.delay(1, 1).get(timeout=10) == 2
        app.control.enable_events(destination=["ev@host"], reply=True, timeout=3)
        assert add.delay(2, 2).get(timeout=10) == 4
        fail.delay().get(timeout=10, propagate=False)

        def done() -> bool:
            receiver.capture(timeout=0.3)
            return state.counts["FAILURE"] == 1 and state.counts["SUCCESS"] == 1

        wait_for(done, timeout=10, what="task events")
        worker.events._beat()
        receiver.capture(timeout=0.5)
    assert state.counts["RECEIVED"] == 2 and state.counts["STARTED"] == 2
    (failure,) = state.failures
    assert failure.name == "ctl.fail" and "kaboom" in (failure.exception or "")
    assert failure.worker == "ev@host"
    (online,) = state.alive_workers()
    assert online.hostname == "ev@host" and online.freq == 2.0
    assert state.rates()["SUCCESS"] > 0


@pytest.mark.parametrize(
    ("extra", "least", "most"),
    [({"heartbeat_interval": 0.2}, 4, 20), ({"without_heartbeat": True}, 0, 0)],
)
def test_heartbeat_interval_and_without_heartbeat(
    app: Celery, extra: dict[str, object], least: int, most: int
) -> None:
    beats: list[float] = []
    with (
        app.events.Receiver(
            handlers={"worker-heartbeat": lambda e: beats.append(e["freq"])}
        ) as receiver,
        start_worker(app, pool="threads", hostname="hb@host", extra=extra),
    ):
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            receiver.capture(timeout=0.2)
    assert least <= len(beats) <= most, beats
    assert all(freq == 0.2 for freq in beats)


def test_state_worker_expiry_and_offline() -> None:
    state = State()
    now = time.time()
    state.event({"type": "worker-heartbeat", "hostname": "a", "freq": 2.0, "timestamp": now - 5})
    state.event({"type": "worker-heartbeat", "hostname": "b", "freq": 2.0, "timestamp": now})
    assert [w.hostname for w in state.alive_workers(now)] == ["b"]
    state.event({"type": "worker-offline", "hostname": "b", "timestamp": now})
    assert state.alive_workers(now) == []
    assert state.workers["a"].heartbeat_age(now) == pytest.approx(5.0)
