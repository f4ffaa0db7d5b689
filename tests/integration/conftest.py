"""Integration tests share one local Ray session (started once, small)."""

from __future__ import annotations

import pytest


from local_ray import init_local_ray  # noqa: E402  (tests/integration is on sys.path under pytest)


@pytest.fixture(scope="session")
def ray_session():
    import ray

    init_local_ray()  # (its own settings, even where a Ray is running in this process already)
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
