"""The tasks the canvas tests run, registered on any app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celeriac import Celery, Task

#: Errback calls seen in this process: (errback name, first argument).
ERRBACK_CALLS: list[tuple[str, Any]] = []


@dataclass
class Tasks:
    """The tasks every scenario uses, registered on one app."""

    app: Celery
    add: Any
    mul: Any
    tsum: Any
    boom: Any
    identity: Any
    record_error: Any
    on_error_request: Any
    replace_with_chain: Any
    replace_with_group: Any
    grows_chord: Any


def define_tasks(app: Celery) -> Tasks:
    @app.task(name="canvas.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="canvas.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    @app.task(name="canvas.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    @app.task(name="canvas.boom")
    def boom(*args: Any) -> None:
        raise ValueError("kaboom")

    @app.task(name="canvas.identity")
    def identity(value: Any) -> Any:
        return value

    @app.task(name="canvas.record_error")
    def record_error(task_id: str) -> str:
        ERRBACK_CALLS.append(("record_error", task_id))
        return task_id

    @app.task(name="canvas.on_error_request")
    def on_error_request(request: Any, exc: BaseException, traceback: Any) -> None:
        ERRBACK_CALLS.append(("on_error_request", (request.id, repr(exc))))

    @app.task(name="canvas.replace_with_chain", bind=True)
    def replace_with_chain(self: Task[Any, Any], x: int) -> Any:
        return self.replace(add.s(x, 1) | mul.s(10))

    @app.task(name="canvas.replace_with_group", bind=True)
    def replace_with_group(self: Task[Any, Any], x: int) -> Any:
        from celeriac import group

        return self.replace(group(add.s(x, i) for i in range(3)))

    @app.task(name="canvas.grows_chord", bind=True)
    def grows_chord(self: Task[Any, Any], x: int) -> int:
        self.add_to_chord(add.si(x, 100))
        return x

    return Tasks(
        app,
        add,
        mul,
        tsum,
        boom,
        identity,
        record_error,
        on_error_request,
        replace_with_chain,
        replace_with_group,
        grows_chord,
    )
