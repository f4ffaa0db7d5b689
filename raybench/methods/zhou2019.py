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
own clip store). ``deltas``: ``auto`` (default) stacks log-Mel features with
their deltas and delta-deltas as 3 channels (the paper's log-Mel input) and
gives the spectrogram alone (its other input); ``true`` / ``false`` force it
(before 2026-12-04 deltas were added to the spectrogram too).
"""

from __future__ import annotations

from typing import Literal

import torch.nn as nn
from pydantic import Field

from raybench.methods.embeddings import speech
from raybench.methods.base import FaceEncoderOptions, Method, register_method
from raybench.nn.attention import AttentionPool
from raybench.nn.audio import AudioRegionCNN, with_deltas
from raybench.nn.encoders import build_frame_encoder, step_mask
from raybench.nn.fusion import create_fusion


class Options(FaceEncoderOptions):
    # backbone: the paper: IR-50 (LResNet50E-IR): backbone ir50 with `weights:` a checkpoint
    visual_dim: int = Field(512, ge=1)
    audio_dim: int = Field(256, ge=1)
    attention: Literal["self", "relation", "transformer"] = "self"
    # relation attention in evaluation: authors = the FAN code's (numerator weighted by a_i alone, see
    # AttentionPool); as_trained = the training formula
    relation_eval: Literal["authors", "as_trained"] = "authors"
    fusion: Literal["concat", "fbp"] = "fbp"
    fbp_k: int = Field(5, ge=1)
    fbp_o: int = Field(512, ge=1)
    hidden: int = Field(256, ge=1)
    # the audio image's channels: deltas and delta-deltas beside the features (3 channels) or the features
    # alone; auto: as METHODS.md's two inputs, deltas for data.audio.features logmel, none for the
    # spectrogram (or any other features)
    deltas: Literal["auto"] | bool = "auto"
    # cnn: the AlexNet-like CNN over the time-frequency image (the paper); embeddings: a speech encoder's
    # frozen embeddings (data.audio.encoder), one vector per frame, attention-pooled over the frames
    audio_backbone: Literal["cnn", "embeddings"] = "cnn"
    dropout: float = Field(0.5, ge=0, lt=1)

@register_method("zhou2019")
class Zhou2019(Method):
    tasks = ("categorical",)
    Options = Options

    def __init__(self, task, num_outputs, opts: Options, n_audio_features=40, audio_steps_per_frame=4, video_emb_dim=0,
                 audio_layers=1, n_audio_emb_features=0, audio_emb_steps_per_frame=1, audio_features="logmel"):
        super().__init__(task, num_outputs, opts)
        self.deltas = audio_features == "logmel" if opts.deltas == "auto" else opts.deltas
        self.face = build_frame_encoder(opts.backbone, opts.visual_dim, opts.weights, opts.cnn_width,
                                        in_dim=video_emb_dim)
        self.v_pool = AttentionPool(opts.visual_dim, opts.attention, opts.dropout, relation_eval=opts.relation_eval)
        self.audio = (AudioRegionCNN(3 if self.deltas else 1, opts.audio_dim) if opts.audio_backbone == "cnn" else
                      speech(n_audio_emb_features, audio_layers, audio_emb_steps_per_frame, opts.audio_dim, 0.0))
        self.a_pool = AttentionPool(opts.audio_dim, opts.attention, opts.dropout, relation_eval=opts.relation_eval)
        dims = [self.a_pool.out_dim, self.v_pool.out_dim]
        if opts.fusion == "fbp":
            # logits = W z, z the power- and L2-normalised bilinear vector
            self.fusion = create_fusion("fbp", dims, num_outputs, k=opts.fbp_k, o=opts.fbp_o,
                                        dropout=opts.dropout)
            self.head = nn.Identity()
        else:
            self.fusion = create_fusion("concat", dims, opts.hidden)
            self.head = nn.Sequential(nn.Dropout(opts.dropout), nn.Linear(opts.hidden, num_outputs))

    def forward(self, batch):
        mask = batch.get("mask")
        face = batch[self.face_key]  # frames (B, T, 3, H, W), or their embeddings (B, T, E)
        v = self.v_pool(self.face(face), mask)  # (B, Dv): frames (B, T, 512) pooled
        audio = batch[self.audio_key]  # (B, T*k, F): features, or speech embeddings
        if self.opts.audio_backbone == "embeddings":  # one region per frame: its embedding
            regions, region_mask = self.audio(audio), mask  # (B, T, Da), (B, T)
        else:
            steps = step_mask(mask, audio.shape[1] // face.shape[1])  # (B, T*k): padding masked out
            img = with_deltas(audio, steps) if self.deltas else audio.unsqueeze(1)  # (B, C, T*k, F)
            regions, region_mask = self.audio(img, steps)  # (B, R, 256), (B, R)
        a = self.a_pool(regions, region_mask)  # (B, Da)
        return {"logits": self.head(self.fusion([a, v]))}  # (B, C)
