"""The embedded SQLite broker: the transport contract plus what only a file-backed broker has."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac.exceptions import ImproperlyConfigured
from celeriac.protocol.entities import Exchange, Queue
from celeriac.protocol.message import Outgoing
from celeriac.transports import create_transport
from celeriac.transports.base import Transport
from celeriac.transports.sqlite import QUEUE_CHANNEL, SQLiteTransport
from celeriac.utils.localwake import Listener, WakeDir, wake_dir_for

from contract.transport_contract import (
    MakeTransport,
    TransportContract,
    drain,
    msg,
    qname,
    to_queue,
)
from support.waiting import wait_for


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'broker.db'}"


@pytest.fixture
def make_transport(db_url: str) -> Iterator[Callable[..., Transport]]:
    made: list[Transport] = []

    def make(**options: Any) -> Transport:
        t = SQLiteTransport(db_url, options)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


class TestSQLiteTransport(TransportContract):
    pass


# -- what only the embedded broker has -------------------------------------------------------------


def test_url_forms_create_file_and_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = create_transport("sqlite:///sub/dir/rel.db")
    absolute = create_transport(f"sqlite:///{tmp_path / 'abs.db'}")
    try:
        assert isinstance(relative, SQLiteTransport)
        assert relative.queue_length("x") == 0
        assert absolute.queue_length("x") == 0
        assert (tmp_path / "sub" / "dir" / "rel.db").is_file()
        assert (tmp_path / "abs.db").is_file()
        with sqlite3.connect(tmp_path / "abs.db") as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            assert {"messages", "bindings", "dead_letters", "broadcasts"} <= tables
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        relative.close()
        absolute.close()


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite:relative"]
)
def test_bad_urls_say_what_is_expected(url: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"sqlite:///relative/path\.db"):
        SQLiteTransport(url)


def test_options_from_url_and_bad_synchronous(tmp_path: Path) -> None:
    t = SQLiteTransport(f"sqlite:///{tmp_path / 'b.db'}?synchronous=full&visibility_timeout=7")
    try:
        assert t.visibility_timeout == 7.0
        assert t._db.conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        t.close()
    with pytest.raises(ImproperlyConfigured, match="synchronous='sometimes'"):
        SQLiteTransport(f"sqlite:///{tmp_path / 'b.db'}", {"synchronous": "sometimes"})


def test_fifo_within_priority_and_priority_across_queues(make_transport: MakeTransport) -> None:
    t, q1, q2 = make_transport(), qname(), qname()
    t.publish(to_queue(q1, msg("a0", 0), msg("a5", 5), msg("a5b", 5)))
    t.publish(to_queue(q2, msg("b9", 9), msg("b0", 0)))
    got = drain(t, [q1, q2], 5)
    assert [d.message.headers["n"] for d in got] == ["b9", "a5", "a5b", "a0", "b0"]
    t.ack(got)


def test_requeued_batch_keeps_its_order_at_the_head(make_transport: MakeTransport) -> None:
    t, q = make_transport(), qname()
    t.publish(to_queue(q, *(msg(i) for i in range(5))))
    first = t.fetch([q], 3, 2.0)
    t.requeue(first)
    got = drain(t, [q], 5)
    assert [d.message.headers["n"] for d in got] == [0, 1, 2, 3, 4]
    assert [d.redelivered for d in got] == [True, True, True, False, False]
    t.ack(got)


def test_stale_holder_cannot_ack_a_message_someone_else_took(make_transport: MakeTransport) -> None:
    holder, other, q = make_transport(visibility_timeout=0.3), make_transport(), qname()
    holder.publish(to_queue(q, msg("x")))
    stale = holder.fetch([q], 1, 2.0)
    taken = wait_for(lambda: other.fetch([q], 1, 0.2), timeout=10, what="lease expiry")
    holder.ack(stale)  # too late: the lease passed to `other`
    holder.dead_letter(stale[0], "too late as well")
    holder.renew(stale)
    assert other.dead_letters() == []
    other.requeue(taken)
    [again] = drain(other, [q], 1)
    assert again.message.headers["n"] == "x"
    other.ack([again])


def test_holder_may_still_ack_after_expiry_if_nobody_took_it(make_transport: MakeTransport) -> None:
    t, q = make_transport(visibility_timeout=0.2), qname()
    t.publish(to_queue(q, msg("slow")))
    held = t.fetch([q], 1, 2.0)
    wait_for(lambda: t.fetch([qname()], 1, 0.05) == [] and t.queue_length(q) == 1, timeout=5)
    t.ack(held)
    assert t.queue_length(q) == 0


def test_exchanges_fanout_fallback_and_unmatched(make_transport: MakeTransport) -> None:
    t, q1, q2 = make_transport(), qname(), qname()
    fan = f"fan-{q1}"
    t.declare(Queue(q1, Exchange(fan, "fanout")))
    t.declare(Queue(q2, Exchange(fan, "fanout")))
    t.declare(Queue(q1, Exchange(f"d-{q1}", "direct"), routing_key="only"))
    t.publish([Outgoing(msg("fan"), fan, "anything")])
    t.publish([Outgoing(msg("none"), f"d-{q1}", "other-key")])  # no binding matches: dropped
    t.publish([Outgoing(msg("undeclared"), "no-such-exchange", q2)])  # routing key = queue
    got1, got2 = drain(t, [q1], 1), drain(t, [q2], 2)
    assert [d.message.headers["n"] for d in got1] == ["fan"]
    assert sorted(d.message.headers["n"] for d in got2) == ["fan", "undeclared"]
    assert t.queue_length(q1) == 0
    t.ack(got1 + got2)


def test_parked_message_goes_to_any_consumer(make_transport: MakeTransport) -> None:
    parker, other, q = make_transport(), make_transport(), qname()
    parker.publish(to_queue(q, msg("eta")))
    [d] = parker.fetch([q], 1, 2.0)
    parker.park(d, time.time() + 0.4)
    assert parker.queue_length(q) == 0
    start = time.monotonic()
    got = other.fetch([q], 1, 5.0)
    assert [g.message.headers["n"] for g in got] == ["eta"]
    assert 0.3 <= time.monotonic() - start < 2.0  # woken at the due time, not a poll later
    other.ack(got)


def test_dead_letters_are_plain_rows(make_transport: MakeTransport, db_url: str) -> None:
    t, q = make_transport(dead_letter_queue="my-dlq"), qname()
    t.publish(to_queue(q, msg("poison")))
    [d] = t.fetch([q], 1, 2.0)
    t.dead_letter(d, "DecodeError: not JSON")
    path = db_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT store, queue, reason, headers FROM dead_letters").fetchall()
    assert rows == [("my-dlq", q, "DecodeError: not JSON", '{"n":"poison"}')]
    assert make_transport().dead_letters() == []  # another store name sees its own only
    assert t.purge_dead(["nope", t.dead_letters()[0].id]) == 1


def test_broadcast_is_not_kept_for_late_subscribers(make_transport: MakeTransport) -> None:
    t = make_transport()
    t.broadcast("ctl", "x", msg("early"))
    with t.subscribe("ctl") as sub:
        assert sub.get(0.2) == []
        t.broadcast("ctl", "x", msg("late"))
        t.broadcast("other", "x", msg("elsewhere"))
        got = sub.get(2.0)
        assert [m.headers["n"] for _, m in got] == ["late"]


def test_wake_up_is_pushed_not_polled(make_transport: MakeTransport) -> None:
    consumer, producer, q = make_transport(polling_interval=30), make_transport(), qname()
    assert consumer.fetch([q], 1, 0.05) == []  # binds the consumer's socket
    timer = threading.Timer(0.3, lambda: producer.publish(to_queue(q, msg("now"))))
    timer.start()
    start = time.monotonic()
    got = consumer.fetch([q], 1, 10.0)
    timer.join()
    assert [d.message.headers["n"] for d in got] == ["now"]
    assert time.monotonic() - start < 1.0
    consumer.ack(got)


def test_idle_fetch_costs_no_cpu(make_transport: MakeTransport) -> None:
    t, q = make_transport(), qname()
    t.fetch([q], 1, 0.05)
    cpu = time.process_time()
    assert t.fetch([q], 10, 2.0) == []
    assert time.process_time() - cpu < 0.1


def test_dead_peer_sockets_are_removed(make_transport: MakeTransport) -> None:
    t, q = make_transport(), qname()
    directory = wake_dir_for(t.path)
    ghost = Listener(directory, QUEUE_CHANNEL)
    assert ghost._sock is not None
    ghost._sock.close()  # its process "dies": the socket goes, its file stays
    ghost._sock = None
    assert os.path.exists(ghost.path)
    t._wake._listed_at = -10.0
    t.publish(to_queue(q, msg(1)))
    assert not os.path.exists(ghost.path)
    t.ack(drain(t, [q], 1))


def test_long_paths_use_a_short_wake_directory(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    t = SQLiteTransport(f"sqlite:///{deep / 'broker.db'}")
    try:
        directory = wake_dir_for(t.path)
        assert len(directory) < 80
        assert directory == wake_dir_for(str(deep / "broker.db"))
        t.publish(to_queue("q", msg(1)))
        [d] = t.fetch(["q"], 1, 2.0)
        t.ack([d])
    finally:
        t.close()


def test_new_waiter_is_woken_at_once_despite_a_cached_listing(tmp_path: Path) -> None:
    directory = tmp_path / "wake"
    directory.mkdir()
    old = time.time_ns() - 10**9
    os.utime(directory, ns=(old, old))
    wake = WakeDir(str(directory))
    wake.notify(QUEUE_CHANNEL)  # lists (nobody yet) and trusts the listing
    # A waiter in another process binds its socket; nothing in this process hears about it.
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        peer.bind(str(directory / f"{QUEUE_CHANNEL}-1-1-abc.sock"))
        peer.settimeout(2.0)
        wake.notify(QUEUE_CHANNEL)
        assert peer.recv(8) == b"\x01"
    finally:
        peer.close()
        wake.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_opens_its_own_connection(make_transport: MakeTransport) -> None:
    t, q = make_transport(), qname()
    assert t.fetch([q], 1, 0.05) == []  # the parent has a connection and a socket now
    pid = os.fork()
    if pid == 0:  # child: publish through the inherited transport object, then leave at once
        code = 1
        try:
            t.publish(to_queue(q, msg("from-child")))
            code = 0
        finally:
            os._exit(code)
    try:
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0
        got = drain(t, [q], 1)
        assert [d.message.headers["n"] for d in got] == ["from-child"]
        t.ack(got)
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
