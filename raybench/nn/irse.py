"""IR-50 (LResNet50E-IR, "improved residual" ResNet-50 for 112 x 112 faces), the face backbone of
zhou2019 and zhang2021.

Written for raybench; the module and parameter names follow the layout of the widely shared
face.evoLVe / InsightFace_Pytorch checkpoints (``input_layer``, ``body.<i>.shortcut_layer`` /
``res_layer``, ``output_layer``), so such a checkpoint loads with ``weights: /path/to/backbone_ir50.pth``.

- input layer: 3x3 conv (64) -> BN -> PReLU, at 112 x 112;
- body: 3, 4, 14, 3 improved residual units of depth 64, 128, 256, 512, the first of each stage with
  stride 2; a unit is BN -> 3x3 conv -> PReLU -> 3x3 conv (stride) -> BN, plus a shortcut (identity,
  subsampled, or 1x1 conv + BN when the depth changes);
- output layer: BN -> dropout -> flatten (512 x 7 x 7) -> linear 512 -> BN: a 512-d face embedding.

Frames of another size are resized to ``input_size`` first (112 x 112 by default, what those
checkpoints expect). zhang2021's authors (github sucv/ABAW2, ``model/arcface_model.py`` and
``model/model.py``) run the same network on 40 x 40 crops of 48 px faces: ``input_size=40`` gives
their output layer (flatten 512 x 5 x 5), and :class:`AuthorsIR50` their embedding (the output
L2-normalised) and checkpoint layout (``backbone.*`` plus their pretraining classifier ``logits.*``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

STAGES = ((64, 3), (128, 4), (256, 14), (512, 3))  # (depth, units) of IR-50
INPUT_SIZE = 112


class IRUnit(nn.Module):
    def __init__(self, in_ch: int, depth: int, stride: int):
        super().__init__()
        if in_ch == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)  # identity, subsampled when strided
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_ch, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_ch), nn.Conv2d(in_ch, depth, 3, 1, 1, bias=False), nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IR50(nn.Module):
    """(N, 3, H, W) in [-1, 1] -> (N, 512). ``first_stride``: the stride of stage 1's first unit (2 in
    face.evoLVe's IR-50; 1 in zhang2021's authors' copy, which runs on 40 x 40 crops)."""

    num_features = 512

    def __init__(self, dropout: float = 0.4, input_size: int = INPUT_SIZE, first_stride: int = 2):
        super().__init__()
        self.input_size = input_size
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units, in_ch, side = [], 64, input_size
        for s, (depth, n) in enumerate(STAGES):
            stride = first_stride if s == 0 else 2
            for i in range(n):
                units.append(IRUnit(in_ch, depth, stride if i == 0 else 1))
                in_ch = depth
            side = (side - 1) // stride + 1  # a 3x3 convolution with padding 1 and this stride
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(dropout), nn.Flatten(),
                                          nn.Linear(512 * side * side, 512), nn.BatchNorm1d(512))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.input_size
        if x.shape[-2:] != (n, n):
            x = F.interpolate(x, size=(n, n), mode="bilinear", align_corners=False)
        return self.output_layer(self.body(self.input_layer(x)))


# zhang2021's authors crop their 48 px faces to 40 px (randomly in training, in the centre at evaluation)
AUTHORS_CROP = 40 / 48


def centre_crop_box(h: int, w: int, frac: float) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the centre crop of ``frac`` of an h x w face (at least 8 px a side):
    zhang2021's evaluation crop, and the one its authors' IR-50 sees in the embedding stage."""
    ch, cw = max(8, int(round(h * frac))), max(8, int(round(w * frac)))
    return (h - ch) // 2, (w - cw) // 2, ch, cw


class AuthorsIR50(IR50):
    """zhang2021's authors' face embedding (``Backbone`` in their ``model/arcface_model.py``, built by
    ``my_res50`` in ``model/model.py``): IR-50 with stage 1 at stride 1, on 40 x 40 inputs (their 48 px
    faces cropped to 40), output layer over 512 x 5 x 5; the 512-d output is L2-normalised and fed to
    the visual TCN as it is (no projection). Their checkpoints (a ``my_res50`` state dict) hold this
    network under ``backbone.`` and their pretraining classifier under ``logits.``
    (:func:`raybench.nn.encoders.load_weights` reads that layout)."""

    def __init__(self, dropout: float = 0.4, input_size: int = 40):
        super().__init__(dropout, input_size, first_stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(super().forward(x), dim=-1)
