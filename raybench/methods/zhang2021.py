"""zhang2021: TCNs with leader-follower attentive fusion (Zhang, Ding, Wei, Guan; ABAW 2021).

From the authors' code (METHODS.md section 4): a face CNN per frame -> TCN
[128 x 4], kernel 5, dilations 1-8 (receptive field 121 frames); one TCN
[32 x 4] per audio stream (MFCC 39-d, VGGish-style log-Mel 128-d, each aligned
to video frames); leader-follower attention per time step (visual leads);
z = [v; flatten(O)] (224-d) -> Linear -> valence/arousal, no output activation (the authors'
regressor; ``output: tanh`` bounds it). Loss 1 - CCC per window (``loss``).

Training inputs as in the code: one random crop (``crop`` of the frame) and
horizontal flip shared by the whole window in training, the centre crop in
evaluation. ``per_dimension: true`` trains one model per dimension, as the
paper does; false predicts both from one model.

The paper's training schedule (Adam lr 1e-5, weight decay 1e-3, batch 8,
windows 300 / hop 200, ReduceLROnPlateau) is set by
``sweeps/zhang2021_affwild2.yaml``; its 6-fold protocol is
``data.split.protocol: chunks`` and the fold merge ("CCC centering") is
``raybench.train.metrics.ccc_centering``, which the sweep applies (``tune.fold_merge``).

Gradual unfreezing, as in the authors' code: a pretrained face backbone
(``weights:``) starts frozen (``freeze_backbone``; null = frozen exactly when
weights are loaded, since freezing a randomly initialised CNN would leave it
random), and each learning-rate drop of the plateau schedule releases the next
``unfreeze_per_drop`` group(s) of its layers, top first
(:func:`raybench.nn.encoders.backbone_groups`). Frozen layers keep their
batch-norm statistics (eval mode) and get no update; how many groups are
released is part of the checkpoint.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
from pydantic import Field

from raybench.methods.base import FaceEncoderOptions, Method, register_method
from raybench.nn.audio import MFCCStream, VGGishStream, vggish_patch_frames
from raybench.nn.encoders import backbone_groups, build_frame_encoder
from raybench.nn.fusion import create_fusion
from raybench.nn.losses import ccc_loss, window_ccc_loss
from raybench.nn.temporal import TCN


class _OneModel(nn.Module):
    def __init__(self, out: int, opts: Options, n_audio_features: int, k: int, fps: float):
        super().__init__()
        self.face = build_frame_encoder(opts.backbone, opts.visual_dim, opts.weights, opts.cnn_width)
        self.v_tcn = TCN(opts.visual_dim, [opts.visual_channels] * opts.levels, opts.kernel, opts.dropout)
        streams, dims = nn.ModuleList(), []
        for s in opts.audio_streams:
            enc = (MFCCStream(n_audio_features, k) if s == "mfcc"
                   else VGGishStream(n_audio_features, k, patch_frames=vggish_patch_frames(fps)))  # 0.96 s
            streams.append(nn.ModuleDict({
                "enc": enc, "tcn": TCN(enc.out_dim, [opts.audio_channels] * opts.levels, opts.kernel,
                                       opts.dropout)}))
            dims.append(opts.audio_channels)
        self.streams = streams
        leader = opts.visual_channels
        self.fusion_name = opts.fusion
        if opts.fusion == "leader_follower":
            self.fusion = create_fusion("leader_follower", [leader, *dims], None, d=opts.attention_dim)
            z_dim = self.fusion.z_dim
        else:
            self.fusion = create_fusion(opts.fusion, [leader, *dims], leader)
            z_dim = leader
        self.head = nn.Linear(z_dim, out)
        self.squash = opts.output == "tanh"

    def forward(self, video: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # the TCNs are causal (a frame sees only earlier ones) and the fusion works per frame, so
        # padding after a clip reaches no valid frame; the audio streams mask it themselves
        v = self.v_tcn(self.face(video))  # (B, T, 128)
        a = [s["tcn"](s["enc"](audio, mask)) for s in self.streams]  # each (B, T, 32)
        z = self.fusion([v, *a], mask)  # (B, T, 224) for leader_follower
        y = self.head(z)  # (B, T, out): linear, as the authors' regressor
        return torch.tanh(y) if self.squash else y


class Options(FaceEncoderOptions):
    # backbone: the paper: IR-ResNet50 (pass `weights:` to load a checkpoint)
    visual_dim: int = Field(512, ge=1)
    visual_channels: int = Field(128, ge=1)
    audio_channels: int = Field(32, ge=1)
    levels: int = Field(4, ge=1)
    kernel: int = Field(5, ge=2)
    dropout: float = Field(0.1, ge=0, lt=1)
    attention_dim: int = Field(32, ge=1)
    audio_streams: list[Literal["mfcc", "vggish"]] = Field(["mfcc", "vggish"], min_length=1)
    fusion: Literal["leader_follower", "concat"] = "leader_follower"
    per_dimension: bool = False
    crop: float = Field(40 / 48, gt=0, le=1)  # random crop fraction in training (40 of 48 px in the paper)
    flip: bool = True
    freeze_backbone: bool | None = None  # null: frozen at first when `weights` is set (the paper); true | false
    unfreeze_per_drop: int = Field(1, ge=0)  # backbone layer groups released at each LR drop (0: stay frozen)
    # 1 - CCC per window and dimension, averaged (the authors' code), or one CCC over the batch's frames
    loss: Literal["window", "pooled"] = "window"
    output: Literal["linear", "tanh"] = "linear"  # the authors' regressor is linear

@register_method("zhang2021")
class Zhang2021(Method):
    tasks = ("continuous",)
    Options = Options

    def __init__(self, task, num_outputs, opts: Options, n_audio_features=40, audio_steps_per_frame=4, fps=10.0):
        super().__init__(task, num_outputs, opts)
        for s in opts.audio_streams:
            if s not in ("mfcc", "vggish"):
                raise ValueError(f"zhang2021: audio_streams entries must be 'mfcc' or 'vggish', got {s!r}")
        n = num_outputs if opts.per_dimension else 1
        out = 1 if opts.per_dimension else num_outputs
        self.models = nn.ModuleList(_OneModel(out, opts, n_audio_features, audio_steps_per_frame, fps)
                                    for _ in range(n))
        fb = opts.freeze_backbone
        if fb is not None and not isinstance(fb, bool):
            raise ValueError(f"zhang2021: freeze_backbone must be true, false or null, got {fb!r}")
        upd = opts.unfreeze_per_drop
        if not isinstance(upd, int) or isinstance(upd, bool) or upd < 0:
            raise ValueError(f"zhang2021: unfreeze_per_drop must be an integer >= 0, got {upd!r}")
        self._groups = [backbone_groups(m.face) for m in self.models]
        frozen = bool(opts.weights) if fb is None else fb
        n_groups = len(self._groups[0])
        # backbone layer groups released so far (top first); a buffer, so checkpoints keep it
        self.register_buffer("released_groups", torch.tensor(0 if frozen else n_groups))

    def frozen_modules(self) -> list[nn.Module]:
        k = int(self.released_groups)
        return [m for groups in self._groups for g in groups[k:] for m in g]

    def frozen_parameters(self) -> list[nn.Parameter]:
        """Parameters that get no update now (the training loop drops their gradients)."""
        return [p for m in self.frozen_modules() for p in m.parameters()]

    def on_lr_drop(self) -> None:
        """Release the next group(s) of backbone layers (called by the loop at each LR drop)."""
        n = len(self._groups[0])
        self.released_groups.fill_(min(n, int(self.released_groups) + int(self.opts.unfreeze_per_drop)))
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.frozen_modules():
            m.eval()  # frozen layers keep their batch-norm statistics
        return self

    def _augment(self, video: torch.Tensor) -> torch.Tensor:
        """Random crop + flip shared by the whole window (training); centre crop (evaluation)."""
        B, T, C, H, W = video.shape
        ch, cw = max(8, int(round(H * self.opts.crop))), max(8, int(round(W * self.opts.crop)))
        if self.training:
            out = []
            for b in range(B):
                y = int(torch.randint(0, H - ch + 1, ()))
                x = int(torch.randint(0, W - cw + 1, ()))
                clip = video[b, :, :, y : y + ch, x : x + cw]
                if self.opts.flip and bool(torch.rand(()) < 0.5):
                    clip = clip.flip(-1)
                out.append(clip)
            return torch.stack(out)  # (B, T, C, ch, cw)
        y, x = (H - ch) // 2, (W - cw) // 2
        return video[..., y : y + ch, x : x + cw]

    def loss(self, out, batch):
        """1 - CCC per window and dimension, averaged over the batch's windows (``loss: window``, the
        authors' CCCLoss), or over all the batch's frames pooled (``loss: pooled``)."""
        if self.opts.loss == "pooled":
            return ccc_loss(out["va"], batch["va"], batch.get("mask"))
        return window_ccc_loss(out["va"], batch["va"], batch.get("mask"))

    def forward(self, batch):
        video = self._augment(batch["video"])
        va = torch.cat([m(video, batch["audio"], batch.get("mask")) for m in self.models], -1)  # (B, T, 2)
        return {"va": va}
