"""Integration tests share one local Ray session (started once, small)."""

from __future__ import annotations

import pytest


from local_ray import init_local_ray  # noqa: E402  (tests/integration is on sys.path under pytest)


@pytest.fixture(scope="session")
def ray_session():
    import ray

    # a Ray started earlier in this process (the unit tests run first; none is known to start one, but a
    # ray.data call would, with Ray's defaults): these tests get their own settings all the same
    if ray.is_initialized():
        ray.shutdown()
    init_local_ray()
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
