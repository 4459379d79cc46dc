"""A minimal real Django project, set up the way Celery's Django docs show, run by a real worker."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support.waiting import wait_for
from support.workerproc import stop

pytest.importorskip("django")
pytestmark = pytest.mark.slow

FILES = {
    "proj/__init__.py": """
        from .celery import app as celery_app

        __all__ = ("celery_app",)
    """,
    "proj/celery.py": """
        import os

        from celeriac import Celery

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
        app = Celery("proj")
        app.config_from_object("django.conf:settings", namespace="CELERY")
        app.autodiscover_tasks()
    """,
    "proj/settings.py": """
        import os
        SECRET_KEY = "test"
        INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "shop"]
        DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                                 "NAME": os.path.join(os.path.dirname(__file__), "db.sqlite3")}}
        USE_TZ = True
        CELERY_BROKER_URL = os.environ["T_BROKER"]
        CELERY_RESULT_BACKEND = os.environ["T_BACKEND"]
        CELERY_TASK_SERIALIZER = "json"
        CELERY_TIMEZONE = "Europe/Berlin"
        CELERY_TASK_ROUTES = {"shop.tasks.*": {"queue": "shop"}}
    """,
    "shop/__init__.py": "",
    "shop/apps.py": """
        from django.apps import AppConfig

        class ShopConfig(AppConfig):
            name = "shop"
    """,
    "shop/tasks.py": """
        from celeriac import shared_task

        @shared_task
        def total(prices):
            return sum(prices)
    """,
    "client.py": """
        import django, os, sys
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
        django.setup()
        from proj import celery_app
        from shop.tasks import total

        app = celery_app
        assert app.conf.broker_url == os.environ["T_BROKER"], app.conf.broker_url
        assert app.conf.timezone == "Europe/Berlin"
        app.finalize()
        assert "shop.tasks.total" in app.tasks, sorted(app.tasks)
        result = total.delay([1, 2, 3.5])
        print("RESULT", result.get(timeout=30))
    """,
}


def test_django_project_with_namespace_and_autodiscovery(tmp_path: Path) -> None:
    for name, text in FILES.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "proj.settings",
        "T_BROKER": f"sqlite:///{tmp_path / 'broker.db'}",
        "T_BACKEND": f"sqlite:///{tmp_path / 'results.db'}",
    }
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celeriac",
                "-A",
                "proj",
                "worker",
                "-P",
                "threads",
                "-Q",
                "shop",
                "-l",
                "info",
            ],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(
                lambda: b" ready." in log.read_bytes() or worker.poll() is not None,
                timeout=30,
                what="worker ready",
            )
            assert b"shop.tasks.total" in log.read_bytes()  # autodiscovered, in the banner
            client = subprocess.run(
                [sys.executable, "client.py"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert client.returncode == 0, client.stderr
            assert "RESULT 6.5" in client.stdout
        finally:
            stop(worker)
