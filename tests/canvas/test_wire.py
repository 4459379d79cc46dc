"""The messages canvas objects produce, checked against Celery 5.7's captured wire form, and
Celery-built signature dicts read back as the right classes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from canvas_tasks import Tasks, define_tasks

from celeriac import Celery, chain, chord, group, signature
from celeriac.canvas import Signature
from celeriac.contrib.testing import start_worker
from celeriac.protocol.message import Outgoing
from celeriac.workflows import chunks, xmap, xstarmap

SAMPLES = Path("/work/shared/wire-samples")
SIG_KEYS = {"task", "args", "kwargs", "options", "subtask_type", "immutable"}


class Recorder:
    """Every transport publish call, with its messages decoded."""

    def __init__(self, app: Celery) -> None:
        self.calls: list[list[Outgoing]] = []
        original = app.transport.publish

        def publish(items: Any, *args: Any, **kwargs: Any) -> Any:
            self.calls.append(list(items))
            return original(items, *args, **kwargs)

        app.transport.publish = publish  # type: ignore[method-assign]

    @property
    def messages(self) -> list[tuple[dict[str, Any], list[Any]]]:
        return [
            (item.message.headers, json.loads(item.message.body))
            for call in self.calls
            for item in call
        ]


@pytest.fixture
def tasks(memory_app: Celery) -> Tasks:
    return define_tasks(memory_app)


@pytest.fixture
def recorder(memory_app: Celery) -> Iterator[Recorder]:
    yield Recorder(memory_app)


def _captured(name: str) -> list[list[Any]]:
    data = json.loads((SAMPLES / "redis-tasks" / name).read_text())
    return [m["decoded_body"] for m in data["broker_db5"]["celery"]["value"]]


def test_signature_dict_form_matches_celery(tasks: Tasks) -> None:
    captured = _captured("link_and_link_error.json")[0][2]["callbacks"][0]
    sig = tasks.add.s(10)
    assert set(sig) == set(captured) == SIG_KEYS
    assert json.loads(json.dumps(sig)) == {**captured, "task": "canvas.add"}


def test_chain_publishes_first_task_with_reversed_rest(tasks: Tasks, recorder: Recorder) -> None:
    result = chain(tasks.add.s(1, 2), tasks.add.s(3), tasks.add.s(4)).apply_async()
    assert len(recorder.messages) == 1
    headers, (args, kwargs, embed) = recorder.messages[0]
    captured_embed = _captured("chain.json")[0][2]
    assert args == [1, 2] and kwargs == {}
    assert set(embed) == set(captured_embed)
    assert [s["args"] for s in embed["chain"]] == [[4], [3]]
    for step, seen in zip(embed["chain"], captured_embed["chain"], strict=True):
        assert set(step) == set(seen) and set(step["options"]) == set(seen["options"])
    assert embed["chain"][0]["options"]["task_id"] == result.id
    assert embed["chain"][1]["options"]["task_id"] == result.parent.id  # type: ignore[union-attr]
    assert headers["id"] == result.parent.parent.id  # type: ignore[union-attr]
    assert headers["root_id"] == headers["id"] and headers["group"] is None


def test_group_is_one_batch_with_group_headers(tasks: Tasks, recorder: Recorder) -> None:
    result = group(tasks.add.s(i, i) for i in range(50)).apply_async()
    assert len(recorder.calls) == 1 and len(recorder.calls[0]) == 50
    for index, (headers, (args, _, embed)) in enumerate(recorder.messages):
        assert headers["group"] == result.id and headers["group_index"] == index
        assert headers["root_id"] == headers["id"] == result.results[index].id
        assert args == [index, index]
        assert embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def test_chord_sets_size_then_sends_header_with_body(
    memory_app: Celery, tasks: Tasks, recorder: Recorder
) -> None:
    sizes: list[tuple[str, int]] = []
    store = memory_app.backend.store  # type: ignore[union-attr]
    original = store.chord_init

    def chord_init(group_id: str, size: int, ttl: float | None) -> None:
        assert not recorder.calls, "the size must be recorded before the header is published"
        sizes.append((group_id, size))
        original(group_id, size, ttl)

    store.chord_init = chord_init  # type: ignore[method-assign]
    result = chord([tasks.add.s(1, 1), tasks.add.s(2, 2)], tasks.tsum.s()).apply_async()
    gid = result.parent.id  # type: ignore[union-attr]
    assert sizes == [(gid, 2)]
    assert len(recorder.calls) == 1
    captured_body = _captured("chord.json")[0][2]["chord"]
    for index, (headers, (_, _, embed)) in enumerate(recorder.messages):
        assert headers["group"] == gid and headers["group_index"] == index
        body = embed["chord"]
        assert set(body) == set(captured_body)
        assert set(body["options"]) == set(captured_body["options"])
        assert body["options"]["task_id"] == result.id
        assert body["options"]["group_id"] == gid


def test_chord_body_message_from_the_worker(memory_app: Celery, tasks: Tasks) -> None:
    recorder = Recorder(memory_app)
    with start_worker(memory_app, pool="threads", concurrency=2):
        result = chord([tasks.add.s(1, 1), tasks.add.s(2, 2)], tasks.tsum.s()).apply_async()
        assert result.get(timeout=10) == 6
    body_messages = [m for m in recorder.messages if m[0]["task"] == "canvas.tsum"]
    assert len(body_messages) == 1
    headers, (args, _, _) = body_messages[0]
    header_ids = [r.id for r in result.parent.results]  # type: ignore[union-attr]
    assert args == [[2, 4]]
    assert headers["group"] == result.parent.id and headers["group_index"] is None  # type: ignore[union-attr]
    assert headers["parent_id"] in header_ids and headers["root_id"] == headers["parent_id"]


def test_chain_child_message_from_the_worker(memory_app: Celery, tasks: Tasks) -> None:
    recorder = Recorder(memory_app)
    with start_worker(memory_app, pool="threads"):
        result = chain(tasks.add.s(1, 2), tasks.add.s(3)).apply_async()
        assert result.get(timeout=10) == 6
        parent_meta = memory_app.backend.get_task_meta(result.parent.id)  # type: ignore[union-attr]
    child = next(m for m in recorder.messages if m[0]["id"] == result.id)
    headers, (args, _, embed) = child
    assert args == [3, 3] and embed["chain"] in ([], None)
    assert headers["parent_id"] == headers["root_id"] == result.parent.id  # type: ignore[union-attr]
    assert parent_meta["children"] == [[[result.id, None], None]]


def test_link_and_link_error_embed(tasks: Tasks, recorder: Recorder) -> None:
    tasks.add.apply_async((1, 2), link=tasks.add.s(10), link_error=tasks.on_error_request.s())
    _, (_, _, embed) = recorder.messages[0]
    captured = _captured("link_and_link_error.json")[0][2]
    assert [s["options"] for s in embed["callbacks"]] == [{}]
    assert [s["args"] for s in embed["callbacks"]] == [[10]]
    assert set(embed["errbacks"][0]) == set(captured["errbacks"][0])


def test_signature_ops(tasks: Tasks) -> None:
    sig = tasks.add.s(2)
    clone = sig.clone((1,), {}, queue="q")
    assert clone.args == [1, 2] and clone.options == {"queue": "q"} and sig.args == [2]
    assert tasks.add.si(1, 2).clone((9,)).args == [1, 2]
    assert sig.set(countdown=5) is sig and sig.options["countdown"] == 5
    frozen = tasks.add.s(1, 1)
    result = frozen.freeze()
    assert frozen.id == result.id and frozen.options["reply_to"]
    assert isinstance(tasks.add.s(1) | tasks.add.s(2), chain)
    assert len((tasks.add.s(1) | (tasks.add.s(2) | tasks.add.s(3))).tasks) == 3
    assert isinstance(group(tasks.add.s(1)) | tasks.tsum.s(), chord)
    extended = chord([tasks.add.s(1, 1)], tasks.tsum.s()) | tasks.add.s(1)
    assert isinstance(extended, chord) and isinstance(extended.body, chain)


def test_wire_dicts_rebuild_the_right_classes(tasks: Tasks) -> None:
    workflow = chain(
        tasks.add.s(1, 1),
        group(tasks.add.s(1), tasks.add.s(2)),
        tasks.tsum.s(),
        chord([tasks.add.s(1, 1)], tasks.tsum.s()),
    )
    for value in (
        workflow,
        xmap(tasks.add.s(), [1]),
        xstarmap(tasks.add.s(), [(1, 2)]),
        chunks(tasks.add.s(), [(1, 2)], 1),
    ):
        rebuilt = signature(json.loads(json.dumps(value)))
        # As Celery 5.7: map/starmap/chunks travel as plain celery.* task signatures.
        assert type(rebuilt) is (type(value) if value.subtask_type else Signature)
        assert json.loads(json.dumps(rebuilt)) == json.loads(json.dumps(value))
        assert type(value.clone()) is type(value)
    rebuilt_chain = signature(json.loads(json.dumps(workflow)))
    assert isinstance(rebuilt_chain.tasks[1], group)  # type: ignore[attr-defined]
    assert isinstance(rebuilt_chain.tasks[3], chord)  # type: ignore[attr-defined]


def test_celery_built_signatures_are_read(tasks: Tasks) -> None:
    celery = pytest.importorskip("celery")
    from celery.canvas import chunks as cchunks
    from celery.canvas import xmap as cxmap

    capp = celery.Celery("capapp", set_as_current=False)
    cadd = capp.signature("canvas.add", args=(1, 2))
    ctsum = capp.signature("canvas.tsum")
    cases = {
        "chain": celery.chain(cadd, capp.signature("canvas.add", args=(3,))),
        "group": celery.group(cadd, cadd),
        "chord": celery.chord([cadd, cadd], ctsum),
        None: cxmap(cadd, [1, 2]),
        "": cchunks(cadd, [(1, 2)], 1),
    }
    for kind, csig in cases.items():
        wire = json.loads(json.dumps(csig))
        ours = signature(wire, app=tasks.app)
        assert ours.subtask_type == (kind or None)
        if kind:
            assert type(ours).__name__ == kind
    mapped = signature(json.loads(json.dumps(cases[None])), app=tasks.app)
    assert json.loads(json.dumps(xmap(tasks.add.s(1, 2), [1, 2]))) == json.loads(
        json.dumps(cases[None])
    )
    assert mapped.task == "celery.map"
    ours_chord = signature(json.loads(json.dumps(cases["chord"])), app=tasks.app)
    assert isinstance(ours_chord, chord) and ours_chord.body is not None
    assert [t.task for t in ours_chord.tasks] == ["canvas.add", "canvas.add"]


def _normalized(call: list[Outgoing]) -> list[tuple[Any, ...]]:
    """The messages of one publish call with their ids replaced by their position."""
    out = []
    for item in call:
        m = item.message
        ids = {m.headers["id"]: "task", m.headers["group"]: "group"}
        headers = {k: ids.get(v, v) if isinstance(v, str) else v for k, v in m.headers.items()}
        props = {k: ids.get(v, v) if isinstance(v, str) else v for k, v in m.properties.items()}
        out.append((item.exchange, item.routing_key, headers, props, json.loads(m.body)))
    return out


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda t: group(t.add.s(i, i) for i in range(5)), id="plain"),
        pytest.param(
            lambda t: group(
                t.add.s(i, y=1) if i != 2 else t.add.s(1.5, y={"x": 1}) for i in range(5)
            ),
            id="one-member-needs-the-full-encoder",
        ),
        pytest.param(
            lambda t: chord((t.add.s(i, i) for i in range(4)), t.tsum.s()), id="chord-header"
        ),
    ],
)
def test_group_members_built_from_the_first_message_match_the_usual_path(
    tasks: Tasks, recorder: Recorder, monkeypatch: pytest.MonkeyPatch, make: Any
) -> None:
    make(tasks).apply_async(expires=60, priority=3)
    fast = recorder.calls.pop()
    module = sys.modules["celeriac.workflows.group"]  # the package exports the class by that name
    monkeypatch.setattr(module, "send_siblings", lambda *a, **k: None)
    make(tasks).apply_async(expires=60, priority=3)
    usual = recorder.calls.pop()
    assert len({item.message.headers["id"] for item in fast}) == len(fast)
    fast_view, usual_view = _normalized(fast), _normalized(usual)
    for a, b in zip(fast_view, usual_view, strict=True):
        # expires is computed per message: equal to the second, not to the microsecond
        a[2]["expires"] = b[2]["expires"] = None
        a[3].pop("expiration", None), b[3].pop("expiration", None)
        if a[4][2].get("chord"):
            a[4][2]["chord"]["options"] = b[4][2]["chord"]["options"] = None  # frozen body ids
        assert a == b
