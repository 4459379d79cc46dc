"""``celeriac events``: watch the cluster live, or ``--dump`` every event as it arrives."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import click

from celeriac.cli.base import CLIContext, Command, broker_errors
from celeriac.events.state import State

CLEAR = "\x1b[H\x1b[2J"
STATE_ORDER = ("RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED", "REJECTED")


def dump_line(event: dict[str, Any]) -> str:
    """One event as ``celery events --dump`` prints it: time, host, type, then the fields."""
    when = datetime.fromtimestamp(float(event.get("timestamp") or time.time()))
    fields = {
        k: v
        for k, v in event.items()
        if k not in ("type", "hostname", "timestamp", "local_received")
    }
    return (
        f"{when:%Y-%m-%d %H:%M:%S.%f} {event.get('hostname')} [{event.get('type')}] "
        f"{json.dumps(fields, default=str, sort_keys=True)}"
    )


def render(state: State, obj: CLIContext, now: float | None = None) -> str:
    """The live view: workers with heartbeat age, task rates per state, recent failures."""
    now = time.time() if now is None else now
    bold = {"bold": True}
    lines = [
        obj.style(f"celeriac events — {datetime.fromtimestamp(now):%H:%M:%S}", **bold),
        "",
        obj.style("Workers", **bold),
    ]
    if not state.workers:
        lines.append("  (none seen yet)")
    for worker in sorted(state.workers.values(), key=lambda w: w.hostname):
        alive = worker.alive(now)
        mark = obj.style("ONLINE ", fg="green") if alive else obj.style("OFFLINE", fg="red")
        age = worker.heartbeat_age(now)
        beat = f"{age:5.1f}s ago" if age is not None else "never"
        lines.append(
            f"  {mark} {worker.hostname:<32} heartbeat {beat}  active {worker.active:<3}"
            f" processed {worker.processed}"
        )
    rates = state.rates(now)
    lines += ["", obj.style(f"Tasks (per second over {state.rate_window:.0f}s, total)", **bold)]
    for name in STATE_ORDER:
        lines.append(f"  {name:<9} {rates.get(name, 0.0):7.2f}/s {state.counts.get(name, 0):8d}")
    lines += ["", obj.style("Recent failures", **bold)]
    if not state.failures:
        lines.append("  (none)")
    for task in reversed(state.failures):
        when = datetime.fromtimestamp(task.timestamp) if task.timestamp else None
        lines.append(
            f"  {when:%H:%M:%S} {task.name} [{task.uuid}] on {task.worker}: {task.exception}"
            if when
            else f"  {task.name} [{task.uuid}]"
        )
    lines += ["", f"{state.event_count} events. Ctrl-C to quit."]
    return "\n".join(lines)


@click.command(cls=Command)
@click.option("-d", "--dump", is_flag=True, help="Print every event as it arrives.")
@click.option(
    "-F",
    "--frequency",
    "--freq",
    type=float,
    default=1.0,
    show_default=True,
    help="Seconds between refreshes of the live view.",
)
@click.option("-c", "--camera", help="Accepted for Celery compatibility; not supported.")
@click.option("-r", "--maxrate", help="Accepted for Celery compatibility; ignored.")
@click.option("--logfile", help="Accepted for Celery compatibility; ignored.")
@click.option("-l", "--loglevel", help="Accepted for Celery compatibility; ignored.")
@click.pass_obj
def events(
    obj: CLIContext,
    dump: bool,
    frequency: float,
    camera: str | None,
    maxrate: str | None,
    logfile: str | None,
    loglevel: str | None,
) -> None:
    """Watch the workers' events: a live view, or every event with --dump.

    Workers send task events when started with -E (or after `control enable_events`);
    heartbeats are always sent.
    """
    if camera:
        raise click.UsageError("--camera is not supported by celeriac; use --dump or the live view")
    with broker_errors(obj):
        receiver = obj.app.events.Receiver()
        try:
            receiver.__enter__()
            if dump:
                obj.info("-> celeriac events: dumping events (Ctrl-C to quit)")
                for event in receiver.itercapture():
                    obj.echo(dump_line(event))
            else:
                _live(obj, receiver, max(frequency, 0.1))
        except KeyboardInterrupt:
            pass
        finally:
            receiver.close()


def _live(obj: CLIContext, receiver: Any, frequency: float) -> None:
    state = State()
    next_draw = 0.0
    while True:
        for event in receiver.events(min(frequency, 0.5)):
            state.event(event)
        now = time.monotonic()
        if now >= next_draw:
            next_draw = now + frequency
            obj.echo(("" if obj.no_color else CLEAR) + render(state, obj))
