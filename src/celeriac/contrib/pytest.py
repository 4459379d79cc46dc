"""pytest plugin with Celery's fixture names."""
