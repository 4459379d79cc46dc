"""``celeriac status``: list the workers that answer a ping."""

from __future__ import annotations

import json

import click

from celeriac.cli.base import CLIContext, Command, broker_errors, flatten
from celeriac.cli.inspect import no_replies, node_count, remote_options, say_reply


@click.command(cls=Command)
@remote_options
@click.pass_obj
def status(
    obj: CLIContext, timeout: float, destination: tuple[list[str], ...], as_json: bool
) -> None:
    """Show the list of workers that are online."""
    callback = None if as_json else (lambda reply: say_reply(obj, reply, show_body=False))
    with broker_errors(obj):
        replies = obj.app.control.inspect(
            timeout=timeout, destination=flatten(destination) or None, callback=callback
        ).ping()
    if not replies:
        raise no_replies()
    if as_json:
        obj.echo(json.dumps(replies))
    node_count(obj, len(replies))
