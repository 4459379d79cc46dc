"""The embedded SQLite result store: the store contract plus expiry, sharing and watch details."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from celeriac.backends.base import ResultStore
from celeriac.backends.sqlite import SQLiteResultStore
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
