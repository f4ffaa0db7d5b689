"""Shared fixtures: small generated datasets, isolated cache/results folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("raybench")


@pytest.fixture(scope="session", autouse=True)
def isolated_dirs(session_tmp):
    """Keep the user's ~/.cache/raybench and ~/raybench_results untouched."""
    old = {k: os.environ.get(k) for k in ("RAYBENCH_CACHE", "RAYBENCH_RESULTS", "MLFLOW_TRACKING_URI")}
    os.environ["RAYBENCH_CACHE"] = str(session_tmp / "cache")
    os.environ["RAYBENCH_RESULTS"] = str(session_tmp / "results")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_ravdess(session_tmp) -> Path:
    """3 actors x 15 clips of 1 s, 64 px (synthetic RAVDESS layout)."""
    from raybench.data.synth import generate

    return generate("ravdess", session_tmp / "tiny_ravdess", actors=3, statements=1, repetitions=1,
                    seconds=1.0, fps=10, size=64, seed=0)


@pytest.fixture(scope="session")
def tiny_affwild2(session_tmp) -> Path:
    from raybench.data.synth import generate

    return generate("affwild2", session_tmp / "tiny_affwild2", videos=4, seconds=4.0, fps=10, size=64, seed=0)
