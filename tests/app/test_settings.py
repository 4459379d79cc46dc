"""The settings table: Celery 5.7's names, defaults and old names; kinds; the docs table."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from celeriac.app import settings as table
from celeriac.app.settings import (
    OLD_NAMES,
    SETTINGS,
    closest_setting,
    coerce_setting,
    defaults,
    new_name,
    settings_markdown_table,
)
from celeriac.exceptions import ImproperlyConfigured

celery_defaults = pytest.importorskip("celery.app.defaults")

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
CELERIAC_ONLY = {
    "broker_dead_letter_queue": "celeriac.dlq",
    "worker_eta_park_threshold": 60.0,
    "worker_pool_fetch": True,
    "beat_catch_up": "once",
    "beat_lock_url": None,
}


def test_every_celery_setting_is_in_the_table_and_nothing_else_but_ours() -> None:
    ours = set(SETTINGS) - set(CELERIAC_ONLY)
    assert ours == set(celery_defaults.DEFAULTS)


def test_defaults_are_celerys() -> None:
    for name, value in celery_defaults.DEFAULTS.items():
        assert SETTINGS[name].default == value, name


def test_celeriac_settings_and_their_defaults() -> None:
    for name, value in CELERIAC_ONLY.items():
        assert SETTINGS[name].default == value
        assert SETTINGS[name].celeriac_only
        assert SETTINGS[name].old == ()


def test_old_names_are_celerys() -> None:
    for name, old in celery_defaults._TO_OLD_KEY.items():
        assert SETTINGS[name].old == (old,), name
    assert dict(OLD_NAMES) == celery_defaults._TO_NEW_KEY


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("CELERY_ALWAYS_EAGER", "task_always_eager"),
        ("BROKER_URL", "broker_url"),
        ("CELERYD_CONCURRENCY", "worker_concurrency"),
        ("CELERYBEAT_SCHEDULE", "beat_schedule"),
        ("CELERY_RESULT_BACKEND", "result_backend"),
        ("CELERY_TASK_RESULT_EXPIRES", "result_expires"),
        ("CELERY_QUEUES", "task_queues"),
        ("CELERY_RESULT_DBURI", "database_url"),
    ],
)
def test_new_name(old: str, new: str) -> None:
    assert new_name(old) == new
    assert new_name(new) == new
    assert new_name("my_own") == "my_own"


def test_every_default_passes_its_own_check() -> None:
    for spec in SETTINGS.values():
        assert spec.convert(spec.default) == spec.default, spec.name


def test_defaults_are_fresh_copies() -> None:
    first = defaults()
    first["beat_schedule"]["x"] = 1
    assert defaults()["beat_schedule"] == {}


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("task_always_eager", "true", True),
        ("task_always_eager", "False", False),
        ("task_always_eager", "1", True),
        ("task_always_eager", "off", False),
        ("worker_prefetch_multiplier", "8", 8),
        ("worker_concurrency", "3", 3),
        ("worker_concurrency", "auto", "auto"),
        ("broker_connection_timeout", "2.5", 2.5),
        ("result_expires", "60", 60.0),
        ("accept_content", "json, msgpack", ["json", "msgpack"]),
        ("imports", "a.tasks,b.tasks", ("a.tasks", "b.tasks")),
        ("broker_use_ssl", "yes", True),
        ("beat_catch_up", "all", "all"),
    ],
)
def test_text_is_coerced_like_celery_does_for_env_and_cli(
    name: str, text: str, value: object
) -> None:
    assert coerce_setting(name, text) == value


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("task_acks_late", timedelta(1)),
        ("broker_connection_timeout", 4),
        ("result_expires", timedelta(hours=2)),
        ("result_expires", None),
        ("timezone", ZoneInfo("Europe/Paris")),
        ("task_queues", ({"name": "a"},)),
        ("task_routes", lambda *a: None),
        ("broker_url", ["redis://a//", "redis://b//"]),
        ("broker_use_ssl", {"cert_reqs": 0}),
        ("security_key_password", b"secret"),
        ("beat_scheduler", dict),
    ],
)
def test_accepted_values_pass_unchanged(name: str, value: object) -> None:
    if name == "task_acks_late":  # not a bool: refused
        with pytest.raises(ImproperlyConfigured):
            coerce_setting(name, value)
        return
    assert coerce_setting(name, value) is value


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("task_always_eager", "maybe", "expected bool"),
        ("worker_concurrency", True, 'expected int or "auto" or None'),
        ("worker_prefetch_multiplier", "four", "expected int"),
        ("worker_prefetch_multiplier", None, "expected int"),
        ("task_default_queue", 5, "expected str"),
        ("beat_catch_up", "sometimes", "expected 'once' | 'all' | 'skip'"),
        ("accept_content", [1], "expected list of str"),
        ("task_publish_retry_policy", "fast", "expected dict"),
    ],
)
def test_wrong_type_is_refused_naming_setting_value_and_form(
    name: str, value: object, expected: str
) -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        coerce_setting(name, value)
    message = str(info.value)
    assert repr(name) in message
    assert repr(value) in message
    assert expected in message


def test_old_names_are_checked_under_their_new_name() -> None:
    with pytest.raises(ImproperlyConfigured, match="task_always_eager"):
        coerce_setting("CELERY_ALWAYS_EAGER", "perhaps")
    assert coerce_setting("not_a_setting", object) is object


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("broker_ulr", "broker_url"),
        ("task_always_eagre", "task_always_eager"),
        ("worker_concurency", "worker_concurrency"),
        ("result_backed", "result_backend"),
        ("CELERY_ALWAYS_EAGR", "task_always_eager"),
    ],
)
def test_closest_setting(typo: str, meant: str) -> None:
    assert closest_setting(typo) == meant


def test_closest_setting_none_for_unrelated_names() -> None:
    assert closest_setting("my_project_flag") is None


def test_namespaces() -> None:
    for ns in ("broker", "task", "worker", "beat", "result", "redis", "security", "database"):
        assert ns in table.NAMESPACES


def test_markdown_table_has_one_row_per_setting() -> None:
    lines = settings_markdown_table().splitlines()
    assert len(lines) == 2 + len(SETTINGS)
    assert (
        "| `task_always_eager` | `False` | bool | `CELERY_ALWAYS_EAGER` |"
        in lines[2 + list(SETTINGS).index("task_always_eager")]
    )
    row = next(line for line in lines if line.startswith("| `beat_catch_up`"))
    assert "*celeriac:*" in row
    for line in lines:
        assert line.count(" | ") == 4 or line.startswith("|---"), line


def test_docs_table_matches_the_settings_table() -> None:
    text = DOCS.read_text(encoding="utf-8")
    found = re.search(
        r"<!-- settings-table:start -->\n(.*?)<!-- settings-table:end -->", text, re.DOTALL
    )
    assert found, "docs/configuration.md lost its settings-table markers"
    assert found.group(1) == settings_markdown_table(), (
        "docs/configuration.md is out of date: paste settings_markdown_table() between the "
        "settings-table markers"
    )
