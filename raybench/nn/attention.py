"""Attention blocks: frame/region attention pooling, cross-modal attention, Conformer.

Shapes: B batch, T steps (frames or audio regions), D features.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _masked_weights(w: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return w if mask is None else w * mask.to(w.dtype).unsqueeze(-1)


class AttentionPool(nn.Module):
    """Attention pooling of a sequence into one vector, three variants (Frame Attention Network).

    - ``self``:        a_i = sigmoid(w^T dropout(f_i) + b);  f' = sum_i a_i f_i / sum_i a_i      -> (B, D)
    - ``relation``:    b_i = sigmoid(w2^T dropout([f_i; f']) + b2);
                       v = sum_i a_i b_i [f_i; f'] / sum_i a_i b_i                              -> (B, 2D)
    - ``transformer``: g_i = W f_i (d), s_i = q^T g_i, a = softmax_i(s);  v = sum_i a_i f_i     -> (B, D)

    ``relation_eval`` (relation only; evaluation mode only): ``authors`` follows the Frame Attention
    Network's code (github Open-Debin/Emotion-FAN, ``basic_code/networks.py``, ``AT_level='second_level'``),
    which in evaluation weights the numerator by a_i alone, v = sum_i a_i [f_i; f'] / sum_i a_i b_i
    (= [f'; f'] scaled by sum a_i / sum a_i b_i), while its training path uses the formula above;
    ``as_trained`` evaluates with the training formula.
    """

    def __init__(self, dim: int, kind: str = "self", dropout: float = 0.5, proj_dim: int = 128,
                 relation_eval: str = "authors"):
        super().__init__()
        if kind not in ("self", "relation", "transformer"):
            raise ValueError(f"attention must be 'self', 'relation' or 'transformer', got {kind!r}")
        if relation_eval not in ("authors", "as_trained"):
            raise ValueError(f"relation_eval must be 'authors' or 'as_trained', got {relation_eval!r}")
        self.kind = kind
        self.relation_eval = relation_eval
        self.drop = nn.Dropout(dropout)
        self.alpha = nn.Linear(dim, 1)
        if kind == "relation":
            self.beta = nn.Linear(2 * dim, 1)
        if kind == "transformer":
            self.proj = nn.Linear(dim, proj_dim)
            self.query = nn.Parameter(torch.randn(proj_dim) / proj_dim**0.5)
        self.out_dim = 2 * dim if kind == "relation" else dim

    def forward(self, f: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` (B, T): the steps to pool (a row with none pools all its steps)."""
        if mask is not None:
            mask = mask | ~mask.any(1, keepdim=True)
        if self.kind == "transformer":
            s = self.proj(f) @ self.query  # (B, T)
            if mask is not None:
                s = s.masked_fill(~mask, float("-inf"))
            return (torch.softmax(s, -1).unsqueeze(-1) * f).sum(1)  # (B, D)
        a = _masked_weights(torch.sigmoid(self.alpha(self.drop(f))), mask)  # (B, T, 1)
        pooled = (a * f).sum(1) / a.sum(1).clamp_min(1e-6)  # (B, D)
        if self.kind == "self":
            return pooled
        fr = torch.cat([f, pooled.unsqueeze(1).expand_as(f)], -1)  # (B, T, 2D)
        b = torch.sigmoid(self.beta(self.drop(fr)))  # (B, T, 1)
        ab = a * b
        weights = a if (not self.training and self.relation_eval == "authors") else ab  # the FAN code's eval
        return (weights * fr).sum(1) / ab.sum(1).clamp_min(1e-6)  # (B, 2D)


class CrossModalAttention(nn.Module):
    """x' = LayerNorm(x + MHA(x, y, y)): ``x`` attends to the other modality ``y``.

    (B, T, D), (B, S, D) -> (B, T, D)
    """

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor | None = None) -> torch.Tensor:
        kpm = None if y_mask is None else ~y_mask
        return self.norm(x + self.mha(x, y, y, key_padding_mask=kpm, need_weights=False)[0])


class _FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: int, dropout: float):
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, dim * mult), nn.SiLU(), nn.Dropout(dropout),
                         nn.Linear(dim * mult, dim), nn.Dropout(dropout))


class ConformerBlock(nn.Module):
    """Conformer block: x + FFN/2 -> x + MHSA -> x + ConvModule -> x + FFN/2 -> LayerNorm.

    ConvModule: LN -> pointwise conv (2D) + GLU -> depthwise conv -> BatchNorm -> SiLU ->
    pointwise conv -> dropout. (B, T, D) -> (B, T, D)
    """

    def __init__(self, dim: int, heads: int = 4, ff_mult: int = 4, kernel: int = 15, dropout: float = 0.1):
        super().__init__()
        self.ff1 = _FeedForward(dim, ff_mult, dropout)
        self.ff2 = _FeedForward(dim, ff_mult, dropout)
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.conv_norm = nn.LayerNorm(dim)
        self.pw1 = nn.Conv1d(dim, 2 * dim, 1)
        self.dw = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.bn = nn.BatchNorm1d(dim)
        self.pw2 = nn.Conv1d(dim, dim, 1)
        self.drop = nn.Dropout(dropout)
        self.out_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        h = self.attn_norm(x)
        kpm = None if mask is None else ~mask
        x = x + self.drop(self.attn(h, h, h, key_padding_mask=kpm, need_weights=False)[0])
        h = self.conv_norm(x).transpose(1, 2)  # (B, D, T)
        h = nn.functional.glu(self.pw1(h), dim=1)  # (B, D, T)
        if mask is not None:  # padded steps are zero where the convolution over time reads them
            h = h * mask.unsqueeze(1).to(h.dtype)
        h = self.pw2(nn.functional.silu(self.bn(self.dw(h))))
        x = x + self.drop(h.transpose(1, 2))
        x = x + 0.5 * self.ff2(x)
        return self.out_norm(x)
