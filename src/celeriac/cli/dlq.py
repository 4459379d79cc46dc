"""``celeriac dlq``: inspect, requeue and delete dead-lettered messages.

Messages a worker could not process (undecodable, unknown content type, rejected) are kept in the
transport's dead-letter store with the reason; these commands work on that store.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from celeriac.cli.base import CLIContext, Command, broker_errors, pluralize

if TYPE_CHECKING:
    from celeriac.protocol.message import Message
    from celeriac.transports.base import DeadLetter, Transport

#: Content types decoded by ``dlq show``; anything else (pickle above all) is shown as bytes.
SAFE_CONTENT_TYPES = frozenset({"application/json", "application/x-msgpack"})
#: How many dead letters ``show`` searches for an id (the store has no lookup by id).
SEARCH_LIMIT = 1_000_000


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _task_of(message: Message) -> tuple[str, str]:
    headers = message.headers or {}
    return str(headers.get("task") or "?"), str(headers.get("id") or "?")


def summary(letter: DeadLetter) -> dict[str, Any]:
    """The fields ``dlq list`` shows for one dead letter."""
    task, task_id = _task_of(letter.message)
    return {
        "id": letter.id,
        "queue": letter.queue,
        "time": datetime.fromtimestamp(letter.time, UTC).isoformat(),
        "reason": letter.reason,
        "task": task,
        "task_id": task_id,
    }


def decode_body(message: Message) -> tuple[bool, Any]:
    """``(True, value)`` when the body decodes with a safe codec, else ``(False, repr(bytes))``."""
    if message.content_type in SAFE_CONTENT_TYPES and not (message.headers or {}).get(
        "compression"
    ):
        try:
            from celeriac.protocol.serialization import loads

            body = loads(
                message.body,
                message.content_type,
                message.content_encoding,
                accept=SAFE_CONTENT_TYPES,
            )
            return True, body
        except Exception:
            pass  # an undecodable body is shown raw: that is what the store is for
    return False, repr(message.body)


def details(letter: DeadLetter) -> dict[str, Any]:
    """Everything ``dlq show`` prints about one dead letter."""
    message = letter.message
    decoded, body = decode_body(message)
    return {
        **summary(letter),
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "headers": message.headers,
        "properties": message.properties,
        "body_decoded": decoded,
        "body": body,
    }


def _find(transport: Transport, wanted: str) -> DeadLetter:
    letters = transport.dead_letters(limit=SEARCH_LIMIT)
    exact = [d for d in letters if d.id == wanted]
    matches = exact or [d for d in letters if d.id.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise click.ClickException(
            f"no dead-lettered message has the id {wanted!r} ('celeriac dlq list' shows the ids)"
        )
    raise click.ClickException(
        f"{wanted!r} matches {len(matches)} dead-lettered messages; give more of the id"
    )


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=repr)


@click.group()
def dlq() -> None:
    """Inspect and act on the dead-letter store (messages that could not be processed)."""


@dlq.command("list", cls=Command)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Show at most this many (oldest first).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@click.pass_obj
def list_(obj: CLIContext, limit: int, as_json: bool) -> None:
    """List dead-lettered messages: id, queue, time (UTC), task, task id and reason."""
    with broker_errors(obj):
        transport = obj.app.transport
        rows = [summary(letter) for letter in transport.dead_letters(limit=limit)]
    if as_json:
        obj.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        obj.info(f"The dead-letter store {transport.dead_letter_queue!r} is empty.")
        return
    columns = ("id", "queue", "time", "task", "task_id", "reason")
    table = [
        [str(r[c]) if c != "time" else r[c][:19].replace("T", " ") for c in columns] for r in rows
    ]
    widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(columns[:-1])]
    header = [c.upper().replace("_", " ") for c in columns]
    for row in [header, *table]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        obj.echo("  ".join([*cells, row[-1]]).rstrip())


@dlq.command(cls=Command)
@click.argument("letter_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.pass_obj
def show(obj: CLIContext, letter_id: str, as_json: bool) -> None:
    """Print one dead-lettered message: reason, headers, properties and the decoded body.

    ID may be a unique prefix of the id.
    """
    with broker_errors(obj):
        info = details(_find(obj.app.transport, letter_id))
    if as_json:
        obj.echo(_dump(info))
        return
    for key in (
        "id",
        "queue",
        "time",
        "reason",
        "task",
        "task_id",
        "content_type",
        "content_encoding",
    ):
        obj.echo(f"{key + ':':<18}{info[key]}")
    obj.echo(f"headers:\n{_dump(info['headers'])}")
    obj.echo(f"properties:\n{_dump(info['properties'])}")
    label = "body:" if info["body_decoded"] else "body (raw bytes):"
    obj.echo(f"{label}\n{_dump(info['body']) if info['body_decoded'] else info['body']}")


def _ids_or_all(ids: tuple[str, ...], everything: bool, verb: str) -> list[str] | None:
    if ids and everything:
        raise click.UsageError(f"give message ids or --all to {verb}, not both")
    if not ids and not everything:
        raise click.UsageError(f"give the ids of the messages to {verb}, or --all")
    return None if everything else list(ids)


@dlq.command(cls=Command)
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "everything", is_flag=True, help="Requeue every dead-lettered message.")
@click.pass_obj
def requeue(obj: CLIContext, ids: tuple[str, ...], everything: bool) -> None:
    """Put dead-lettered messages back on the queues they came from."""
    wanted = _ids_or_all(ids, everything, "requeue")
    with broker_errors(obj):
        count = obj.app.transport.requeue_dead(wanted)
    _report(obj, "Requeued", count, wanted)


@dlq.command("purge", cls=Command)
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "everything", is_flag=True, help="Delete every dead-lettered message.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def purge_(obj: CLIContext, ids: tuple[str, ...], everything: bool, force: bool) -> None:
    """Delete dead-lettered messages for good. There is no undo."""
    wanted = _ids_or_all(ids, everything, "delete")
    if not force:
        what = (
            "ALL dead-lettered messages"
            if wanted is None
            else pluralize(len(wanted), "dead-lettered message")
        )
        click.confirm(f"Delete {what}? There is no undo (-f skips this prompt)", abort=True)
    with broker_errors(obj):
        count = obj.app.transport.purge_dead(wanted)
    _report(obj, "Deleted", count, wanted)


def _report(obj: CLIContext, verb: str, count: int, wanted: list[str] | None) -> None:
    obj.echo(f"{verb} {pluralize(count, 'dead-lettered message')}.")
    if wanted is not None and count < len(wanted):
        raise click.ClickException(
            f"{len(wanted) - count} of the {len(wanted)} given ids are not in the dead-letter "
            "store (full ids are needed here; 'celeriac dlq list' shows them)"
        )
