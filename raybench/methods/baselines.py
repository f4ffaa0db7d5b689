"""Baselines: one modality (``audio_only``, ``video_only``), feature-level fusion
(``av_fusion``) and score averaging (``late_fusion``), all on the same encoders,
so the gain of fusion is measurable in one table.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import Field

from raybench.methods.base import FusionName, Method, MethodOptions, register_method
from raybench.nn.encoders import AudioConv, FrameCNN, TemporalConv, masked_mean
from raybench.nn.fusion import create_fusion

class CommonOptions(MethodOptions):
    dim: int = Field(128, ge=1)
    cnn_width: int = Field(16, ge=1)
    temporal_layers: int = Field(2, ge=0)
    dropout: float = Field(0.2, ge=0, lt=1)


class FusionOptions(CommonOptions):
    fusion: FusionName = "concat"


class _Head(nn.Module):
    """Per-step features (B, T, D) -> logits (B, C) (masked mean pool) or va (B, T, 2) in [-1, 1]."""

    def __init__(self, task: str, dim: int, num_outputs: int, dropout: float):
        super().__init__()
        self.task = task
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_outputs)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        if self.task == "categorical":
            return {"logits": self.fc(self.drop(masked_mean(h, mask)))}  # (B, C)
        return {"va": torch.tanh(self.fc(self.drop(h)))}  # (B, T, 2)


class _Branch(nn.Module):
    """One modality: encoder -> temporal convolutions -> (B, T, D)."""

    def __init__(self, modality: str, dim: int, cnn_width: int, temporal_layers: int, dropout: float,
                 n_audio_features: int, audio_steps_per_frame: int):
        super().__init__()
        self.modality = modality
        if modality == "video":
            self.enc = FrameCNN(dim, cnn_width)
        else:
            self.enc = AudioConv(n_audio_features, audio_steps_per_frame, dim)
        self.temporal = TemporalConv(dim, temporal_layers, dropout=dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch.get("mask")
        x = self.enc(batch["video"]) if self.modality == "video" else self.enc(batch["audio"], mask)
        return self.temporal(x, mask)  # (B, T, D)


class _Unimodal(Method):
    modality = "video"
    Options = CommonOptions

    def __init__(self, task, num_outputs, opts: CommonOptions, n_audio_features=40, audio_steps_per_frame=4):
        super().__init__(task, num_outputs, opts)
        self.branch = _Branch(self.modality, opts.dim, opts.cnn_width, opts.temporal_layers, opts.dropout,
                              n_audio_features, audio_steps_per_frame)
        self.head = _Head(task, opts.dim, num_outputs, opts.dropout)

    def forward(self, batch):
        return self.head(self.branch(batch), batch.get("mask"))


@register_method("video_only")
class VideoOnly(_Unimodal):
    """Per-frame CNN + temporal convolutions on the face video alone."""

    modality = "video"
    inputs = ("video",)


@register_method("audio_only")
class AudioOnly(_Unimodal):
    """1-D CNN on audio features + temporal convolutions, audio alone."""

    modality = "audio"
    inputs = ("audio",)


@register_method("av_fusion")
class AVFusion(Method):
    """Both branches, fused per frame (``fusion``: concat | attention), temporal convolutions, head."""

    Options = FusionOptions

    def __init__(self, task, num_outputs, opts: FusionOptions, n_audio_features=40, audio_steps_per_frame=4):
        super().__init__(task, num_outputs, opts)
        dim, dropout = opts.dim, opts.dropout
        self.video = _Branch("video", dim, opts.cnn_width, 1, dropout, n_audio_features, audio_steps_per_frame)
        self.audio = _Branch("audio", dim, opts.cnn_width, 1, dropout, n_audio_features, audio_steps_per_frame)
        self.fusion = create_fusion(opts.fusion, [dim, dim], dim)
        self.temporal = TemporalConv(dim, opts.temporal_layers, dropout=dropout)
        self.head = _Head(task, dim, num_outputs, dropout)

    def forward(self, batch):
        v = self.video(batch)  # (B, T, D)
        a = self.audio(batch)  # (B, T, D)
        mask = batch.get("mask")
        z = self.temporal(self.fusion([v, a], mask), mask)  # (B, T, D)
        return self.head(z, mask)


@register_method("late_fusion")
class LateFusion(Method):
    """Two unimodal models trained jointly; the prediction is the average of their scores."""

    Options = CommonOptions

    def __init__(self, task, num_outputs, opts: CommonOptions, n_audio_features=40, audio_steps_per_frame=4):
        super().__init__(task, num_outputs, opts)
        kw = dict(n_audio_features=n_audio_features, audio_steps_per_frame=audio_steps_per_frame)
        self.video = VideoOnly(task, num_outputs, opts, **kw)
        self.audio = AudioOnly(task, num_outputs, opts, **kw)

    def forward(self, batch):
        ov, oa = self.video(batch), self.audio(batch)
        key = "logits" if self.task == "categorical" else "va"
        return {key: (ov[key] + oa[key]) / 2, "video": ov[key], "audio": oa[key]}

    def loss(self, out, batch):
        from raybench.nn.losses import task_loss

        key = "logits" if self.task == "categorical" else "va"
        # each branch learns on its own, so the average is a true late fusion of two models
        return task_loss(self.task, {key: out["video"]}, batch) + task_loss(self.task, {key: out["audio"]}, batch)
