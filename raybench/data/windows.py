"""Temporal windows over a decoded clip.

- Categorical data (clip sampling): in training, one random window per clip and
  epoch; in evaluation, sliding windows whose scores are averaged per clip.
- Continuous data (sliding windows): windows of ``length`` frames every ``hop``
  frames, the last one aligned to the end of the clip; clips shorter than a
  window are zero-padded and masked; overlapping predictions are averaged per
  frame (``overlap_average``).

Audio features hold ``k`` steps per video frame (see data/features.py), so the
window [s, s+L) of frames pairs with audio steps [s*k, (s+L)*k).
"""

from __future__ import annotations

import numpy as np


def window_starts(n: int, length: int, hop: int) -> list[int]:
    """Start frames of sliding windows covering [0, n); the last window ends at n."""
    if n <= length:
        return [0]
    starts = list(range(0, n - length + 1, hop))
    if starts[-1] != n - length:
        starts.append(n - length)
    return starts


def random_start(n: int, length: int, rng: np.random.Generator) -> int:
    return int(rng.integers(0, n - length + 1)) if n > length else 0


def overlap_average(n: int, starts: list[int], preds: list[np.ndarray]) -> np.ndarray:
    """Average per-window predictions (each (L, D)) into per-frame predictions (n, D)."""
    d = preds[0].shape[-1]
    acc = np.zeros((n, d), np.float64)
    cnt = np.zeros((n, 1), np.float64)
    for s, p in zip(starts, preds):
        m = min(len(p), n - s)
        acc[s : s + m] += p[:m]
        cnt[s : s + m] += 1
    return (acc / np.maximum(cnt, 1)).astype(np.float32)
