"""Epoch metrics with torchmetrics (synced across DDP ranks at ``compute()``).

Categorical: ``acc`` (weighted accuracy, micro) and ``f1`` (macro F1), torchmetrics' own classes;
``uar`` (mean recall over the classes present in the targets, scikit-learn's balanced accuracy).
Continuous: ``ccc_valence``, ``ccc_arousal``, ``ccc`` (their mean). torchmetrics'
``ConcordanceCorrCoef`` uses n-1 moments; METHODS.md defines CCC with population
(1/N) moments, so ``PopulationCCC`` is a torchmetrics ``Metric`` that keeps sums
(synced with ``dist_reduce_fx="sum"``) and computes Lin's formula exactly, over
all frames concatenated (Aff-Wild2 practice, ``eval.ccc_over: frames``); ``ClipMeanCCC``
is the mean of per-clip CCCs (AVEC 2018's practice, ``eval.ccc_over: clips``).
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassStatScores



class PopulationCCC(Metric):
    """CCC per dimension over every (non-NaN) frame seen: 2 s_xy / (s_x^2 + s_y^2 + (m_x - m_y)^2)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_dims: int = 2, **kw):
        super().__init__(**kw)
        for name in ("n", "sx", "sy", "sxx", "syy", "sxy"):
            self.add_state(name, default=torch.zeros(num_dims, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """preds, target: (N, D); target NaN where not annotated (ignored per dimension)."""
        n, sx, sy, sxx, syy, sxy = _sums(preds, target)
        self.n += n
        self.sx += sx
        self.sy += sy
        self.sxx += sxx
        self.syy += syy
        self.sxy += sxy

    def compute(self) -> torch.Tensor:
        return _lin(self.n, self.sx, self.sy, self.sxx, self.syy, self.sxy).float()


def _lin(n, sx, sy, sxx, syy, sxy) -> torch.Tensor:
    """Lin's CCC from sums, population (1/N) moments."""
    n = n.clamp_min(1)
    mx, my = sx / n, sy / n
    vx, vy = sxx / n - mx**2, syy / n - my**2
    cov = sxy / n - mx * my
    return 2 * cov / (vx + vy + (mx - my) ** 2).clamp_min(1e-12)


def _sums(preds: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    p, t = preds.detach().double(), target.detach().double()
    ok = ~torch.isnan(t)
    p, t = torch.where(ok, p, 0.0), torch.where(ok, t, 0.0)
    return ok.sum(0), p.sum(0), t.sum(0), (p * p).sum(0), (t * t).sum(0), (p * t).sum(0)


class ClipMeanCCC(Metric):
    """The mean over clips of each clip's CCC (population moments), per dimension: each ``update``
    is one clip. A clip with no annotated frame in a dimension does not count there; a clip whose
    predictions and labels are both constant (CCC 0/0) counts as 0."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_dims: int = 2, **kw):
        super().__init__(**kw)
        self.add_state("total", default=torch.zeros(num_dims, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("clips", default=torch.zeros(num_dims, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """preds, target: (N, D), the frames of one clip; target NaN where not annotated."""
        s = _sums(preds, target)
        has = s[0] > 0
        self.total += torch.where(has, _lin(*s), 0.0)
        self.clips += has.double()

    def compute(self) -> torch.Tensor:
        return (self.total / self.clips.clamp_min(1)).float()


class UAR(MulticlassStatScores):
    """Unweighted average recall: the mean recall over the classes present in the targets, as
    scikit-learn's ``balanced_accuracy_score`` computes it. torchmetrics' macro ``MulticlassRecall``
    also averages in a class that is predicted but absent from the targets, with recall 0 (a
    validation split without one class scored 0.451 where the recall over its classes was 0.526)."""

    def __init__(self, num_classes: int, **kw):
        super().__init__(num_classes, average=None, **kw)

    def compute(self) -> torch.Tensor:
        s = super().compute()  # (C, 5): tp, fp, tn, fn, support
        tp, fn = s[:, 0].double(), s[:, 3].double()
        present = (tp + fn) > 0
        if not present.any():
            return torch.tensor(0.0)
        return (tp[present] / (tp + fn)[present]).mean().float()


class TaskMetrics:
    """One object for either task: ``update(...)`` then ``compute() -> {"acc": ..}``. Continuous:
    ``ccc_over`` ``frames`` (one CCC over every frame of every update) or ``clips`` (the mean of
    per-clip CCCs: each ``update`` must then be one clip)."""

    def __init__(self, task: str, num_classes: int, device: torch.device | str = "cpu", ccc_over: str = "frames"):
        self.task = task
        if task == "categorical":
            self.m = MetricCollection({
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "uar": UAR(num_classes),
                "f1": MulticlassF1Score(num_classes, average="macro"),
            }).to(device)
        elif ccc_over == "frames":
            self.m = PopulationCCC(2).to(device)
        elif ccc_over == "clips":
            self.m = ClipMeanCCC(2).to(device)
        else:
            raise ValueError(f"eval.ccc_over must be 'frames' or 'clips', got {ccc_over!r}")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """categorical: scores (N, C), labels (N,); continuous: (N, 2), (N, 2)."""
        self.m.update(preds, target)

    def compute(self) -> dict[str, float]:
        if self.task == "categorical":
            return {k: float(v) for k, v in self.m.compute().items()}
        c = self.m.compute()
        return {"ccc_valence": float(c[0]), "ccc_arousal": float(c[1]), "ccc": float(c.mean())}

    def reset(self) -> None:
        self.m.reset()


def agreement_ccc(x: np.ndarray, y: np.ndarray) -> float:
    """CCC between two raters' traces as the CCC centering of Zhang et al. 2021 computes it (their
    code follows the AVEC 2016 gold-standard script): covariance with 1/N, variances with 1/(N-1)."""
    mx, my = x.mean(), y.mean()
    cov = np.mean((x - mx) * (y - my))
    vx, vy = np.sum((x - mx) ** 2) / (len(x) - 1), np.sum((y - my) ** 2) / (len(y) - 1)
    return float(2 * cov / (vx + vy + (mx - my) ** 2 + 1e-100))


def ccc_centering(fold_preds: list[np.ndarray]) -> np.ndarray:
    """Merge several folds' predictions of one dimension of one video ("CCC centering", Zhang et al.
    2021, as their test-result script does it: per video and per dimension).

    For fold predictions p_i (N,): r_i = mean of :func:`agreement_ccc` (p_i, p_j) over the other folds
    (not clipped: a fold that disagrees gets a negative weight, as in the authors' code);
    w = sum_i r_i mean(p_i) / sum_i r_i;  final = mean_i (p_i - mean(p_i) + w), clipped to [-1, 1]
    afterwards. Deviation, for degenerate input only: where the r_i sum to 0 (the authors' code
    divides by it) or the video has one frame, w is the plain mean of the means.
    """
    P = np.stack([np.asarray(p, np.float64) for p in fold_preds])  # (folds, N)
    if len(P) == 1:
        return np.clip(P[0], -1, 1)
    means = P.mean(1)
    w = float(means.mean())
    if P.shape[1] > 1:
        r = np.array([np.mean([agreement_ccc(P[i], P[j]) for j in range(len(P)) if j != i]) for i in range(len(P))])
        if np.isfinite(r).all() and r.sum() != 0:
            w = float((r * means).sum() / r.sum())
    return np.clip((P - means[:, None] + w).mean(0), -1, 1)
