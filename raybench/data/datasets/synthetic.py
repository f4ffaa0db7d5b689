"""Built-in synthetic datasets in the RAVDESS and Aff-Wild2 layouts.

They use the real adapters; the only difference is that a missing root is
generated (``data.synth`` options) instead of being an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from raybench.data import synth
from raybench.data.datasets.affwild2 import AffWild2
from raybench.data.datasets.base import DATASETS
from raybench.data.datasets.ravdess import Ravdess

log = logging.getLogger(__name__)


def _synth_root(name: str, data_cfg: dict[str, Any]) -> Path:
    """Default root: one folder per set of generator options, so changing one never reuses a stale tree."""
    from raybench.config import cache_home

    key = hashlib.sha256(json.dumps(data_cfg.get("synth") or {}, sort_keys=True).encode()).hexdigest()[:8]
    return cache_home() / "data" / f"{name}-{key}"


class SyntheticRavdess(Ravdess):
    name = "synthetic_ravdess"

    def default_root(self, data_cfg: dict[str, Any]) -> Path:
        return _synth_root(self.name, data_cfg)

    def ensure(self, root: Path, data_cfg: dict[str, Any]) -> Path:
        if root.exists():
            return root
        s = data_cfg.get("synth") or {}
        print(f"[raybench] {self.name}: {root} does not exist; generating the synthetic dataset there "
              f"({s.get('actors', 10)} actors, {s.get('seconds', 2.0)} s clips)", flush=True)
        return synth.generate("ravdess", root, actors=s.get("actors", 10), statements=s.get("statements", 2),
                              repetitions=s.get("repetitions", 2), seconds=s.get("seconds", 2.0),
                              fps=s.get("fps", 15), size=s.get("size", 64), seed=s.get("seed", 0))


class SyntheticAffWild2(AffWild2):
    name = "synthetic_affwild2"

    def default_root(self, data_cfg: dict[str, Any]) -> Path:
        return _synth_root(self.name, data_cfg)

    def ensure(self, root: Path, data_cfg: dict[str, Any]) -> Path:
        if root.exists():
            return root
        s = data_cfg.get("synth") or {}
        print(f"[raybench] {self.name}: {root} does not exist; generating the synthetic dataset there "
              f"({s.get('videos', 12)} videos of {s.get('video_seconds', 20.0)} s)", flush=True)
        return synth.generate("affwild2", root, videos=s.get("videos", 12), seconds=s.get("video_seconds", 20.0),
                              fps=s.get("fps", 15), size=s.get("size", 64), seed=s.get("seed", 0))


DATASETS.register("synthetic_ravdess", SyntheticRavdess())
DATASETS.register("synthetic_affwild2", SyntheticAffWild2())
