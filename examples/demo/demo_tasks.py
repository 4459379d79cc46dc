"""The demo's tasks: an ordinary celeriac app on the embedded SQLite broker (the default)."""

from __future__ import annotations

import asyncio
import random

from celeriac import Celery
from celeriac.utils.log import get_task_logger

app = Celery("demo")  # no broker given: the embedded SQLite file celeriac.db, results beside it
logger = get_task_logger(__name__)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
async def fetch_price(item: str) -> float:
    """An ``async def`` task: awaits run natively, no thread per task."""
    await asyncio.sleep(0.05)
    return round(random.uniform(1, 100), 2)


@app.task(bind=True, max_retries=3)
def flaky(self, attempts_needed: int) -> str:  # type: ignore[no-untyped-def]
    if self.request.retries < attempts_needed:
        logger.info("flaky: attempt %d failed, retrying", self.request.retries + 1)
        raise self.retry(countdown=0.5)
    return f"succeeded after {self.request.retries} retries"


@app.task
def divide(x: float, y: float) -> float:
    return x / y


@app.task
def double(x: int) -> int:
    return x * 2


@app.task
def total(values: list[int]) -> int:
    return sum(values)
