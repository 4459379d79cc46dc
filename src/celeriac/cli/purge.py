"""``celeriac purge``: delete every waiting message from the app's queues."""

from __future__ import annotations

import click

from celeriac.cli.base import (
    CLIContext,
    Command,
    CommaSeparatedList,
    broker_errors,
    flatten,
    pluralize,
)


@click.command(cls=Command)
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "-Q",
    "--queues",
    type=CommaSeparatedList(),
    multiple=True,
    help="Purge only these queues (comma separated; default: the app's queues).",
)
@click.option(
    "-X",
    "--exclude-queues",
    type=CommaSeparatedList(),
    multiple=True,
    help="Do not purge these queues (comma separated).",
)
@click.pass_obj
def purge(
    obj: CLIContext,
    force: bool,
    queues: tuple[list[str], ...],
    exclude_queues: tuple[list[str], ...],
) -> None:
    """Erase all messages from the known task queues. There is no undo."""
    app = obj.app
    wanted = flatten(queues) or list(app.queues())
    excluded = set(flatten(exclude_queues))
    names = sorted({q for q in wanted if q not in excluded})
    if not names:
        obj.info("No queues to purge.")
        return
    queue_word = "queue" if len(names) == 1 else "queues"
    if not force:
        click.confirm(
            f"{obj.style('WARNING', fg='red')}: This will remove all tasks from "
            f"{pluralize(len(names), 'queue')}: {', '.join(names)}.\n"
            "         There is no undo for this operation!\n\n"
            "(to skip this prompt use the -f option)\n"
            "Are you sure you want to delete all tasks?",
            abort=True,
        )
    with broker_errors(obj):
        transport = app.transport
        removed = sum(transport.purge(name) for name in names)
    if removed:
        obj.echo(
            f"Purged {pluralize(removed, 'message')} from {len(names)} known task {queue_word}."
        )
    else:
        obj.echo(f"No messages purged from {pluralize(len(names), 'queue')}.")
