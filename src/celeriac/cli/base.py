"""What every subcommand shares: the lazily loaded app, output helpers, errors, option types."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from celeriac.app.base import Celery

#: Environment variables naming the app when ``-A`` is not given (first set wins).
APP_ENVVARS = ("CELERIAC_APP", "CELERY_APP")


class AppLoadError(click.ClickException):
    """The app named by ``-A`` (or the environment) could not be loaded; exit code 2 like usage
    errors, and one paragraph instead of a traceback."""

    exit_code = 2


class CLIContext:
    """The state the global options leave for subcommands (``ctx.obj``).

    The app is imported on first use, so ``celeriac worker --help`` works with a broken app.
    """

    def __init__(
        self,
        app_spec: str | None = None,
        broker: str | None = None,
        result_backend: str | None = None,
        config: str | None = None,
        quiet: bool = False,
        no_color: bool = False,
    ) -> None:
        self.app_spec = app_spec
        self.broker = broker
        self.result_backend = result_backend
        self.config = config
        self.quiet = quiet
        self.no_color = no_color
        self._app: Celery | None = None

    @property
    def app(self) -> Celery:
        """The app, imported and configured by the global options on first access."""
        if self._app is None:
            self._app = self._load_app()
        return self._app

    def _load_app(self) -> Celery:
        app = load_app(self.app_spec)
        if self.config:
            try:
                app.config_from_object(self.config)
            except Exception as exc:
                raise AppLoadError(
                    f"--config {self.config!r}: could not load settings from it "
                    f"({type(exc).__name__}: {exc}); expected an importable module name such as "
                    "'proj.celeryconfig'."
                ) from exc
        overrides = {}
        if self.broker:
            overrides["broker_url"] = self.broker
        if self.result_backend:
            overrides["result_backend"] = self.result_backend
        if overrides:
            app.conf.update(overrides)
        return app

    # -- output ------------------------------------------------------------------------------------
    def echo(self, message: Any = None, **kwargs: Any) -> None:
        """Print a result line (always shown, even with ``-q``)."""
        click.echo(message, color=False if self.no_color else None, **kwargs)

    def info(self, message: Any = None, **kwargs: Any) -> None:
        """Print a line that ``-q`` silences."""
        if not self.quiet:
            self.echo(message, **kwargs)

    def style(self, text: str, **styles: Any) -> str:
        """*text* styled with click's styles unless ``--no-color``."""
        return text if self.no_color else click.style(text, **styles)


def load_app(spec: str | None) -> Celery:
    """The app named by *spec* (``-A``), by ``CELERIAC_APP``/``CELERY_APP``, else the default app.

    Any failure becomes :class:`AppLoadError`, whose one-paragraph message says what was tried.
    """
    from celeriac.app.base import current_app
    from celeriac.app.locate import AppNotFound, find_app

    spec = spec or next((os.environ[v] for v in APP_ENVVARS if os.environ.get(v)), None)
    if not spec:
        return current_app()
    module, _, attr = spec.partition(":")
    try:
        if attr:
            # Imported first so an AttributeError below can only be about the attribute; the
            # current directory is importable, as find_app (and Celery's -A) make it.
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.insert(0, os.getcwd())
            importlib.import_module(module)
        return find_app(spec)
    except AppNotFound as exc:
        raise AppLoadError(f"Unable to load the celeriac app {spec!r}: {exc}") from exc
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise AppLoadError(
                f"Unable to load the celeriac app {spec!r}: the module {exc.name!r} was not found "
                f"(searched the current directory {os.getcwd()!r} and sys.path). Give -A as "
                "'package', 'package.module' or 'package.module:app', and run from the directory "
                "that contains the package (or use --workdir)."
            ) from exc
        raise AppLoadError(_import_failed(spec, module, exc)) from exc
    except AttributeError as exc:
        if not attr or module not in sys.modules:
            raise AppLoadError(_import_failed(spec, module, exc)) from exc
        raise AppLoadError(
            f"Unable to load the celeriac app {spec!r}: {exc}. Expected 'module:attribute' naming "
            "a Celery app (or a function returning one)."
        ) from exc
    except Exception as exc:
        raise AppLoadError(_import_failed(spec, module, exc)) from exc


def _import_failed(spec: str, module: str, exc: BaseException) -> str:
    return (
        f"Unable to load the celeriac app {spec!r}: importing it raised "
        f"{type(exc).__name__}: {exc}. Run `python -c 'import {module}'` in this directory to "
        "see the full traceback."
    )


@contextmanager
def broker_errors(ctx: CLIContext) -> Iterator[None]:
    """Turn broker/backend failures into one-line errors (exit code 1) instead of tracebacks."""
    from celeriac.exceptions import ImproperlyConfigured, OperationalError

    try:
        yield
    except ImproperlyConfigured as exc:
        raise click.ClickException(f"Configuration error: {exc}") from exc
    except OperationalError as exc:
        raise click.ClickException(
            f"Cannot reach the broker {ctx.app.transport.describe()}: {exc}"
        ) from exc


# -- option types ------------------------------------------------------------------------------
class CommaSeparatedList(click.ParamType):  # type: ignore[type-arg]  # generic only from click 8.2
    """``-Q a,b -Q c`` → ``["a", "b", "c"]`` (with ``multiple=True``, flattened by the command)."""

    name = "comma separated list"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, list | tuple):
            return list(value)
        return [item.strip() for item in str(value).split(",") if item.strip()]


class JSONValue(click.ParamType):  # type: ignore[type-arg]  # generic only from click 8.2
    """A JSON document of one expected type (``list`` for ``--args``, ``dict`` for ``--kwargs``)."""

    def __init__(self, expected: type[list[Any]] | type[dict[str, Any]]) -> None:
        self.expected = expected
        self.name = "json array" if expected is list else "json object"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, self.expected):
            return value
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            self.fail(f"{value!r} is not valid JSON ({exc}); expected a {self.name}", param, ctx)
        if not isinstance(parsed, self.expected):
            example = "'[1, 2]'" if self.expected is list else "'{\"x\": 1}'"
            self.fail(f"{value!r} is not a {self.name}; expected e.g. {example}", param, ctx)
        return parsed


class ISO8601(click.ParamType):  # type: ignore[type-arg]  # generic only from click 8.2
    """An ISO 8601 date and time (``2030-01-01T12:00:00+00:00``)."""

    name = "iso-8601"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            return datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(
                f"{value!r} is not an ISO 8601 date-time, e.g. 2030-01-01T12:00:00+00:00",
                param,
                ctx,
            )


class ISO8601OrFloat(ISO8601):
    """Seconds from now (a number) or an ISO 8601 date-time."""

    name = "iso-8601 or seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return float(value)
        except (TypeError, ValueError):
            return super().convert(value, param, ctx)


class LogLevel(click.ParamType):  # type: ignore[type-arg]  # generic only from click 8.2
    """A log level name (any case) or number."""

    name = "log level"
    choices = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value).strip().upper()
        if text.isdigit() or text in self.choices:
            return text
        self.fail(
            f"{value!r} is not a log level; expected one of {', '.join(self.choices)}", param, ctx
        )


class Autoscale(click.ParamType):  # type: ignore[type-arg]  # generic only from click 8.2
    """``MAX,MIN`` (``10,3``: keep 3 processes, grow to 10) or ``MAX`` (minimum 0)."""

    name = "MAX,MIN"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        parts = [p.strip() for p in str(value).split(",")]
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            numbers = []
        if len(numbers) not in (1, 2) or any(n < 0 for n in numbers):
            self.fail(f"{value!r} is not MAX,MIN; expected e.g. --autoscale=10,3", param, ctx)
        high, low = [*numbers, 0][:2]
        if low > high:
            self.fail(
                f"{value!r}: MAX ({high}) is smaller than MIN ({low}); the order is MAX,MIN",
                param,
                ctx,
            )
        return high, low


def flatten(values: Any) -> list[str]:
    """Flatten ``multiple=True`` values of :class:`CommaSeparatedList`."""
    out: list[str] = []
    for value in values or ():
        out.extend(value if isinstance(value, list) else [value])
    return out


def pluralize(n: int, noun: str) -> str:
    """``1 message``, ``2 messages``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


_GLOBAL_ONLY = frozenset({"-A", "--app", "-b", "--broker", "--result-backend", "--workdir"})


class Command(click.Command):
    """A subcommand that explains where global options go when one is given after it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            if exc.option_name not in _GLOBAL_ONLY:
                raise
            raise click.UsageError(
                f"{exc.option_name} is a global option: give it before the command, e.g. "
                f"'celeriac {exc.option_name} VALUE {self.name} ...' (as in Celery 5)",
                ctx,
            ) from exc
