"""``celeriac control``: send a control command to the workers (Celery 5's commands)."""

from __future__ import annotations

import json

import click

from celeriac.cli.base import CLIContext, Command, broker_errors, flatten
from celeriac.cli.inspect import (
    RemoteCommand,
    check_command,
    compile_arguments,
    list_commands,
    no_replies,
    remote_options,
    say_reply,
)

CONTROL_COMMANDS: dict[str, RemoteCommand] = {
    "add_consumer": RemoteCommand(
        "Tell worker(s) to consume from task queue by name.",
        (("queue", str), ("exchange", str), ("exchange_type", str), ("routing_key", str)),
        signature="<queue> [exchange [type [routing_key]]]",
    ),
    "autoscale": RemoteCommand(
        "Modify autoscale settings.", (("max", int), ("min", int)), signature="[max [min]]"
    ),
    "cancel_consumer": RemoteCommand(
        "Tell worker(s) to stop consuming from task queue by name.",
        (("queue", str),),
        signature="<queue>",
    ),
    "disable_events": RemoteCommand("Tell worker(s) to stop sending task-related events."),
    "enable_events": RemoteCommand("Tell worker(s) to send task-related events."),
    "heartbeat": RemoteCommand("Tell worker(s) to send event heartbeat immediately."),
    "ping": RemoteCommand("Ping worker(s)."),
    "pool_grow": RemoteCommand(
        "Grow pool by n processes/threads.", (("n", int),), signature="[N=1]"
    ),
    "pool_shrink": RemoteCommand(
        "Shrink pool by n processes/threads.", (("n", int),), signature="[N=1]"
    ),
    "rate_limit": RemoteCommand(
        "Tell worker(s) to modify the rate limit for a task by type.",
        (("task_name", str), ("rate_limit", str)),
        signature="<task_name> <rate_limit (e.g., 5/s | 5/m | 5/h)>",
    ),
    "revoke": RemoteCommand(
        "Revoke task by task id (or list of ids).",
        variadic="task_id",
        signature="[id1 [id2 [... [idN]]]]",
    ),
    "revoke_by_stamped_headers": RemoteCommand(
        "Revoke task by header (or list of headers).",
        variadic="headers",
        signature="[key1=value1 [key2=value2 [... [keyN=valueN]]]]",
    ),
    "shutdown": RemoteCommand("Shutdown worker(s)."),
    "terminate": RemoteCommand(
        "Terminate task by task id (or list of ids).",
        (("signal", str),),
        variadic="task_id",
        signature="<signal> [id1 [id2 [... [idN]]]]",
    ),
    "time_limit": RemoteCommand(
        "Tell worker(s) to modify the time limit for task by type.",
        (("task_name", str), ("soft", float), ("hard", float)),
        signature="<task_name> <soft_secs> [hard_secs]",
    ),
}


def _list_control(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        click.echo(list_commands("control", CONTROL_COMMANDS), nl=False)
        ctx.exit()


@click.command(cls=Command, context_settings={"allow_extra_args": True})
@click.argument("command")
@click.option(
    "--list",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_list_control,
    help="List available control commands and exit.",
)
@remote_options
@click.pass_context
def control(
    ctx: click.Context,
    command: str,
    timeout: float,
    destination: tuple[list[str], ...],
    as_json: bool,
) -> None:
    """Send the COMMAND control command to the workers.

    \b
    Examples:
      celeriac -A proj control revoke <task-id>
      celeriac -A proj control terminate SIGKILL <task-id>
      celeriac -A proj control rate_limit proj.tasks.add 10/m -d w1@host
    """
    obj: CLIContext = ctx.obj
    check_command("control", CONTROL_COMMANDS, command)
    arguments = compile_arguments(CONTROL_COMMANDS, command, ctx.args)
    callback = None if as_json else (lambda reply: say_reply(obj, reply))
    with broker_errors(obj):
        replies = obj.app.control.broadcast(
            command,
            arguments=arguments,
            destination=flatten(destination) or None,
            timeout=timeout,
            callback=callback,
            reply=True,
        )
    if not replies:
        if command == "shutdown":
            return  # workers shut down without answering
        raise no_replies()
    if as_json:
        obj.echo(json.dumps(replies, default=str))
