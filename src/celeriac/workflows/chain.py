"""``chain``: signatures run one after the other, each result passed on to the next task.

On the wire (as Celery 5.7): only the first task is published; its ``embed.chain`` holds the
other steps in reverse order (last step first), each frozen with its ``task_id`` and
``reply_to``. The worker pops the last element, prepends the result to its arguments (unless it
is immutable) and sends it with the remainder. A group followed by another step becomes a chord.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.canvas import SIGNATURE_TYPES, Signature
from celeriac.result import EagerResult, GroupResult
from celeriac.workflows._common import app_of, as_list, as_signature, is_eager, new_id
from celeriac.workflows.chord import chord, frozen_ids
from celeriac.workflows.group import group

if TYPE_CHECKING:
    from celeriac.app.base import Celery


class chain(Signature[Any, Any]):
    """Run *tasks* in sequence: ``chain(add.s(1, 2), add.s(3), mul.s(10))()``; also ``a | b``."""

    def __init__(self, *tasks: Any, app: Celery | None = None, **options: Any) -> None:
        items: Any = tasks
        if len(tasks) == 1 and not isinstance(tasks[0], Mapping):
            items = tasks[0]
        members = [as_signature(t, app) for t in items]
        super().__init__(
            "celery.chain",
            (),
            {"tasks": members},
            options,
            subtask_type="chain",
            app=app_of(members, app),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], app: Celery | None = None) -> chain:
        """Rebuild a chain from its wire form (``kwargs.tasks`` holds the step dicts)."""
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
        ids = frozen_ids(self)
        return ids[-1] if ids else None

    @classmethod
    def combine(cls, left: Any, right: Any) -> Any:
        """``left | right`` for any two signatures, as Celery combines them."""
        if not isinstance(right, Signature):
            return NotImplemented
        app = left._app or right._app
        if isinstance(left, group) and not isinstance(right, group | chain):
            return chord(left, right, app=app)
        lhs = list(left.tasks) if isinstance(left, chain) else [left]
        rhs = list(right.tasks) if isinstance(right, chain) else [right]
        options = dict(left.options) if isinstance(left, chain) else {}
        return cls(*lhs, *rhs, app=app, **options)

    # -- building --------------------------------------------------------------------------------
    def steps(self) -> list[Signature[Any, Any]]:
        """The steps to run: nested chains flattened, one-member groups unrolled, empty groups
        dropped (unless alone), and each group followed by a step made a chord with it."""
        flat: list[Signature[Any, Any]] = []
        pending = [as_signature(t, self._app) for t in self.tasks]
        while pending:
            step = pending.pop(0)
            if isinstance(step, chain):
                pending[:0] = [as_signature(t, self._app) for t in step.tasks]
                continue
            if isinstance(step, group) and len(step.tasks) == 1 and not step.args:
                step = as_signature(step.tasks[0], self._app)
            if (
                isinstance(step, chord)
                and isinstance(step.body, chain)
                and step.body.tasks
                and (as_signature(step.body.tasks[0], self._app).subtask_type is None)
            ):
                # chord(h, a | b | c) runs as chord(h, a), b, c: every header message carries
                # only the small body, not the rest of the chain.
                body_steps = [as_signature(t, self._app) for t in step.body.tasks]
                head = chord(step.header, body_steps[0], app=self._app, **step.options)
                pending[:0] = [head, *body_steps[1:]]
                continue
            flat.append(step)
        if len(flat) > 1:
            flat = [s for s in flat if not (isinstance(s, group) and not s.tasks)] or flat[-1:]
        merged: list[Signature[Any, Any]] = []
        for step in reversed(flat):
            if isinstance(step, group) and merged:
                step = chord(step, merged.pop(), app=self._app)
            merged.append(step)
        merged.reverse()
        return merged

    def prepare_steps(
        self,
        args: Iterable[Any] | None,
        kwargs: Mapping[str, Any] | None,
        last_task_id: str | None = None,
        group_id: str | None = None,
        group_index: int | None = None,
        chord_body: Any = None,
        link_error: Any = None,
        root_id: str | None = None,
    ) -> tuple[list[Signature[Any, Any]], list[Any]]:
        """Frozen copies of the steps and their results, both last step first.

        The first step gets *args*/*kwargs*; the last one gets the id and the group/chord
        membership of the chain as a whole. Each result's ``parent`` is the previous step's.
        """
        steps = self.steps()
        count = len(steps)
        tasks: list[Signature[Any, Any]] = []
        results: list[Any] = []
        later: Any = None
        for index in range(count - 1, -1, -1):
            step = steps[index].clone(args, kwargs) if index == 0 else steps[index].clone()
            if index == count - 1:
                result = step.freeze(
                    last_task_id,
                    group_id=group_id,
                    chord=chord_body,
                    group_index=group_index,
                    root_id=root_id,
                )
            else:
                result = step.freeze(root_id=root_id)
            for errback in as_list(link_error):
                step.link_error(as_signature(errback, self._app))
            if later is not None:
                _set_top_parent(later, result)
            tasks.append(step)
            results.append(result)
            later = result
        return tasks, results

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        """Give every step its id now; returns the last step's future result."""
        tasks, results = self.prepare_steps(
            (), {}, _id, group_id, group_index, chord, None, root_id
        )
        self["kwargs"]["tasks"] = list(reversed(tasks))
        return results[0] if results else None

    # -- running ---------------------------------------------------------------------------------
    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        route_name: str | None = None,
        **options: Any,
    ) -> Any:
        """Send the first step (the rest travel in its ``embed.chain``); returns the last step's
        result, whose ``parent`` line leads back to the first."""
        app = self.app
        merged = {**self.options, **options}
        if is_eager(app):
            return self.apply(args, kwargs, **merged)
        return self.run(args, kwargs, **merged)

    def run(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        task_id: str | None = None,
        group_id: str | None = None,
        group_index: int | None = None,
        chord: Any = None,
        link: Any = None,
        link_error: Any = None,
        root_id: str | None = None,
        **options: Any,
    ) -> Any:
        partial = [] if self.immutable else [*(args or ()), *self.args]
        tasks, results = self.prepare_steps(
            partial, kwargs, task_id, group_id, group_index, chord, link_error, root_id
        )
        if not tasks:
            return None
        for callback in as_list(link):
            tasks[0].link(as_signature(callback, self._app))
        first = tasks.pop()
        options.pop("chain", None)
        first.apply_async(chain=tasks, root_id=root_id, **options)
        return results[0]

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Run every step here, in order (eager mode). A failed step stops the chain: the
        steps after it get its exception as their result."""
        app = self.app
        merged = {**self.options, **options}
        task_id = merged.pop("task_id", None)
        callbacks = as_list(merged.pop("link", None))
        errbacks = as_list(merged.pop("link_error", None))
        for key in ("chain", "chord", "group_id", "group_index"):
            merged.pop(key, None)
        steps = self.steps()
        if not steps:
            return None
        partial = [] if self.immutable else [*(args or ()), *self.args]
        last: Any = None
        for index, step in enumerate(steps):
            step = step.clone()
            for errback in errbacks:
                step.link_error(as_signature(errback, app))
            if index == len(steps) - 1:
                for callback in callbacks:
                    step.link(as_signature(callback, app))
            step_options = dict(merged)
            if index == len(steps) - 1 and task_id:
                step_options["task_id"] = task_id
            if index == 0:
                result = step.apply(partial, kwargs, **step_options)
            else:
                result = step.apply((_eager_value(last),), **step_options)
            _set_top_parent(result, last)
            last = result
            if _eager_failure(result) is not None and index < len(steps) - 1:
                return _failed_rest(app, steps[index + 1 :], last, _eager_failure(result), task_id)
        return last

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``chain(...)()`` sends the chain, as in Celery."""
        return self.apply_async(args, kwargs)

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks) or "chain()"


_chain = chain


def _set_top_parent(result: Any, parent: Any) -> None:
    """Set *parent* as the parent of the topmost result in *result*'s parent line."""
    if parent is None or result is None:
        return
    node = result
    seen: set[int] = set()
    while getattr(node, "parent", None) is not None and id(node) not in seen:
        seen.add(id(node))
        node = node.parent
    node.parent = parent


def _eager_value(result: Any) -> Any:
    if isinstance(result, GroupResult):
        return result.get(propagate=False, disable_sync_subtasks=False)
    return result.get(propagate=False, disable_sync_subtasks=False)


def _eager_failure(result: Any) -> BaseException | None:
    if isinstance(result, GroupResult):
        for member in result.results:
            found = _eager_failure(member)
            if found is not None:
                return found
        return None
    if result.state in states.PROPAGATE_STATES:
        value = result.result
        return value if isinstance(value, BaseException) else Exception(value)
    return None


def _failed_rest(
    app: Celery,
    rest: list[Signature[Any, Any]],
    last: Any,
    exc: BaseException | None,
    task_id: str | None,
) -> Any:
    """Eager results for the steps a failure skipped, each failed with the same exception."""
    assert exc is not None
    result: Any = last
    for index, step in enumerate(rest):
        ids = frozen_ids(step)
        step_id = task_id if index == len(rest) - 1 and task_id else (ids[-1] if ids else None)
        failed: EagerResult[Any] = EagerResult(
            step_id or new_id(), exc, states.FAILURE, name=step.task, app=app
        )
        failed.parent = result
        result = failed
    return result


SIGNATURE_TYPES["chain"] = chain
