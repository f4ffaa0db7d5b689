"""Losses: cross-entropy (categorical), 1 - CCC per dimension (continuous), knowledge distillation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ccc(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Lin's concordance correlation coefficient with population moments, per column.

    pred, target: (N, D) -> (D,)
    """
    mp, mt = pred.mean(0), target.mean(0)
    vp, vt = pred.var(0, unbiased=False), target.var(0, unbiased=False)
    cov = ((pred - mp) * (target - mt)).mean(0)
    return 2 * cov / (vp + vt + (mp - mt) ** 2 + 1e-8)


def ccc_loss(va_pred: torch.Tensor, va: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over dimensions of 1 - CCC, over the annotated, unpadded frames of the batch.

    va_pred, va: (B, T, D); va NaN where not annotated; mask (B, T) bool.
    """
    valid = ~torch.isnan(va).any(-1)  # (B, T)
    if mask is not None:
        valid &= mask
    if valid.sum() < 2:
        return va_pred.sum() * 0.0  # keeps the graph (DDP) without a signal
    p, t = va_pred[valid].float(), va[valid].float()  # (N, D)
    return (1 - ccc(p, t)).mean()


def window_ccc_loss(va_pred: torch.Tensor, va: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over windows and dimensions of 1 - CCC computed within each window (Zhang et al. 2021's
    loss, as their code computes it: covariance over N, variances over N - 1, eps 1e-8), over each
    window's annotated, unpadded frames. Windows with fewer than 2 such frames are left out.

    va_pred, va: (B, T, D); va NaN where not annotated; mask (B, T) bool.
    """
    valid = ~torch.isnan(va)  # (B, T, D)
    if mask is not None:
        valid &= mask[..., None]
    w = valid.to(torch.float32)
    n = w.sum(1)  # (B, D)
    p, t = va_pred.float(), torch.nan_to_num(va.float())
    mp, mt = (p * w).sum(1) / n.clamp_min(1), (t * w).sum(1) / n.clamp_min(1)  # (B, D)
    dp, dt = (p - mp[:, None]) * w, (t - mt[:, None]) * w
    cov = (dp * dt).sum(1) / n.clamp_min(1)
    vp, vt = (dp**2).sum(1) / (n - 1).clamp_min(1), (dt**2).sum(1) / (n - 1).clamp_min(1)
    ccc_w = 2 * cov / (vp + vt + (mp - mt) ** 2 + 1e-8)  # (B, D)
    ok = n >= 2
    if not ok.any():
        return va_pred.sum() * 0.0  # keeps the graph (DDP) without a signal
    return (1 - ccc_w[ok]).mean()


def task_loss(task: str, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    if task == "categorical":
        return F.cross_entropy(out["logits"].float(), batch["label"])
    return ccc_loss(out["va"], batch["va"], batch.get("mask"))


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.'s soft-target term: T^2 KL(softmax(teacher / T) || softmax(student / T)), summed over
    the classes and averaged over the rows. student, teacher: (N, C) logits -> a scalar."""
    T = float(temperature)
    return F.kl_div(F.log_softmax(student.float() / T, -1), F.softmax(teacher.float() / T, -1),
                    reduction="batchmean") * T * T
