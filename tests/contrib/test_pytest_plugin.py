"""The pytest plugin, used the way Celery's testing docs show."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_celery_config_eager_and_worker_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        pytest_plugins = ("celeriac.contrib.pytest",)
        """
    )
    pytester.makepyfile(
        test_eager="""
        import pytest

        @pytest.fixture(scope="session")
        def celery_config():
            return {"task_always_eager": True}

        def test_eager(celery_app):
            @celery_app.task
            def mul(x, y):
                return x * y

            result = mul.delay(4, 4)
            assert result.successful()
            assert result.get() == 16
        """,
        test_worker="""
        def test_with_worker(celery_app, celery_worker):
            @celery_app.task
            def mul(x, y):
                return x * y

            assert mul.delay(4, 4).get(timeout=10) == 16

        def test_shared_task_uses_the_test_app(celery_app, celery_worker):
            from celeriac import shared_task

            @shared_task
            def hello(name):
                return f"hello {name}"

            assert hello.app is celery_app
            assert hello.delay("world").get(timeout=10) == "hello world"
        """,
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
