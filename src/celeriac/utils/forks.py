"""A counter of forks this process descends from, cheaper to compare than ``os.getpid()``.

Per-process state (connections, random pools) records the generation it was made in; a forked
child sees a higher number and makes its own.
"""

from __future__ import annotations

import os

_generation = 0


def generation() -> int:
    """How many forks lie between this process and the first one that imported celeriac."""
    return _generation


def _forked() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_forked)
