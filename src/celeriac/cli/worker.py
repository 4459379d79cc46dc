"""``celeriac worker``: run a worker node with Celery 5's options."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from celeriac.cli.base import (
    AppLoadError,
    Autoscale,
    CLIContext,
    Command,
    CommaSeparatedList,
    LogLevel,
    broker_errors,
    flatten,
)

POOL_CHOICES = ("prefork", "threads", "solo", "asyncio", "processes")


def _unsupported(flag: str, why: str) -> click.UsageError:
    return click.UsageError(f"{flag} is not supported by celeriac: {why}")


@click.command(cls=Command, context_settings={"show_default": False})
# -- worker options
@click.option("-n", "--hostname", help="Node name, e.g. 'w1@%h' (%h host, %n name, %d domain).")
@click.option("-D", "--detach", is_flag=True, help="Not supported (run under a supervisor).")
@click.option("-S", "--statedb", help="File keeping revoked ids and the clock.")
@click.option(
    "-l",
    "--loglevel",
    type=LogLevel(),
    default="WARNING",
    help="DEBUG, INFO, WARNING (default), ERROR, CRITICAL or FATAL.",
)
@click.option(
    "-O",
    "--optimization",
    type=click.Choice(["default", "fair"]),
    help="'fair' sets the prefetch multiplier to 1.",
)
@click.option(
    "--prefetch-multiplier",
    type=click.IntRange(min=0),
    help="Messages to reserve per pool slot (worker_prefetch_multiplier).",
)
# -- pool options
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    help="Pool size (default: worker_concurrency, else the number of CPUs).",
)
@click.option(
    "-P",
    "--pool",
    type=click.Choice(POOL_CHOICES, case_sensitive=False),
    help="Execution pool (default: worker_pool, else prefork).",
)
@click.option(
    "-E",
    "--task-events",
    "--events",
    "task_events",
    is_flag=True,
    default=None,
    help="Send task events (for monitors such as Flower).",
)
@click.option("--time-limit", type=float, help="Hard time limit per task, in seconds.")
@click.option("--soft-time-limit", type=float, help="Soft time limit per task, in seconds.")
@click.option(
    "--max-tasks-per-child",
    type=click.IntRange(min=1),
    help="Replace a pool process after it ran this many tasks.",
)
@click.option(
    "--max-memory-per-child",
    type=click.IntRange(min=1),
    help="Replace a pool process whose resident memory passes this many KiB.",
)
# -- queue options
@click.option(
    "--purge",
    "--discard",
    "purge_first",
    is_flag=True,
    help="Purge the worker's queues before starting.",
)
@click.option(
    "-Q",
    "--queues",
    type=CommaSeparatedList(),
    multiple=True,
    help="Consume only from these queues (comma separated).",
)
@click.option(
    "-X",
    "--exclude-queues",
    type=CommaSeparatedList(),
    multiple=True,
    help="Do not consume from these queues (comma separated).",
)
@click.option(
    "-I",
    "--include",
    type=CommaSeparatedList(),
    multiple=True,
    help="Also import these modules (comma separated).",
)
# -- features
@click.option("--without-gossip", is_flag=True, help="Accepted; celeriac has no gossip.")
@click.option("--without-mingle", is_flag=True, help="Ask no other worker for revoked ids.")
@click.option("--without-heartbeat", is_flag=True, help="Send no heartbeats (monitors: offline).")
@click.option("--heartbeat-interval", type=float, help="Seconds between heartbeats (2).")
@click.option("--autoscale", type=Autoscale(), help="MAX,MIN pool size, e.g. 10,3.")
# -- embedded beat
@click.option("-B", "--beat", is_flag=True, help="Also run beat in this worker (development only).")
@click.option("-s", "--schedule-filename", "--schedule", help="Beat schedule file (with -B).")
@click.option("--scheduler", help="Beat scheduler class (with -B).")
# -- daemonization
@click.option(
    "-f",
    "--logfile",
    type=click.Path(dir_okay=False),
    help="Log to this file (%n, %h, %d, %p expand to parts of the node name).",
)
@click.option("--pidfile", type=click.Path(dir_okay=False), help="Write the worker's pid here.")
@click.option("--uid", help="Not supported (start the worker as that user).")
@click.option("--gid", help="Not supported (start the worker as that group).")
@click.option("--umask", help="File mode creation mask, octal (e.g. 022).")
@click.pass_obj
def worker(obj: CLIContext, /, **opts: Any) -> None:
    """Start a worker: consume the app's queues and run its tasks until SIGTERM/SIGINT."""
    _reject_unsupported(opts)
    if opts["umask"]:
        try:
            os.umask(int(opts["umask"], 8))
        except ValueError as exc:
            raise click.BadParameter(
                f"{opts['umask']!r} is not an octal mode; expected e.g. 022", param_hint="'--umask'"
            ) from exc
    app = obj.app
    for module in flatten(opts["include"]):
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise AppLoadError(
                f"-I/--include {module!r}: importing it raised {type(exc).__name__}: {exc}"
            ) from exc
    sys.exit(run_worker(obj, app, opts))


def _reject_unsupported(opts: dict[str, Any]) -> None:
    if opts["detach"]:
        raise _unsupported(
            "-D/--detach",
            "run the worker in the foreground under a process "
            "supervisor (systemd, supervisord, a container runtime) instead",
        )
    for flag in ("uid", "gid"):
        if opts[flag]:
            raise _unsupported(
                f"--{flag}",
                "start the worker as the wanted user/group (e.g. User=/Group= in a systemd unit)",
            )


def worker_options(obj: CLIContext, opts: dict[str, Any]) -> Any:
    """Map command-line options to ``WorkerOptions``."""
    from celeriac.cli.base import APP_ENVVARS
    from celeriac.worker.worker import WorkerOptions

    extra: dict[str, Any] = {"loglevel": opts["loglevel"], "logfile": opts["logfile"]}
    for key in (
        "beat",
        "statedb",
        "heartbeat_interval",
        "schedule_filename",
        "scheduler",
        "without_gossip",
        "without_mingle",
        "without_heartbeat",
    ):
        if opts.get(key):
            extra[key] = opts[key]
    locator = obj.app_spec or next((os.environ[v] for v in APP_ENVVARS if os.environ.get(v)), None)
    pool = opts["pool"].lower() if opts["pool"] else None
    return WorkerOptions(
        concurrency=opts["concurrency"],
        pool=pool,
        queues=flatten(opts["queues"]) or None,
        exclude_queues=tuple(flatten(opts["exclude_queues"])),
        hostname=opts["hostname"],
        prefetch_multiplier=opts["prefetch_multiplier"],
        max_tasks_per_child=opts["max_tasks_per_child"],
        max_memory_per_child=opts["max_memory_per_child"],
        time_limit=opts["time_limit"],
        soft_time_limit=opts["soft_time_limit"],
        autoscale=opts["autoscale"],
        optimization=opts["optimization"],
        send_events=True if opts["task_events"] else None,
        app_locator=locator,
        pidfile=opts["pidfile"],
        extra=extra,
    )


def run_worker(obj: CLIContext, app: Any, opts: dict[str, Any]) -> int:
    """Build the worker, set up logging, print the banner and run it; return the exit code."""
    from celeriac import signals
    from celeriac.worker.logging_setup import (
        redirect_stdouts,
        restore_stdouts,
        setup_worker_logging,
    )
    from celeriac.worker.worker import Worker

    options = worker_options(obj, opts)
    with broker_errors(obj):
        options.extra["cli_options"] = dict(opts)
        node = Worker(app, options)  # sends celeryd_init before it reads any setting
        logging_state = setup_worker_logging(
            app,
            loglevel=opts["loglevel"],
            logfile=opts["logfile"],
            colorize=False if obj.no_color else None,
            hostname=node.hostname,
        )
        signals.celeryd_after_setup.send(sender=node.hostname, instance=node, conf=app.conf)
        if opts["purge_first"]:
            removed = sum(app.transport.purge(name) for name in node.queue_names)
            obj.info(
                f"purge: Erased {removed} message{'' if removed == 1 else 's'} from the queue(s)."
            )
        if not obj.quiet:
            click.echo(node.banner(), color=False if obj.no_color else None)
        if opts["beat"]:
            click.echo(
                "WARNING: -B runs beat inside this worker. That is for development: in production "
                "run 'celeriac beat' as its own process (any number may run; one leads).",
                err=True,
            )
        if not logging_state.custom and app.conf.get("worker_redirect_stdouts", True):
            sys.stdout.flush()
            redirect_stdouts(app.conf.get("worker_redirect_stdouts_level") or "WARNING")
        try:
            return int(node.start())
        finally:
            restore_stdouts()
