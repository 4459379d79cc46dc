"""The ``celeriac`` command: Celery 5's global options and subcommands."""

from __future__ import annotations

import os
from typing import Any

import click

from celeriac.cli.base import APP_ENVVARS, CLIContext
from celeriac.cli.beat import beat
from celeriac.cli.call import call
from celeriac.cli.control import control
from celeriac.cli.dlq import dlq
from celeriac.cli.events import events
from celeriac.cli.inspect import inspect
from celeriac.cli.purge import purge
from celeriac.cli.result import result
from celeriac.cli.status import status
from celeriac.cli.worker import worker

VERSION = "0.1.0"


def _chdir(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    # Eager, so the app is imported relative to the new directory.
    if value:
        try:
            os.chdir(value)
        except OSError as exc:
            raise click.BadParameter(f"cannot change to {value!r}: {exc.strerror}") from exc
    return value


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "-A",
    "--app",
    "app_spec",
    envvar=list(APP_ENVVARS),
    metavar="APPLICATION",
    help="The app: 'proj', 'proj.celery' or 'proj.celery:app' "
    "(default: $CELERIAC_APP or $CELERY_APP).",
)
@click.option(
    "-b",
    "--broker",
    envvar=["CELERIAC_BROKER_URL", "CELERY_BROKER_URL"],
    help="Broker URL; overrides the app's broker_url.",
)
@click.option(
    "--result-backend",
    envvar=["CELERIAC_RESULT_BACKEND", "CELERY_RESULT_BACKEND"],
    help="Result backend URL; overrides the app's result_backend.",
)
@click.option("--loader", help="Accepted for Celery compatibility; ignored.")
@click.option(
    "--config",
    envvar=["CELERIAC_CONFIG_MODULE", "CELERY_CONFIG_MODULE"],
    help="Module to load settings from (app.config_from_object).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    callback=_chdir,
    is_eager=True,
    expose_value=False,
    help="Change to this directory before importing the app.",
)
@click.option(
    "-C",
    "--no-color",
    is_flag=True,
    help="Plain output: no colours in messages or logs (also when $NO_COLOR is set).",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only results and errors.")
@click.option("--version", is_flag=True, help="Print the version and exit.")
@click.option(
    "--skip-checks",
    is_flag=True,
    help="Skip Django's system checks at startup (sets CELERY_SKIP_CHECKS).",
)
@click.pass_context
def celeriac(
    ctx: click.Context,
    app_spec: str | None,
    broker: str | None,
    result_backend: str | None,
    loader: str | None,
    config: str | None,
    no_color: bool,
    quiet: bool,
    version: bool,
    skip_checks: bool,
) -> None:
    """celeriac: Celery 5's command line.

    \b
    Examples:
      celeriac -A proj worker -l info
      celeriac -A proj call proj.tasks.add --args '[2, 2]'
      celeriac -A proj result <task-id>
    """
    if version:
        click.echo(f"{VERSION} (celeriac)")
        ctx.exit()
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit()
    if skip_checks:
        os.environ["CELERY_SKIP_CHECKS"] = "true"
    # Exported as Celery does: the environment wins over every other source of these two
    # settings (app.conf reads it), also in pool processes that import the app again.
    for name, value in (("BROKER_URL", broker), ("RESULT_BACKEND", result_backend)):
        if value:
            os.environ[f"CELERIAC_{name}"] = os.environ[f"CELERY_{name}"] = value
    ctx.obj = CLIContext(
        app_spec=app_spec,
        broker=broker,
        result_backend=result_backend,
        config=config,
        quiet=quiet,
        no_color=no_color or bool(os.environ.get("NO_COLOR")),
    )


for _command in (worker, beat, call, purge, result, dlq):
    celeriac.add_command(_command)
for _command in (inspect, control, status, events):
    celeriac.add_command(_command)


def main(argv: list[str] | None = None, **kwargs: Any) -> Any:
    """Entry point of the ``celeriac`` script and ``python -m celeriac``."""
    return celeriac.main(args=argv, prog_name=kwargs.pop("prog_name", "celeriac"), **kwargs)


__all__ = ["celeriac", "main"]
