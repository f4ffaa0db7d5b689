"""Built-in synthetic datasets in the RAVDESS, CREMA-D and Aff-Wild2 layouts.

They use the real adapters; the only difference is that a missing root is
generated (``data.synth`` options) instead of being an error.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from raybench.paths import cache_home
from raybench.data import synth
from raybench.data.datasets.affwild2 import AffWild2
from raybench.data.datasets.base import DATASETS
from raybench.data.datasets.crema_d import CremaD
from raybench.data.datasets.ravdess import Ravdess
from raybench.schema import DataConfig, SynthConfig


class _Generated:
    """Mixin: default root named after the generator options; generate the tree when missing."""

    name: str
    synth_layout: str

    def generator_kwargs(self, s: SynthConfig) -> dict[str, Any]:
        raise TypeError("subclasses define generator_kwargs")

    def default_root(self, data_cfg: DataConfig) -> Path:
        # the generator's version too: a set written by an older generator is not reused (version 2,
        # 2026-12-01: the same options give the same bytes; version 1 varied in a quarter of the clips)
        key = json.dumps({**data_cfg.synth.model_dump(), **({"generator": synth.GENERATOR_VERSION}
                                                              if synth.GENERATOR_VERSION > 1 else {})}, sort_keys=True)
        return cache_home() / "data" / f"{self.name}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"

    def ensure(self, root: Path, data_cfg: DataConfig) -> Path:
        if root.exists():
            return root
        kw = self.generator_kwargs(data_cfg.synth)
        print(f"[raybench] {self.name}: {root} does not exist; generating the synthetic dataset there ({kw})",
              flush=True)
        return synth.generate(self.synth_layout, root, **kw)


class SyntheticRavdess(_Generated, Ravdess):
    name = "synthetic_ravdess"
    synth_layout = "ravdess"

    def generator_kwargs(self, s):
        return dict(actors=s.actors, statements=s.statements, repetitions=s.repetitions, seconds=s.seconds,
                    fps=s.fps, size=s.size, seed=s.seed)


class SyntheticCremaD(_Generated, CremaD):
    """CREMA-D's layout and six classes, other actors: the cross-corpus partner of synthetic_ravdess."""

    name = "synthetic_crema_d"
    synth_layout = "crema_d"

    def generator_kwargs(self, s):
        return dict(actors=s.actors, statements=s.statements, seconds=s.seconds, fps=s.fps, size=s.size, seed=s.seed)


class SyntheticAffWild2(_Generated, AffWild2):
    name = "synthetic_affwild2"
    synth_layout = "affwild2"

    def generator_kwargs(self, s):
        return dict(videos=s.videos, seconds=s.video_seconds, fps=s.fps, size=s.size, seed=s.seed)


DATASETS.register("synthetic_ravdess", SyntheticRavdess())
DATASETS.register("synthetic_affwild2", SyntheticAffWild2())
DATASETS.register("synthetic_crema_d", SyntheticCremaD())
