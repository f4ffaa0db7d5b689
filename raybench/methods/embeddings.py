"""Methods on frozen embeddings (``data.audio.encoder``, ``data.video.encoder``): the "pretrained
features + a small model" protocol of EmoBox, MERBench and SUPERB. ``audio_embedding`` reads a speech
encoder's embeddings alone; ``embedding_fusion`` fuses them per frame with a face CNN trained from
scratch (``fusion``: any of ``raybench.nn.fusion``); ``video_embedding`` reads an image encoder's
per-frame embeddings alone; ``frozen_fusion`` fuses both embeddings. The speech embeddings are the
``audio_emb`` input (the clip store's audio features stay the ``audio`` input of the other methods).

With ``data.audio.encoder.layer: all`` an audio step holds every hidden state of the encoder side by
side; the methods learn one weight per layer (softmax-normalised, summed: SUPERB's weighted sum) and
project the sum. The encoder's steps of one video frame are averaged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import Field

from raybench.methods.base import FusionName, Method, MethodOptions, register_method
from raybench.methods.baselines import _Head
from raybench.nn.audio import LayerWeightedAudio
from raybench.nn.encoders import FrameCNN, TemporalConv
from raybench.nn.fusion import create_fusion


class EmbeddingOptions(MethodOptions):
    dim: int = Field(128, ge=1)
    temporal_layers: int = Field(1, ge=0)
    dropout: float = Field(0.2, ge=0, lt=1)


class EmbeddingFusionOptions(EmbeddingOptions):
    fusion: FusionName = "concat"
    cnn_width: int = Field(16, ge=1)


def speech(n_features: int, layers: int, k: int, dim: int, dropout: float) -> LayerWeightedAudio:
    """The speech-embedding branch; an error naming the key when there are no speech embeddings."""
    if n_features < 1:
        raise ValueError("this method reads speech embeddings: set data.audio.encoder.path (a local speech encoder)")
    return LayerWeightedAudio(n_features, layers, k, dim, dropout)


class FrameEmbedding(nn.Module):
    """An image encoder's per-frame embeddings (B, T, D), as stored -> (B, T, dim): layer normalisation
    (the pipeline does not standardise them), a linear projection with ReLU and dropout."""

    def __init__(self, width: int, dim: int, dropout: float):
        super().__init__()
        if width < 1:
            raise ValueError("this method reads face embeddings: set data.video.encoder.path (a local image encoder)")
        self.proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, dim), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


@register_method("audio_embedding")
class AudioEmbedding(Method):
    """Frozen audio embeddings (or features) -> layer weights -> projection -> temporal convolutions -> head."""

    Options = EmbeddingOptions
    inputs = ("audio_emb",)

    def __init__(self, task, num_outputs, opts: EmbeddingOptions, n_audio_emb_features=0, audio_emb_steps_per_frame=1,
                 audio_layers=1):
        super().__init__(task, num_outputs, opts)
        self.audio = speech(n_audio_emb_features, audio_layers, audio_emb_steps_per_frame, opts.dim, opts.dropout)
        self.temporal = TemporalConv(opts.dim, opts.temporal_layers, dropout=opts.dropout)
        self.head = _Head(task, opts.dim, num_outputs, opts.dropout)

    def forward(self, batch):
        mask = batch.get("mask")
        return self.head(self.temporal(self.audio(batch["audio_emb"]), mask), mask)


@register_method("embedding_fusion")
class EmbeddingFusion(Method):
    """Frozen audio embeddings (as ``audio_embedding``) and a face CNN trained from scratch, fused per
    frame (``fusion``), temporal convolutions, head."""

    Options = EmbeddingFusionOptions
    inputs = ("video", "audio_emb")

    def __init__(self, task, num_outputs, opts: EmbeddingFusionOptions, n_audio_emb_features=0,
                 audio_emb_steps_per_frame=1, audio_layers=1):
        super().__init__(task, num_outputs, opts)
        dim = opts.dim
        self.audio = speech(n_audio_emb_features, audio_layers, audio_emb_steps_per_frame, dim, opts.dropout)
        self.video = FrameCNN(dim, opts.cnn_width)
        self.fusion = create_fusion(opts.fusion, [dim, dim], dim)
        self.temporal = TemporalConv(dim, opts.temporal_layers, dropout=opts.dropout)
        self.head = _Head(task, dim, num_outputs, opts.dropout)

    def forward(self, batch):
        mask = batch.get("mask")
        z = self.fusion([self.video(batch["video"]), self.audio(batch["audio_emb"])], mask)
        return self.head(self.temporal(z, mask), mask)


@register_method("video_embedding")
class VideoEmbedding(Method):
    """Frozen per-frame face embeddings (``data.video.encoder``) -> projection -> temporal convolutions -> head."""

    Options = EmbeddingOptions
    inputs = ("video_emb",)

    def __init__(self, task, num_outputs, opts: EmbeddingOptions, video_emb_dim=0):
        super().__init__(task, num_outputs, opts)
        self.video = FrameEmbedding(video_emb_dim, opts.dim, opts.dropout)
        self.temporal = TemporalConv(opts.dim, opts.temporal_layers, dropout=opts.dropout)
        self.head = _Head(task, opts.dim, num_outputs, opts.dropout)

    def forward(self, batch):
        mask = batch.get("mask")
        return self.head(self.temporal(self.video(batch["video_emb"]), mask), mask)


class FrozenFusionOptions(EmbeddingOptions):
    fusion: FusionName = "concat"


@register_method("frozen_fusion")
class FrozenFusion(Method):
    """Both modalities as frozen embeddings (MERBench's protocol): per-frame face embeddings
    (``data.video.encoder``) and speech embeddings (as ``audio_embedding``), each projected,
    fused per frame (``fusion``), temporal convolutions, head."""

    Options = FrozenFusionOptions
    inputs = ("video_emb", "audio_emb")

    def __init__(self, task, num_outputs, opts: FrozenFusionOptions, n_audio_emb_features=0, audio_emb_steps_per_frame=1,
                 audio_layers=1, video_emb_dim=0):
        super().__init__(task, num_outputs, opts)
        dim = opts.dim
        self.video = FrameEmbedding(video_emb_dim, dim, opts.dropout)
        self.audio = speech(n_audio_emb_features, audio_layers, audio_emb_steps_per_frame, dim, opts.dropout)
        self.fusion = create_fusion(opts.fusion, [dim, dim], dim)
        self.temporal = TemporalConv(dim, opts.temporal_layers, dropout=opts.dropout)
        self.head = _Head(task, dim, num_outputs, opts.dropout)

    def forward(self, batch):
        mask = batch.get("mask")
        z = self.fusion([self.video(batch["video_emb"]), self.audio(batch["audio_emb"])], mask)
        return self.head(self.temporal(z, mask), mask)
