"""Each fusion against a direct computation of its equations on small tensors."""

import math

import pytest
import torch

from raybench.nn.fusion import FUSIONS, create_fusion


def test_every_fusion_maps_to_out_dim():
    a, v = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    for name in FUSIONS.names():
        f = create_fusion(name, [8, 8], 8)
        assert f([a, v]).shape == (2, 5, 8), name


def test_fbp_matches_mfb_equations():
    torch.manual_seed(0)
    f = create_fusion("fbp", [4, 3], 2, k=2, o=3, dropout=0.0).eval()
    a, v = torch.randn(5, 4), torch.randn(5, 3)
    joint = (a @ f.U.weight.T + f.U.bias) * (v @ f.V.weight.T + f.V.bias)  # (5, k*o)
    z = torch.stack([joint[:, 2 * j : 2 * j + 2].sum(1) for j in range(3)], 1)  # sum-pool groups of k
    z = torch.sign(z) * z.abs().sqrt()
    z = z / z.norm(dim=1, keepdim=True)
    assert torch.allclose(f.pooled(a, v), z, atol=1e-5)
    assert torch.allclose(f.pooled(a, v).norm(dim=1), torch.ones(5), atol=1e-5)  # L2-normalised
    assert torch.allclose(f([a, v]), z @ f.out.weight.T + f.out.bias, atol=1e-5)


def test_leader_follower_softmax_shapes_and_equations():
    torch.manual_seed(0)
    f = create_fusion("leader_follower", [128, 32, 32], None, d=32).eval()
    v, a1, a2 = torch.randn(2, 7, 128), torch.randn(2, 7, 32), torch.randn(2, 7, 32)
    z, S = f.attend([v, a1, a2])
    assert z.shape == (2, 7, 224) and S.shape == (2, 7, 3, 3)  # 128 + 3 x 32, as in the paper
    assert torch.allclose(S.sum(-1), torch.ones(2, 7, 3), atol=1e-6)
    # direct computation at one time step
    x = [v[0, 3], a1[0, 3], a2[0, 3]]
    k = [f.wk[i](x[i]) for i in range(3)]
    q = [f.wq[0](x[0]), f.wq[1](k[1]), f.wq[2](k[2])]
    u = [f.wu[0](x[0]), f.wu[1](k[1]), f.wu[2](k[2])]
    K, Q, U = torch.stack(k), torch.stack(q), torch.stack(u)
    S_ref = torch.softmax(K @ Q.T / math.sqrt(32), -1)
    # LayerNorm over the whole 3 x 32 block (the authors' nn.LayerNorm([3, 32])), written out
    X = S_ref @ U + U
    with torch.no_grad():  # a non-trivial affine part, so a per-row normalisation could not pass
        f.norm.weight.copy_(torch.randn(3, 32))
        f.norm.bias.copy_(torch.randn(3, 32))
    z, S = f.attend([v, a1, a2])
    O = (X - X.mean()) / torch.sqrt(X.var(unbiased=False) + 1e-5) * f.norm.weight + f.norm.bias
    assert f.norm.normalized_shape == (3, 32)
    assert torch.allclose(S[0, 3], S_ref, atol=1e-5)
    assert torch.allclose(z[0, 3], torch.cat([x[0], O.flatten()]), atol=1e-5)
    assert torch.equal(z[..., :128], v)  # the leader passes through


def test_concat_and_late():
    a, v = torch.randn(3, 4), torch.randn(3, 4)
    c = create_fusion("concat", [4, 4], 5)
    lin = c.proj[0]
    assert torch.allclose(c([a, v]), torch.relu(torch.cat([a, v], 1) @ lin.weight.T + lin.bias))
    assert torch.allclose(create_fusion("late", [4, 4], 4)([a, v]), (a + v) / 2)
    with pytest.raises(ValueError, match="equal size"):
        create_fusion("late", [4, 3], 4)


def test_attention_fusion_weights_sum_to_one():
    f = create_fusion("attention", [4, 6], 5)
    a, v = torch.randn(3, 4), torch.randn(3, 6)
    h = torch.stack([f.proj[0](a), f.proj[1](v)], 1)  # (3, 2, 5)
    w = torch.softmax(f.score(torch.tanh(h)), 1)
    assert torch.allclose(w.sum(1), torch.ones(3, 1))
    assert torch.allclose(f([a, v]), (w * h).sum(1), atol=1e-6)


def test_cross_attention_is_residual_and_sees_the_other_modality():
    torch.manual_seed(0)
    f = create_fusion("cross_attention", [4, 4], 8).eval()
    a, v = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    out = f([a, v])
    v2 = v.clone()
    v2[:, 0] += 3.0  # change one step of the other modality
    assert not torch.allclose(f([a, v2])[:, 1], out[:, 1])  # other steps of modality 0 see it


def test_unknown_fusion_suggests():
    with pytest.raises(KeyError, match='did you mean "fbp"'):
        create_fusion("fpb", [4, 4], 4)
