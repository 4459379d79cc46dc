from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from celeriac.backends.base import ResultStore
from celeriac.backends.memory import MemoryResultStore, reset

from contract.store_contract import StoreContract


@pytest.fixture
def make_store() -> Iterator[Callable[[], ResultStore]]:
    url = f"memory://{uuid.uuid4().hex}"
    made: list[ResultStore] = []

    def make() -> ResultStore:
        s = MemoryResultStore(url)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
    reset(url)


class TestMemoryStore(StoreContract):
    pass
