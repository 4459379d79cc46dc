"""Canvas workflows across implementations on one Redis (DB 12): a Celery 5.7 client's chains,
groups and chords run on a celeriac worker, and a celeriac client's on a Celery worker."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from support.servers import redis_url_or_skip
from support.waiting import wait_for
from support.workerproc import running

celery = pytest.importorskip("celery")

pytestmark = [pytest.mark.redis, pytest.mark.interop, pytest.mark.slow]
DB = 12
T = 30

TASKS = """
import os

app = Celery("{name}", broker=os.environ["T_URL"], backend=os.environ["T_URL"])


@app.task(name="cv.add")
def add(x, y):
    return x + y


@app.task(name="cv.mul")
def mul(x, y):
    return x * y


@app.task(name="cv.tsum")
def tsum(values):
    return sum(values)


@app.task(name="cv.boom")
def boom(*args):
    raise ValueError("kaboom")
"""


def _write_projects(root: Path) -> None:
    (root / "cvcelery.py").write_text(
        "from celery import Celery\n" + textwrap.dedent(TASKS.format(name="cvcelery"))
    )
    (root / "cvceleriac.py").write_text(
        "from celeriac import Celery\n" + textwrap.dedent(TASKS.format(name="cvceleriac"))
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    url = f"{redis_url_or_skip()}/{DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    root = tmp_path_factory.mktemp("canvas-interop")
    _write_projects(root)
    environ = {**os.environ, "T_URL": url, "PYTHONPATH": str(root)}
    os.environ["T_URL"] = url
    sys.path.insert(0, str(root))
    import cvceleriac  # type: ignore[import-not-found]
    import cvcelery  # type: ignore[import-not-found]

    try:
        yield {"root": root, "env": environ, "celery": cvcelery.app, "celeriac": cvceleriac.app}
    finally:
        sys.path.remove(str(root))
        for name in ("cvcelery", "cvceleriac"):
            sys.modules.pop(name, None)
        cvcelery.app.close()
        cvceleriac.app.close()
        client.flushdb()
        client.close()


@contextmanager
def _worker(env: dict[str, Any], argv: list[str], marker: bytes) -> Iterator[None]:
    with running(
        [sys.executable, "-m", *argv, "worker", "-P", "threads", "-c", "4", "-l", "info"],
        cwd=env["root"],
        env=env["env"],
        log_path=env["root"] / f"{argv[2]}-worker.log",
        ready=marker,
    ):
        yield


def _scenarios(app: Any, chain: Any, group: Any, chord: Any) -> None:
    def s(name: str, *args: Any) -> Any:
        return app.signature(name, args=args)

    result = chain(s("cv.add", 1, 2), s("cv.add", 3), s("cv.mul", 10)).apply_async()
    assert result.get(timeout=T) == 60
    assert result.parent.get(timeout=T) == 6

    failing = chain(s("cv.add", 1, 2), s("cv.boom"), s("cv.add", 5)).apply_async()
    with pytest.raises(ValueError, match="kaboom"):
        failing.parent.get(timeout=T)

    grouped = group(s("cv.add", i, i) for i in range(20)).apply_async()
    assert grouped.get(timeout=T) == [i * 2 for i in range(20)]

    summed = chord([s("cv.add", i, i) for i in range(10)], s("cv.tsum")).apply_async()
    assert summed.get(timeout=T) == 90

    upgraded = chain(s("cv.add", 1, 1), group(s("cv.add", 1), s("cv.add", 2)), s("cv.tsum"))
    assert upgraded.apply_async().get(timeout=T) == 7

    in_chain = chain(chord([s("cv.add", 1, 1), s("cv.add", 2, 2)], s("cv.tsum")), s("cv.mul", 10))
    assert in_chain.apply_async().get(timeout=T) == 60

    broken = chord([s("cv.add", 1, 1), s("cv.boom")], s("cv.tsum")).apply_async()
    with pytest.raises(Exception, match="kaboom"):
        broken.get(timeout=T)
    wait_for(lambda: broken.ready(), timeout=T, what="the failed chord's body result")
    assert type(broken.result).__name__ == "ChordError"


def test_celery_client_on_celeriac_worker(env: dict[str, Any]) -> None:
    from celery import chain, chord, group

    with _worker(env, ["celeriac", "-A", "cvceleriac"], b" ready."):
        _scenarios(env["celery"], chain, group, chord)


def test_celeriac_client_on_celery_worker(env: dict[str, Any]) -> None:
    from celeriac import chain, chord, group

    with _worker(env, ["celery", "-A", "cvcelery"], b"ready."):
        _scenarios(env["celeriac"], chain, group, chord)
