"""``app.conf``: the settings mapping, and loading settings from objects and the environment.

Where a value comes from, highest first (Celery 5.7's order, checked against Celery itself):

1. For ``broker_url``, ``broker_read_url``, ``broker_write_url`` and ``result_backend`` only: the
   environment variables in :data:`ENV_OVERRIDES` (``CELERY_BROKER_URL`` and friends, plus the
   ``CELERIAC_*`` aliases). They are read each time the setting is read and win over everything,
   including ``Celery(broker=...)``; this is how ``celery -b URL`` overrides a config module.
2. Values set by the user, in the order they were set: ``conf.update()``, attribute or item
   assignment, ``config_from_object()``. The app re-applies its constructor arguments
   (``Celery(broker=..., backend=..., include=..., **settings)``) after each
   ``config_from_object`` so they win over config objects.
3. Defaults added with ``add_defaults()`` (frameworks and integrations).
4. The defaults of the table in :mod:`celeriac.app.settings`.

``broker_url`` and ``result_backend`` default to ``None``; the app layer turns ``None`` into the
embedded SQLite file.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pprint
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from copy import deepcopy
from typing import Any

from celeriac.app.settings import (
    NAMESPACES,
    OLD_NAMES,
    SETTINGS,
    Setting,
    closest_setting,
)
from celeriac.app.settings import defaults as table_defaults
from celeriac.exceptions import CDeprecationWarning, ImproperlyConfigured, UnknownSettingWarning

__all__ = [
    "CONFIG_MODULE_ENVVAR",
    "ENV_OVERRIDES",
    "Settings",
    "censor",
    "import_config_source",
    "read_source",
]

ENV_OVERRIDES: Mapping[str, tuple[str, ...]] = {
    "broker_url": ("CELERIAC_BROKER_URL", "CELERY_BROKER_URL"),
    "broker_read_url": ("CELERY_BROKER_READ_URL",),
    "broker_write_url": ("CELERY_BROKER_WRITE_URL",),
    "result_backend": ("CELERIAC_RESULT_BACKEND", "CELERY_RESULT_BACKEND"),
}
"""Settings an environment variable overrides, with the variables checked first to last.

These are the variables Celery 5.7 reads for settings; ``CELERIAC_*`` names are celeriac's aliases
and win over the ``CELERY_*`` ones when both are set (a mixed fleet can point each at its own).
"""

CONFIG_MODULE_ENVVAR = "CELERY_CONFIG_MODULE"
"""Names the module Celery loads settings from when the app was given no config object."""

# Django's own time zone setting: Celery falls back to it when ``timezone`` is unset.
_DJANGO_TIME_ZONE = "TIME_ZONE"

_MASK = "********"
_SECRET_KEY = re.compile(
    r"pass|secret|token|signature|credential|api_?key|access_key|(?<!routing)_key$|^key$",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(r"([a-zA-Z][\w+.-]*://[^:/@\s;]*:)([^@/\s;]*)(@)")


def censor(key: str, value: Any) -> Any:
    """``value`` safe to print: secrets masked by key name, passwords masked inside URLs."""
    if isinstance(value, Mapping):
        return {k: censor(str(k), v) for k, v in value.items()}
    if _SECRET_KEY.search(key) and value not in (None, ""):
        return _MASK
    if isinstance(value, str):
        return _URL_PASSWORD.sub(rf"\1{_MASK}\3", value)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return type(value)(censor(key, v) for v in value)
    return value


# -- reading config sources -----------------------------------------------------------------------


def import_config_source(path: str) -> Any:
    """Import ``"pkg.module"``, ``"pkg.module:attr"`` or ``"pkg.module.attr"``.

    The current directory is searched too (as Celery does), so ``celeryconfig.py`` next to where
    the program was started is found. Raises ImportError or AttributeError when not found.
    """
    module_name, _, attr = path.partition(":")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        if attr:
            return _getattr_path(importlib.import_module(module_name), attr)
        try:
            return importlib.import_module(path)
        except ImportError:
            parent, _, name = path.rpartition(".")
            if not parent:
                raise
            return _getattr_path(importlib.import_module(parent), name)
    finally:
        if added:
            sys.path.remove(cwd)


def _getattr_path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _is_code(value: Any) -> bool:
    # Imports and helpers in a config module are not settings.
    return (
        inspect.ismodule(value)
        or inspect.isclass(value)
        or inspect.isfunction(value)
        or inspect.ismethod(value)
        or inspect.isbuiltin(value)
    )


def read_source(obj: Any, wanted: Callable[[str], bool] = lambda key: True) -> dict[str, Any]:
    """The settings an object holds: a mapping's items, or an object's public attributes.

    For modules, classes and other objects (Django's lazy settings included) the public attributes
    ``wanted`` accepts are read with ``dir()``/``getattr``. Imported modules, classes and
    functions are skipped unless their name is a setting (``task_routes`` may be a function), and
    so are other attributes that fail to read (a framework's own settings may refuse until set).
    """
    if isinstance(obj, Mapping):
        return {str(k): v for k, v in obj.items() if wanted(str(k))}
    found: dict[str, Any] = {}
    for key in dir(obj):
        if key.startswith("_") or not wanted(key):
            continue
        is_setting = key in SETTINGS or key in OLD_NAMES
        try:
            value = getattr(obj, key)
        except Exception:
            if is_setting:
                raise
            continue
        if _is_code(value) and not is_setting:
            continue
        found[key] = value
    return found


# (setting name, value, the old name it was given as, if any)
_Entry = tuple[str, Any, str | None]


def _namespaced(items: Mapping[str, Any], prefix: str) -> list[_Entry]:
    """Keys under ``prefix`` (``"CELERY_"``) as ``(name, value, old name or None)``.

    ``CELERY_BROKER_URL`` becomes ``broker_url``; old names after the prefix are accepted too
    (``CELERY_ALWAYS_EAGER``, ``CELERY_CELERYD_CONCURRENCY``). Other keys under the prefix are kept,
    lowercased, as the user's own values.
    """
    picked: list[_Entry] = []
    for key, value in items.items():
        if not key.upper().startswith(prefix):
            if key == _DJANGO_TIME_ZONE:
                picked.append((key, value, None))
            continue
        rest = key[len(prefix) :]
        if rest.lower() in SETTINGS:
            picked.append((rest.lower(), value, None))
        elif key.upper() in OLD_NAMES:
            picked.append((OLD_NAMES[key.upper()], value, key))
        elif rest.upper() in OLD_NAMES:
            picked.append((OLD_NAMES[rest.upper()], value, key))
        else:
            picked.append((rest.lower(), value, None))
    return picked


def _plain(items: Mapping[str, Any]) -> list[_Entry]:
    return [
        (OLD_NAMES.get(key, key), value, key if key in OLD_NAMES else None)
        for key, value in items.items()
    ]


def _warn_old_names(renamed: Mapping[str, str]) -> None:
    if renamed:
        pairs = ", ".join(f"{old} -> {new}" for old, new in sorted(renamed.items()))
        warnings.warn(
            f"old uppercase setting names are deprecated; rename: {pairs}",
            CDeprecationWarning,
            stacklevel=4,
        )


# -- the settings mapping -------------------------------------------------------------------------


_Resolver = Callable[["Settings"], Any]


class Settings(MutableMapping[str, Any]):
    """The app's settings: a mapping with attribute access (``conf.task_always_eager = True``).

    Starts from the table's defaults; what the user sets is kept in :attr:`changes`. Values are
    checked and text converted when set (``"true"`` becomes ``True`` for a bool setting), so reads
    are plain dict lookups. Unknown keys are kept as the user's own values;
    :meth:`check_unknown` reports the ones that look misspelt. Old uppercase names
    (``CELERY_ALWAYS_EAGER``) are stored under today's names, with a deprecation warning.

    ``environ`` is where the URL overrides of :data:`ENV_OVERRIDES` are read from (default: the
    live ``os.environ``). See the module docstring for the full precedence.
    """

    _changes: dict[str, Any]
    _defaults: dict[str, Any]
    _environ: Mapping[str, str] | None
    _extra_defaults: dict[str, Any]
    _values: dict[str, Any]

    def __init__(
        self,
        changes: Mapping[str, Any] | None = None,
        *,
        defaults: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        object.__setattr__(self, "_environ", environ)
        object.__setattr__(self, "_extra_defaults", {})
        object.__setattr__(self, "_defaults", table_defaults())
        object.__setattr__(self, "_changes", {})
        object.__setattr__(self, "_values", {})
        self._store(self._defaults)
        if defaults:
            self.add_defaults(defaults)
        if changes:
            self.update(changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings reading ``environ`` (default ``os.environ``), with :meth:`apply_env` done."""
        settings = cls(environ=environ)
        settings.apply_env()
        return settings

    # -- reads (hot path: keep them dict lookups) ----------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: derived settings, names hidden by methods,
        # old names and misspellings. Private names must fail fast (pickling, half-built objects).
        if name.startswith("_"):
            raise AttributeError(name)
        resolve = _RESOLVERS.get(name)
        if resolve is not None:
            return resolve(self)
        try:
            return self._values[name]
        except KeyError:
            return self._missing(name, AttributeError)

    def __getitem__(self, key: str) -> Any:
        resolve = _RESOLVERS.get(key)
        if resolve is not None:
            return resolve(self)
        try:
            return self._values[key]
        except KeyError:
            return self._missing(key, KeyError)

    def _missing(self, key: str, error: type[Exception]) -> Any:
        new = OLD_NAMES.get(key)
        if new is not None:
            return self[new]
        hint = closest_setting(key)
        suffix = f"; did you mean {hint!r}?" if hint else ""
        raise error(f"no setting named {key!r}{suffix}")

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` (old names accepted), or ``default`` when there is none."""
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return key in self._values or key in OLD_NAMES

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __dir__(self) -> Iterable[str]:
        return sorted({*super().__dir__(), *self._values})

    def __repr__(self) -> str:
        return f"<Settings: {len(self._changes)} changed of {len(self._values)}>"

    # -- writes ----------------------------------------------------------------------------------

    def _store(self, values: Mapping[str, Any]) -> None:
        # Values are mirrored into the instance __dict__ so attribute reads run at native speed;
        # names that would hide a method or a derived setting stay reachable through __getattr__.
        self._values.update(values)
        self.__dict__.update((k, v) for k, v in values.items() if k not in _NOT_MIRRORED)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __delitem__(self, key: str) -> None:
        """Forget what the user set for ``key``; the default (if any) shows again."""
        key = OLD_NAMES.get(key, key)
        del self._changes[key]
        if key in self._defaults:
            self._store({key: self._defaults[key]})
        else:
            del self._values[key]
            self.__dict__.pop(key, None)

    def update(  # type: ignore[override]
        self, mapping: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None, /, **kwargs: Any
    ) -> None:
        """Set several values at once; all are checked first, and nothing is set if one is bad.

        Old uppercase names are translated (a new name given in the same call wins) and one
        deprecation warning lists them.
        """
        items: dict[str, Any] = dict(mapping or {})
        items.update(kwargs)
        self._apply(_plain(items))

    def _apply(self, entries: Iterable[_Entry]) -> None:
        old_first = sorted(entries, key=lambda e: e[2] is None)  # new names win over old ones
        checked: dict[str, Any] = {}
        renamed: dict[str, str] = {}
        errors: list[str] = []
        for name, value, old_key in old_first:
            spec = SETTINGS.get(name)
            if old_key is not None:
                renamed[old_key] = name
            if spec is None:
                checked[name] = value
                continue
            try:
                checked[name] = spec.convert(value)
            except ImproperlyConfigured as exc:
                errors.append(str(exc))
        if errors:
            raise ImproperlyConfigured(_listing(errors))
        _warn_old_names(renamed)
        self._changes.update(checked)
        self._store(checked)

    def setdefault(self, key: str, default: Any = None) -> Any:
        """The value of ``key``; set it to ``default`` first if there is none (defaults count)."""
        if key not in self:
            self[key] = default
        return self[key]

    def pop(self, key: str, *default: Any) -> Any:
        """Remove what the user set for ``key`` and return it (defaults are not removable)."""
        key = OLD_NAMES.get(key, key)
        if key in self._changes:
            value = self._changes[key]
            del self[key]
            return value
        if default:
            return default[0]
        raise KeyError(key)

    def popitem(self) -> tuple[str, Any]:
        """Remove and return the most recent user change."""
        if not self._changes:
            raise KeyError("no changes to pop")
        key = next(reversed(self._changes))
        return key, self.pop(key)

    def clear(self) -> None:
        """Forget every user change (defaults stay)."""
        for key in list(self._changes):
            del self[key]

    def add_defaults(self, mapping: Mapping[str, Any]) -> None:
        """Add or replace defaults (below user changes), as frameworks and integrations do."""
        entries = _plain(dict(mapping))
        errors = []
        for name, value, _old_key in entries:
            spec = SETTINGS.get(name)
            try:
                value = spec.convert(value) if spec else value
            except ImproperlyConfigured as exc:
                errors.append(str(exc))
                continue
            self._extra_defaults[name] = value
            self._defaults[name] = value
            if name not in self._changes:
                self._store({name: value})
        if errors:
            raise ImproperlyConfigured(_listing(errors))

    def copy(self) -> Settings:
        """An independent copy (same changes, defaults and environment)."""
        clone = Settings(defaults=deepcopy(self._extra_defaults), environ=self._environ)
        clone._changes.update(deepcopy(self._changes))
        clone._store(clone._changes)
        return clone

    __copy__ = copy

    # -- loading ---------------------------------------------------------------------------------

    def config_from_object(
        self,
        obj: Any,
        *,
        namespace: str | None = None,
        silent: bool = False,
        force: bool = False,
    ) -> bool:
        """Load settings from a config source; return False if ``silent`` and it was not found.

        ``obj`` may be a module path (``"proj.celeryconfig"``), ``"module:attr"``
        (``"django.conf:settings"``), a module, a class, any object (its public attributes), or a
        mapping. With ``namespace="CELERY"`` only keys starting with ``CELERY_`` are read:
        ``CELERY_BROKER_URL`` sets ``broker_url`` and ``CELERY_ALWAYS_EAGER`` (an old name after
        the prefix) sets ``task_always_eager``. Values are merged into the user's changes, so a
        later call overrides an earlier one key by key. ``force`` is accepted for Celery
        compatibility; loading is always immediate here.
        """
        del force
        if isinstance(obj, str):
            try:
                obj = import_config_source(obj)
            except (ImportError, AttributeError):
                if silent:
                    return False
                raise
        if namespace:
            prefix = namespace.rstrip("_").upper() + "_"
            items = read_source(
                obj, lambda k: k.upper().startswith(prefix) or k == _DJANGO_TIME_ZONE
            )
            self._apply(_namespaced(items, prefix))
        else:
            self._apply(_plain(read_source(obj)))
        return True

    def config_from_envvar(self, variable_name: str, silent: bool = False) -> bool:
        """Load the config source named by environment variable ``variable_name``.

        Returns False if ``silent`` and the variable is unset or the source is not found;
        otherwise an unset variable raises ImproperlyConfigured.
        """
        module_name = self.environ.get(variable_name)
        if not module_name:
            if silent:
                return False
            raise ImproperlyConfigured(
                f"environment variable {variable_name!r} is not set; set it to a module path "
                "like 'proj.celeryconfig' to load settings from it"
            )
        return self.config_from_object(module_name, silent=silent)

    def apply_env(self) -> bool:
        """Load the module named by ``CELERY_CONFIG_MODULE`` if set (True when loaded).

        Celery does this when the app was given no config object; the URL overrides of
        :data:`ENV_OVERRIDES` need no call, they are read live.
        """
        return self.config_from_envvar(CONFIG_MODULE_ENVVAR, silent=True)

    @property
    def environ(self) -> Mapping[str, str]:
        """The environment the URL overrides are read from."""
        return os.environ if self._environ is None else self._environ

    def env_values(self) -> dict[str, str]:
        """The settings the environment overrides right now, by setting name."""
        found = {}
        for name in ENV_OVERRIDES:
            value = self._from_env(name)
            if value:
                found[name] = value
        return found

    def _from_env(self, name: str) -> str | None:
        environ = self.environ
        for variable in ENV_OVERRIDES[name]:
            value = environ.get(variable)
            if value:
                return value
        return None

    # -- introspection ---------------------------------------------------------------------------

    @property
    def changes(self) -> dict[str, Any]:
        """A copy of what the user set (config objects, update, assignments), by setting name."""
        return dict(self._changes)

    def value_set_for(self, key: str) -> bool:
        """Whether the user or the environment set ``key`` (rather than it being a default)."""
        key = OLD_NAMES.get(key, key)
        return key in self._changes or (key in ENV_OVERRIDES and bool(self._from_env(key)))

    def find_option(self, name: str, namespace: str = "celery") -> tuple[str | None, str, Setting]:
        """Find a setting by partial name: ``(namespace, key, setting)``.

        Tries ``<namespace>_<name>``, then ``name`` itself, then ``<ns>_<name>`` for each namespace
        in table order; ``find_option("always_eager", "task")`` finds ``task_always_eager``.
        """
        name, namespace = name.lower(), namespace.lower()
        if f"{namespace}_{name}" in SETTINGS:
            return namespace, name, SETTINGS[f"{namespace}_{name}"]
        if name in SETTINGS:
            return None, name, SETTINGS[name]
        for ns in NAMESPACES:
            if f"{ns}_{name}" in SETTINGS:
                return ns, name, SETTINGS[f"{ns}_{name}"]
        hint = closest_setting(name)
        raise KeyError(
            f"no setting matches {name!r}" + (f"; did you mean {hint!r}?" if hint else "")
        )

    def find_value_for_key(self, name: str, namespace: str = "celery") -> Any:
        """The value of the setting :meth:`find_option` finds."""
        ns, key, _ = self.find_option(name, namespace)
        return self.get_by_parts(ns, key)

    def get_by_parts(self, *parts: str | None) -> Any:
        """The value of the setting named by ``parts`` joined with ``_``."""
        return self["_".join(part for part in parts if part)]

    def table(self, with_defaults: bool = False, censored: bool = True) -> dict[str, Any]:
        """Settings as a dict: the user's changes and environment overrides, or all values."""
        keys = self._values if with_defaults else {**self._changes, **self.env_values()}
        result = {key: self[key] for key in keys if not key.startswith("_")}
        if censored:
            return {key: censor(key, value) for key, value in result.items()}
        return result

    def humanize(self, with_defaults: bool = False, censored: bool = True) -> str:
        """Readable ``key: value`` lines of :meth:`table`, secrets masked by default."""
        return "\n".join(
            f"{key}: {pprint.pformat(value, width=50)}"
            for key, value in self.table(with_defaults, censored).items()
        )

    # -- checks ----------------------------------------------------------------------------------

    def check_unknown(self) -> dict[str, str | None]:
        """Report keys that are not settings: ``{key: closest setting or None}``.

        Warns (UnknownSettingWarning) for each key that looks like a misspelt setting: it is close
        to a setting name, or it starts with a setting namespace such as ``task_``. Other unknown
        keys are the user's own values and are only returned.
        """
        unknown: dict[str, str | None] = {}
        for key in self._values:
            if key in SETTINGS or key.startswith("_") or key == _DJANGO_TIME_ZONE:
                continue
            hint = closest_setting(key)
            unknown[key] = hint
            if hint is not None:
                message = f"unknown setting {key!r}; did you mean {hint!r}?"
            elif key.split("_", 1)[0] in NAMESPACES and "_" in key:
                message = (
                    f"unknown setting {key!r}: no {key.split('_', 1)[0]}_* setting has that name"
                )
            else:
                continue
            warnings.warn(message, UnknownSettingWarning, stacklevel=2)
        return unknown

    def validate(self) -> None:
        """Check every known setting's current value; raise listing each bad one."""
        errors = []
        for name, spec in SETTINGS.items():
            try:
                spec.convert(self[name])
            except ImproperlyConfigured as exc:
                errors.append(str(exc))
        if errors:
            raise ImproperlyConfigured(_listing(errors))

    # -- pickling (the prefork pool sends settings to children) ---------------------------------

    def __reduce__(self) -> tuple[Any, ...]:
        environ = None if self._environ is None else dict(self._environ)
        return (_rebuild, (self._changes, self._extra_defaults, environ))


def _rebuild(
    changes: dict[str, Any], extra_defaults: dict[str, Any], environ: dict[str, str] | None
) -> Settings:
    settings = Settings(defaults=extra_defaults, environ=environ)
    settings._changes.update(changes)
    settings._store(changes)
    return settings


def _listing(errors: list[str]) -> str:
    if len(errors) == 1:
        return f"invalid configuration: {errors[0]}"
    return "invalid configuration:\n" + "\n".join(f"  - {e}" for e in errors)


# -- values that Celery derives when read ------------------------------------------------------


def _first_set(settings: Settings, *keys: str) -> Any:
    values = settings._values
    for key in keys:
        value = values.get(key)
        if value is not None:
            return value
    return None


def _broker_url(settings: Settings) -> Any:
    return settings._from_env("broker_url") or _first_set(settings, "broker_url", "broker_host")


def _broker_read_url(settings: Settings) -> Any:
    return (
        settings._from_env("broker_read_url")
        or settings._values.get("broker_read_url")
        or _broker_url(settings)
    )


def _broker_write_url(settings: Settings) -> Any:
    return (
        settings._from_env("broker_write_url")
        or settings._values.get("broker_write_url")
        or _broker_url(settings)
    )


def _result_backend(settings: Settings) -> Any:
    return settings._from_env("result_backend") or settings._values.get("result_backend")


_RESOLVERS: dict[str, _Resolver] = {
    "broker_url": _broker_url,
    "broker_read_url": _broker_read_url,
    "broker_write_url": _broker_write_url,
    "result_backend": _result_backend,
    "timezone": lambda s: _first_set(s, "timezone", _DJANGO_TIME_ZONE),
    "task_default_exchange": lambda s: _first_set(s, "task_default_exchange", "task_default_queue"),
    "task_default_routing_key": lambda s: _first_set(
        s, "task_default_routing_key", "task_default_queue"
    ),
}
"""Settings whose value is derived when read, as Celery's do (env overrides and fallbacks)."""


class _NotMirrored:
    """Keys never copied into a Settings instance's ``__dict__``."""

    def __contains__(self, key: object) -> bool:
        return (
            not isinstance(key, str)
            or key.startswith("_")
            or key in _RESOLVERS
            or key in _CLASS_ATTRIBUTES
        )


_CLASS_ATTRIBUTES = frozenset(dir(Settings))
_NOT_MIRRORED = _NotMirrored()
