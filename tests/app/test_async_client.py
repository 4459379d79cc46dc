"""The asyncio client: adelay, aapply_async and aget do not block the event loop."""

from __future__ import annotations

import asyncio
import time

from celeriac import Celery
from celeriac.contrib.testing import start_worker


def test_adelay_and_aget_with_a_worker(app: Celery) -> None:
    @app.task
    def slow_add(x: int, y: int) -> int:
        time.sleep(0.3)
        return x + y

    async def main() -> tuple[list[int], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticking = asyncio.create_task(ticker())
        results = [await slow_add.adelay(i, i) for i in range(3)]
        extra = await slow_add.aapply_async((10, 5), countdown=0.1)
        values = await asyncio.gather(*(r.aget(timeout=10) for r in [*results, extra]))
        ticking.cancel()
        return list(values), ticks

    with start_worker(app, pool="threads", concurrency=4):
        values, ticks = asyncio.run(main())
    assert values == [0, 2, 4, 15]
    assert ticks > 10  # the loop kept running while results were awaited


def test_aget_reraises_the_task_exception(app: Celery) -> None:
    @app.task
    def boom() -> None:
        raise LookupError("missing")

    async def main() -> None:
        result = await boom.adelay()
        try:
            await result.aget(timeout=10)
        except LookupError as exc:
            assert "missing" in str(exc)
        else:
            raise AssertionError("aget() did not raise")

    with start_worker(app, pool="threads"):
        asyncio.run(main())
