"""Fusion of per-modality features, by name: ``create_fusion(name, dims, out_dim)``.

Every fusion maps a list of per-step features [(B, T, D_i)] to (B, T, out_dim).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from raybench.registry import Registry

FUSIONS: Registry[type] = Registry("fusion")


@FUSIONS.register("concat")
class ConcatFusion(nn.Module):
    """z = ReLU(W [x_1; ...; x_M] + b)."""

    def __init__(self, dims: list[int], out_dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(sum(dims), out_dim), nn.ReLU(inplace=True))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.proj(torch.cat(feats, -1))  # (B, T, out_dim)


@FUSIONS.register("attention")
class AttentionFusion(nn.Module):
    """Modality attention: h_m = W_m x_m; a = softmax_m(w^T tanh(h_m)); z = sum_m a_m h_m."""

    def __init__(self, dims: list[int], out_dim: int):
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(d, out_dim) for d in dims)
        self.score = nn.Linear(out_dim, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        h = torch.stack([p(x) for p, x in zip(self.proj, feats)], -2)  # (B, T, M, out_dim)
        a = torch.softmax(self.score(torch.tanh(h)), dim=-2)  # (B, T, M, 1)
        return (a * h).sum(-2)  # (B, T, out_dim)


def create_fusion(name: str, dims: list[int], out_dim: int, **kw) -> nn.Module:
    return FUSIONS.get(name)(dims, out_dim, **kw)
