"""Epoch metrics with torchmetrics (synced across DDP ranks at ``compute()``).

Categorical: ``acc`` (weighted accuracy, micro) and ``f1`` (macro F1), torchmetrics' own classes;
``uar`` (mean recall over the classes present in the targets, scikit-learn's balanced accuracy).
Continuous: ``ccc_valence``, ``ccc_arousal``, ``ccc`` (their mean). torchmetrics'
``ConcordanceCorrCoef`` uses n-1 moments; METHODS.md defines CCC with population
(1/N) moments, so ``PopulationCCC`` is a torchmetrics ``Metric`` that keeps sums
(synced with ``dist_reduce_fx="sum"``) and computes Lin's formula exactly, over
all frames concatenated (Aff-Wild2 practice).
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassStatScores

from raybench.nn.losses import ccc


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
        p, t = preds.detach().double(), target.detach().double()
        ok = ~torch.isnan(t)
        p, t = torch.where(ok, p, 0.0), torch.where(ok, t, 0.0)
        self.n += ok.sum(0)
        self.sx += p.sum(0)
        self.sy += t.sum(0)
        self.sxx += (p * p).sum(0)
        self.syy += (t * t).sum(0)
        self.sxy += (p * t).sum(0)

    def compute(self) -> torch.Tensor:
        n = self.n.clamp_min(1)
        mx, my = self.sx / n, self.sy / n
        vx, vy = self.sxx / n - mx**2, self.syy / n - my**2
        cov = self.sxy / n - mx * my
        return (2 * cov / (vx + vy + (mx - my) ** 2).clamp_min(1e-12)).float()


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
    """One object for either task: ``update(...)`` then ``compute() -> {"acc": ..}``."""

    def __init__(self, task: str, num_classes: int, device: torch.device | str = "cpu"):
        self.task = task
        if task == "categorical":
            self.m = MetricCollection({
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "uar": UAR(num_classes),
                "f1": MulticlassF1Score(num_classes, average="macro"),
            }).to(device)
        else:
            self.m = PopulationCCC(2).to(device)

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


def ccc_centering(fold_preds: list[np.ndarray]) -> np.ndarray:
    """Merge predictions of several folds on the same frames ("CCC centering", Zhang et al. 2021).

    For fold predictions p_i (N,): r_i = mean CCC of p_i against the other folds;
    w = sum_i r_i mean(p_i) / sum_i r_i;  final = mean_i (p_i - mean(p_i) + w), clipped to [-1, 1].
    """
    P = [np.asarray(p, np.float64) for p in fold_preds]
    if len(P) == 1:
        return np.clip(P[0], -1, 1)
    t = [torch.from_numpy(p)[:, None] for p in P]
    r = np.array([np.mean([float(ccc(t[i], t[j])[0]) for j in range(len(P)) if j != i]) for i in range(len(P))])
    r = np.clip(np.nan_to_num(r), 0, None)  # a fold that agrees with none gets no weight
    means = np.array([p.mean() for p in P])
    w = float((r * means).sum() / r.sum()) if r.sum() > 0 else float(means.mean())
    return np.clip(np.mean([p - m + w for p, m in zip(P, means)], 0), -1, 1)
