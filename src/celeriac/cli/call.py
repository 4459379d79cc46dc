"""``celeriac call NAME``: send a task by name and print its id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from celeriac.cli.base import ISO8601, CLIContext, Command, ISO8601OrFloat, JSONValue, broker_errors


@click.command(cls=Command)
@click.argument("name")
@click.option(
    "-a",
    "--args",
    "args",
    type=JSONValue(list),
    default="[]",
    help="Positional arguments as a JSON array, e.g. '[2, 2]'.",
)
@click.option(
    "-k",
    "--kwargs",
    "kwargs",
    type=JSONValue(dict),
    default="{}",
    help="Keyword arguments as a JSON object, e.g. '{\"x\": 1}'.",
)
@click.option("--eta", type=ISO8601(), help="Run no earlier than this ISO 8601 date-time.")
@click.option("--countdown", type=float, help="Run no earlier than this many seconds from now.")
@click.option(
    "--expires",
    type=ISO8601OrFloat(),
    help="Discard the task after this many seconds or this ISO 8601 date-time.",
)
@click.option("--serializer", help="Body serializer (default: the app's task_serializer).")
@click.option("--queue", help="Send to this queue.")
@click.option("--exchange", help="Send to this exchange.")
@click.option("--routing-key", help="Use this routing key.")
@click.pass_obj
def call(
    obj: CLIContext,
    name: str,
    args: list[Any],
    kwargs: dict[str, Any],
    eta: datetime | None,
    countdown: float | None,
    expires: float | datetime | None,
    serializer: str | None,
    queue: str | None,
    exchange: str | None,
    routing_key: str | None,
) -> None:
    """Call a task by name: send it to the broker and print its id."""
    options: dict[str, Any] = {}
    for key, value in (
        ("serializer", serializer),
        ("queue", queue),
        ("exchange", exchange),
        ("routing_key", routing_key),
    ):
        if value:
            options[key] = value
    app = obj.app
    with broker_errors(obj):
        result = app.send_task(
            name, args=args, kwargs=kwargs, eta=eta, countdown=countdown, expires=expires, **options
        )
    obj.echo(result.id)
