"""``celeriac inspect``: ask workers about their state, with Celery 5's commands and output.

The helpers here (command table, argument parsing, reply printing) are shared with ``control``
and ``status``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import click

from celeriac.cli.base import CLIContext, Command, CommaSeparatedList, broker_errors, flatten

#: Celery's exit code when no worker answered (``EX_UNAVAILABLE``).
EX_UNAVAILABLE = 69


def _bool(value: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off"):
        return False
    raise click.BadParameter(f"{value!r} is not a boolean; expected true or false")


@dataclass(frozen=True)
class RemoteCommand:
    """How one remote command takes its positional arguments on the command line."""

    help: str
    args: tuple[tuple[str, Callable[[str], Any]], ...] = ()
    variadic: str | None = None
    signature: str = ""


INSPECT_COMMANDS: dict[str, RemoteCommand] = {
    "active": RemoteCommand("List of tasks currently being executed."),
    "active_queues": RemoteCommand("List the task queues a worker is consuming from."),
    "clock": RemoteCommand("Get current logical clock value."),
    "conf": RemoteCommand(
        "List configuration.", (("with_defaults", _bool),), signature="[include_defaults=False]"
    ),
    "memdump": RemoteCommand(
        "Dump statistics of previous memsample requests.",
        (("samples", int),),
        signature="[n_samples=10]",
    ),
    "memsample": RemoteCommand("Sample current RSS memory usage."),
    "ping": RemoteCommand("Ping worker(s)."),
    "query_task": RemoteCommand(
        "Query for task information by id.", variadic="ids", signature="[id1 [id2 [... [idN]]]]"
    ),
    "registered": RemoteCommand(
        "List of registered tasks.",
        variadic="taskinfoitems",
        signature="[attr1 [attr2 [... [attrN]]]]",
    ),
    "report": RemoteCommand("Information about the installation for bug reports."),
    "reserved": RemoteCommand("List of currently reserved tasks, not including scheduled/active."),
    "revoked": RemoteCommand("List of revoked task-ids."),
    "scheduled": RemoteCommand("List of currently scheduled ETA/countdown tasks."),
    "stats": RemoteCommand("Request worker statistics/information."),
}


def compile_arguments(
    table: Mapping[str, RemoteCommand], name: str, args: Sequence[str]
) -> dict[str, Any]:
    """The ``arguments`` of the request for *name* from the words after it."""
    meta = table[name]
    arguments: dict[str, Any] = {}
    rest = list(args)
    for arg_name, convert in meta.args:
        if not rest:
            break
        word = rest.pop(0)
        try:
            arguments[arg_name] = convert(word)
        except ValueError as exc:
            raise click.UsageError(f"{name}: {arg_name} {word!r} is invalid ({exc})") from exc
    if meta.variadic:
        arguments[meta.variadic] = rest
    elif rest:
        raise click.UsageError(
            f"Command {name!r} takes arguments: {meta.signature or '(none)'}; got extra {rest!r}"
        )
    return arguments


def check_command(kind: str, table: Mapping[str, RemoteCommand], name: str) -> None:
    if name not in table:
        raise click.UsageError(
            f"Command {name} not recognized. Available {kind} commands: {', '.join(sorted(table))}"
        )


def list_commands(kind: str, table: Mapping[str, RemoteCommand]) -> str:
    formatter = click.HelpFormatter()
    with formatter.section(f"{kind.capitalize()} Commands"):
        formatter.write_dl(
            [(f"{n} {m.signature}".strip(), m.help) for n, m in sorted(table.items())]
        )
    return formatter.getvalue()


def pretty(obj: CLIContext, value: Any) -> tuple[str, str]:
    """(status, text) for one node's reply, as Celery prints it."""
    good = obj.style("OK", fg="green", bold=True)
    if isinstance(value, list):
        if not value:
            return good, "- empty -"
        return good, "\n".join(f"{obj.style('*', fg='white')} {_item(i)}" for i in value)
    if isinstance(value, dict):
        if "ok" in value:
            return good, _indent(pretty(obj, value["ok"])[1])
        if "error" in value:
            return obj.style("ERROR", fg="red", bold=True), _indent(pretty(obj, value["error"])[1])
        return good, json.dumps(value, sort_keys=True, indent=4, default=str)
    return good, str(value)


def _item(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _indent(text: str, n: int = 4) -> str:
    return "\n".join(" " * n + line for line in text.splitlines())


def say_reply(obj: CLIContext, reply: Mapping[str, Any], show_body: bool = True) -> None:
    """Print ``->  node: OK`` and the indented reply body."""
    for node, value in reply.items():
        status, text = pretty(obj, value)
        arrow = "" if obj.quiet else obj.style("->", fg="white", bold=True) + " "
        obj.echo(f"{arrow} {obj.style(node + ': ', fg='cyan', bold=True)}{status}")
        if show_body and text:
            obj.echo(_indent(text))


class NoReplies(click.ClickException):
    """No worker answered within the timeout (exit code 69, as Celery)."""

    exit_code = EX_UNAVAILABLE


def no_replies() -> click.ClickException:
    return NoReplies("No nodes replied within time constraint")


def node_count(obj: CLIContext, n: int) -> None:
    obj.info(f"\n{n} {'node' if n == 1 else 'nodes'} online.")


def remote_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``-t/--timeout``, ``-d/--destination`` and ``-j/--json``, as Celery's remote commands."""
    fn = click.option("-j", "--json", "as_json", is_flag=True, help="Use json as output format.")(
        fn
    )
    fn = click.option(
        "-d",
        "--destination",
        type=CommaSeparatedList(),
        multiple=True,
        help="Comma separated list of destination node names.",
    )(fn)
    return click.option(
        "-t",
        "--timeout",
        type=float,
        default=1.0,
        show_default=True,
        help="Timeout in seconds waiting for reply.",
    )(fn)


def _list_inspect(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        click.echo(list_commands("inspect", INSPECT_COMMANDS), nl=False)
        ctx.exit()


@click.command(cls=Command, context_settings={"allow_extra_args": True})
@click.argument("command")
@click.option(
    "--list",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_list_inspect,
    help="List available inspect commands and exit.",
)
@remote_options
@click.pass_context
def inspect(
    ctx: click.Context,
    command: str,
    timeout: float,
    destination: tuple[list[str], ...],
    as_json: bool,
) -> None:
    """Inspect the workers by sending them the COMMAND inspect command.

    \b
    Examples:
      celeriac -A proj inspect ping
      celeriac -A proj inspect active -d w1@host --json
      celeriac -A proj inspect query_task <id1> <id2>
    """
    obj: CLIContext = ctx.obj
    check_command("inspect", INSPECT_COMMANDS, command)
    arguments = compile_arguments(INSPECT_COMMANDS, command, ctx.args)
    callback = None if as_json else (lambda reply: say_reply(obj, reply))
    with broker_errors(obj):
        insp = obj.app.control.inspect(
            timeout=timeout, destination=flatten(destination) or None, callback=callback
        )
        replies = insp._request(command, **arguments)
    if not replies:
        raise no_replies()
    if as_json:
        obj.echo(json.dumps(replies, default=str))
        return
    node_count(obj, len(replies))
