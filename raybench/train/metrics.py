"""Epoch metrics, summed across DDP ranks at ``compute()``.

Categorical: ``acc`` (weighted accuracy: correct / clips), ``uar`` (mean recall over the classes
present in the targets, scikit-learn's ``balanced_accuracy_score``) and ``f1`` (macro F1 over the
classes present in the targets or the predictions, scikit-learn's ``f1_score(average="macro")``
without ``labels``, and torchmetrics' ``MulticlassF1Score(average="macro")``, which leaves out a class
with no true positive, false positive or false negative), all from one confusion matrix.
Continuous: ``ccc_valence``, ``ccc_arousal``, ``ccc`` (their mean), with population (1/N) moments as
METHODS.md defines CCC (torchmetrics' ``ConcordanceCorrCoef`` uses n-1 moments): ``PopulationCCC``
keeps sums and computes Lin's formula exactly, over all frames concatenated (Aff-Wild2 practice,
``eval.ccc_over: frames``); ``ClipMeanCCC`` is the mean of per-clip CCCs (AVEC 2018's practice,
``eval.ccc_over: clips``).

Hand-written, not torchmetrics' classes: every metric here is a sum (a confusion matrix, six moment
sums) reduced across ranks with one ``all_reduce``, and ``import torchmetrics`` pulls in
torchvision, transformers and scipy.signal, 4.2-5 s per process on a 2-core machine (``python -X
importtime -c "import torch, torchmetrics"``, 2026-12-03), paid by every Ray Train worker of every
worker-group trial and by every evaluation task. tests/unit/test_metrics.py checks each figure
against scikit-learn, and tests/unit/test_ddp_sync.py the sum across two gloo ranks.
"""

from __future__ import annotations

import numpy as np
import torch


class SumMetric:
    """Float64 sum states (``states``: name -> shape), kept on ``device``. ``compute`` sees their sum
    over every DDP rank (one ``all_reduce`` when torch.distributed runs with more than one rank, as
    torchmetrics' ``dist_reduce_fx="sum"``; every rank must call it); the local sums are kept, so
    updates may go on afterwards."""

    def __init__(self, states: dict[str, int], device: torch.device | str = "cpu"):
        self._shapes = dict(states)
        self.device = torch.device(device)
        self.reset()

    def reset(self) -> None:
        self.sums = {k: torch.zeros(n, dtype=torch.float64, device=self.device) for k, n in self._shapes.items()}

    def synced(self) -> dict[str, torch.Tensor]:
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return self.sums
        flat = torch.cat([self.sums[k] for k in self._shapes])  # a copy: the local sums stay as they are
        dist.all_reduce(flat)
        return dict(zip(self._shapes, flat.split(list(self._shapes.values()))))


class Confusion(SumMetric):
    """Categorical metrics from a confusion matrix (rows: gold, columns: the argmax of the scores)."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        super().__init__({"cm": num_classes * num_classes}, device)

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """scores (N, C), labels (N,) class indices."""
        c = self.num_classes
        labels = labels.to(self.device).long().reshape(-1)
        if scores.shape[-1] != c or len(scores) != len(labels):
            raise ValueError(f"metrics: scores of shape {tuple(scores.shape)} for {len(labels)} labels of {c} classes")
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= c):
            raise ValueError(f"metrics: a label outside 0..{c - 1}: {labels.tolist()[:20]}")
        pred = scores.to(self.device).argmax(-1).reshape(-1)
        self.sums["cm"] += torch.bincount(labels * c + pred, minlength=c * c).double()

    def compute(self) -> dict[str, float]:
        c = self.num_classes
        cm = self.synced()["cm"].reshape(c, c)
        tp, gold, predicted = cm.diagonal(), cm.sum(1), cm.sum(0)
        fp, fn = predicted - tp, gold - tp
        present = gold > 0  # UAR: recall over the classes in the targets
        seen = (tp + fp + fn) > 0  # macro F1: the classes in the targets or the predictions
        f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
        return {"acc": float(tp.sum() / cm.sum()) if cm.sum() > 0 else 0.0,
                "uar": float((tp[present] / gold[present]).mean()) if present.any() else 0.0,
                "f1": float(f1[seen].mean()) if seen.any() else 0.0}


class PopulationCCC(SumMetric):
    """CCC per dimension over every (non-NaN) frame seen: 2 s_xy / (s_x^2 + s_y^2 + (m_x - m_y)^2)."""

    def __init__(self, num_dims: int = 2, device: torch.device | str = "cpu"):
        super().__init__({k: num_dims for k in ("n", "sx", "sy", "sxx", "syy", "sxy")}, device)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """preds, target: (N, D); target NaN where not annotated (ignored per dimension)."""
        for k, v in zip(("n", "sx", "sy", "sxx", "syy", "sxy"), _sums(preds, target)):
            self.sums[k] += v.to(self.device)

    def compute(self) -> torch.Tensor:
        s = self.synced()
        return _lin(s["n"], s["sx"], s["sy"], s["sxx"], s["syy"], s["sxy"]).float()


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


class ClipMeanCCC(SumMetric):
    """The mean over clips of each clip's CCC (population moments), per dimension: each ``update``
    is one clip. A clip with no annotated frame in a dimension does not count there; a clip whose
    predictions and labels are both constant (CCC 0/0) counts as 0."""

    def __init__(self, num_dims: int = 2, device: torch.device | str = "cpu"):
        super().__init__({"total": num_dims, "clips": num_dims}, device)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """preds, target: (N, D), the frames of one clip; target NaN where not annotated."""
        s = _sums(preds, target)
        has = s[0] > 0
        self.sums["total"] += torch.where(has, _lin(*s), 0.0).to(self.device)
        self.sums["clips"] += has.double().to(self.device)

    def compute(self) -> torch.Tensor:
        s = self.synced()
        return (s["total"] / s["clips"].clamp_min(1)).float()


class TaskMetrics:
    """One object for either task: ``update(...)`` then ``compute() -> {"acc": ..}``. Continuous:
    ``ccc_over`` ``frames`` (one CCC over every frame of every update) or ``clips`` (the mean of
    per-clip CCCs: each ``update`` must then be one clip)."""

    def __init__(self, task: str, num_classes: int, device: torch.device | str = "cpu", ccc_over: str = "frames"):
        self.task = task
        if task == "categorical":
            self.m = Confusion(num_classes, device)
        elif ccc_over == "frames":
            self.m = PopulationCCC(2, device)
        elif ccc_over == "clips":
            self.m = ClipMeanCCC(2, device)
        else:
            raise ValueError(f"eval.ccc_over must be 'frames' or 'clips', got {ccc_over!r}")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """categorical: scores (N, C), labels (N,); continuous: (N, 2), (N, 2)."""
        self.m.update(preds, target)

    def compute(self) -> dict[str, float]:
        if self.task == "categorical":
            return self.m.compute()
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
