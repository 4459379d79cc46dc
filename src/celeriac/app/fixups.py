"""Framework fix-ups applied when an app finalizes (Celery's Django fix-up, under the same rules).

With ``DJANGO_SETTINGS_MODULE`` set and Django installed, finalizing the app runs
``django.setup()`` (so ``autodiscover_tasks()`` sees ``INSTALLED_APPS``), and pool processes close
the database connections they inherited, as Django requires after a fork.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

from celeriac import signals

logger = logging.getLogger("celeriac.app.fixups")
_django_ready = False


def apply_fixups() -> None:
    """Run the fix-ups that apply to this process (safe to call more than once)."""
    if os.environ.get("DJANGO_SETTINGS_MODULE") and importlib.util.find_spec("django"):
        _setup_django()


def _setup_django() -> None:
    global _django_ready
    if _django_ready:
        return
    import django
    from django.apps import apps

    if not apps.ready and not apps.loading:
        django.setup()
    _django_ready = True
    signals.worker_process_init.connect(_close_inherited_connections, weak=False)


def _close_inherited_connections(**kwargs: Any) -> None:
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        try:
            conn.close()
        except Exception as exc:  # a broken inherited socket: drop it, the child reconnects
            logger.debug("closing inherited Django connection %r failed: %r", conn.alias, exc)
