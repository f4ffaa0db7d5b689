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
