"""IR-50: the checkpoint layout of the published face backbones, shapes, and loading by path."""

from __future__ import annotations

import pytest
import torch

from raybench.nn.encoders import build_frame_encoder
from raybench.nn.irse import IR50


def test_ir50_layout_and_shapes():
    net = IR50().eval()
    sd = net.state_dict()
    assert sd["input_layer.0.weight"].shape == (64, 3, 3, 3)
    assert len(net.body) == 24  # 3 + 4 + 14 + 3 units
    assert sd["body.0.res_layer.1.weight"].shape == (64, 64, 3, 3)
    assert sd["body.3.shortcut_layer.0.weight"].shape == (128, 64, 1, 1)  # depth change: 1x1 conv shortcut
    assert "body.1.shortcut_layer.0.weight" not in sd  # same depth: identity (max-pool) shortcut
    assert sd["output_layer.3.weight"].shape == (512, 512 * 7 * 7)
    assert sd["output_layer.4.running_mean"].shape == (512,)
    n_params = sum(p.numel() for p in net.parameters())
    assert 40e6 < n_params < 46e6  # IR-50 has about 43.6 M parameters
    with torch.no_grad():
        assert net(torch.randn(2, 3, 112, 112)).shape == (2, 512)
        assert net(torch.randn(2, 3, 48, 48)).shape == (2, 512)  # resized to 112 first


def test_ir50_weights_load_by_path_and_misfits_are_named(tmp_path):
    src = IR50()
    path = tmp_path / "backbone_ir50.pth"
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, path)  # as saved under DataParallel
    enc = build_frame_encoder("ir50", 64, str(path))
    assert torch.equal(enc.backbone.state_dict()["body.5.res_layer.1.weight"], src.state_dict()["body.5.res_layer.1.weight"])
    video = torch.randn(1, 2, 3, 48, 48)
    enc.eval()
    assert enc(video).shape == (1, 2, 64)
    bad = {k: v for k, v in src.state_dict().items() if not k.startswith("output_layer")}
    torch.save(bad, tmp_path / "trunk.pth")
    with pytest.raises(ValueError, match="missing.*output_layer"):
        build_frame_encoder("ir50", 64, str(tmp_path / "trunk.pth"))


def test_the_authors_ir50_embedding_and_checkpoint_layout(tmp_path):
    """zhang2021's authors' IR-50 (github sucv/ABAW2, model/arcface_model.py): stage 1 at stride 1, 40 x 40
    inputs, an output layer over 512 x 5 x 5, the output L2-normalised; their my_res50 checkpoints hold it
    under 'backbone.' with the pretraining classifier under 'logits.'."""
    from raybench.nn.irse import AuthorsIR50

    net = AuthorsIR50().eval()
    sd = net.state_dict()
    assert sd["output_layer.3.weight"].shape == (512, 512 * 5 * 5)
    assert sd["body.0.res_layer.3.weight"].shape == (64, 64, 3, 3)
    with torch.no_grad():
        x = net.input_layer(torch.randn(1, 3, 40, 40))
        assert net.body[0](x).shape[-1] == 40  # stage 1 keeps the size (stride 1)
        assert net.body[:3](x).shape[-1] == 40 and net.body[:7](x).shape[-1] == 20
        out = net(torch.randn(3, 3, 40, 40))
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    ckpt = {f"backbone.{k}": v for k, v in sd.items()}
    ckpt.update({"logits.weight": torch.randn(8, 512), "logits.bias": torch.zeros(8)})
    torch.save(ckpt, tmp_path / "res50_ir_0.887.pth")
    enc = build_frame_encoder("ir50", 32, str(tmp_path / "res50_ir_0.887.pth"), embedding="authors").eval()
    assert enc.out_dim == 512  # no projection
    assert torch.equal(enc.backbone.state_dict()["body.9.res_layer.1.weight"], sd["body.9.res_layer.1.weight"])
    with torch.no_grad():
        torch.testing.assert_close(enc(torch.randn(1, 2, 3, 48, 48)).norm(dim=-1), torch.ones(1, 2))
