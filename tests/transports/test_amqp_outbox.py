"""The AMQP outbox re-sends what a dead channel never confirmed (no broker needed)."""

from __future__ import annotations

import asyncio
from typing import Any

from pamqp import commands as spec

from celeriac.protocol.message import Message, Outgoing
from celeriac.transports import amqp_outbox
from celeriac.transports.amqp_outbox import Outbox, _Item


class _Channel:
    """Stands in for an aiormq channel: only its ``closing`` observer is used."""

    def __init__(self) -> None:
        self._closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def closing(self) -> asyncio.Future[None]:
        return self._closing


def _item(n: int) -> _Item:
    out = Outgoing(Message(body=b"x", headers={"n": n}), exchange="", routing_key="q")
    return _Item(out, props=None, give_up=float("inf"))  # type: ignore[arg-type]


def test_publishes_stuck_on_a_closed_channel_are_sent_again(monkeypatch: Any) -> None:
    monkeypatch.setattr(amqp_outbox, "CLOSE_GRACE", 0.05)

    async def scenario() -> tuple[list[int], int, list[bool]]:
        box = Outbox(link=None, ensure_queue=None)  # type: ignore[arg-type]
        box._unconfirmed = 3
        channel = _Channel()
        loop = asyncio.get_running_loop()
        # One publish is confirmed; two wait on the dead connection's write queue forever.
        confirmed: asyncio.Future[Any] = loop.create_future()
        confirmed.set_result(spec.Basic.Ack(delivery_tag=1))
        stuck = [asyncio.ensure_future(asyncio.Event().wait()) for _ in range(2)]
        resent: list[int] = []

        async def failed(batch: list[_Item], exc: BaseException) -> None:
            resent.extend(item.out.message.headers["n"] for item in batch)

        box._failed = failed  # type: ignore[method-assign]
        task = loop.create_task(
            box._confirm([_item(0), _item(1), _item(2)], [confirmed, *stuck], channel)
        )
        await asyncio.sleep(0.05)
        assert not task.done()  # the channel is open: confirms may still come
        channel.closing.set_exception(ConnectionError("connection reset"))
        await asyncio.wait_for(task, 5)
        return resent, box.unconfirmed, [f.cancelled() for f in stuck]

    resent, unconfirmed, cancelled = asyncio.run(scenario())
    assert resent == [1, 2]
    assert unconfirmed == 2  # the confirmed one settled; the others stay owed until re-sent
    assert cancelled == [True, True]
