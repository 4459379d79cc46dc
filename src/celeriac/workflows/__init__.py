"""Workflow primitives (Celery's canvas): chain, group, chord, chunks, map, starmap.

Each builds on :class:`celeriac.canvas.Signature` and keeps Celery's dict form, so workflows
sent by Celery run on celeriac workers and the other way round.
"""

from __future__ import annotations

from celeriac.workflows import builtins
from celeriac.workflows.chain import _chain, chain
from celeriac.workflows.chord import chord, chord_error_from_stack, fail_steps, on_chord_part_return
from celeriac.workflows.group import group
from celeriac.workflows.mapping import chunks, xmap, xstarmap
from celeriac.workflows.replace import add_to_chord, replace_task

builtins.install()

__all__ = [
    "_chain",
    "add_to_chord",
    "chain",
    "chord",
    "chord_error_from_stack",
    "chunks",
    "fail_steps",
    "group",
    "on_chord_part_return",
    "replace_task",
    "xmap",
    "xstarmap",
]
