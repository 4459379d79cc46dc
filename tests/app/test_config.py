"""``app.conf``: the Settings mapping, config sources, namespaces, env vars, warnings, pickling."""

from __future__ import annotations

import pickle
import sys
import textwrap
import types
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from celeriac.app.config import Settings, censor, import_config_source, read_source
from celeriac.app.settings import SETTINGS
from celeriac.exceptions import CDeprecationWarning, ImproperlyConfigured, UnknownSettingWarning

NO_ENV: dict[str, str] = {}


@pytest.fixture
def conf() -> Settings:
    return Settings(environ=NO_ENV)


@pytest.fixture
def config_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh importable package ``cfgpkg_<n>`` with a ``celeryconfig`` module and a class."""
    name = f"cfgpkg_{tmp_path.name.replace('-', '_')}"
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "celeryconfig.py").write_text(
        textwrap.dedent(
            """
            import os
            from datetime import timedelta

            broker_url = "redis://localhost:6379/3"
            task_always_eager = True
            result_expires = timedelta(hours=1)
            _private = 1

            def route_task(name, args, kwargs, options, task=None, **kw):
                return None

            class Config:
                task_default_queue = "from-class"
                worker_concurrency = 2

            settings = Config()
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


# -- the mapping --------------------------------------------------------------------------------


def test_starts_with_every_default(conf: Settings) -> None:
    assert len(conf) == len(SETTINGS)
    assert conf.task_default_queue == "celery"
    assert conf["worker_prefetch_multiplier"] == 4
    assert conf.broker_url is None
    assert conf.result_backend is None
    assert conf.result_expires == timedelta(days=1)
    assert conf.changes == {}


def test_attribute_and_item_access_write_the_same_place(conf: Settings) -> None:
    conf.task_always_eager = True
    assert conf["task_always_eager"] is True
    conf["worker_concurrency"] = 3
    assert conf.worker_concurrency == 3
    assert conf.changes == {"task_always_eager": True, "worker_concurrency": 3}


def test_update_forms(conf: Settings) -> None:
    conf.update({"task_acks_late": True}, task_track_started=True)
    conf.update([("task_default_queue", "q")])
    conf.update()
    assert (conf.task_acks_late, conf.task_track_started, conf.task_default_queue) == (
        True,
        True,
        "q",
    )


def test_text_is_converted_on_write(conf: Settings) -> None:
    conf.update(task_always_eager="true", worker_concurrency="4", broker_heartbeat="10")
    assert conf.task_always_eager is True
    assert conf.worker_concurrency == 4
    assert conf.broker_heartbeat == 10.0


def test_get_setdefault_contains(conf: Settings) -> None:
    assert conf.get("task_default_queue") == "celery"
    assert conf.get("nope", 7) == 7
    assert conf.setdefault("task_default_queue", "other") == "celery"  # defaults count
    assert conf.setdefault("my_value", 1) == 1
    assert conf.my_value == 1
    assert "task_always_eager" in conf
    assert "CELERY_ALWAYS_EAGER" in conf
    assert "nope" not in conf


def test_delete_pop_clear_restore_defaults(conf: Settings) -> None:
    conf.update(task_default_queue="q", mine=1, worker_pool="threads")
    del conf.task_default_queue
    assert conf.task_default_queue == "celery"
    assert conf.pop("mine") == 1
    assert "mine" not in conf
    assert conf.pop("task_acks_late", "dflt") == "dflt"  # defaults cannot be popped
    with pytest.raises(KeyError):
        conf.pop("task_acks_late")
    with pytest.raises(KeyError):
        del conf["task_acks_late"]
    assert conf.popitem() == ("worker_pool", "threads")
    conf.update(task_acks_late=True)
    conf.clear()
    assert conf.changes == {}
    assert len(conf) == len(SETTINGS)


def test_unknown_attribute_names_the_closest_setting(conf: Settings) -> None:
    with pytest.raises(AttributeError, match="did you mean 'broker_url'"):
        conf.broker_ulr  # noqa: B018
    with pytest.raises(KeyError, match="did you mean 'broker_url'"):
        conf["broker_ulr"]


def test_user_values_may_share_a_method_name(conf: Settings) -> None:
    conf["update"] = "mine"
    assert conf["update"] == "mine"
    conf.update(task_acks_late=True)  # the method still works
    assert conf.task_acks_late is True


def test_dir_lists_settings(conf: Settings) -> None:
    assert "task_always_eager" in dir(conf)


def test_copy_is_independent(conf: Settings) -> None:
    conf.beat_schedule = {"a": {"task": "t", "schedule": 1.0}}
    clone = conf.copy()
    clone.task_default_queue = "other"
    clone.beat_schedule["b"] = {}
    assert conf.task_default_queue == "celery"
    assert list(conf.beat_schedule) == ["a"]


def test_mutable_defaults_are_not_shared() -> None:
    one, two = Settings(), Settings()
    one.beat_schedule["x"] = {}
    assert two.beat_schedule == {}


def test_add_defaults_stay_below_changes(conf: Settings) -> None:
    conf.task_default_queue = "user"
    conf.add_defaults({"task_default_queue": "framework", "worker_pool": "threads"})
    assert conf.task_default_queue == "user"
    assert conf.worker_pool == "threads"
    assert "worker_pool" not in conf.changes
    del conf.task_default_queue
    assert conf.task_default_queue == "framework"


# -- validation ---------------------------------------------------------------------------------


def test_wrong_type_raises_with_a_clear_message(conf: Settings) -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        conf.worker_prefetch_multiplier = "lots"
    assert str(info.value) == (
        "invalid configuration: setting 'worker_prefetch_multiplier' got 'lots' (str); expected int"
    )


def test_update_lists_every_bad_value_and_sets_nothing(conf: Settings) -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        conf.update(task_acks_late="maybe", worker_concurrency=True, task_default_queue="ok")
    message = str(info.value)
    assert "'task_acks_late' got 'maybe'" in message
    assert "'worker_concurrency' got True" in message
    assert conf.task_default_queue == "celery"


def test_validate_reports_values_changed_in_place(conf: Settings) -> None:
    conf.validate()
    conf.accept_content = ["json"]
    conf.accept_content.append(5)
    conf.imports = ["a"]
    conf.imports.append(None)
    with pytest.raises(ImproperlyConfigured) as info:
        conf.validate()
    assert "accept_content" in str(info.value)
    assert "imports" in str(info.value)


# -- old names ----------------------------------------------------------------------------------


def test_old_names_are_translated_with_one_deprecation_warning(conf: Settings) -> None:
    with pytest.warns(CDeprecationWarning) as record:
        conf.update(CELERY_ALWAYS_EAGER=True, BROKER_URL="redis://h//", CELERYD_CONCURRENCY=2)
    assert len(record) == 1
    assert "CELERY_ALWAYS_EAGER -> task_always_eager" in str(record[0].message)
    assert conf.changes == {"task_always_eager": True, "broker_url": "redis://h//",
                            "worker_concurrency": 2}  # fmt: skip
    assert conf["CELERYD_CONCURRENCY"] == 2
    assert conf.CELERY_ALWAYS_EAGER is True


def test_new_name_wins_over_old_name_in_one_load(conf: Settings) -> None:
    with pytest.warns(CDeprecationWarning):
        conf.update(task_always_eager=False, CELERY_ALWAYS_EAGER=True)
    assert conf.task_always_eager is False


# -- unknown settings -----------------------------------------------------------------------------


def test_misspelt_setting_warns_naming_the_closest(conf: Settings) -> None:
    conf.broker_ulr = "redis://"
    with pytest.warns(UnknownSettingWarning, match="'broker_ulr'; did you mean 'broker_url'"):
        found = conf.check_unknown()
    assert found == {"broker_ulr": "broker_url"}
    assert conf.broker_ulr == "redis://"  # kept


def test_own_values_are_kept_quietly(conf: Settings) -> None:
    conf.update(my_project_flag=True, TIME_ZONE="UTC")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert conf.check_unknown() == {"my_project_flag": None}


def test_unknown_name_in_a_setting_namespace_warns(conf: Settings) -> None:
    conf.task_zzqx = 1
    with pytest.warns(UnknownSettingWarning, match="no task_\\* setting"):
        conf.check_unknown()


# -- config_from_object -------------------------------------------------------------------------


def test_from_module_path(conf: Settings, config_module: str) -> None:
    assert conf.config_from_object(f"{config_module}.celeryconfig") is True
    assert conf.broker_url == "redis://localhost:6379/3"
    assert conf.task_always_eager is True
    assert conf.result_expires == timedelta(hours=1)
    # imports, helpers, classes and private names are not settings
    for name in ("os", "timedelta", "route_task", "Config", "_private"):
        assert name not in conf.changes


def test_from_module_object(conf: Settings, config_module: str) -> None:
    module = import_config_source(f"{config_module}.celeryconfig")
    assert isinstance(module, types.ModuleType)
    conf.config_from_object(module)
    assert conf.task_always_eager is True


def test_from_module_attr_and_dotted_attr(conf: Settings, config_module: str) -> None:
    conf.config_from_object(f"{config_module}.celeryconfig:settings")
    assert conf.task_default_queue == "from-class"
    other = Settings(environ=NO_ENV)
    other.config_from_object(f"{config_module}.celeryconfig.Config")
    assert other.worker_concurrency == 2


def test_from_class_and_instance(conf: Settings) -> None:
    class Config:
        task_acks_late = True
        task_routes = staticmethod(lambda *a, **k: {"queue": "q"})

        def helper(self) -> None: ...

    conf.config_from_object(Config)
    assert conf.task_acks_late is True
    assert callable(conf.task_routes)  # a function that is a setting is kept

    instance = Settings(environ=NO_ENV)
    obj = Config()
    obj.task_default_queue = "inst"  # type: ignore[attr-defined]
    instance.config_from_object(obj)
    assert instance.task_default_queue == "inst"
    assert "helper" not in instance.changes


def test_from_mapping(conf: Settings) -> None:
    conf.config_from_object({"task_serializer": "json", "broker_url": "memory://"})
    assert conf.broker_url == "memory://"


def test_later_sources_merge_over_earlier(conf: Settings) -> None:
    conf.config_from_object({"task_default_queue": "a", "task_acks_late": True})
    conf.config_from_object({"task_default_queue": "b"})
    assert (conf.task_default_queue, conf.task_acks_late) == ("b", True)


def test_missing_source(conf: Settings) -> None:
    assert conf.config_from_object("no_such_module_xyz.config", silent=True) is False
    with pytest.raises(ImportError):
        conf.config_from_object("no_such_module_xyz.config")
    assert conf.config_from_object("os:no_such_attr", silent=True) is False


def test_bad_value_in_source_raises(conf: Settings) -> None:
    with pytest.raises(ImproperlyConfigured, match="'task_always_eager' got 'sometimes'"):
        conf.config_from_object({"task_always_eager": "sometimes"})


def test_old_names_in_source(conf: Settings) -> None:
    class Old:
        CELERY_ALWAYS_EAGER = True
        BROKER_URL = "redis://old//"
        CELERYD_CONCURRENCY = 3
        CELERYBEAT_SCHEDULE: dict[str, object] = {}

    with pytest.warns(CDeprecationWarning):
        conf.config_from_object(Old)
    assert (conf.task_always_eager, conf.broker_url, conf.worker_concurrency) == (
        True,
        "redis://old//",
        3,
    )


def test_namespace_maps_prefixed_keys(conf: Settings) -> None:
    class DjangoLike:
        DEBUG = True
        INSTALLED_APPS = ["x"]
        task_acks_late = True  # not under the namespace: ignored
        CELERY_BROKER_URL = "redis://ns//"
        CELERY_TASK_ALWAYS_EAGER = True
        CELERY_RESULT_BACKEND = "redis://ns/1"
        CELERY_WORKER_CONCURRENCY = 6
        CELERY_DEFAULT_QUEUE = "old-after-prefix"
        CELERY_CELERYD_PREFETCH_MULTIPLIER = 1
        CELERY_MY_THING = "own"

    with pytest.warns(CDeprecationWarning):
        conf.config_from_object(DjangoLike, namespace="CELERY")
    assert conf.changes == {
        "broker_url": "redis://ns//",
        "task_always_eager": True,
        "result_backend": "redis://ns/1",
        "worker_concurrency": 6,
        "task_default_queue": "old-after-prefix",
        "worker_prefetch_multiplier": 1,
        "my_thing": "own",
    }


def test_namespace_new_name_wins_over_old_name(conf: Settings) -> None:
    source = {"CELERY_ALWAYS_EAGER": False, "CELERY_TASK_ALWAYS_EAGER": True}
    with pytest.warns(CDeprecationWarning):
        conf.config_from_object(source, namespace="CELERY")
    assert conf.task_always_eager is True


def test_other_namespace(conf: Settings) -> None:
    conf.config_from_object({"MYAPP_BROKER_URL": "memory://", "CELERY_X": 1}, namespace="MYAPP")
    assert conf.changes == {"broker_url": "memory://"}


def test_django_lazy_settings(conf: Settings) -> None:
    pytest.importorskip("django")
    from django.conf import LazySettings

    django_settings = LazySettings()  # a private instance: the global one stays untouched
    django_settings.configure(
        CELERY_BROKER_URL="redis://dj//",
        CELERY_TASK_ALWAYS_EAGER=True,
        TIME_ZONE="Europe/Paris",
    )
    module = types.ModuleType("fake_django_conf")
    module.settings = django_settings  # type: ignore[attr-defined]
    sys.modules["fake_django_conf"] = module
    try:
        conf.config_from_object("fake_django_conf:settings", namespace="CELERY")
    finally:
        del sys.modules["fake_django_conf"]
    assert conf.broker_url == "redis://dj//"
    assert conf.task_always_eager is True
    assert conf.timezone == "Europe/Paris"  # Celery falls back to Django's TIME_ZONE
    assert "DEBUG" not in conf


def test_read_source_skips_code() -> None:
    assert read_source(types.SimpleNamespace(a=1, _b=2, os=sys)) == {"a": 1}


# -- environment ----------------------------------------------------------------------------------


def test_config_from_envvar(config_module: str) -> None:
    conf = Settings(environ={"MY_CONFIG": f"{config_module}.celeryconfig"})
    assert conf.config_from_envvar("MY_CONFIG") is True
    assert conf.task_always_eager is True
    assert conf.config_from_envvar("UNSET_VAR", silent=True) is False
    with pytest.raises(ImproperlyConfigured, match="'UNSET_VAR' is not set"):
        conf.config_from_envvar("UNSET_VAR")


def test_env_urls_win_over_config_and_explicit_values() -> None:
    env = {"CELERY_BROKER_URL": "redis://env//", "CELERY_RESULT_BACKEND": "redis://env/1"}
    conf = Settings(environ=env)
    conf.update(broker_url="redis://explicit//", result_backend="redis://explicit/1")
    assert conf.broker_url == "redis://env//"
    assert conf["result_backend"] == "redis://env/1"
    assert conf.changes["broker_url"] == "redis://explicit//"
    assert conf.env_values() == {"broker_url": "redis://env//", "result_backend": "redis://env/1"}
    assert conf.value_set_for("broker_url")
    env.clear()  # read live
    assert conf.broker_url == "redis://explicit//"


def test_celeriac_aliases_win_over_celery_names() -> None:
    conf = Settings(
        environ={
            "CELERY_BROKER_URL": "redis://celery//",
            "CELERIAC_BROKER_URL": "redis://celeriac//",
            "CELERIAC_RESULT_BACKEND": "redis://celeriac/1",
        }
    )
    assert conf.broker_url == "redis://celeriac//"
    assert conf.result_backend == "redis://celeriac/1"


def test_empty_env_value_is_ignored() -> None:
    conf = Settings({"broker_url": "memory://"}, environ={"CELERY_BROKER_URL": ""})
    assert conf.broker_url == "memory://"


def test_read_and_write_urls() -> None:
    conf = Settings({"broker_url": "redis://main//"}, environ=NO_ENV)
    assert conf.broker_read_url == conf.broker_write_url == "redis://main//"
    conf.broker_read_url = "redis://replica//"
    assert conf.broker_read_url == "redis://replica//"
    env = Settings(environ={"CELERY_BROKER_WRITE_URL": "redis://w//", "CELERY_BROKER_URL": "x://"})
    assert env.broker_write_url == "redis://w//"
    assert env.broker_read_url == "x://"


def test_process_environment_is_read_live(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = Settings()
    monkeypatch.delenv("CELERIAC_BROKER_URL", raising=False)
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://live//")
    assert conf.broker_url == "redis://live//"


def test_apply_env_loads_celery_config_module(config_module: str) -> None:
    conf = Settings.from_env({"CELERY_CONFIG_MODULE": f"{config_module}.celeryconfig"})
    assert conf.task_always_eager is True
    assert Settings(environ=NO_ENV).apply_env() is False


# -- derived values -----------------------------------------------------------------------------


def test_values_celery_derives(conf: Settings) -> None:
    assert conf.task_default_exchange == conf.task_default_routing_key == "celery"
    conf.task_default_queue = "work"
    assert conf["task_default_exchange"] == "work"
    conf.task_default_routing_key = "rk"
    assert conf.task_default_routing_key == "rk"
    conf.broker_host = "redis://legacy//"
    assert conf.broker_url == "redis://legacy//"


# -- introspection ------------------------------------------------------------------------------


def test_find_option_and_value(conf: Settings) -> None:
    conf.task_always_eager = True
    assert conf.find_option("always_eager", "task")[:2] == ("task", "always_eager")
    assert conf.find_value_for_key("always_eager", "task") is True
    assert conf.find_value_for_key("disable_rate_limits") is False  # found in worker_
    assert conf.find_value_for_key("timezone") is None
    assert conf.get_by_parts("task", "default_queue") == "celery"
    with pytest.raises(KeyError):
        conf.find_option("no_such_option")


def test_table_and_humanize_censor_secrets() -> None:
    conf = Settings(
        {
            "broker_url": "amqp://user:s3cret@host:5672//",
            "result_backend": "redis://:pw@host/0",
            "redis_password": "pw",
            "my_api_key": "k",
            "task_default_routing_key": "rk",
            "broker_transport_options": {"password": "x", "visibility_timeout": 10},
        },
        environ=NO_ENV,
    )
    table = conf.table()
    assert table["broker_url"] == "amqp://user:********@host:5672//"
    assert table["result_backend"] == "redis://:********@host/0"
    assert table["redis_password"] == "********"
    assert table["my_api_key"] == "********"
    assert table["task_default_routing_key"] == "rk"
    assert table["broker_transport_options"] == {"password": "********", "visibility_timeout": 10}
    assert "task_default_queue" not in table
    assert conf.table(censored=False)["redis_password"] == "pw"
    assert len(conf.table(with_defaults=True)) == len(conf)
    text = conf.humanize()
    assert "s3cret" not in text
    assert "broker_url: 'amqp://user:********@host:5672//'" in text
    assert "task_default_queue: 'celery'" in conf.humanize(with_defaults=True)


def test_table_shows_env_overrides() -> None:
    conf = Settings(environ={"CELERY_BROKER_URL": "redis://:pw@env//"})
    assert conf.table() == {"broker_url": "redis://:********@env//"}


def test_censor_leaves_plain_values() -> None:
    assert censor("broker_url", ["redis://a:b@h//", "redis://h//"]) == [
        "redis://a:********@h//",
        "redis://h//",
    ]
    assert censor("redis_port", 6379) == 6379
    assert censor("broker_url", "redis://h:6379/0") == "redis://h:6379/0"


# -- pickling -----------------------------------------------------------------------------------


def test_pickle_round_trip_keeps_changes_and_defaults() -> None:
    conf = Settings(environ={"CELERY_BROKER_URL": "redis://env//"})
    conf.update(task_acks_late=True, mine={"a": 1})
    conf.add_defaults({"worker_pool": "threads"})
    clone = pickle.loads(pickle.dumps(conf))
    assert clone.changes == conf.changes
    assert clone.worker_pool == "threads"
    assert clone.broker_url == "redis://env//"
    assert clone.task_acks_late is True
    assert dict(clone) == dict(conf)


def test_pickled_default_environment_stays_live(monkeypatch: pytest.MonkeyPatch) -> None:
    clone = pickle.loads(pickle.dumps(Settings()))
    monkeypatch.delenv("CELERIAC_BROKER_URL", raising=False)
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://child//")
    assert clone.broker_url == "redis://child//"


def test_broker_connection_settings_reach_the_transport() -> None:
    from celeriac import Celery

    app = Celery("conn", broker="memory://", set_as_current=False)
    options = app.transport_options()
    assert options["connection_retry"] is True
    assert options["connection_retry_on_startup"] is True  # None follows broker_connection_retry
    assert options["connection_max_retries"] == 100
    app.conf.update(
        broker_connection_retry=False,
        broker_connection_max_retries=3,
        broker_transport_options={"connection_max_retries": 7},
    )
    options = app.transport_options()
    assert options["connection_retry"] is False
    assert options["connection_retry_on_startup"] is False
    assert options["connection_max_retries"] == 7  # broker_transport_options wins, as in kombu
    app.conf.broker_connection_retry_on_startup = True
    assert app.transport_options()["connection_retry_on_startup"] is True
