"""The pidbox on Redis (DB 8) byte for byte where kombu looks: the worker's binding member in
``_kombu.binding.celery.pidbox``, the client's reply binding, PUBLISH on ``/8.celery.pidbox``
and the reply envelope LPUSHed to ``<oid>.reply.celery.pidbox``; plus a kombu Mailbox (what
Celery's client uses) talking to a celeriac worker."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import redis

from celeriac import Celery
from celeriac.contrib.testing import start_worker

from support.servers import clean_redis_db
from support.waiting import wait_for

pytestmark = pytest.mark.redis
DB = 8
SEP = "\x06\x16"


@pytest.fixture
def url() -> Iterator[str]:
    with clean_redis_db(DB) as url:
        yield url


def test_pidbox_keys_channels_and_envelopes(url: str) -> None:
    app = Celery("wire", broker=url, backend=url)
    raw = redis.Redis.from_url(url, decode_responses=True)
    pubsub = raw.pubsub()
    pubsub.psubscribe(f"/{DB}.celery.pidbox*")
    try:
        with start_worker(app, pool="threads", hostname="wire@host"):
            members = raw.smembers("_kombu.binding.celery.pidbox")
            assert f"{SEP}{SEP}wire@host.celery.pidbox" in members
            assert raw.zscore("_kombu.binding_deadlines", "celery.pidbox")
            assert app.control.inspect(destination=["wire@host"], timeout=3).ping()
            oid = app.oid
            assert f"{oid}{SEP}{SEP}{oid}.reply.celery.pidbox" in raw.smembers(
                "_kombu.binding.reply.celery.pidbox"
            )
            requests = []
            while (msg := pubsub.get_message(timeout=0.5)) is not None or not requests:
                if msg and msg["type"] == "pmessage":
                    requests.append(msg)
            ping = next(
                m for m in requests if b"ping" in base64.b64decode(json.loads(m["data"])["body"])
            )
            assert ping["channel"] == f"/{DB}.celery.pidbox"
            env = json.loads(ping["data"])
            assert env["properties"]["delivery_info"] == {
                "exchange": "celery.pidbox",
                "routing_key": "",
            }
            assert set(env["headers"]) == {"clock", "expires"}
    finally:
        pubsub.close()
        raw.close()
        app.close()


def test_kombu_mailbox_reaches_a_celeriac_worker(url: str) -> None:
    kombu = pytest.importorskip("kombu")
    from kombu import pidbox

    app = Celery("wire", broker=url, backend=url)
    try:
        with start_worker(app, pool="threads", hostname="kmb@host"), kombu.Connection(url) as conn:
            mailbox = pidbox.Mailbox("celery", type="fanout", accept=["json"])(conn)
            replies = wait_for(
                lambda: mailbox._broadcast("ping", {}, ["kmb@host"], reply=True, timeout=2),
                timeout=10,
                what="kombu ping reply",
            )
            assert replies == [{"kmb@host": {"ok": "pong"}}]
            stats = mailbox._broadcast("stats", {}, ["kmb@host"], reply=True, timeout=2)
            assert stats[0]["kmb@host"]["pool"]["max-concurrency"] == 1
    finally:
        app.close()
