"""Worker semantics on the in-memory broker with thread-based pools (fast, no OS processes)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from celeriac import Celery, Task, signals, states
from celeriac.contrib.testing import start_worker
from celeriac.exceptions import Reject, TaskRevokedError
from celeriac.protocol.message import Message, Outgoing

from support.waiting import wait_for

POOLS = ["solo", "threads", "asyncio"]


@pytest.mark.parametrize("pool", POOLS)
def test_runs_task_and_stores_result(app: Celery, pool: str) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with start_worker(app, pool=pool, concurrency=2):
        assert add.delay(2, 3).get(timeout=10) == 5


@pytest.mark.parametrize("pool", POOLS)
def test_async_def_task_in_every_pool(app: Celery, pool: str) -> None:
    @app.task
    async def slow_double(x: int) -> int:
        await asyncio.sleep(0.01)
        return x * 2

    with start_worker(app, pool=pool, concurrency=2):
        assert slow_double.delay(21).get(timeout=10) == 42


def test_asyncio_pool_runs_coroutines_concurrently(app: Celery) -> None:
    @app.task
    async def nap(x: int) -> int:
        await asyncio.sleep(0.5)
        return x

    with start_worker(app, pool="asyncio", concurrency=10):
        started = time.monotonic()
        results = [nap.delay(i) for i in range(10)]
        assert [r.get(timeout=10) for r in results] == list(range(10))
        assert time.monotonic() - started < 3.0


def test_failure_stores_exception_and_traceback(app: Celery) -> None:
    @app.task
    def boom() -> None:
        raise ValueError("kaboom")

    with start_worker(app, pool="threads"):
        result = boom.delay()
        with pytest.raises(ValueError, match="kaboom"):
            result.get(timeout=10)
        assert result.state == states.FAILURE
        assert "ValueError: kaboom" in (result.traceback or "")


def test_retry_with_countdown_republishes(app: Celery) -> None:
    attempts: list[tuple[int, float]] = []

    @app.task(bind=True, max_retries=3)
    def flaky(self: Task[Any, Any]) -> str:
        attempts.append((self.request.retries, time.monotonic()))
        if self.request.retries < 2:
            raise self.retry(countdown=0.3)
        return "done"

    with start_worker(app, pool="threads"):
        assert flaky.delay().get(timeout=15) == "done"
    assert [a for a, _ in attempts] == [0, 1, 2]
    assert attempts[1][1] - attempts[0][1] >= 0.25


def test_wrong_arguments_fail_and_worker_continues(app: Celery) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with start_worker(app, pool="threads"):
        bad = app.send_task(add.name, args=[1])
        with pytest.raises(TypeError):
            bad.get(timeout=10)
        assert add.delay(1, 1).get(timeout=10) == 2


def test_unknown_task_goes_to_dead_letter(app: Celery) -> None:
    @app.task
    def ok() -> int:
        return 1

    with start_worker(app, pool="threads"):
        app.send_task("not.registered", args=[1])
        dead = wait_for(lambda: app.transport.dead_letters(), timeout=10)
        assert "not.registered" in dead[0].reason
        assert dead[0].message.headers["task"] == "not.registered"
        assert ok.delay().get(timeout=10) == 1


def test_malformed_and_unaccepted_messages_go_to_dead_letter(app: Celery) -> None:
    @app.task
    def ok() -> int:
        return 1

    bad = [
        Message(b"not json", {"task": ok.name, "id": "bad-json"}),
        Message(
            b"\x80\x03}q\x00.",
            {"task": ok.name, "id": "pickled"},
            content_type="application/x-python-serialize",
            content_encoding="binary",
        ),
        Message(b'{"no": "task"}', {}),
    ]
    with start_worker(app, pool="threads"):
        app.transport.publish([Outgoing(m, "", "celery") for m in bad])
        dead = wait_for(
            lambda: len(app.transport.dead_letters()) >= 3 and app.transport.dead_letters(),
            timeout=10,
        )
        reasons = " | ".join(d.reason for d in dead)
        assert "ContentDisallowed" in reasons or "not accepted" in reasons.lower()
        assert "DecodeError" in reasons or "decode" in reasons.lower()
        assert ok.delay().get(timeout=10) == 1


def test_expired_task_is_revoked_not_run(app: Celery) -> None:
    ran: list[int] = []

    @app.task
    def f() -> None:
        ran.append(1)

    result = f.apply_async(expires=0.01)
    time.sleep(0.05)
    with start_worker(app, pool="threads"):
        with pytest.raises(TaskRevokedError):
            result.get(timeout=10)
        assert result.state == states.REVOKED
    assert ran == []


def test_eta_held_until_due(app: Celery) -> None:
    ran_at: list[float] = []

    @app.task
    def f() -> None:
        ran_at.append(time.time())

    with start_worker(app, pool="threads"):
        sent = time.time()
        f.apply_async(countdown=1.0).get(timeout=10)
    assert ran_at[0] - sent >= 0.95


def test_far_eta_is_parked_in_broker(app: Celery) -> None:
    app.conf.worker_eta_park_threshold = 0.5

    @app.task
    def f() -> int:
        return 7

    with start_worker(app, pool="threads") as worker:
        result = f.apply_async(countdown=1.5)
        wait_for(
            lambda: not worker.consumer.leased and not worker.consumer.held,
            timeout=5,
            what="the ETA message parked",
        )
        assert result.get(timeout=10) == 7


def test_rate_limit_spaces_tasks(app: Celery) -> None:
    times: list[float] = []

    @app.task(rate_limit="5/s")
    def limited() -> None:
        times.append(time.monotonic())

    @app.task
    def free() -> int:
        return 1

    with start_worker(app, pool="threads", concurrency=4):
        results = [limited.delay() for _ in range(8)]
        assert free.delay().get(timeout=5) == 1  # not blocked behind the limited ones
        for r in results:
            r.get(timeout=10)
    spread = max(times) - min(times)
    assert spread >= 0.5


def test_reject_requeue_and_ignore(app: Celery) -> None:
    seen: list[int] = []

    @app.task(bind=True, acks_late=True)
    def picky(self: Task[Any, Any]) -> str:
        seen.append(1)
        if len(seen) == 1:
            raise Reject("not yet", requeue=True)
        return "ok"

    with start_worker(app, pool="threads"):
        assert picky.delay().get(timeout=10) == "ok"
    assert len(seen) == 2


def test_signals_fire(app: Celery) -> None:
    fired: list[str] = []
    lock = threading.Lock()

    def record(name: str) -> Any:
        def handler(sender: Any = None, **kwargs: Any) -> None:
            with lock:
                fired.append(name)

        return handler

    handlers = {
        "task_received": record("task_received"),
        "task_prerun": record("task_prerun"),
        "task_postrun": record("task_postrun"),
        "task_success": record("task_success"),
        "before_task_publish": record("before_task_publish"),
        "after_task_publish": record("after_task_publish"),
        "worker_init": record("worker_init"),
        "worker_ready": record("worker_ready"),
        "worker_shutdown": record("worker_shutdown"),
    }
    for name, handler in handlers.items():
        getattr(signals, name).connect(handler)
    try:

        @app.task
        def f() -> int:
            return 1

        with start_worker(app, pool="threads"):
            f.delay().get(timeout=10)
        assert set(handlers) <= set(fired)
    finally:
        for name, handler in handlers.items():
            getattr(signals, name).disconnect(handler)


def test_task_failure_signal(app: Celery) -> None:
    got: list[Any] = []

    def handler(sender: Any = None, exception: Any = None, **kwargs: Any) -> None:
        got.append(exception)

    signals.task_failure.connect(handler)
    try:

        @app.task
        def boom() -> None:
            raise KeyError("k")

        with start_worker(app, pool="threads"), pytest.raises(KeyError):
            boom.delay().get(timeout=10)
        wait_for(lambda: got, timeout=5)
        assert isinstance(got[0], KeyError)
    finally:
        signals.task_failure.disconnect(handler)


@pytest.mark.parametrize("pool", ["threads", "asyncio"])
def test_soft_time_limit_in_thread_pools(app: Celery, pool: str) -> None:
    from celeriac.exceptions import SoftTimeLimitExceeded

    @app.task(soft_time_limit=0.3)
    def spin() -> str:
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                pass
        except SoftTimeLimitExceeded:
            return "cleaned up"
        return "ran to the end"

    with start_worker(app, pool=pool):
        assert spin.delay().get(timeout=10) == "cleaned up"


def test_asyncio_hard_time_limit_cancels(app: Celery) -> None:
    from celeriac.exceptions import TimeLimitExceeded

    @app.task(time_limit=0.3)
    async def forever() -> None:
        await asyncio.sleep(30)

    with start_worker(app, pool="asyncio"), pytest.raises(TimeLimitExceeded):
        forever.delay().get(timeout=10)


def test_task_track_started(app: Celery) -> None:
    gate = threading.Event()

    @app.task(track_started=True)
    def wait() -> None:
        gate.wait(10)

    with start_worker(app, pool="threads"):
        result = wait.delay()
        wait_for(lambda: result.state == states.STARTED, timeout=10)
        gate.set()
        result.get(timeout=10)


def test_settling_a_message_handed_early_waits_for_its_fetch(app: Celery) -> None:
    """A transport may hand a message over before it recorded the lease (Redis: the message
    BRPOP returned, while the fetch script runs). Its ack must not reach the broker before that
    fetch returns, or the lease recorded after it would outlive the task and run it again."""
    transport = app.transport
    events: list[str] = []
    plain_fetch, plain_ack = transport.fetch, transport.ack

    def fetch_early(queues: Any, limit: int, timeout: float, early: Any) -> list[Any]:
        got = plain_fetch(queues, limit, timeout)
        if not got:
            return got
        early(got[:1])
        time.sleep(0.5)  # the task starts and is acked early meanwhile
        events.append("fetch returned")
        return got[1:]

    def ack(deliveries: Any) -> None:
        events.extend(f"ack {d.message.headers['id']}" for d in deliveries)
        plain_ack(deliveries)

    transport.fetch_early = fetch_early  # type: ignore[method-assign]
    transport.ack = ack  # type: ignore[method-assign]
    started = threading.Event()

    @app.task
    def quick() -> str:
        started.set()
        return "done"

    with start_worker(app, pool="threads", concurrency=1):
        result = quick.delay()
        assert result.get(timeout=10) == "done"
        assert started.is_set()
        wait_for(lambda: f"ack {result.id}" in events, timeout=10, what="the ack")
    first_fetch = events.index("fetch returned")
    assert events.index(f"ack {result.id}") > first_fetch


def test_a_message_handed_early_during_shutdown_goes_back_after_its_fetch(app: Celery) -> None:
    """Shutdown began while the fetch that handed a message over was still recording it: the
    message goes back to the queue, and only once that fetch returned."""
    transport = app.transport
    events: list[str] = []
    plain_fetch, plain_requeue = transport.fetch, transport.requeue
    handing = threading.Event()
    consumers: list[Any] = []

    def fetch_early(queues: Any, limit: int, timeout: float, early: Any) -> list[Any]:
        got = plain_fetch(queues, limit, timeout)
        if not got:
            return got
        consumers[0].stopping = True  # shutdown begins just as the message arrives
        early(got[:1])
        handing.set()
        time.sleep(0.5)
        events.append("fetch returned")
        return got[1:]

    def requeue(deliveries: Any) -> None:
        events.extend(f"requeue {d.message.headers['id']}" for d in deliveries)
        plain_requeue(deliveries)

    transport.fetch_early = fetch_early  # type: ignore[method-assign]
    transport.requeue = requeue  # type: ignore[method-assign]

    @app.task
    def never() -> str:
        return "ran"

    with start_worker(app, pool="threads", concurrency=1) as worker:
        consumers.append(worker.consumer)
        result = never.delay()
        assert handing.wait(10)
        wait_for(lambda: f"requeue {result.id}" in events, timeout=10, what="the requeue")
    assert events.index(f"requeue {result.id}") > events.index("fetch returned")
    assert transport.queue_length("celery") == 1
