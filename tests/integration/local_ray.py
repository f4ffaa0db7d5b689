"""The integration tests' local Ray: one per machine, 2 CPUs, a small object store."""

from __future__ import annotations

# a deliberately small object store: training and evaluation data never go through it (they are
# streamed from the clip store: tests/integration/test_streaming.py trains on a store larger than it)
OBJECT_STORE_BYTES = 160 * 2**20


def init_local_ray() -> None:
    """The tests' local Ray (2 CPUs, the small object store); tests that stop it start it again so.
    A Ray already running in this process (a ray.data call starts one with Ray's defaults; the unit
    tests, which run first, are not known to) is shut down first: these settings always apply."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, object_store_memory=OBJECT_STORE_BYTES)
