"""The Clip record every dataset adapter produces, and split assignment.

Adapters only parse file names and annotation files; they never decode.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass
class Clip:
    clip_id: str
    video_path: str
    subject: str
    split: str | None = None  # train | val | test; None until assigned
    fold: int | None = None
    label: int | None = None  # categorical
    va_path: str | None = None  # continuous: per-frame valence/arousal annotation file
    meta: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["meta"] = dict(self.meta)
        return row


def assign_splits(clips: list[Clip], val_fraction: float, test_fraction: float, seed: int) -> list[Clip]:
    """Speaker-independent split: every subject's clips land in one split.

    Clips whose split is already set (an official split) keep it; the others'
    subjects are shuffled with ``seed`` and cut into test, val and train.
    Deterministic for a given seed and set of subjects.
    """
    free = sorted({c.subject for c in clips if c.split is None})
    if not free:
        return clips
    rng = np.random.default_rng(seed)
    order = [free[i] for i in rng.permutation(len(free))]
    n = len(order)
    n_test = int(round(test_fraction * n))
    n_val = max(1, int(round(val_fraction * n))) if n > 1 else 0
    if n_test + n_val >= n:  # keep at least one training subject
        n_test = max(0, min(n_test, n - 1 - n_val))
        n_val = max(0, min(n_val, n - 1 - n_test))
    where = {}
    for i, s in enumerate(order):
        where[s] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    for c in clips:
        if c.split is None:
            c.split = where[c.subject]
    return clips
