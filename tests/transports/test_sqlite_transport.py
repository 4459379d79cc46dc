"""The embedded SQLite broker: the transport contract plus what only a file-backed broker has."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac.transports.base import Transport
from celeriac.transports.sqlite import SQLiteTransport
from contract.transport_contract import TransportContract


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
