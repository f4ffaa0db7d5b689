"""zhang2021: TCNs with leader-follower attentive fusion (Zhang, Ding, Wei, Guan; ABAW 2021).

From the authors' code (METHODS.md section 4): a face CNN per frame -> TCN
[128 x 4], kernel 5, dilations 1-8 (receptive field 121 frames); one TCN
[32 x 4] per audio stream (MFCC 39-d, VGGish-style log-Mel 128-d, each aligned
to video frames); leader-follower attention per time step (visual leads);
z = [v; flatten(O)] (224-d) -> Linear -> valence/arousal. Loss 1 - CCC.

Training inputs as in the code: one random crop (``crop`` of the frame) and
horizontal flip shared by the whole window in training, the centre crop in
evaluation. ``per_dimension: true`` trains one model per dimension, as the
paper does; false predicts both from one model.

The paper's training schedule (Adam lr 1e-5, weight decay 1e-3, batch 8,
windows 300 / hop 200) is set by ``sweeps/zhang2021_affwild2.yaml``; the
6-fold protocol's fold merge ("CCC centering") is ``ccc_centering`` below.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from raybench.methods.base import Method, register_method
from raybench.nn.audio import MFCCStream, VGGishStream
from raybench.nn.encoders import build_frame_encoder
from raybench.nn.fusion import create_fusion
from raybench.nn.temporal import TCN


class _OneModel(nn.Module):
    def __init__(self, out: int, cfg: dict, n_audio_features: int, k: int):
        super().__init__()
        self.face = build_frame_encoder(cfg["backbone"], cfg["visual_dim"], cfg["weights"], cfg["cnn_width"])
        self.v_tcn = TCN(cfg["visual_dim"], [cfg["visual_channels"]] * cfg["levels"], cfg["kernel"], cfg["dropout"])
        streams, dims = nn.ModuleList(), []
        for s in cfg["audio_streams"]:
            enc = MFCCStream(n_audio_features, k) if s == "mfcc" else VGGishStream(n_audio_features, k)
            streams.append(nn.ModuleDict({
                "enc": enc, "tcn": TCN(enc.out_dim, [cfg["audio_channels"]] * cfg["levels"], cfg["kernel"],
                                       cfg["dropout"])}))
            dims.append(cfg["audio_channels"])
        self.streams = streams
        leader = cfg["visual_channels"]
        self.fusion_name = cfg["fusion"]
        if cfg["fusion"] == "leader_follower":
            self.fusion = create_fusion("leader_follower", [leader, *dims], None, d=cfg["attention_dim"])
            z_dim = self.fusion.z_dim
        else:
            self.fusion = create_fusion(cfg["fusion"], [leader, *dims], leader)
            z_dim = leader
        self.head = nn.Linear(z_dim, out)

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        v = self.v_tcn(self.face(video))  # (B, T, 128)
        a = [s["tcn"](s["enc"](audio)) for s in self.streams]  # each (B, T, 32)
        z = self.fusion([v, *a])  # (B, T, 224) for leader_follower
        return torch.tanh(self.head(z))  # (B, T, out)


@register_method("zhang2021")
class Zhang2021(Method):
    tasks = ("continuous",)
    defaults = {
        "backbone": "small_cnn",  # the paper: IR-ResNet50 (pass `weights:` to load a checkpoint)
        "weights": None,
        "cnn_width": 16,
        "visual_dim": 512,
        "visual_channels": 128,
        "audio_channels": 32,
        "levels": 4,
        "kernel": 5,
        "dropout": 0.1,
        "attention_dim": 32,
        "audio_streams": ["mfcc", "vggish"],
        "fusion": "leader_follower",  # or concat
        "per_dimension": False,
        "crop": 40 / 48,  # random crop fraction in training (40 of 48 px in the paper)
        "flip": True,
    }

    def __init__(self, task, num_outputs, n_audio_features=40, audio_steps_per_frame=4, **cfg):
        super().__init__(task, num_outputs)
        for s in cfg["audio_streams"]:
            if s not in ("mfcc", "vggish"):
                raise ValueError(f"zhang2021: audio_streams entries must be 'mfcc' or 'vggish', got {s!r}")
        self.cfg = cfg
        n = num_outputs if cfg["per_dimension"] else 1
        out = 1 if cfg["per_dimension"] else num_outputs
        self.models = nn.ModuleList(_OneModel(out, cfg, n_audio_features, audio_steps_per_frame) for _ in range(n))

    def _augment(self, video: torch.Tensor) -> torch.Tensor:
        """Random crop + flip shared by the whole window (training); centre crop (evaluation)."""
        B, T, C, H, W = video.shape
        ch, cw = max(8, int(round(H * self.cfg["crop"]))), max(8, int(round(W * self.cfg["crop"])))
        if self.training:
            out = []
            for b in range(B):
                y = int(torch.randint(0, H - ch + 1, ()))
                x = int(torch.randint(0, W - cw + 1, ()))
                clip = video[b, :, :, y : y + ch, x : x + cw]
                if self.cfg["flip"] and bool(torch.rand(()) < 0.5):
                    clip = clip.flip(-1)
                out.append(clip)
            return torch.stack(out)  # (B, T, C, ch, cw)
        y, x = (H - ch) // 2, (W - cw) // 2
        return video[..., y : y + ch, x : x + cw]

    def forward(self, batch):
        video = self._augment(batch["video"])
        va = torch.cat([m(video, batch["audio"]) for m in self.models], -1)  # (B, T, 2)
        return {"va": va}


def ccc_centering(fold_preds: list[np.ndarray]) -> np.ndarray:
    """Merge predictions of several folds on the same frames ("CCC centering", Zhang et al. 2021).

    For fold predictions p_i (N,): r_i = mean CCC of p_i against the other folds;
    w = sum_i r_i mean(p_i) / sum_i r_i;  final = mean_i (p_i - mean(p_i) + w), clipped to [-1, 1].
    """
    from raybench.train.losses import ccc

    P = [np.asarray(p, np.float64) for p in fold_preds]
    if len(P) == 1:
        return np.clip(P[0], -1, 1)
    t = [torch.from_numpy(p)[:, None] for p in P]
    r = np.array([np.mean([float(ccc(t[i], t[j])[0]) for j in range(len(P)) if j != i]) for i in range(len(P))])
    r = np.clip(np.nan_to_num(r), 0, None)  # a fold that agrees with none gets no weight
    means = np.array([p.mean() for p in P])
    w = float((r * means).sum() / r.sum()) if r.sum() > 0 else float(means.mean())
    return np.clip(np.mean([p - m + w for p, m in zip(P, means)], 0), -1, 1)
