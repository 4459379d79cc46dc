from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from celeriac.transports.base import Transport
from celeriac.transports.memory import MemoryTransport, reset

from contract.transport_contract import TransportContract


@pytest.fixture
def make_transport() -> Iterator[Callable[..., Transport]]:
    url = f"memory://{uuid.uuid4().hex}"
    made: list[Transport] = []

    def make(**options: Any) -> Transport:
        t = MemoryTransport(url, options)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()
    reset(url)


class TestMemoryTransport(TransportContract):
    pass
