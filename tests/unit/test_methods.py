"""One parametrized test over every registered method and task it supports."""

import pytest
import torch

from raybench.methods import METHODS, create_method

B, T, K, F, H = 4, 6, 4, 20, 32
CASES = [(m, t) for m in METHODS.names() for t in METHODS.get(m).tasks]
# small sizes so every method runs in a fraction of a second on a CPU
SMALL = {"dim": 16, "cnn_width": 4, "visual_dim": 32, "audio_dim": 16, "hidden": 16, "fbp_o": 16,
         "fused_dim": 16, "visual_channels": 16, "audio_channels": 8, "attention_dim": 8, "levels": 2,
         "num_blocks": 1, "heads": 2, "patch_seconds": 0.3}


def batch(task, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = {
        "video": torch.randn(B, T, 3, H, H, generator=g),
        "audio": torch.randn(B, T * K, F, generator=g),
        "mask": torch.ones(B, T, dtype=torch.bool),
        "flow": torch.randn(B, T, 2, H, H, generator=g),
    }
    b["mask"][0, -2:] = False
    if task == "categorical":
        b["label"] = torch.tensor([0, 1, 2, 3])
    else:
        b["va"] = torch.rand(B, T, 2, generator=g) * 2 - 1
        b["va"][1, 0] = float("nan")
    return b


def build(name, task):
    kw = {k: v for k, v in SMALL.items() if k in METHODS.get(name).defaults}
    return create_method(name, task, 4 if task == "categorical" else 2, n_audio_features=F,
                         audio_steps_per_frame=K, **kw)


@pytest.mark.parametrize("name,task", CASES)
def test_forward_shapes_no_nan_and_gradients(name, task):
    torch.manual_seed(0)
    model = build(name, task)
    out = model(batch(task))
    if task == "categorical":
        assert out["logits"].shape == (B, 4)
    else:
        assert out["va"].shape == (B, T, 2)
        if name != "zhang2021":  # zhang2021's output is linear, as the authors' regressor
            assert out["va"].abs().max() <= 1
    assert all(torch.isfinite(v).all() for v in out.values())
    loss = model.loss(out, batch(task))
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("name,task", CASES)
def test_overfits_one_small_batch(name, task):
    torch.manual_seed(0)
    model = build(name, task)
    b = batch(task)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    first = None
    for _ in range(100):
        loss = model.loss(model(b), b)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        final = float(model.loss(model(b), b).detach())
    assert final < first / 4, (first, final)


def test_unknown_method_key_is_rejected():
    with pytest.raises(ValueError, match="unknown keys"):
        create_method("audio_only", "categorical", 8, fusion="concat")
    with pytest.raises(KeyError, match="did you mean"):
        create_method("audio_onyl", "categorical", 8)
