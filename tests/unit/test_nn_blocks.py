import numpy as np
import pytest
import torch

from raybench.nn.attention import AttentionPool, ConformerBlock, CrossModalAttention
from raybench.nn.temporal import RNN, TCN


def test_tcn_is_causal_with_the_papers_receptive_field():
    torch.manual_seed(0)
    tcn = TCN(8, [128, 128, 128, 128], kernel=5, dropout=0.1).eval()
    assert tcn.receptive_field == 121
    x = torch.randn(1, 200, 8)
    y = tcn(x)
    assert y.shape == (1, 200, 128)
    x2 = x.clone()
    x2[:, 150:] += 5.0  # the future changes ...
    y2 = tcn(x2)
    assert torch.allclose(y[:, :150], y2[:, :150], atol=1e-5)  # ... the past outputs do not
    x3 = x.clone()
    x3[:, 10] += 5.0
    y3 = tcn(x3)
    changed = (y3 - y).abs().amax(-1)[0] > 1e-5
    assert changed[10:131].any() and not changed[:10].any() and not changed[131:].any()


def test_tcn_blocks_are_weight_normalised_with_residual_projection():
    tcn = TCN(8, [32, 32], kernel=5)
    block = tcn.net[0]
    assert hasattr(block.net[0], "parametrizations")  # weight_norm
    assert block.downsample is not None and tcn.net[1].downsample is None


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_rnn(kind):
    assert RNN(6, 16, 2, kind)(torch.randn(2, 9, 6)).shape == (2, 9, 16)
    with pytest.raises(ValueError, match="lstm"):
        RNN(6, 16, 2, "rnn")


def test_attention_pool_self_and_relation_equations():
    torch.manual_seed(0)
    f = torch.randn(2, 5, 4)
    p = AttentionPool(4, "self", dropout=0.0).eval()
    a = torch.sigmoid(p.alpha(f))
    assert torch.allclose(p(f), (a * f).sum(1) / a.sum(1), atol=1e-6)
    r = AttentionPool(4, "relation", dropout=0.0, relation_eval="as_trained").eval()
    a = torch.sigmoid(r.alpha(f))
    fp = (a * f).sum(1) / a.sum(1)
    fr = torch.cat([f, fp[:, None].expand_as(f)], -1)
    b = torch.sigmoid(r.beta(fr))
    assert torch.allclose(r(f), (a * b * fr).sum(1) / (a * b).sum(1), atol=1e-6)
    assert r.out_dim == 8


def test_relation_attention_in_evaluation_follows_the_fan_code():
    """Emotion-FAN's evaluation (networks.py, second_level) weights the numerator by alpha alone and the
    denominator by alpha * beta; its training, and ``as_trained``, by alpha * beta both. Expected values in
    numpy, with the module's own weights, on two sequences of different lengths (one padded)."""
    torch.manual_seed(1)
    f = torch.randn(2, 6, 4)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    authors = AttentionPool(4, "relation", dropout=0.0)
    assert authors.relation_eval == "authors"
    trained = AttentionPool(4, "relation", dropout=0.0, relation_eval="as_trained")
    trained.load_state_dict(authors.state_dict())

    def sig(x):
        return 1 / (1 + np.exp(-x))

    wa, ba = authors.alpha.weight.detach().numpy()[0], authors.alpha.bias.item()
    wb, bb = authors.beta.weight.detach().numpy()[0], authors.beta.bias.item()
    fan, paper = [], []
    for row, n in zip(f.numpy().astype(np.float64), (6, 3)):
        x = row[:n]
        a = sig(x @ wa + ba)
        fp = (a[:, None] * x).sum(0) / a.sum()
        cat = np.concatenate([x, np.tile(fp, (n, 1))], 1)
        b = sig(cat @ wb + bb)
        fan.append((a[:, None] * cat).sum(0) / (a * b).sum())
        paper.append(((a * b)[:, None] * cat).sum(0) / (a * b).sum())
    fan, paper = torch.tensor(np.array(fan), dtype=torch.float32), torch.tensor(np.array(paper), dtype=torch.float32)
    assert not torch.allclose(fan, paper, atol=1e-3)  # the two forms differ on these inputs
    with torch.no_grad():
        assert torch.allclose(authors.eval()(f, mask), fan, atol=1e-5)
        assert torch.allclose(trained.eval()(f, mask), paper, atol=1e-5)
        assert torch.allclose(authors.train()(f, mask), paper, atol=1e-5)  # training: the same formula both ways
        assert torch.allclose(trained.train()(f, mask), paper, atol=1e-5)
    with pytest.raises(ValueError, match="relation_eval"):
        AttentionPool(4, "relation", relation_eval="fan")


def test_attention_pool_masks_padding():
    f = torch.randn(1, 6, 4)
    mask = torch.tensor([[True] * 4 + [False] * 2])
    for kind in ("self", "relation", "transformer"):
        p = AttentionPool(4, kind, dropout=0.0).eval()
        g = f.clone()
        g[:, 4:] = 100.0
        assert torch.allclose(p(f, mask), p(g, mask), atol=1e-5), kind


def test_conformer_and_cross_modal_shapes_and_masking():
    torch.manual_seed(0)
    blk = ConformerBlock(16, heads=4, kernel=5).eval()
    x = torch.randn(2, 10, 16)
    assert blk(x).shape == (2, 10, 16)
    cm = CrossModalAttention(16, 4).eval()
    y = torch.randn(2, 7, 16)
    m = torch.ones(2, 7, dtype=torch.bool)
    m[:, 5:] = False
    y2 = y.clone()
    y2[:, 5:] = 50.0
    assert torch.allclose(cm(x, y, m), cm(x, y2, m), atol=1e-5)
