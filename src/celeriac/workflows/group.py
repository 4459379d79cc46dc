"""``group``: signatures sent together, run in parallel, their results collected in order.

Every member message carries the ``group`` (group id) and ``group_index`` headers; all of them are
published in one transport call, so a group of thousands costs one round trip to the broker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from celeriac.app.base import pending_batch
from celeriac.app.context import current_request
from celeriac.canvas import SIGNATURE_TYPES, Signature
from celeriac.result import GroupResult
from celeriac.workflows._common import app_of, as_list, as_signature, is_eager, new_id
from celeriac.workflows.siblings import send_siblings

if TYPE_CHECKING:
    from celeriac.app.base import Celery


class group(Signature[Any, list[Any]]):
    """Run *tasks* in parallel: ``group(add.s(i, i) for i in range(10))()``.

    Accepts signatures as separate arguments or one iterable. Nested groups are flattened.
    """

    def __init__(self, *tasks: Any, app: Celery | None = None, **options: Any) -> None:
        items: Any = tasks
        if len(tasks) == 1 and not isinstance(tasks[0], Mapping):
            items = tasks[0]
        if isinstance(items, group):
            items = items.tasks
        members = [as_signature(t, app) for t in items]
        super().__init__(
            "celery.group",
            (),
            {"tasks": members},
            options,
            subtask_type="group",
            app=app_of(members, app),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], app: Celery | None = None) -> group:
        """Rebuild a group from its wire form (``kwargs.tasks`` holds the member dicts)."""
        kwargs = data.get("kwargs") or {}
        sig = cls(kwargs.get("tasks") or (), app=app, **dict(data.get("options") or {}))
        sig["args"] = list(data.get("args") or ())
        sig["immutable"] = bool(data.get("immutable"))
        return sig

    @property
    def tasks(self) -> list[Signature[Any, Any]]:
        tasks: list[Signature[Any, Any]] = self["kwargs"]["tasks"]
        return tasks

    @property
    def id(self) -> str | None:
        value: str | None = self.options.get("task_id")
        return value

    # -- building --------------------------------------------------------------------------------
    def members(
        self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None
    ) -> list[Signature[Any, Any]]:
        """Copies of the member signatures (nested groups flattened) with the group's partial
        arguments, plus *args*/*kwargs*, applied."""
        partial = [] if self.immutable else [*(args or ()), *self.args]
        partial_kwargs = {} if self.immutable else {**self.kwargs_partial, **(kwargs or {})}
        out: list[Signature[Any, Any]] = []
        for task in self.tasks:
            sig = as_signature(task, self._app)
            if isinstance(sig, group):
                out.extend(sig.members(partial, partial_kwargs))
            else:
                out.append(sig.clone(partial, partial_kwargs))
        return out

    def flat_members(self) -> list[Signature[Any, Any]]:
        """The member signatures themselves (nested groups flattened), not copies."""
        out: list[Signature[Any, Any]] = []
        for task in self.tasks:
            sig = as_signature(task, self._app)
            out.extend(sig.flat_members() if isinstance(sig, group) else [sig])
        return out

    @property
    def kwargs_partial(self) -> dict[str, Any]:
        """Keyword arguments given to the group itself (beside its ``tasks``)."""
        return {k: v for k, v in self.kwargs.items() if k != "tasks"}

    def link(self, callback: Signature[Any, Any]) -> Signature[Any, Any]:
        """Link *callback* to the first member (immutable, as Celery does: it cannot see the
        other members' results). Use a chord to run a task after the whole group."""
        if not self.tasks:
            raise ValueError("cannot link a callback to an empty group")
        return as_signature(self.tasks[0], self._app).link(callback.clone().set(immutable=True))

    def link_error(self, errback: Signature[Any, Any]) -> Signature[Any, Any]:
        """Link *errback* to every member: any of them may fail."""
        for task in self.tasks:
            as_signature(task, self._app).link_error(errback.clone())
        return errback

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        """Give the group and its members their ids now; returns the future GroupResult."""
        gid = self.options.get("task_id") or _id or new_id()
        self.options["task_id"] = gid
        members = self.members()
        results = [
            sig.freeze(
                group_id=gid, group_index=i, chord=chord, root_id=root_id, parent_id=parent_id
            )
            for i, sig in enumerate(members)
        ]
        self["kwargs"]["tasks"] = members
        self["args"] = []
        return GroupResult(gid, results, app=self.app)

    # -- running ---------------------------------------------------------------------------------
    def apply_async(  # type: ignore[override]
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        route_name: str | None = None,
        add_to_parent: bool = True,
        **options: Any,
    ) -> GroupResult:
        """Send every member (one batch) and return their :class:`GroupResult`."""
        app = self.app
        merged = {**self.options, **options}
        if is_eager(app):
            return self.apply(args, kwargs, **merged)
        gid = merged.pop("task_id", None) or new_id()
        self.options["task_id"] = gid
        chord_body = merged.pop("chord", None)
        merged.pop("chain", None)  # after a group nothing follows: chains upgrade it to a chord
        merged.pop("group_id", None)
        merged.pop("group_index", None)
        callbacks = as_list(merged.pop("link", None))
        errbacks = as_list(merged.pop("link_error", None))
        # Sending a task's signature does not change it: copies are needed only to add links or
        # partial arguments (canvases inside the group are copied: sending them assigns ids).
        members = self.flat_members()
        plain = not (callbacks or errbacks or args or kwargs or self.args or self.kwargs_partial)
        if not plain or any(type(sig) is not Signature for sig in members):
            members = self.members(args, kwargs)
        if callbacks and members:
            for callback in callbacks:
                members[0].link(as_signature(callback, app).clone().set(immutable=True))
        if chord_body is not None:
            merged["chord"] = chord_body
        results: list[Any] | None = None
        with app.publish_batch():
            if plain:
                results = send_siblings(app, members, pending_batch(), gid, merged)
            if results is None:
                results = []
                for index, sig in enumerate(members):
                    for errback in errbacks:
                        sig.link_error(as_signature(errback, app))
                    results.append(
                        sig.apply_async(
                            group_id=gid, group_index=index, add_to_parent=False, **merged
                        )
                    )
        result = GroupResult(gid, results, app=app)
        parent = current_request.get() if add_to_parent else None
        if parent is not None and parent.id:
            parent.children.append(result)
        return result

    def apply(  # type: ignore[override]
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> GroupResult:
        """Run every member here, one after the other (eager mode)."""
        app = self.app
        merged = {**self.options, **options}
        gid = merged.pop("task_id", None) or new_id()
        for key in ("chord", "chain", "group_id", "group_index", "link"):
            merged.pop(key, None)
        errbacks = as_list(merged.pop("link_error", None))
        results = []
        for index, sig in enumerate(self.members(args, kwargs)):
            for errback in errbacks:
                sig.link_error(as_signature(errback, app))
            results.append(sig.apply(group_id=gid, group_index=index, **merged))
        return GroupResult(gid, results, app=app)

    def __call__(self, *partial_args: Any, **options: Any) -> GroupResult:
        """``group(...)()`` sends the group, as in Celery."""
        return self.apply_async(partial_args, **options)

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(t) for t in self.tasks)}])"


SIGNATURE_TYPES["group"] = group
