"""The task registry: task name → task instance, per app."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celeriac.exceptions import NotRegistered

if TYPE_CHECKING:
    from celeriac.task import Task


class TaskRegistry(dict[str, "Task[Any, Any]"]):
    """A dict of tasks by name whose missing keys raise :class:`NotRegistered`."""

    NotRegistered = NotRegistered

    def __missing__(self, key: str) -> Task[Any, Any]:
        raise NotRegistered(key)

    def register(self, task: Task[Any, Any]) -> None:
        """Add *task* under its name."""
        if not task.name:
            raise ValueError(f"task {task!r} has no name")
        self[task.name] = task

    def unregister(self, name: str | Task[Any, Any]) -> None:
        """Remove a task by name or instance; :class:`NotRegistered` if absent."""
        key = name if isinstance(name, str) else name.name
        try:
            self.pop(key)
        except KeyError:
            raise NotRegistered(key) from None

    def regular(self) -> dict[str, Task[Any, Any]]:
        """Tasks defined by the user (not celeriac's own ``celery.*`` built-ins)."""
        return {name: task for name, task in self.items() if not name.startswith("celery.")}
