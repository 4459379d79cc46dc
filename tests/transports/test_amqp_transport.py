"""The RabbitMQ transport: the shared contract, plus AMQP declarations, routing and robustness."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from celeriac.transports import create_transport
from celeriac.transports.base import Transport
from contract.transport_contract import TransportContract, msg, qname, to_queue
from support.amqpvhost import private_vhost
from support.waiting import wait_for

pytestmark = pytest.mark.amqp


@pytest.fixture(scope="module")
def amqp_url() -> Iterator[str]:
    with private_vhost("celeriac-transport") as url:
        yield url


@pytest.fixture
def make_transport(amqp_url: str) -> Iterator[Callable[..., Transport]]:
    made: list[Transport] = []

    def make(**options: Any) -> Transport:
        t = create_transport(amqp_url, options)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


class TestAMQPTransport(TransportContract):
    def test_expired_lease_is_redelivered_to_another_consumer(
        self, make_transport: Callable[..., Transport]
    ) -> None:
        """On AMQP a lease lasts as long as the holder's connection, not visibility_timeout:
        while the holder lives nothing is redelivered; when it goes, RabbitMQ redelivers."""
        holder, other, q = make_transport(visibility_timeout=1), make_transport(), qname()
        holder.publish(to_queue(q, msg("x")))
        assert len(holder.fetch([q], 1, 2.0)) == 1
        assert other.fetch([q], 1, 1.5) == []
        holder.close()
        got = wait_for(lambda: other.fetch([q], 1, 0.5), timeout=10, what="redelivery")
        assert got[0].message.headers["n"] == "x"
        assert got[0].redelivered is True
        other.ack(got)
