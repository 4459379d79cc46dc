"""The contract every result store must pass.

A store's test module subclasses :class:`StoreContract` and provides a ``make_store`` fixture: a
factory ``make_store() -> ResultStore`` whose stores share one backend and are closed after the
test.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

from celeriac.backends.base import ResultStore

MakeStore = Callable[[], ResultStore]


def key() -> str:
    return f"celery-task-meta-{uuid.uuid4()}"


class StoreContract:
    """Behaviour every result store shares."""

    def test_set_get(self, make_store: MakeStore) -> None:
        s, k = make_store(), key()
        assert s.get(k) is None
        s.set(k, b'{"status": "SUCCESS"}', 60)
        assert s.get(k) == b'{"status": "SUCCESS"}'
        s.set(k, b"2", 60)
        assert s.get(k) == b"2"

    def test_get_many_and_set_many(self, make_store: MakeStore) -> None:
        s = make_store()
        keys = [key() for _ in range(3)]
        s.set_many([(keys[0], b"a"), (keys[2], b"c")], 60)
        assert s.get_many(keys) == [b"a", None, b"c"]

    def test_ttl_expires(self, make_store: MakeStore) -> None:
        s, k = make_store(), key()
        s.set(k, b"x", 1)
        deadline = time.monotonic() + 5
        while s.get(k) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert s.get(k) is None

    def test_no_ttl_keeps(self, make_store: MakeStore) -> None:
        s, k = make_store(), key()
        s.set(k, b"x", None)
        assert s.get(k) == b"x"
        s.delete([k])
        assert s.get(k) is None

    def test_watch_sees_write_from_another_store(self, make_store: MakeStore) -> None:
        reader, writer, k = make_store(), make_store(), key()
        with reader.watch([k]) as w:
            assert reader.get(k) is None
            timer = threading.Timer(0.2, lambda: writer.set(k, b"done", 60))
            timer.start()
            start = time.monotonic()
            assert w.wait(5.0) is True
            assert time.monotonic() - start < 3.0
            timer.join()
        assert reader.get(k) == b"done"

    def test_watch_times_out(self, make_store: MakeStore) -> None:
        s = make_store()
        with s.watch([key()]) as w:
            start = time.monotonic()
            assert w.wait(0.3) is False
            assert time.monotonic() - start >= 0.25

    def test_watch_does_not_miss_write_before_wait(self, make_store: MakeStore) -> None:
        s, k = make_store(), key()
        with s.watch([k]) as w:
            s.set(k, b"early", 60)
            assert w.wait(3.0) is True

    def test_chord_counts_once_and_one_winner(self, make_store: MakeStore) -> None:
        s = make_store()
        gid = str(uuid.uuid4())
        s.chord_init(gid, 3, 60)
        assert s.chord_part(gid, "t2", 2, b"r2", 60) is None
        assert s.chord_part(gid, "t0", 0, b"r0", 60) is None
        assert s.chord_part(gid, "t0", 0, b"r0", 60) is None  # redelivered: counted once
        assert s.chord_part(gid, "t1", 1, b"r1", 60) == [b"r0", b"r1", b"r2"]
        assert s.chord_part(gid, "t1", 1, b"r1", 60) is None  # claimed already
        s.chord_release(gid)

    def test_chord_parts_in_one_call(self, make_store: MakeStore) -> None:
        s = make_store()
        gid, other = str(uuid.uuid4()), str(uuid.uuid4())
        s.chord_init(gid, 3, 60)
        s.chord_init(other, 1, 60)
        outcomes = s.chord_parts(
            [
                (gid, "t2", 2, b"r2", 60),
                (gid, "t0", 0, b"r0", 60),
                (gid, "t0", 0, b"r0", 60),  # redelivered: counted once
                (other, "x", 0, b"x", 60),
                (gid, "t1", 1, b"r1", 60),
                (gid, "t1", 1, b"r1", 60),  # claimed already
            ]
        )
        assert outcomes == [None, None, None, [b"x"], [b"r0", b"r1", b"r2"], None]
        s.chord_release(gid)
        s.chord_release(other)

    def test_chord_grow(self, make_store: MakeStore) -> None:
        s = make_store()
        gid = str(uuid.uuid4())
        s.chord_init(gid, 1, 60)
        s.chord_grow(gid, 1, 60)
        assert s.chord_part(gid, "a", 0, b"a", 60) is None
        assert s.chord_part(gid, "b", 1, b"b", 60) == [b"a", b"b"]

    def test_chord_concurrent_parts_single_winner(self, make_store: MakeStore) -> None:
        gid, n = str(uuid.uuid4()), 40
        make_store().chord_init(gid, n, 60)
        stores = [make_store() for _ in range(4)]
        winners: list[list[bytes]] = []
        lock = threading.Lock()

        def work(worker: int) -> None:
            for i in range(worker, n, 4):
                got = stores[worker].chord_part(gid, f"t{i}", i, str(i).encode(), 60)
                if got is not None:
                    with lock:
                        winners.append(got)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert len(winners) == 1
        assert winners[0] == [str(i).encode() for i in range(n)]
