"""The Redis result store: the shared contract plus Celery's key layout (DB 10)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from celeriac.backends import create_store
from celeriac.backends.base import ResultStore
from celeriac.backends.redis import BIG_WATCH, RedisResultStore, key_prefix
from celeriac.backends.redis_direct import MAX_LENT, DirectConnections, DirectWatch
from celeriac.exceptions import BackendError

from contract.store_contract import StoreContract, key
from support.servers import clean_redis_db
from support.waiting import wait_for

DB = 10
pytestmark = pytest.mark.redis


@pytest.fixture
def redis_url() -> Iterator[str]:
    with clean_redis_db(DB) as url:
        yield url


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def make_store(redis_url: str) -> Iterator[Callable[[], ResultStore]]:
    made: list[ResultStore] = []

    def make() -> ResultStore:
        s = create_store(redis_url)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


class TestRedisStore(StoreContract):
    pass


def test_set_is_setex_and_publish(make_store: Callable[[], ResultStore], raw: redis.Redis) -> None:
    s, k = make_store(), key()
    pubsub = raw.pubsub()
    pubsub.subscribe(k)
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]
    s.set(k, b'{"status": "SUCCESS"}', 86400)
    assert 86390 <= raw.ttl(k) <= 86400
    msg = pubsub.get_message(timeout=2)
    assert msg is not None and msg["data"] == b'{"status": "SUCCESS"}'
    pubsub.close()


def test_many_watches_share_one_connection(
    make_store: Callable[[], ResultStore], raw: redis.Redis
) -> None:
    reader, writer = make_store(), make_store()
    keys = [key() for _ in range(20)]
    # The first MAX_LENT waiters get connections of their own; the rest share the hub's.
    lent = [reader.watch([key()]) for _ in range(MAX_LENT)]
    assert all(isinstance(w, DirectWatch) for w in lent)
    watches = [reader.watch([k]) for k in keys]
    assert not any(isinstance(w, DirectWatch) for w in watches)
    watches += lent
    try:
        # Other processes may subscribe on this server too: look only at our 20 channels, and
        # find the one connection subscribed to exactly them.
        full = [reader._k(k) for k in keys]  # type: ignore[attr-defined]
        assert all(n == 1 for _, n in raw.pubsub_numsub(*full))
        ours = [c for c in raw.client_list() if int(c.get("sub", 0)) == 20]
        assert len(ours) == 1
        woke: list[int] = []

        def waiter(i: int) -> None:
            if watches[i].wait(5):
                woke.append(i)

        threads = [threading.Thread(target=waiter, args=(i,)) for i in (3, 7)]
        for th in threads:
            th.start()
        writer.set(keys[7], b"x", 60)
        threads[1].join()
        assert woke == [7]
        writer.set(keys[3], b"y", 60)
        threads[0].join()
        assert sorted(woke) == [3, 7]
    finally:
        for w in watches:
            w.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = [n for _, n in raw.pubsub_numsub(*full) if n]
        if not left:
            break
        time.sleep(0.05)
    assert not left


def _subscribed_clients(raw: redis.Redis, channel: str) -> int:
    return int(raw.pubsub_numsub(channel)[0][1])


def test_a_watch_of_one_key_reads_its_own_connection(
    make_store: Callable[[], ResultStore], raw: redis.Redis
) -> None:
    reader, writer = make_store(), make_store()
    k1, k2 = key(), key()
    first = reader.watch([k1])
    assert isinstance(first, DirectWatch)
    assert _subscribed_clients(raw, reader._k(k1)) == 1  # type: ignore[attr-defined]
    assert not first.wait(0.05)
    writer.set(k1, b"one", 60)
    assert first.wait(2)
    assert first.take_values() == {k1: b"one"}
    conn = first._conn
    first.close()
    # The next watch reuses the connection; what the first left unread (its UNSUBSCRIBE reply,
    # a late write to its key) does not wake it.
    second = reader.watch([k2])
    try:
        assert second._conn is conn
        writer.set(k1, b"late", 60)
        assert not second.wait(0.2)
        writer.set(k2, b"two", 60)
        assert second.wait(2)
        assert second.take_values() == {k2: b"two"}
    finally:
        second.close()
    assert _subscribed_clients(raw, reader._k(k1)) == 0  # type: ignore[attr-defined]


def test_a_direct_watch_survives_a_killed_connection(
    make_store: Callable[[], ResultStore], raw: redis.Redis
) -> None:
    reader, writer = make_store(), make_store()
    k = key()
    watch = reader.watch([k])
    assert isinstance(watch, DirectWatch)
    try:
        sock = watch._conn._sock  # type: ignore[union-attr]
        host, port = sock.getsockname()[:2]
        assert raw.client_kill_filter(addr=f"{host}:{port}") == 1
        writer.set(k, b"while-down", 60)  # no notification reaches the dead connection
        # The wait notices, subscribes again and says "read the keys" (values unknown).
        assert watch.wait(5)
        assert watch.take_values() is None
        assert _subscribed_clients(raw, reader._k(k)) == 1  # type: ignore[attr-defined]
        writer.set(k, b"after", 60)
        assert watch.wait(2)
        assert watch.take_values() == {k: b"after"}
    finally:
        watch.close()


def test_many_waiters_hold_at_most_max_lent_connections(
    make_store: Callable[[], ResultStore], raw: redis.Redis
) -> None:
    reader, writer = make_store(), make_store()
    keys = [key() for _ in range(MAX_LENT + 3)]
    watches = [reader.watch([k]) for k in keys]
    try:
        assert sum(isinstance(w, DirectWatch) for w in watches) == MAX_LENT
        woke: list[int] = []
        threads = [
            threading.Thread(target=lambda i=i: watches[i].wait(5) and woke.append(i))
            for i in range(len(keys))
        ]
        for th in threads:
            th.start()
        for k in keys:
            writer.set(k, b"v", 60)
        for th in threads:
            th.join()
        assert sorted(woke) == list(range(len(keys)))
    finally:
        for w in watches:
            w.close()
    assert reader._direct._lent == 0  # type: ignore[attr-defined]


def test_chord_keys_match_celery(make_store: Callable[[], ResultStore], raw: redis.Redis) -> None:
    s, gid = make_store(), str(uuid.uuid4())
    s.chord_init(gid, 2, 86400)
    base = f"celery-taskset-meta-{gid}"
    assert raw.get(base + ".s") == b"2"
    assert raw.ttl(base + ".s") > 86000
    s.chord_part(gid, "t1", 1, b'[1, "t1", "SUCCESS", 2]', 86400)
    assert raw.zrange(base + ".j", 0, -1, withscores=True) == [(b'[1, "t1", "SUCCESS", 2]', 1.0)]
    assert raw.smembers(base + ".d") == {b"t1:1"}
    got = s.chord_part(gid, "t0", 0, b'[1, "t0", "SUCCESS", 1]', 86400)
    assert got == [b'[1, "t0", "SUCCESS", 1]', b'[1, "t1", "SUCCESS", 2]']
    assert len(raw.get(base + ".c") or b"") == 32
    s.chord_release(gid)
    assert raw.get(base + ".c") == b"done"
    assert not raw.exists(base + ".j", base + ".s", base + ".d", base + ".t")
    assert s.chord_part(gid, "t0", 0, b"late", 86400) is None
    assert not raw.exists(base + ".j")


def test_global_keyprefix(redis_url: str, raw: redis.Redis) -> None:
    opts = {"result_backend_transport_options": {"global_keyprefix": "app"}}
    assert key_prefix(opts) == "app_"
    s = RedisResultStore(redis_url, opts)
    try:
        s.set("celery-task-meta-1", b"v", 60)
        assert raw.get("app_celery-task-meta-1") == b"v"
        assert s.get("celery-task-meta-1") == b"v"
    finally:
        s.close()


def test_store_options_are_read(redis_url: str) -> None:
    s = RedisResultStore(
        redis_url,
        {"redis_socket_timeout": 3, "redis_max_connections": 7, "redis_retry_on_timeout": True},
    )
    assert s.params.socket_timeout == 3.0
    assert s.params.max_connections == 7
    assert s.params.retry_on_timeout is True
    s.close()


def test_app_settings_reach_the_store(redis_url: str) -> None:
    from celeriac import Celery

    app = Celery("opts", broker="memory://", backend=redis_url, set_as_current=False)
    app.conf.update(
        redis_socket_keepalive=True,
        result_backend_transport_options={"result_chord_ordered": False},
    )
    try:
        backend = app.backend
        assert backend is not None
        store = backend.store
        assert isinstance(store, RedisResultStore)
        assert store.chord_ordered is False
        assert store.params.socket_keepalive is True
    finally:
        app.close()


def test_a_notification_carries_the_value(make_store: Callable[[], ResultStore]) -> None:
    reader, writer = make_store(), make_store()
    with reader.watch(["k1", "k2"]) as watch:
        writer.set("k2", b"two", None)
        assert watch.wait(5)
        assert watch.take_values() == {"k2": b"two"}
        assert watch.take_values() == {}  # taken once


@pytest.fixture
def reading_backend(redis_url: str) -> Iterator[tuple[Any, list[list[str]]]]:
    """A Redis result backend, and the ids of each read of results it makes."""
    from celeriac import Celery

    app = Celery("push", broker="memory://", backend=redis_url, set_as_current=False)
    backend = app.backend
    assert backend is not None
    reads: list[list[str]] = []
    original = backend.get_many_meta

    def counting(task_ids: Any) -> Any:
        reads.append(list(task_ids))
        return original(task_ids)

    backend.get_many_meta = counting  # type: ignore[method-assign]
    yield backend, reads
    app.close()


def test_waiting_for_a_result_uses_the_published_value(
    reading_backend: tuple[Any, list[list[str]]],
) -> None:
    backend, reads = reading_backend
    threading.Timer(0.3, lambda: backend.store_result("t-1", 42, "SUCCESS")).start()
    assert backend.wait_for("t-1", timeout=10)["result"] == 42
    assert reads == [["t-1"]]  # the read before waiting; the value came with the PUBLISH


def test_waiting_for_many_reads_each_result_once(
    reading_backend: tuple[Any, list[list[str]]], raw: redis.Redis
) -> None:
    """Results that arrive one by one come with their PUBLISH: the ones still running are not
    read again on every wake-up, unless the notification connection was lost meanwhile."""
    backend, reads = reading_backend
    ids = [f"m-{i}" for i in range(5)]
    backend.store_result(ids[0], 0, "SUCCESS")  # ready before the wait begins

    def finish_the_rest() -> None:
        for i, task_id in enumerate(ids[1:], 1):
            time.sleep(0.05)
            backend.store_result(task_id, i, "SUCCESS")

    threading.Timer(0.2, finish_the_rest).start()
    metas = backend.wait_for_many([*ids, ids[2]], timeout=10)
    assert [m["result"] for m in metas] == [0, 1, 2, 3, 4, 2]
    assert reads == [[*ids]]  # one read of every id; the rest came with the notifications

    reads.clear()

    def drop_notifications() -> None:  # the server closes this DB's pub/sub connections
        for client in raw.client_list(_type="pubsub"):
            if client.get("db") == str(DB):
                raw.client_kill_filter(_id=client["id"])

    threading.Timer(0.3, drop_notifications).start()
    threading.Timer(0.8, lambda: backend.store_result("m-late", 7, "SUCCESS")).start()
    assert backend.wait_for("m-late", timeout=10)["result"] == 7
    assert len(reads) >= 2  # after the reconnect the pending result was read again


@pytest.mark.parametrize("size", [500, BIG_WATCH + 500])  # shared connection; one of its own
def test_a_burst_of_notifications_is_taken_whole(
    reading_backend: tuple[Any, list[list[str]]], size: int
) -> None:
    """Results stored in one pipeline arrive as one burst of PUBLISH messages, read together:
    every value is taken from its notification (none read again), none is missed."""
    backend, reads = reading_backend
    ids = [f"burst-{size}-{i}" for i in range(size)]

    def finish_all() -> None:
        time.sleep(0.3)
        backend.store_many([backend.make_meta(t, i, "SUCCESS") for i, t in enumerate(ids)])

    threading.Thread(target=finish_all).start()
    metas = backend.wait_for_many(ids, timeout=30)
    assert [m["result"] for m in metas] == list(range(size))
    assert reads == [ids]  # the one read before waiting; every value came with its notification


@pytest.mark.parametrize("size", [500, BIG_WATCH + 500])  # shared connection; one of its own
def test_closing_a_big_watch_leaves_its_channels(
    make_store: Callable[[], ResultStore], raw: redis.Redis, size: int
) -> None:
    store = make_store()
    keys = [f"big-{i}" for i in range(size)]

    def subscribed() -> set[bytes]:
        return {c for c in raw.pubsub_channels() if b"big-" in c}

    with store.watch(keys) as big:
        assert len(subscribed()) == size
        kept = store.watch(keys[:1])  # a second watch of one key keeps its channel
        writer = make_store()
        writer.set(keys[-1], b"last", None)
        assert big.wait(5)
        assert big.take_values() == {keys[-1]: b"last"}
    try:
        wait_for(lambda: len(subscribed()) == 1, timeout=5, what="the others left")
        writer.set(keys[0], b"v", None)
        assert kept.wait(5)
    finally:
        kept.close()
    wait_for(lambda: not subscribed(), timeout=5, what="every channel left")


class _SilentConnection:
    """A connection whose server never answers."""

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        pass

    def can_read(self, timeout: float = 0) -> bool:
        return False

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("nothing to read")

    def disconnect(self, *args: Any) -> None:
        pass


def test_a_direct_watch_names_the_endpoint_that_did_not_confirm() -> None:
    pool = DirectConnections(_SilentConnection)
    conn = pool.take()
    assert conn is not None
    watch = DirectWatch(
        pool, conn, {b"k": "k"}, lambda op: op(), 0.05, endpoint="redis://10.0.0.9:6380/2"
    )
    with pytest.raises(BackendError, match=r"Redis at redis://10\.0\.0\.9:6380/2 did not confirm"):
        watch.start()


def test_chord_parts_after_redis_forgot_the_script(
    make_store: Callable[[], ResultStore], raw: redis.Redis
) -> None:
    s = make_store()
    gid = str(uuid.uuid4())
    s.chord_init(gid, 2, 60)
    assert s.chord_part(gid, "a", 0, b"a", 60) is None  # the script is loaded now
    raw.script_flush()  # as after a restart
    assert s.chord_parts([(gid, "a", 0, b"a", 60), (gid, "b", 1, b"b", 60)]) == [
        None,
        [b"a", b"b"],
    ]
