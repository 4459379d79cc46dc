"""Canvas semantics, each scenario in eager mode, on the memory broker and on SQLite with a
real in-process worker (``env`` fixture)."""

from __future__ import annotations

import re

import pytest
from canvas_tasks import ERRBACK_CALLS, Tasks

from celeriac import chain, chord, group
from celeriac.exceptions import ChordError
from celeriac.result import GroupResult

from support.waiting import wait_for

T = 20  # seconds: the most any scenario waits


def test_chain_passes_each_result_on(env: Tasks) -> None:
    result = (env.add.s(1, 2) | env.add.s(3) | env.mul.s(10)).apply_async()
    assert result.get(timeout=T) == 60
    assert result.parent is not None and result.parent.get(timeout=T) == 6
    assert result.parent.parent is not None and result.parent.parent.get(timeout=T) == 3
    assert result.parent.parent.parent is None


def test_chain_delay_call_and_partial_args(env: Tasks) -> None:
    assert chain(env.add.s(2), env.add.s(3)).delay(1).get(timeout=T) == 6
    assert chain(env.add.s(1, 1), env.add.s(1))().get(timeout=T) == 3


def test_immutable_step_ignores_parent_result(env: Tasks) -> None:
    assert (env.add.s(1, 2) | env.add.si(10, 10) | env.add.s(1)).delay().get(timeout=T) == 21


def test_nested_chains_are_flattened(env: Tasks) -> None:
    inner = chain(env.add.s(1), env.add.s(1))
    outer = chain(env.add.s(1, 1), inner, chain(env.add.s(1), env.mul.s(2)))
    assert outer.apply_async().get(timeout=T) == 10


def test_chain_failure_stops_and_propagates(env: Tasks) -> None:
    errback = env.record_error.s()
    result = chain(env.add.s(1, 2), env.boom.s(), env.add.s(5)).on_error(errback).apply_async()
    with pytest.raises(ValueError, match="kaboom"):
        result.get(timeout=T)
    failed_id = result.parent.id  # type: ignore[union-attr]
    wait_for(
        lambda: ("record_error", failed_id) in ERRBACK_CALLS, timeout=T, what="the chain's errback"
    )
    assert ERRBACK_CALLS.count(("record_error", failed_id)) == 1


def test_errback_with_request_signature_runs_in_process(env: Tasks) -> None:
    result = env.boom.apply_async((1,), link_error=env.on_error_request.s())
    with pytest.raises(ValueError):
        result.get(timeout=T)

    def seen() -> list[str]:
        return [
            exc
            for name, (task_id, exc) in list(ERRBACK_CALLS)
            if name == "on_error_request" and task_id == result.id
        ]

    assert "kaboom" in wait_for(seen, timeout=T, what="the errback")[0]


def test_group_results_in_order(env: Tasks) -> None:
    result = group(env.add.s(i, i) for i in range(10)).apply_async()
    assert isinstance(result, GroupResult)
    assert result.get(timeout=T) == [i * 2 for i in range(10)]
    assert result.join(timeout=T) == [i * 2 for i in range(10)]
    assert result.ready() and result.successful() and not result.failed()
    assert result.completed_count() == 10


def test_group_with_failure(env: Tasks) -> None:
    result = group(env.add.s(1, 1), env.boom.s(), env.add.s(2, 2))()
    with pytest.raises(ValueError, match="kaboom"):
        result.get(timeout=T)
    assert result.get(timeout=T, propagate=False)[0] == 2
    assert result.failed() and not result.successful()
    assert result.completed_count() == 2


def test_group_partial_args_and_save_restore(env: Tasks) -> None:
    result = group(env.add.s(1), env.add.s(2)).apply_async((10,))
    assert result.get(timeout=T) == [11, 12]
    if env.app.conf.task_always_eager:
        return
    result.save()
    restored = GroupResult.restore(str(result.id), app=env.app)
    assert restored is not None and restored.id == result.id
    assert [r.id for r in restored.results] == [r.id for r in result.results]
    assert restored.get(timeout=T) == [11, 12]


def test_empty_group(env: Tasks) -> None:
    result = group([]).apply_async()
    assert result.get(timeout=T) == [] and result.ready()


def test_group_of_chains(env: Tasks) -> None:
    result = group(env.add.s(i, i) | env.mul.s(10) for i in range(5))()
    assert result.get(timeout=T) == [i * 20 for i in range(5)]
    assert result.results[0].parent is not None


def test_chord_sums_header_in_order(env: Tasks) -> None:
    result = chord([env.add.s(i, i) for i in range(10)], env.tsum.s()).apply_async()
    assert result.get(timeout=T) == 90
    assert isinstance(result.parent, GroupResult)
    assert result.parent.get(timeout=T) == [i * 2 for i in range(10)]


def test_chord_call_forms_and_immutable_body(env: Tasks) -> None:
    assert chord(env.add.s(i, 1) for i in range(3))(env.tsum.s()).get(timeout=T) == 6
    assert chord([env.add.s(1, 1)], env.add.si(5, 5)).delay().get(timeout=T) == 10


def test_group_piped_to_task_is_a_chord(env: Tasks) -> None:
    workflow = group(env.add.s(1, 1), env.add.s(2, 2)) | env.tsum.s()
    assert isinstance(workflow, chord)
    assert workflow.delay().get(timeout=T) == 6
    result = chain(env.add.s(1, 1), group(env.add.s(1), env.add.s(2)), env.tsum.s()).delay()
    assert result.get(timeout=T) == 7


def test_chord_header_failure_fails_body_with_chord_error(env: Tasks) -> None:
    workflow = chord([env.add.s(1, 1), env.boom.s(2)], env.tsum.s())
    workflow.link_error(env.record_error.s())
    result = workflow.apply_async()
    # get() follows parents first (as Celery): the header's own error may be what it raises.
    with pytest.raises((ChordError, ValueError), match="kaboom"):
        result.get(timeout=T)
    wait_for(result.ready, timeout=T, what="the body's result")
    assert isinstance(result.result, ChordError)
    assert re.fullmatch(r"Dependency \S+ raised ValueError\('kaboom'\)", str(result.result))
    with pytest.raises(ChordError):
        result.get(timeout=T, follow_parents=False)
    wait_for(
        lambda: ("record_error", result.id) in ERRBACK_CALLS, timeout=T, what="the body's errback"
    )


def test_empty_chord_header_runs_body_with_nothing(env: Tasks) -> None:
    assert chord([], env.tsum.s()).apply_async().get(timeout=T) == 0


def test_chord_inside_chain(env: Tasks) -> None:
    workflow = chain(
        env.add.s(1, 1),
        chord([env.add.s(1), env.add.s(2)], env.tsum.s()),
        env.mul.s(10),
        env.add.s(1),
    )
    result = workflow.apply_async()
    assert result.get(timeout=T) == 71


def test_chord_with_chain_body(env: Tasks) -> None:
    body = env.tsum.s() | env.mul.s(2)
    assert chord([env.add.s(1, 1), env.add.s(2, 2)], body).delay().get(timeout=T) == 12


def test_chord_of_chords(env: Tasks) -> None:
    inner = chord([env.add.s(1, 1), env.add.s(2, 2)], env.tsum.s())
    outer = chord([inner, env.add.s(10, 10)], env.tsum.s())
    assert outer.apply_async().get(timeout=T) == 26
    nested_body = chord([env.add.s(1, 1)], group(env.identity.s(), env.identity.s()))
    assert nested_body.apply_async().get(timeout=T) == [[2], [2]]


def test_map_starmap_chunks(env: Tasks) -> None:
    assert env.identity.map([1, 2, 3]).delay().get(timeout=T) == [1, 2, 3]
    assert env.add.starmap([(1, 2), (3, 4)]).apply_async().get(timeout=T) == [3, 7]
    result = env.add.chunks([(i, i) for i in range(10)], 4).apply_async()
    assert result.get(timeout=T) == [[0, 2, 4, 6], [8, 10, 12, 14], [16, 18]]
    assert env.add.chunks([(1, 1)], 1).group().apply_async().get(timeout=T) == [[2]]


def test_replace_with_chain(env: Tasks) -> None:
    result = env.replace_with_chain.delay(1)
    assert result.get(timeout=T) == 20
    assert chain(env.replace_with_chain.s(2), env.add.s(5)).delay().get(timeout=T) == 35


def test_replace_with_group(env: Tasks) -> None:
    assert env.replace_with_group.delay(10).get(timeout=T) == [10, 11, 12]


def test_link_callback_gets_result(env: Tasks) -> None:
    if env.app.conf.task_always_eager:
        pytest.skip("eager callbacks run but their results are not stored")
    callback = env.add.s(10)
    callback.freeze()
    env.add.apply_async((1, 2), link=callback)
    assert env.app.AsyncResult(str(callback.id)).get(timeout=T) == 13


def test_add_to_chord(env: Tasks) -> None:
    if env.app.conf.task_always_eager:
        pytest.skip("add_to_chord needs a worker-run chord (as in Celery)")
    result = chord([env.grows_chord.s(1), env.grows_chord.s(2)], env.tsum.s()).delay()
    assert result.get(timeout=T) == 1 + 2 + 101 + 102
