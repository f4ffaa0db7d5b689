"""Fusion of per-modality features, by name: ``create_fusion(name, dims, out_dim, **kw)``.

Every fusion maps a list of per-modality features ``[x_1, ..., x_M]``, each of
shape (..., D_m) with the same leading dims, to one tensor (..., out_dim). Most
work per position (per frame or per clip vector); ``cross_attention`` needs
sequences (B, T, D_m). ``forward(feats, mask=None)``: ``mask`` (B, T) marks the valid steps of
sequences (padding is never attended to); fusions that work per position ignore it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from raybench.registry import FUSIONS



@FUSIONS.register("concat")
class ConcatFusion(nn.Module):
    """z = ReLU(W [x_1; ...; x_M] + b)."""

    def __init__(self, dims: list[int], out_dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(sum(dims), out_dim), nn.ReLU(inplace=True))

    def forward(self, feats: list[torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(torch.cat(feats, -1))  # (..., out_dim)


@FUSIONS.register("attention")
class AttentionFusion(nn.Module):
    """Attention pooling over the modalities, each modality one region:
    h_m = W_m x_m;  a = softmax_m(w^T tanh(h_m));  z = sum_m a_m h_m."""

    def __init__(self, dims: list[int], out_dim: int):
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(d, out_dim) for d in dims)
        self.score = nn.Linear(out_dim, 1)

    def forward(self, feats: list[torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.stack([p(x) for p, x in zip(self.proj, feats)], -2)  # (..., M, out_dim)
        a = torch.softmax(self.score(torch.tanh(h)), dim=-2)  # (..., M, 1)
        return (a * h).sum(-2)  # (..., out_dim)


@FUSIONS.register("fbp")
class FactorizedBilinearPooling(nn.Module):
    """Factorized bilinear pooling, MFB form (two modalities a, v):

    a~ = U^T a, v~ = V^T v in R^{k*o};  z = SumPool_k(dropout(a~ * v~)) in R^o (the dropout on the k*o
    product, before the pooling, as in the MFB authors' code);
    z <- sign(z) sqrt(|z|) (power normalisation);  z <- z / ||z||_2;  out = W z.
    Defaults k = 5, o = 512 (METHODS.md, inferred).
    """

    def __init__(self, dims: list[int], out_dim: int, k: int = 5, o: int = 512, dropout: float = 0.1):
        super().__init__()
        if len(dims) != 2:
            raise ValueError(f"fbp fuses exactly two modalities, got {len(dims)}")
        self.k, self.o = k, o
        self.U = nn.Linear(dims[0], k * o)
        self.V = nn.Linear(dims[1], k * o)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(o, out_dim)

    def pooled(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The normalised bilinear vector z (..., o), before the output layer."""
        joint = self.drop(self.U(a) * self.V(v))  # (..., k*o)
        z = joint.unflatten(-1, (self.o, self.k)).sum(-1)  # (..., o): sum over each group of k
        z = torch.sign(z) * torch.sqrt(z.abs() + 1e-12)
        return F.normalize(z, dim=-1)

    def forward(self, feats: list[torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(self.pooled(feats[0], feats[1]))  # (..., out_dim)


@FUSIONS.register("leader_follower")
class LeaderFollowerFusion(nn.Module):
    """Leader-follower attentive fusion (Zhang et al. 2021), per time step.

    The first modality leads (v, e.g. 128-d visual), the others follow (a_j, e.g. 32-d audio):
    k_0 = W^k_0 v, k_j = W^k_j a_j;  q_0 = W^q_0 v, q_j = W^q_j k_j;  u_0 = W^u_0 v, u_j = W^u_j k_j
    (all ``d``-dimensional). K, Q, U stack them: (M, d).
    S = softmax(K Q^T / sqrt(d)) (M, M);  O = LayerNorm(S U + U), normalised over the whole (M, d)
    block as the authors' code does (``nn.LayerNorm([3, 32])``; the paper does not say);
    z = [v; flatten(O)] (dims[0] + M d; 128 + 3 x 32 = 224 in the paper), then ``out = W z`` unless
    ``out_dim`` is None.
    """

    def __init__(self, dims: list[int], out_dim: int | None, d: int = 32):
        super().__init__()
        self.d = d
        self.wk = nn.ModuleList(nn.Linear(dim, d) for dim in dims)
        self.wq = nn.ModuleList(nn.Linear(dims[0] if i == 0 else d, d) for i in range(len(dims)))
        self.wu = nn.ModuleList(nn.Linear(dims[0] if i == 0 else d, d) for i in range(len(dims)))
        self.norm = nn.LayerNorm([len(dims), d])  # over modalities x channels
        self.z_dim = dims[0] + len(dims) * d
        self.out = nn.Linear(self.z_dim, out_dim) if out_dim else nn.Identity()

    def attend(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (z (..., dims[0] + M d), S (..., M, M))."""
        k = [w(x) for w, x in zip(self.wk, feats)]  # each (..., d)
        src = [feats[0]] + k[1:]  # the leader uses its features, followers their keys
        K = torch.stack(k, -2)  # (..., M, d)
        Q = torch.stack([w(x) for w, x in zip(self.wq, src)], -2)  # (..., M, d)
        U = torch.stack([w(x) for w, x in zip(self.wu, src)], -2)  # (..., M, d)
        S = torch.softmax(K @ Q.transpose(-1, -2) / self.d**0.5, dim=-1)  # (..., M, M)
        O = self.norm(S @ U + U)  # (..., M, d)
        return torch.cat([feats[0], O.flatten(-2)], -1), S

    def forward(self, feats: list[torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(self.attend(feats)[0])


@FUSIONS.register("cross_attention")
class CrossAttentionFusion(nn.Module):
    """Inter-modal cross-attention with residuals (two modalities, sequences (B, T, D_m)):

    h_a = W_a a, h_v = W_v v;  h_v' = LN(h_v + MHA(h_v, h_a, h_a));  h_a' = LN(h_a + MHA(h_a, h_v, h_v));
    z = W [h_v'; h_a'].
    """

    def __init__(self, dims: list[int], out_dim: int, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        from raybench.nn.attention import CrossModalAttention

        if len(dims) != 2:
            raise ValueError(f"cross_attention fuses exactly two modalities, got {len(dims)}")
        self.proj = nn.ModuleList(nn.Linear(d, out_dim) for d in dims)
        self.x01 = CrossModalAttention(out_dim, heads, dropout)
        self.x10 = CrossModalAttention(out_dim, heads, dropout)
        self.out = nn.Linear(2 * out_dim, out_dim)

    def forward(self, feats: list[torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        h0, h1 = (p(x) for p, x in zip(self.proj, feats))  # (B, T, out_dim) each
        return self.out(torch.cat([self.x01(h0, h1, mask), self.x10(h1, h0, mask)], -1))  # (B, T, out_dim)


@FUSIONS.register("late")
class LateFusion(nn.Module):
    """Score averaging: z = (1/M) sum_m x_m, where each x_m is already a modality's score (out_dim)."""

    def __init__(self, dims: list[int], out_dim: int):
        super().__init__()
        if any(d != out_dim for d in dims):
            raise ValueError(f"late fusion averages scores of equal size {out_dim}; got sizes {dims}")

    def forward(self, feats: list[torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.stack(feats, 0).mean(0)


def create_fusion(name: str, dims: list[int], out_dim: int | None, **kw) -> nn.Module:
    return FUSIONS.get(name)(list(dims), out_dim, **kw)
