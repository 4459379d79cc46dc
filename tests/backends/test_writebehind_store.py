"""Write-behind result writes: the store contract still holds, order is kept, batches form."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from celeriac.backends.base import ResultStore
from celeriac.backends.memory import MemoryResultStore, reset
from celeriac.backends.sqlite import SQLiteResultStore
from celeriac.backends.writebehind import WriteBehindStore

from contract.store_contract import StoreContract
from support.waiting import wait_for


@pytest.fixture(params=["memory", "sqlite"])
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], ResultStore]]:
    url = (
        f"memory://{uuid.uuid4().hex}"
        if request.param == "memory"
        else f"sqlite:///{tmp_path / 'results.db'}"
    )
    made: list[ResultStore] = []

    def make() -> ResultStore:
        inner = MemoryResultStore(url) if request.param == "memory" else SQLiteResultStore(url)
        s = WriteBehindStore(inner)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
    if request.param == "memory":
        reset(url)


class TestWriteBehindStore(StoreContract):
    pass


class Recording(MemoryResultStore):
    """A memory store that records each write call and can be held or made to fail."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.calls: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        self.gate.wait(10)
        self.calls.append([k for k, _ in items])
        if self.fail:
            raise ConnectionError("store down")
        super().set_many(items, ttl)


@pytest.fixture
def recording() -> Iterator[Recording]:
    url = f"memory://{uuid.uuid4().hex}"
    yield Recording(url)
    reset(url)


def test_reports_follow_their_writes_and_go_out_together(recording: Recording) -> None:
    delivered: list[tuple[list[str], bytes | None, str]] = []

    def deliver(messages: list[str]) -> None:
        delivered.append((messages, recording.get("a"), threading.current_thread().name))

    store = WriteBehindStore(recording, deliver)
    store.report("idle")  # nothing queued: delivered at once, on the caller's thread
    assert delivered == [(["idle"], None, threading.current_thread().name)]
    recording.gate.clear()
    store.set("first", b"x", None)
    wait_for(lambda: store._busy, timeout=5, what="writer busy")
    store.set("a", b"1", None)
    store.report("after-a")
    store.set("b", b"2", None)
    store.report("after-b")
    assert len(delivered) == 1  # held behind the writes
    recording.gate.set()
    store.flush()
    assert delivered[1] == (["after-a", "after-b"], b"1", "celeriac-results")
    assert store.get("b") == b"2"
    store.close()


def test_writes_queued_while_one_is_in_flight_go_out_as_one_batch(recording: Recording) -> None:
    store = WriteBehindStore(recording)
    recording.gate.clear()
    store.set("first", b"x", None)
    # Let the writer take "first" and block in the store, then queue more behind it.
    wait_for(lambda: store._busy, timeout=5, what="writer busy")
    threading.Timer(0.2, recording.gate.set).start()
    for i in range(50):
        store.set(f"k{i}", b"v", None)
    store.flush()
    assert recording.calls[0] == ["first"]
    assert [len(c) for c in recording.calls[1:]] == [50]
    store.close()


def test_reads_wait_for_queued_writes(recording: Recording) -> None:
    store = WriteBehindStore(recording)
    recording.gate.clear()
    store.set("late", b"v", None)
    threading.Timer(0.2, recording.gate.set).start()
    assert store.get("late") == b"v"
    assert store.get_many(["late", "none"]) == [b"v", None]
    store.close()


def test_a_failed_write_is_logged_by_key_and_later_writes_go_on(
    recording: Recording, caplog: pytest.LogCaptureFixture
) -> None:
    store = WriteBehindStore(recording)
    recording.fail = True
    store.set("lost-one", b"v", None)
    store.flush()
    recording.fail = False
    store.set("kept", b"v", None)
    store.flush()
    assert store.get("kept") == b"v"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "lost-one" in errors[0].getMessage()
    store.close()


def test_close_writes_what_is_queued_and_refuses_more(recording: Recording) -> None:
    store = WriteBehindStore(recording)
    recording.gate.clear()
    store.set("queued", b"v", None)
    threading.Timer(0.2, recording.gate.set).start()
    store.close()
    assert recording.get("queued") == b"v"
    with pytest.raises(RuntimeError, match="closed"):
        store.set("after", b"v", None)


def test_chord_parts_are_counted_behind_the_writes_before_them(recording: Recording) -> None:
    seen: list[tuple[list[bytes] | None, bytes | None, str]] = []
    delivered: list[list[str]] = []

    def then(parts: list[bytes] | None) -> None:
        seen.append((parts, recording.get("result-2"), threading.current_thread().name))

    store = WriteBehindStore(recording, delivered.append)
    store.chord_init("g", 2, None)
    store.chord_part_then("g", "t1", 0, b"one", None, then)  # nothing queued: counted here
    assert seen == [(None, None, threading.current_thread().name)]
    recording.gate.clear()
    store.set("first", b"x", None)
    wait_for(lambda: store._busy, timeout=5, what="writer busy")
    store.set("result-2", b"2", None)
    store.chord_part_then("g", "t2", 1, b"two", None, then)
    store.report("ack-t2")
    assert len(seen) == 1 and not delivered  # held behind the writes
    recording.gate.set()
    store.flush()
    # The last part completes the chord, after t2's result landed and before t2's report.
    assert seen[1] == ([b"one", b"two"], b"2", "celeriac-results")
    assert delivered == [["ack-t2"]]
    store.close()


def test_idle_caller_writes_on_its_own_thread(recording: Recording) -> None:
    writers: dict[str, str] = {}
    write = recording.set

    def record_thread(key: str, value: bytes, ttl: float | None) -> None:
        writers[key] = threading.current_thread().name
        write(key, value, ttl)

    recording.set = record_thread  # type: ignore[method-assign]
    idle = threading.Event()
    store = WriteBehindStore(recording, idle=idle.is_set)
    idle.set()
    store.set("now", b"v", None)
    assert writers == {"now": threading.current_thread().name}  # written before set() returned
    idle.clear()
    store.set("later", b"v", None)
    store.flush()
    assert writers["later"] == "celeriac-results"
    store.close()


def test_queued_writes_can_be_taken_and_put_back(recording: Recording) -> None:
    store = WriteBehindStore(recording, deliver=lambda messages: None)
    store.gather = True  # writes wait for push()
    store.set("a", b"1", 5.0)
    store.set("b", b"2", None)
    assert store.take_writes() == [("a", b"1", 5.0), ("b", b"2", None)]
    assert store.quiet() and store.take_writes() == []
    store.set("c", b"3", None)
    store.put_back([("a", b"1", 5.0)])  # sending them failed: the store's thread writes them
    store.flush()
    assert recording.get("a") == b"1" and recording.get("c") == b"3"
    assert recording.get("b") is None  # taken, so the taker's to write
    store.close()


def test_writes_are_not_taken_past_a_report_or_while_one_is_in_flight(
    recording: Recording,
) -> None:
    store = WriteBehindStore(recording, deliver=lambda messages: None)
    store.gather = True
    recording.gate.clear()
    store.set("first", b"x", None)
    store.push()
    wait_for(lambda: store._busy, timeout=5, what="writer busy")
    store.set("a", b"1", None)
    assert store.take_writes() == []  # one in flight: what follows must wait for it
    recording.gate.set()
    store.flush()
    store.set("b", b"2", None)
    store.report("after-b")  # a report must follow its writes: they stay queued
    assert store.take_writes() == []
    store.flush()
    assert recording.get("b") == b"2"
    store.close()
