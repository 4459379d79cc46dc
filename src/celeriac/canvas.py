"""Signatures: a task call as data (``add.s(2, 2)``), in the dict form Celery serializes.

The workflow primitives (chain, group, chord, chunks, map, starmap) build on :class:`Signature`
and live in ``celeriac.workflows``; they are re-exported here because Celery users import them from
``celery.canvas``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from celeriac.protocol.task import new_task_id

if TYPE_CHECKING:
    from celeriac.app.base import Celery
    from celeriac.result import AsyncResult as AsyncResultT
    from celeriac.result import EagerResult
    from celeriac.task import Task

#: Keys ``clone`` replaces with merged copies, so it does not deep-copy them first.
_MERGED_KEYS = frozenset({"args", "kwargs", "options"})
#: Values a deep copy would return as they are: copied without the call.
_ATOMIC = frozenset({str, int, float, bool, type(None)})

P = ParamSpec("P")
R = TypeVar("R")

#: subtask_type → class, filled in by the workflow module so dicts from the wire become objects.
SIGNATURE_TYPES: dict[str | None, type[Signature[Any, Any]]] = {}


class Signature(dict[str, Any], Generic[P, R]):
    """A task name with partial arguments and options.

    It is a dict (``task``, ``args``, ``kwargs``, ``options``, ``subtask_type``, ``immutable``)
    so it serializes exactly as Celery 5.7's signatures do.
    """

    _app: Celery | None
    _type: Task[P, R] | None

    def __init__(
        self,
        task: str | Task[P, R] | Mapping[str, Any] | None = None,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        type: Task[P, R] | None = None,
        subtask_type: str | None = None,
        immutable: bool = False,
        app: Celery | None = None,
        **ex: Any,
    ) -> None:
        self._app = app
        if isinstance(task, Mapping):
            super().__init__(task)
            self["args"] = list(self.get("args") or ())
            self["kwargs"] = dict(self.get("kwargs") or {})
            self["options"] = dict(self.get("options") or {})
            self.setdefault("subtask_type", None)
            self.setdefault("immutable", False)
            self._type = None
            return
        name: str | None
        if task is not None and not isinstance(task, str):
            self._type = task
            name = task.name
            app = app or task.app
            self._app = app
        else:
            self._type = type
            name = task
        super().__init__(
            task=name,
            args=list(args or ()),
            kwargs=dict(kwargs or {}),
            options={**(options or {}), **ex},
            subtask_type=subtask_type,
            immutable=immutable,
        )

    # -- dict fields as attributes, as Celery's Signature has them ---------------------------------
    @property
    def task(self) -> str:
        return str(self["task"])

    @property
    def args(self) -> list[Any]:
        args: list[Any] = self["args"]
        return args

    @args.setter
    def args(self, value: Iterable[Any]) -> None:
        self["args"] = list(value)

    @property
    def kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = self["kwargs"]
        return kwargs

    @kwargs.setter
    def kwargs(self, value: Mapping[str, Any]) -> None:
        self["kwargs"] = dict(value)

    @property
    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = self["options"]
        return options

    @property
    def subtask_type(self) -> str | None:
        value: str | None = self.get("subtask_type")
        return value

    @property
    def immutable(self) -> bool:
        return bool(self.get("immutable"))

    @immutable.setter
    def immutable(self, value: bool) -> None:
        self["immutable"] = value

    @property
    def id(self) -> str | None:
        value: str | None = self.options.get("task_id")
        return value

    @property
    def app(self) -> Celery:
        if self._app is not None:
            return self._app
        from celeriac.app.base import current_app

        return current_app()

    @property
    def type(self) -> Task[P, R]:
        if self._type is None:
            self._type = self.app.tasks[self.task]
        return self._type

    # -- building --------------------------------------------------------------------------------
    def _merge(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
        merged_options = {**self.options, **(options or {})}
        if self.immutable:
            return list(self.args), dict(self.kwargs), merged_options
        return (
            [*(args or ()), *self.args],
            {**self.kwargs, **(kwargs or {})},
            merged_options,
        )

    def clone(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature[P, R]:
        """A copy with *args* prepended, *kwargs* and *options* merged (unless immutable)."""
        new_args, new_kwargs, new_options = self._merge(args, kwargs, options)
        # args, kwargs and options are replaced by the merged copies: not worth deep-copying.
        clone = self._copy(skip=_MERGED_KEYS)
        clone["args"], clone["kwargs"], clone["options"] = new_args, new_kwargs, new_options
        return clone

    partial = clone

    def __deepcopy__(self, memo: dict[int, Any]) -> Signature[P, R]:
        return self._copy(memo)

    def _copy(
        self, memo: dict[int, Any] | None = None, skip: frozenset[str] = frozenset()
    ) -> Signature[P, R]:
        """A deep copy, except for the keys in *skip* (left for the caller to set)."""
        memo = {} if memo is None else memo
        kind = self.get("subtask_type")
        # Subclasses with no subtask_type on the wire (xmap, chunks) keep their own class.
        cls = SIGNATURE_TYPES.get(kind, type(self)) if kind is not None else type(self)
        new = cls.__new__(cls)
        dict.__init__(
            new,
            {
                k: v if k in skip or type(v) in _ATOMIC else copy.deepcopy(v, memo)
                for k, v in self.items()
            },
        )
        new._app, new._type = self._app, self._type
        for key, value in self.__dict__.items():
            if key not in ("_app", "_type"):
                new.__dict__[key] = copy.deepcopy(value, memo)
        return new

    def __copy__(self) -> Signature[P, R]:
        return self.__deepcopy__({})

    def set(self, immutable: bool | None = None, **options: Any) -> Signature[P, R]:
        """Update options in place (``queue``, ``countdown``, ...); returns self."""
        if immutable is not None:
            self.immutable = immutable
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self.immutable = immutable

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> AsyncResultT[R]:
        """Give the signature its task id now and return the result it will have."""
        opts = self.options
        task_id = _id or opts.get("task_id") or new_task_id()
        opts["task_id"] = task_id
        # Celery's frozen signatures carry the sender's reply_to (captured in embed.chain/chord).
        opts.setdefault("reply_to", self.app.oid)
        if group_id and not opts.get("group_id"):
            opts["group_id"] = group_id
        if group_index is not None:
            opts["group_index"] = group_index
        if chord is not None:
            opts["chord"] = chord
        if root_id:
            opts["root_id"] = root_id
        if parent_id:
            opts["parent_id"] = parent_id
        return self.AsyncResult(task_id)

    def AsyncResult(self, task_id: str) -> AsyncResultT[R]:
        return self.app.AsyncResult(task_id, task_name=self.task)

    def link(self, callback: Signature[Any, Any]) -> Signature[Any, Any]:
        """Run *callback* with this task's result when it succeeds."""
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Signature[Any, Any]) -> Signature[Any, Any]:
        """Run *errback* when this task fails."""
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def on_error(self, errback: Signature[Any, Any]) -> Signature[P, R]:
        """Like ``link_error`` but returns self, for chaining."""
        self.link_error(errback)
        return self

    # -- running ---------------------------------------------------------------------------------
    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        route_name: str | None = None,
        **options: Any,
    ) -> AsyncResultT[R]:
        """Send the task with the signature's arguments and options merged with these."""
        new_args, new_kwargs, new_options = self._merge(args, kwargs, options)
        if self._type is not None or self.task in self.app.tasks:
            return self.type.apply_async(new_args, new_kwargs, **new_options)
        return self.app.send_task(self.task, new_args, new_kwargs, **new_options)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResultT[R]:
        """``apply_async`` with star arguments."""
        return self.apply_async(args, kwargs)

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> EagerResult[R]:
        """Run the task here and now (no worker)."""
        new_args, new_kwargs, new_options = self._merge(args, kwargs, options)
        return self.type.apply(new_args, new_kwargs, **new_options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the task function directly with the merged arguments."""
        new_args, new_kwargs, _ = self._merge(args, kwargs)
        return self.type(*new_args, **new_kwargs)

    def __or__(self, other: Any) -> Any:
        from celeriac.workflows import chain

        return chain.combine(self, other)

    def __repr__(self) -> str:
        args = ", ".join(
            [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        )
        return f"{self.task}({args}){'!' if self.immutable else ''}"

    def __reduce__(self) -> Any:
        return signature_from_dict, (dict(self),)


def signature_from_dict(data: Mapping[str, Any], app: Celery | None = None) -> Signature[Any, Any]:
    """Rebuild the right Signature subclass from its dict form."""
    if isinstance(data, Signature):
        return data
    cls = SIGNATURE_TYPES.get(data.get("subtask_type"), Signature)
    return cls.from_dict(data, app=app) if hasattr(cls, "from_dict") else cls(data, app=app)


def signature(
    varies: str | Mapping[str, Any] | Signature[Any, Any] | Task[Any, Any],
    *args: Any,
    **kwargs: Any,
) -> Signature[Any, Any]:
    """Celery's ``signature()``: build from a name, a task, or a dict (wire form)."""
    app = kwargs.pop("app", None)
    if isinstance(varies, Signature):
        return varies.clone()
    if isinstance(varies, Mapping):
        return signature_from_dict(varies, app=app)
    sig: Signature[Any, Any] = Signature(varies, *args, app=app, **kwargs)  # type: ignore[misc]
    return sig


subtask = signature
maybe_signature = signature


SIGNATURE_TYPES[None] = Signature


_WORKFLOW_NAMES = ("chain", "chord", "chunks", "group", "xmap", "xstarmap", "_chain")


def __getattr__(name: str) -> Any:
    # The primitives live in celeriac.workflows, which imports this module: load them lazily.
    if name in _WORKFLOW_NAMES:
        import celeriac.workflows

        return getattr(celeriac.workflows, name)
    raise AttributeError(f"module 'celeriac.canvas' has no attribute {name!r}")
