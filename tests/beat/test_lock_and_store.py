"""The lock and state-store contract, run against memory, SQLite and Redis (DB 8)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac import Celery
from celeriac.beat.connect import BeatBackend, lock_url, open_backend
from celeriac.beat.store import EntryState
from celeriac.exceptions import ImproperlyConfigured

from support.waiting import wait_for

REDIS_DB = 8


@pytest.fixture(params=["memory", "sqlite", "redis"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return f"memory://{uuid.uuid4().hex}"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'broker.db'}"
    import redis

    url = f"{request.getfixturevalue('redis_server')}/{REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def pair(broker: str) -> Iterator[tuple[BeatBackend, BeatBackend]]:
    """Two beats' views of the same lock and store (as two processes would have)."""
    app = Celery("lockproj", broker=broker, set_as_current=False)
    one = open_backend(app, lock_ttl=0.6)
    two = open_backend(app, lock_ttl=0.6)
    try:
        yield one, two
    finally:
        one.close()
        two.close()
        app.close()


def test_one_holder_and_expiry_takeover(pair: tuple[BeatBackend, BeatBackend]) -> None:
    one, two = pair
    assert one.lock.acquire()
    assert not two.lock.acquire()
    assert one.lock.holder() == one.lock.owner
    assert one.lock.acquire()  # renewal by the holder
    # The holder stops renewing (it died): the other takes over once the lock expires.
    wait_for(two.lock.acquire, timeout=5, interval=0.05, what="takeover after expiry")
    assert not one.lock.acquire()
    assert two.lock.holder() == two.lock.owner


def test_release_lets_the_other_take_it_at_once(pair: tuple[BeatBackend, BeatBackend]) -> None:
    one, two = pair
    assert one.lock.acquire()
    two.lock.release()  # not the holder: no effect
    assert not two.lock.acquire()
    one.lock.release()
    assert one.lock.holder() is None
    assert two.lock.acquire()


def test_claims_are_compare_and_set(pair: tuple[BeatBackend, BeatBackend]) -> None:
    one, two = pair
    assert one.store.load(["e"]) == {}
    first = EntryState(1, 100.0, None, 0)
    assert one.store.claim("e", 0, first)
    assert not two.store.claim("e", 0, EntryState(1, 101.0, None, 0))
    assert two.store.load(["e", "other"]) == {"e": first}
    run = EntryState(2, 110.0, 110.0, 1)
    assert two.store.claim("e", 1, run)
    assert not one.store.claim("e", 1, EntryState(2, 110.0, 110.0, 1))  # a stale view
    assert one.store.load(["e"]) == {"e": run}
    with pytest.raises(ValueError, match="seen version"):
        one.store.claim("e", 2, EntryState(5, 1.0, 1.0, 1))


def test_racing_claims_let_exactly_one_win(pair: tuple[BeatBackend, BeatBackend]) -> None:
    one, two = pair
    one.store.claim("e", 0, EntryState(1, 0.0, None, 0))
    wins: list[str] = []
    barrier = threading.Barrier(2)

    def claim(backend: BeatBackend, who: str) -> None:
        barrier.wait()
        for version in range(1, 51):
            if backend.store.claim(
                "e", version, EntryState(version + 1, float(version), None, version)
            ):
                wins.append(f"{who}{version}")

    threads = [threading.Thread(target=claim, args=(b, w)) for b, w in ((one, "a"), (two, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # Each version was claimed by one of them, never both.
    assert sorted(int(w[1:]) for w in wins) == sorted(set(int(w[1:]) for w in wins))


def test_beat_lock_url_overrides_the_broker(tmp_path: Path) -> None:
    app = Celery("x", broker="amqp://guest@localhost//", set_as_current=False)
    app.conf.beat_lock_url = f"sqlite:///{tmp_path / 'lock.db'}"
    assert lock_url(app) == app.conf.beat_lock_url
    backend = open_backend(app)
    try:
        assert backend.shared and "lock.db" in backend.where
    finally:
        backend.close()
    app.conf.beat_lock_url = "amqp://elsewhere//"
    with pytest.raises(ImproperlyConfigured, match="beat_lock_url"):
        open_backend(app)
