"""Celery's monitoring events (``celeryev``): sending them, and receiving them."""

from __future__ import annotations

from celeriac.events.dispatcher import EventDispatcher, event

__all__ = ["EventDispatcher", "event"]
