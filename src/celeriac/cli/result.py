"""``celeriac result TASK_ID``: wait for a task's result and print it."""

from __future__ import annotations

from typing import Any

import click

from celeriac.cli.base import CLIContext, Command, broker_errors


@click.command(cls=Command)
@click.argument("task_id")
@click.option("-t", "--task", help="The task's name (its AsyncResult class is used).")
@click.option("--traceback", is_flag=True, help="Print the failure's traceback instead.")
@click.option(
    "--timeout",
    type=float,
    help="Give up after this many seconds (celeriac extension; default: wait forever).",
)
@click.pass_obj
def result(
    obj: CLIContext, task_id: str, task: str | None, traceback: bool, timeout: float | None
) -> None:
    """Print the return value of a task (waits until it is ready, like Celery)."""
    from celeriac.exceptions import TimeoutError

    app = obj.app
    with broker_errors(obj):
        if task:
            registered = app.tasks.get(task)
            if registered is None:
                raise click.BadParameter(
                    f"no task named {task!r} is registered in this app", param_hint="'--task'"
                )
            async_result = registered.AsyncResult(task_id)
        else:
            async_result = app.AsyncResult(task_id)
        if traceback:
            obj.echo(async_result.traceback)
            return
        try:
            value: Any = async_result.get(timeout=timeout)
        except TimeoutError as exc:
            raise click.ClickException(
                f"task {task_id} was not ready after {timeout}s (state {async_result.state})"
            ) from exc
        except Exception as exc:
            raise click.ClickException(
                f"task {task_id} failed: {type(exc).__name__}: {exc} "
                "(--traceback prints the traceback)"
            ) from exc
    obj.echo(value)
