"""Shared fixtures: real servers (fail under CI=true when missing, skip elsewhere), wait_for."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.servers import redis_url_or_skip  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def redis_server() -> str:
    """``redis://127.0.0.1:6379`` when the real Redis answers (no DB number: pick your own)."""
    return redis_url_or_skip()
