"""Failure metas: Celery's wire form, round trips, Celery reading ours and us reading Celery's."""

from __future__ import annotations

import datetime as dt
import json
import pickle
import sys
from pathlib import Path
from typing import Any

import celery.exceptions
import pytest
from celery import Celery

from celeriac import exceptions as ours
from celeriac.protocol.errors import (
    exception_to_meta,
    exception_to_python,
    meta_to_exception,
    prepare_exception,
    stand_in_class,
)
from celeriac.protocol.serialization import EncodeError, json_dumps, json_loads

SAMPLES = Path("/work/shared/wire-samples/redis-worker/result_backend_keys.json")


class Outer:
    class InnerError(Exception):
        pass


class NeedsKeywords(Exception):
    def __init__(self, *, code: int) -> None:
        super().__init__(f"code {code}")
        self.code = code


class AppError(Exception):
    pass


@pytest.fixture(scope="module")
def celery_backend() -> Any:
    return Celery("errors-interop", set_as_current=False).backend


def _stored_failures() -> list[dict[str, Any]]:
    if not SAMPLES.exists():
        pytest.skip(f"wire samples not found at {SAMPLES}")
    keys = json.loads(SAMPLES.read_text())["keys"]
    return [
        entry["value"]
        for entry in keys.values()
        if isinstance(entry.get("value"), dict)
        and entry["value"].get("status") in ("FAILURE", "REVOKED")
    ]


# -- writing ---------------------------------------------------------------------------------


def test_builtin_exception_is_written_as_celery_writes_it(celery_backend: Any) -> None:
    meta = exception_to_meta(ValueError("kaboom"))
    assert meta == {"exc_type": "ValueError", "exc_message": ["kaboom"], "exc_module": "builtins"}
    theirs = celery_backend.prepare_exception(ValueError("kaboom"))
    assert json.loads(json_dumps(meta)) == json.loads(json_dumps(theirs))


def test_user_exception_uses_module_and_qualname(celery_backend: Any) -> None:
    meta = exception_to_meta(Outer.InnerError("x", 2))
    assert meta == {"exc_type": "Outer.InnerError", "exc_message": ["x", 2], "exc_module": __name__}
    assert meta == {
        **celery_backend.prepare_exception(Outer.InnerError("x", 2)),
        "exc_message": ["x", 2],
    }


@pytest.mark.parametrize(
    ("exc", "module"),
    [
        (ours.TaskRevokedError("revoked"), "celery.exceptions"),
        (ours.Retry("again"), "celery.exceptions"),
        (ours.MaxRetriesExceededError("too many"), "celery.exceptions"),
        (ours.WorkerShutdown(), "celery.exceptions"),
        (ours.SoftTimeLimitExceeded(), "billiard.exceptions"),
        (ours.TimeLimitExceeded(30), "billiard.exceptions"),
        (ours.WorkerLostError("lost"), "billiard.exceptions"),
        (ours.OperationalError("down"), "kombu.exceptions"),
        (EncodeError("bad"), "kombu.exceptions"),
        (ours.DeadLettered("dead"), "celeriac.exceptions"),
    ],
)
def test_our_exceptions_are_written_under_celerys_modules(exc: BaseException, module: str) -> None:
    meta = exception_to_meta(exc)
    assert meta["exc_module"] == module
    assert meta["exc_type"] == type(exc).__qualname__


def test_unencodable_args_become_reprs_and_encodable_ones_stay() -> None:
    when = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    meta = exception_to_meta(AppError({1, 2}, when, object))
    assert meta["exc_message"][0] == "{1, 2}"
    assert meta["exc_message"][1] is when
    assert meta["exc_message"][2] == repr(object)
    assert json_loads(json_dumps(meta)) == meta


def test_a_broken_repr_does_not_lose_the_failure() -> None:
    class Unreprable:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    meta = exception_to_meta(AppError(Unreprable()))
    assert meta["exc_message"] == [
        "<test_a_broken_repr_does_not_lose_the_failure.<locals>.Unreprable object (repr failed)>"
    ]


def test_args_are_checked_with_the_chosen_serializer() -> None:
    meta = exception_to_meta(AppError({1, 2}), serializer="pickle")
    assert meta["exc_message"] == [{1, 2}]


def test_retry_with_itself_in_its_args_is_written() -> None:
    meta = exception_to_meta(ours.Retry(exc=ValueError("x"), when=5))
    assert meta["exc_type"] == "Retry"
    json_dumps(meta)


def test_keyword_state_is_not_kept_as_in_celery() -> None:
    exc = ours.MaxRetriesExceededError("too many", task_args=[1], task_kwargs={"a": 1})
    assert exception_to_meta(exc)["exc_message"] == ["too many"]


# -- reading ---------------------------------------------------------------------------------


def test_round_trip_of_builtin_and_user_exceptions() -> None:
    for exc in (ValueError("kaboom"), KeyError("k"), OSError(2, "gone"), AppError("a", 1)):
        back = meta_to_exception(json_loads(json_dumps(exception_to_meta(exc))))
        assert type(back) is type(exc)
        assert back.args == exc.args
        assert str(back) == str(exc)


def test_nested_class_is_found_by_qualname() -> None:
    back = meta_to_exception(exception_to_meta(Outer.InnerError("x")))
    assert type(back) is Outer.InnerError


def test_celery_metas_from_a_real_worker_are_rebuilt() -> None:
    rebuilt = {
        (type(exc), str(exc))
        for exc in (meta_to_exception(m["result"]) for m in _stored_failures())
    }
    assert rebuilt == {
        (ValueError, "linked"),
        (ValueError, "kaboom"),
        (ours.TaskRevokedError, "revoked"),
    }


@pytest.mark.parametrize(
    ("module", "name", "cls"),
    [
        ("celery.exceptions", "TaskRevokedError", ours.TaskRevokedError),
        ("celery.exceptions", "Retry", ours.Retry),
        ("celery.exceptions", "SoftTimeLimitExceeded", ours.SoftTimeLimitExceeded),
        ("billiard.exceptions", "TimeLimitExceeded", ours.TimeLimitExceeded),
        ("billiard.exceptions", "WorkerLostError", ours.WorkerLostError),
        ("kombu.exceptions", "OperationalError", ours.OperationalError),
        ("kombu.exceptions", "EncodeError", EncodeError),
    ],
)
def test_celery_exception_names_become_ours(module: str, name: str, cls: type) -> None:
    # celery is imported in this process, and still our class is the one rebuilt
    exc = meta_to_exception({"exc_type": name, "exc_message": ["m"], "exc_module": module})
    assert type(exc) is cls


def test_celery_writes_and_we_read(celery_backend: Any) -> None:
    meta = celery_backend.prepare_exception(celery.exceptions.TaskRevokedError("revoked"))
    exc = meta_to_exception(json_loads(json_dumps(meta)))
    assert type(exc) is ours.TaskRevokedError
    assert str(exc) == "revoked"


def test_we_write_and_celery_reads(celery_backend: Any) -> None:
    for exc, cls in (
        (ours.TaskRevokedError("revoked"), celery.exceptions.TaskRevokedError),
        (ours.SoftTimeLimitExceeded(), celery.exceptions.SoftTimeLimitExceeded),
        (ValueError("kaboom"), ValueError),
    ):
        wire = json_dumps(exception_to_meta(exc))
        theirs = celery_backend.exception_to_python(json.loads(wire))
        assert type(theirs) is cls
        assert theirs.args == exc.args


def test_unknown_module_gives_a_stand_in_with_the_same_name_and_text() -> None:
    meta = {"exc_type": "PaymentDeclined", "exc_message": ["card", 42], "exc_module": "shop.errors"}
    exc = meta_to_exception(meta)
    assert type(exc).__name__ == "PaymentDeclined"
    assert type(exc).__module__ == "shop.errors"
    assert str(exc) == str(Exception("card", 42))
    assert isinstance(exc, Exception)
    assert "shop" not in sys.modules
    assert type(meta_to_exception(meta)) is type(exc)  # one class per (module, name)
    assert exception_to_meta(exc) == meta  # and written back unchanged


def test_stand_in_for_a_nested_qualname() -> None:
    exc = meta_to_exception({"exc_type": "A.B.Failed", "exc_message": ["x"], "exc_module": "gone"})
    assert type(exc).__name__ == "Failed"
    assert type(exc).__qualname__ == "A.B.Failed"
    assert exception_to_meta(exc)["exc_type"] == "A.B.Failed"


def test_modules_are_never_imported() -> None:
    assert "this" not in sys.modules  # importing it would print the Zen of Python
    exc = meta_to_exception({"exc_type": "Zen", "exc_message": [], "exc_module": "this"})
    assert "this" not in sys.modules
    assert type(exc).__name__ == "Zen"


def test_a_non_exception_callable_is_never_called() -> None:
    calls: list[Any] = []
    holder = type(sys)("errors_test_holder")
    holder.run = lambda *a: calls.append(a)  # type: ignore[attr-defined]
    sys.modules["errors_test_holder"] = holder
    try:
        exc = meta_to_exception(
            {"exc_type": "run", "exc_message": ["rm -rf"], "exc_module": "errors_test_holder"}
        )
    finally:
        del sys.modules["errors_test_holder"]
    assert calls == []
    assert type(exc).__name__ == "run" and str(exc) == "rm -rf"
    exc = meta_to_exception({"exc_type": "system", "exc_message": "echo hi", "exc_module": "os"})
    assert not isinstance(exc, OSError) and str(exc) == "echo hi"


@pytest.mark.parametrize("name", ["__class__", "ValueError.__class__", "ValueError.mro", "1x"])
def test_odd_names_give_stand_ins(name: str) -> None:
    exc = meta_to_exception({"exc_type": name, "exc_message": ["m"], "exc_module": "builtins"})
    assert type(exc).__qualname__ == name
    assert type(exc).__bases__ == (Exception,)


def test_class_that_refuses_the_args_keeps_its_type() -> None:
    exc = meta_to_exception(exception_to_meta(NeedsKeywords(code=7)))
    assert type(exc) is NeedsKeywords
    assert str(exc) == "code 7"


def test_class_that_cannot_be_made_from_args_falls_back_to_a_stand_in() -> None:
    class Picky(Exception):
        def __init__(self, *, code: int) -> None:
            super().__init__()
            self.code = code

        def __str__(self) -> str:
            return f"code {self.code}"

    meta = {"exc_type": "Picky", "exc_message": ["x"], "exc_module": __name__}
    globals()["Picky"] = Picky
    try:
        exc = meta_to_exception(meta)
    finally:
        del globals()["Picky"]
    assert type(exc) is not Picky
    assert type(exc).__name__ == "Picky" and str(exc) == "x"


def test_old_string_message_and_missing_parts() -> None:
    exc = meta_to_exception(
        {"exc_type": "ValueError", "exc_message": "plain", "exc_module": "builtins"}
    )
    assert type(exc) is ValueError and exc.args == ("plain",)
    exc = meta_to_exception({"exc_type": "ValueError", "exc_module": "builtins"})
    assert type(exc) is ValueError and str(exc) == ""
    exc = meta_to_exception({"exc_type": "Orphan", "exc_message": ["m"]})
    assert type(exc).__name__ == "Orphan" and str(exc) == "m"


def test_missing_exc_type_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="exc_type"):
        meta_to_exception({"exc_message": ["x"], "exc_module": "builtins"})


def test_non_mapping_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="exc_type"):
        meta_to_exception(["ValueError"])  # type: ignore[arg-type]


def test_exception_instances_from_pickle_are_returned_as_they_are() -> None:
    exc = AppError("x")
    assert meta_to_exception(exc) is exc
    assert exception_to_python(exc) is exc
    assert exception_to_python(None) is None
    assert exception_to_python({}) is None


def test_celerys_unpicklable_exception_wrapper_is_unwrapped() -> None:
    from celery.utils.serialization import UnpickleableExceptionWrapper

    wrapper = UnpickleableExceptionWrapper("builtins", "ValueError", ("bad",), "ValueError('bad')")
    exc = meta_to_exception(pickle.loads(pickle.dumps(wrapper)))
    assert type(exc) is ValueError and exc.args == ("bad",)


def test_prepare_exception_for_pickle_and_json() -> None:
    exc = AppError("x")
    assert prepare_exception(exc, "pickle") is exc
    assert prepare_exception(exc, "json") == exception_to_meta(exc)

    class Local(Exception):  # defined in a function, so pickle cannot find it
        pass

    assert prepare_exception(Local("y"), "pickle") == {
        "exc_type": Local.__qualname__,
        "exc_message": ["y"],
        "exc_module": __name__,
    }


def test_stand_in_class_is_cached() -> None:
    assert stand_in_class("m", "E") is stand_in_class("m", "E")
    assert stand_in_class("m", "E") is not stand_in_class("n", "E")
