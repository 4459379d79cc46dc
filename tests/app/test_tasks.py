"""Defining, calling and typing tasks, the way Celery's docs show it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from celeriac import Celery, Task, shared_task
from celeriac.exceptions import NotRegistered
from celeriac.protocol.task import parse


def _published(app: Celery, queue: str = "celery") -> list[Any]:
    deliveries = app.transport.fetch([queue], 100, 0.1)
    app.transport.ack(deliveries)
    return deliveries


def test_task_decorator_names_and_registers(app: Celery) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    assert add.name.endswith(".add")
    assert app.tasks[add.name] is add
    assert add(2, 3) == 5
    with pytest.raises(NotRegistered):
        app.tasks["nope"]


def test_task_options(app: Celery) -> None:
    @app.task(
        name="custom.name",
        max_retries=7,
        default_retry_delay=3,
        rate_limit="10/s",
        acks_late=True,
        queue="hipri",
        priority=5,
        time_limit=30,
        soft_time_limit=20,
    )
    def f() -> None:
        pass

    assert f.name == "custom.name"
    assert (f.max_retries, f.default_retry_delay, f.rate_limit) == (7, 3, "10/s")
    assert f.acks_late is True
    assert (f.queue, f.priority, f.time_limit, f.soft_time_limit) == ("hipri", 5, 30, 20)


def test_delay_publishes_protocol_v2(app: Celery) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(2, 3)
    [delivery] = _published(app)
    message = delivery.message
    assert message.content_type == "application/json"
    assert message.headers["task"] == add.name
    assert message.headers["id"] == result.id
    assert message.headers["root_id"] == result.id
    assert message.headers["argsrepr"] == "(2, 3)"
    assert message.headers["kwargsrepr"] == "{}"
    assert message.headers["timelimit"] == [None, None]
    assert message.headers["origin"].startswith("gen")
    for key in (
        "lang",
        "shadow",
        "eta",
        "expires",
        "group",
        "group_index",
        "retries",
        "parent_id",
        "ignore_result",
        "replaced_task_nesting",
        "stamped_headers",
        "stamps",
    ):
        assert key in message.headers
    assert message.properties["correlation_id"] == result.id
    assert message.properties["delivery_mode"] == 2
    assert message.properties["reply_to"]
    body = json.loads(message.body)
    assert body == [[2, 3], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]


def test_apply_async_options_on_the_wire(app: Celery) -> None:
    @app.task
    def add(x: int, y: int = 0) -> int:
        return x + y

    before = datetime.now(UTC)
    add.apply_async(
        (2,),
        {"y": 3},
        countdown=60,
        expires=3600,
        priority=7,
        queue="email",
        shadow="add-shadowed",
        time_limit=30,
        soft_time_limit=20,
        headers={"custom": "x"},
    )
    [delivery] = _published(app, "email")
    msg = parse(delivery.message)
    assert msg.eta is not None and timedelta(seconds=59) < msg.eta - before < timedelta(seconds=62)
    assert msg.expires is not None
    assert delivery.message.properties["expiration"] == "3600000"
    assert delivery.message.properties["priority"] == 7
    assert msg.headers["shadow"] == "add-shadowed"
    assert msg.headers["timelimit"] == [30, 20]
    assert msg.headers["custom"] == "x"
    assert msg.args == [2] and msg.kwargs == {"y": 3}


def test_wrong_arguments_raise_type_error_in_caller(app: Celery) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(TypeError):
        add.delay(1)
    with pytest.raises(TypeError):
        add.delay(1, 2, z=3)
    assert _published(app) == []


def test_typing_false_skips_check(app: Celery) -> None:
    @app.task(typing=False)
    def add(x: int, y: int) -> int:
        return x + y

    add.delay(1)
    assert len(_published(app)) == 1


def test_bound_task_sees_request(app: Celery) -> None:
    @app.task(bind=True)
    def whoami(self: Task[Any, Any]) -> str:
        return str(self.request.id)

    result = whoami.apply(task_id="abc")
    assert result.get() == "abc"


def test_send_task_by_name(app: Celery) -> None:
    result = app.send_task("remote.task", args=[1], kwargs={"a": 2}, queue="q1")
    [delivery] = _published(app, "q1")
    assert delivery.message.headers["task"] == "remote.task"
    assert delivery.message.headers["id"] == result.id


def test_shared_task_binds_to_current_app(app: Celery) -> None:
    @shared_task
    def mul(x: int, y: int) -> int:
        return x * y

    assert mul.name in app.tasks
    assert mul(3, 4) == 12
    other = Celery("other", broker="memory://other-shared", backend="memory://other-shared")
    try:
        assert mul.name in other.tasks
        assert other.tasks[mul.name] is not app.tasks[mul.name]
        assert mul.app is other  # the current app is now `other`
    finally:
        other.close()


def test_task_base_class_state_is_shared_per_process(app: Celery) -> None:
    class DatabaseTask(Task[Any, Any]):
        _db: object | None = None

        @property
        def db(self) -> object:
            if DatabaseTask._db is None:
                DatabaseTask._db = object()
            return DatabaseTask._db

    @app.task(base=DatabaseTask, bind=True)
    def one(self: DatabaseTask) -> object:
        return self.db

    @app.task(base=DatabaseTask, bind=True)
    def two(self: DatabaseTask) -> object:
        return self.db

    assert one.apply().get() is two.apply().get()


def test_async_def_task_runs_eagerly(app: Celery) -> None:
    @app.task
    async def double(x: int) -> int:
        return x * 2

    assert double.apply((21,)).get() == 42


def test_routing_task_routes(app: Celery) -> None:
    import re

    app.conf.task_routes = {
        "feeds.tasks.*": {"queue": "feeds"},
        "web.tasks.exact": "web",
        re.compile(r"(video|image)\.tasks\..*"): {"queue": "media"},
    }
    for name, queue in [
        ("feeds.tasks.import_feed", "feeds"),
        ("web.tasks.exact", "web"),
        ("image.tasks.resize", "media"),
        ("other.task", "celery"),
    ]:
        app.send_task(name)
        [delivery] = _published(app, queue)
        assert delivery.message.headers["task"] == name


def test_router_function_and_list(app: Celery) -> None:
    def route_task(
        name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any
    ) -> Any:
        if name.startswith("special."):
            return {"queue": "special", "priority": 9}
        return None

    app.conf.task_routes = [route_task, {"x.y": {"queue": "xy"}}]
    app.send_task("special.one")
    [d] = _published(app, "special")
    assert d.message.properties["priority"] == 9
    app.send_task("x.y")
    assert len(_published(app, "xy")) == 1


def test_unserializable_argument_is_a_clear_error(app: Celery) -> None:
    @app.task
    def f(x: Any) -> None:
        pass

    with pytest.raises(Exception) as info:
        f.delay(object())
    assert "object" in str(info.value)
    assert _published(app) == []
