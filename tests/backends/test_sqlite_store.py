"""The embedded SQLite result store: the store contract plus expiry, sharing and watch details."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from celeriac.backends.base import ResultStore
from celeriac.backends.sqlite import SQLiteResultStore
from celeriac.exceptions import ImproperlyConfigured
from celeriac.protocol.message import Message, Outgoing
from celeriac.transports.sqlite import SQLiteTransport

from contract.store_contract import StoreContract


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'results.db'}"


@pytest.fixture
def make_store(db_url: str) -> Iterator[Callable[[], ResultStore]]:
    made: list[ResultStore] = []

    def make() -> ResultStore:
        s = SQLiteResultStore(db_url)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


class TestSQLiteStore(StoreContract):
    pass


# -- what only the embedded store has --------------------------------------------------------------


def test_expired_values_are_never_returned_and_cleanup_sweeps_them(db_url: str) -> None:
    s = SQLiteResultStore(db_url)
    try:
        now = time.time()
        with s._db.write() as conn:  # 1,200 rows that expired a second ago, 3 live ones
            conn.executemany(
                "INSERT INTO results (key, value, expires_at, version) VALUES (?, ?, ?, 0)",
                [
                    (
                        f"old-{i}",
                        b"x",
                        now - 1,
                    )
                    for i in range(1200)
                ]
                + [(f"live-{i}", b"y", now + 60) for i in range(3)],
            )
        assert s.get("old-5") is None
        assert s.get_many(["old-1", "live-1"]) == [None, b"y"]
        s.chord_init("gone", 2, -1)
        s.chord_part("gone", "t", 0, b"r", -1)
        assert s.cleanup() == 1201
        with s._db.read() as conn:
            assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 3
            assert conn.execute("SELECT COUNT(*) FROM chord_parts").fetchone()[0] == 0
        assert s.cleanup() == 0
    finally:
        s.close()


def test_watch_is_woken_by_push_and_ignores_other_keys(db_url: str) -> None:
    reader = SQLiteResultStore(db_url, {"polling_interval": 30})
    writer = SQLiteResultStore(db_url)
    try:
        with reader.watch(["mine"]) as w:
            writer.set("not-mine", b"1", 60)
            assert w.wait(0.3) is False
            timer = threading.Timer(0.2, lambda: writer.set("mine", b"2", 60))
            timer.start()
            start = time.monotonic()
            assert w.wait(None) is True
            assert time.monotonic() - start < 1.0
            timer.join()
            assert w.wait(0.1) is False  # that write was reported once
    finally:
        reader.close()
        writer.close()


def test_store_and_broker_share_one_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'both.db'}"
    store, broker = SQLiteResultStore(url), SQLiteTransport(url)
    try:
        broker.publish([Outgoing(Message(b"{}"), "", "q")])
        store.set("k", b"v", None)
        assert store.get("k") == b"v"
        assert broker.queue_length("q") == 1
    finally:
        store.close()
        broker.close()


def test_bad_url_names_the_setting() -> None:
    with pytest.raises(ImproperlyConfigured, match="result_backend 'sqlite://'"):
        SQLiteResultStore("sqlite://")
