"""``celeriac beat``: send the app's periodic tasks, with Celery 5's options."""

from __future__ import annotations

import os
import signal
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from celeriac.cli.base import CLIContext, Command, LogLevel, broker_errors

if TYPE_CHECKING:
    from celeriac.app.base import Celery
    from celeriac.beat.service import Service


@click.command(cls=Command, context_settings={"show_default": False})
@click.option("--detach", is_flag=True, help="Not supported (run beat under a supervisor).")
@click.option(
    "-s",
    "--schedule",
    "schedule_filename",
    help="State file used only when the broker has no shared store (default: "
    "beat_schedule_filename, 'celerybeat-schedule').",
)
@click.option(
    "-S",
    "--scheduler",
    help="Scheduler class, 'module:Class' (default: beat_scheduler; Celery's "
    "'celery.beat:PersistentScheduler' means celeriac's).",
)
@click.option(
    "--max-interval",
    type=click.FloatRange(min=0, min_open=True),
    help="Longest sleep between schedule checks, in seconds (default: beat_max_loop_interval, "
    "else 300).",
)
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0.5),
    help="celeriac: seconds the leader lock lives without renewal; a standby takes over "
    "about this long after the leader dies (default 5).",
)
@click.option(
    "-l",
    "--loglevel",
    type=LogLevel(),
    default="WARNING",
    help="DEBUG, INFO, WARNING (default), ERROR, CRITICAL or FATAL.",
)
@click.option("-f", "--logfile", type=click.Path(dir_okay=False), help="Log to this file.")
@click.option("--pidfile", type=click.Path(dir_okay=False), help="Write beat's pid here.")
@click.option("--uid", help="Not supported (start beat as that user).")
@click.option("--gid", help="Not supported (start beat as that group).")
@click.option("--umask", help="File mode creation mask, octal (e.g. 022).")
@click.pass_obj
def beat(obj: CLIContext, /, **opts: Any) -> None:
    """Start beat: send the app's periodic tasks (beat_schedule) until SIGTERM/SIGINT.

    Any number of beat processes may run: one leads and sends, the others stand by.
    """
    for flag in ("detach", "uid", "gid"):
        if opts[flag]:
            raise click.UsageError(
                f"--{flag} is not supported by celeriac: run beat in the foreground under a "
                "process supervisor (systemd, supervisord, a container runtime), as that user"
            )
    if opts["umask"]:
        try:
            os.umask(int(opts["umask"], 8))
        except ValueError as exc:
            raise click.BadParameter(
                f"{opts['umask']!r} is not an octal mode; expected e.g. 022", param_hint="'--umask'"
            ) from exc
    sys.exit(run_beat(obj, obj.app, opts))


def run_beat(obj: CLIContext, app: Celery, opts: dict[str, Any]) -> int:
    """Set up logging, print the banner and run the beat service; return the exit code."""
    from celeriac.beat.service import Service
    from celeriac.beat.store import SchedulingError
    from celeriac.worker.logging_setup import setup_worker_logging

    with broker_errors(obj):
        service = Service(
            app,
            max_interval=opts["max_interval"],
            schedule_filename=opts["schedule_filename"],
            scheduler_cls=opts["scheduler"],
            lock_ttl=opts["lock_timeout"],
        )
        setup_worker_logging(
            app,
            loglevel=opts["loglevel"],
            logfile=opts["logfile"],
            colorize=False if obj.no_color else None,
        )
        try:
            service.scheduler  # noqa: B018 - build the schedule now: errors before the banner
        except SchedulingError as exc:
            raise click.ClickException(str(exc)) from exc
        if not obj.quiet:
            click.echo(banner(service, opts), color=False if obj.no_color else None)
        pidfile = opts["pidfile"]
        _write_pidfile(pidfile)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: service.stop())
        try:
            service.start()
        finally:
            _remove_pidfile(pidfile)
    return 0


def banner(service: Service, opts: dict[str, Any]) -> str:
    """The startup banner, as Celery's beat prints it, plus where the lock and state live."""
    from celeriac.schedules._interval import humanize_seconds
    from celeriac.transports.base import censor_url

    app = service.app
    scheduler = service.scheduler
    backend = service.backend
    logfile = opts.get("logfile") or "[stderr]"
    lines = [
        "celeriac beat v0.1.0 is starting.",
        f"LocalTime -> {datetime.now().strftime('%Y-%m-%d %H:%M:%S')}",
        "Configuration ->",
        f"    . broker -> {censor_url(app.broker_url)}",
        f"    . scheduler -> {type(scheduler).__module__}.{type(scheduler).__name__}",
        f"    . lock and state -> {backend.where}",
        f"    . catch-up -> {scheduler.catch_up}",
        f"    . logfile -> {logfile}@%{opts.get('loglevel') or 'WARNING'}",
        f"    . maxinterval -> {humanize_seconds(service.max_interval)} "
        f"({service.max_interval:g}s)",
    ]
    if not backend.shared:
        lines.append(
            "    ! the broker has no shared store: the lock and state are in a local file, so "
            "only beats on this machine coordinate (set beat_lock_url to share them)"
        )
    return "\n".join(lines) + "\n"


def _write_pidfile(path: str | None) -> None:
    if not path:
        return
    if os.path.exists(path):
        try:
            with open(path) as fh:
                other = int(fh.read().strip() or 0)
            os.kill(other, 0)
        except (ValueError, ProcessLookupError, PermissionError):
            pass
        else:
            raise click.ClickException(f"pidfile {path} names a running process ({other})")
    with open(path, "w") as fh:
        fh.write(f"{os.getpid()}\n")


def _remove_pidfile(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass
