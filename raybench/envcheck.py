"""Check that the compiled libraries raybench needs load, before any work starts.

A broken environment (torchaudio built for another torch, a missing system library for decord or
OpenCV) otherwise shows up 30 s later as a Ray traceback from inside a data task. ``check()``
imports each native extension and runs one tiny call through it; ``require()`` prints one message
naming the package, the versions installed and the fix, and exits with code 2.

Only the standard library is imported at module level: this module must load when torch does not.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

FIX = ("reinstall raybench's pinned versions in a new virtualenv, as the README says: "
       "python -m venv .venv && . .venv/bin/activate && pip install -e \".[dev]\" -c constraints.txt")

# errors that mean "this process cannot run raybench's code at all", as opposed to a problem with one
# input file: a compiled library that does not load, or a module that is not installed
ENVIRONMENT_ERRORS = (ImportError,)
LOADER_MESSAGES = ("undefined symbol", "Could not load this library", "cannot open shared object",
                   "wrong ELF class", "version `GLIBC", "cannot load library", "image not found")


def is_environment_error(e: BaseException) -> bool:
    """True for an import failure or a shared library that cannot be loaded (not a per-file problem)."""
    if isinstance(e, ENVIRONMENT_ERRORS):
        return True
    return isinstance(e, OSError) and any(m in str(e) for m in LOADER_MESSAGES)


def _torch() -> None:
    import torch

    torch.zeros(2).add_(1)


def _torchaudio() -> None:
    import torch
    import torchaudio

    # the transform raybench's prepare stage runs; loads torchaudio's compiled library where it has one
    torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=64, n_mels=4)(torch.zeros(256))
    import torchaudio.functional  # noqa: F401  (the nn audio front ends)


def _decord() -> None:
    import decord

    decord.bridge.set_bridge("native")


def _cv2() -> None:
    import cv2
    import numpy as np

    cv2.resize(np.zeros((4, 4, 3), np.uint8), (2, 2))


def _av() -> None:
    import av

    av.codec.Codec("h264", "r")  # the synthetic sets and tests write and read H.264


def _pyarrow() -> None:
    import pyarrow as pa
    import pyarrow.parquet  # noqa: F401

    pa.array([1, 2])


def _dlib() -> None:
    import numpy as np
    import dlib

    dlib.get_frontal_face_detector()(np.zeros((40, 40, 3), np.uint8), 0)  # data.face_detector: hog


def _opensmile() -> None:
    import numpy as np
    import opensmile

    # openSMILE's compiled library, through the feature set raybench's prepare stage runs
    opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                    feature_level=opensmile.FeatureLevel.LowLevelDescriptors).process_signal(np.zeros(1600, np.float32), 16000)


def _transformers() -> None:
    # the speech encoders data.audio.encoder loads (and their feature extractors), with torch
    from transformers import AutoFeatureExtractor, AutoModel, WavLMConfig  # noqa: F401

    WavLMConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)


def _ray() -> None:
    import ray._raylet  # noqa: F401  (Ray's compiled core)


@dataclass(frozen=True)
class Check:
    module: str  # what is imported
    dist: str  # the pip distribution that provides it
    run: Callable[[], None]
    related: tuple[str, ...] = ()  # distributions whose versions matter for this one


CHECKS = (
    Check("torch", "torch", _torch),
    Check("torchaudio", "torchaudio", _torchaudio, related=("torch",)),
    Check("decord", "decord", _decord),
    Check("cv2", "opencv-python-headless", _cv2),
    Check("av", "av", _av),
    Check("pyarrow", "pyarrow", _pyarrow),
    Check("dlib", "dlib-bin", _dlib),
    Check("opensmile", "opensmile", _opensmile),
    Check("transformers", "transformers", _transformers, related=("torch", "tokenizers", "huggingface_hub")),
    Check("ray", "ray", _ray),
)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _pinned(dist: str) -> str | None:
    """The requirement raybench's own metadata declares for ``dist`` (e.g. ``torch==2.11.0``)."""
    try:
        from packaging.requirements import Requirement  # pip's and Ray's requirement parser

        reqs = [Requirement(r) for r in metadata.requires("raybench") or []]
    except (ImportError, metadata.PackageNotFoundError):
        return None
    for r in reqs:
        if r.name.lower() == dist.lower() and not (r.marker and "extra" in str(r.marker)):
            return f"{r.name}{r.specifier}"
    return None


def problem(c: Check, e: BaseException) -> str:
    """One message: the package, the versions installed (and pinned), the error, the fix."""
    dists = (c.dist, *c.related)
    found = ", ".join(f"{d} {_version(d)}" for d in dists)
    pins = [p for p in (_pinned(d) for d in dists) if p]
    want = f"; raybench requires {', '.join(pins)}" if pins else ""
    err = " ".join(f"{type(e).__name__}: {e}".split())
    if len(err) > 400:
        err = err[:400] + " ..."
    return (f"raybench: broken environment: {c.module} does not load (installed: {found}{want}).\n"
            f"  {err}\n"
            f"  fix: {FIX}")


def check(checks: tuple[Check, ...] = CHECKS) -> list[str]:
    """Run every check; return one message per package that fails (empty when all load)."""
    out = []
    for c in checks:
        try:
            c.run()
        except Exception as e:  # noqa: BLE001  any failure to load is reported, none is raised
            out.append(problem(c, e))
    return out


def require(modules: tuple[str, ...] | None = None) -> None:
    """Exit with code 2 and one message per broken package (no traceback) if any fails to load
    (of ``modules`` when given, e.g. what a benchmark without Ray or decoding uses; else all)."""
    problems = check(tuple(c for c in CHECKS if modules is None or c.module in modules))
    if problems:
        print("\n".join(problems), file=sys.stderr)
        raise SystemExit(2)


def main() -> int:
    """``python -m raybench.envcheck``: check the install; exit 2 with the problems, 0 when all load."""
    problems = check()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    print("raybench: environment OK: " + ", ".join(f"{c.dist} {_version(c.dist)}" for c in CHECKS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
