"""zhou2019: emotion features and fusion strategies (Zhou et al., EmotiW 2019).

METHODS.md section 1: a per-frame face CNN (512-d per frame; IR-50 fine-tuned on
AffectNet in the paper, here a from-scratch CNN or any timm backbone with
``weights:``); an AlexNet-like 2-D CNN over the audio time-frequency image whose
last conv map gives R region vectors; intra-modal attention pooling of frames
and of audio regions (``attention``: self | relation | transformer); cross-modal
fusion ``concat`` ([a; v] -> FC) or ``fbp`` (factorized bilinear pooling, MFB,
k = 5, o = 512). Cross-entropy.

The audio feature (speech spectrogram vs log-Mel) is a preprocessing setting:
``data.audio.features: spectrogram | logmel`` (sweepable; each value builds its
own clip store). ``deltas: true`` stacks the features with their deltas and
delta-deltas as 3 channels (the paper's log-Mel input).
"""

from __future__ import annotations

import torch.nn as nn

from raybench.methods.base import Method, register_method
from raybench.nn.attention import AttentionPool
from raybench.nn.audio import AudioRegionCNN, with_deltas
from raybench.nn.encoders import build_frame_encoder
from raybench.nn.fusion import create_fusion


@register_method("zhou2019")
class Zhou2019(Method):
    tasks = ("categorical",)
    defaults = {
        "backbone": "small_cnn",  # the paper: IR-50 (LResNet50E-IR): backbone ir50 with `weights:` a checkpoint
        "weights": None,
        "cnn_width": 16,
        "visual_dim": 512,
        "audio_dim": 256,
        "attention": "self",  # self | relation | transformer
        "fusion": "fbp",  # concat | fbp
        "fbp_k": 5,
        "fbp_o": 512,
        "hidden": 256,
        "deltas": True,
        "dropout": 0.5,
    }

    def __init__(self, task, num_outputs, n_audio_features=40, audio_steps_per_frame=4, **cfg):
        super().__init__(task, num_outputs)
        if cfg["fusion"] not in ("concat", "fbp"):
            raise ValueError(f"zhou2019: fusion must be 'concat' or 'fbp', got {cfg['fusion']!r}")
        self.cfg = cfg
        self.face = build_frame_encoder(cfg["backbone"], cfg["visual_dim"], cfg["weights"], cfg["cnn_width"])
        self.v_pool = AttentionPool(cfg["visual_dim"], cfg["attention"], cfg["dropout"])
        self.audio = AudioRegionCNN(3 if cfg["deltas"] else 1, cfg["audio_dim"])
        self.a_pool = AttentionPool(cfg["audio_dim"], cfg["attention"], cfg["dropout"])
        dims = [self.a_pool.out_dim, self.v_pool.out_dim]
        if cfg["fusion"] == "fbp":
            # logits = W z, z the power- and L2-normalised bilinear vector
            self.fusion = create_fusion("fbp", dims, num_outputs, k=cfg["fbp_k"], o=cfg["fbp_o"],
                                        dropout=cfg["dropout"])
            self.head = nn.Identity()
        else:
            self.fusion = create_fusion("concat", dims, cfg["hidden"])
            self.head = nn.Sequential(nn.Dropout(cfg["dropout"]), nn.Linear(cfg["hidden"], num_outputs))

    def forward(self, batch):
        mask = batch.get("mask")
        v = self.v_pool(self.face(batch["video"]), mask)  # (B, Dv): frames (B, T, 512) pooled
        audio = batch["audio"]  # (B, T*k, F)
        img = with_deltas(audio) if self.cfg["deltas"] else audio.unsqueeze(1)  # (B, C, T*k, F)
        a = self.a_pool(self.audio(img))  # (B, Da): regions (B, R, 256) pooled
        return {"logits": self.head(self.fusion([a, v]))}  # (B, C)
