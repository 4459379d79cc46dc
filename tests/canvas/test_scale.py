"""Big groups and chords complete in time linear in their size (no per-member round trips)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from canvas_tasks import Tasks

from celeriac import chord, group


def _timed(fn: Any) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def test_group_get_waits_on_all_members_at_once(
    env: Tasks,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if env.app.conf.task_always_eager:
        pytest.skip("eager results need no waiting")
    backend = env.app.backend
    assert backend is not None
    single: list[str] = []
    monkeypatch.setattr(backend, "wait_for", lambda task_id, *a, **k: single.append(task_id))
    result = group(env.add.s(i, 1) for i in range(200)).apply_async()
    assert result.get(timeout=30) == [i + 1 for i in range(200)]
    assert single == []


def test_group_of_2000_and_chord_of_1000_scale_linearly(env: Tasks) -> None:
    if env.app.conf.task_always_eager:
        pytest.skip("the worker modes are the ones that could be quadratic")
    small = _timed(lambda: group(env.add.s(i, i) for i in range(250)).apply_async().get(timeout=60))
    big = _timed(lambda: group(env.add.s(i, i) for i in range(2000)).apply_async().get(timeout=120))
    # 8x the work: allow generous noise on a shared machine, but not quadratic growth (64x).
    assert big < 20 * small + 3.0, (small, big)
    started = time.monotonic()
    result = chord([env.add.s(i, i) for i in range(1000)], env.tsum.s()).apply_async()
    assert result.get(timeout=120) == sum(range(1000)) * 2
    assert time.monotonic() - started < 60
