"""Integrations: pytest plugin, Django, dashboard, metrics."""
