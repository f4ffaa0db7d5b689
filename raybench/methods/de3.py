"""de3: Detail-Enhanced Intra- and Inter-modal Interaction (DE-III; Shi et al., arXiv 2405.16701).

METHODS.md section 3 (code not released; forms inferred where the paper names a
module without details):

- optical flow between consecutive face crops (OpenCV Farneback, computed in the
  prepare stage: the store keeps it only when a method needs it);
- frame/flow "OV attention fusion": F_v' = LN(F_v + MHA(F_v, F_o, F_o)),
  F_o' = LN(F_o + MHA(F_o, F_v, F_v)), H_v = Linear([F_v'; F_o']);
- intra-modal enhancement: ``num_blocks`` Conformer blocks per modality;
- inter-modal enhancement: H_v += CrossAttn(H_v, H_a), H_a += CrossAttn(H_a, H_v);
  mean-pool over time -> z_v, z_a; z_f = [z_v; z_a];
- three heads (video, audio, fused): loss L_fused + lambda (L_video + L_audio),
  lambda = 0.5; the prediction is the fused head's. Continuous: per-step heads, CCC loss.

``use_flow: false`` is the paper's ablation (frames only, no flow branch).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
from pydantic import Field, field_validator

from raybench.methods.embeddings import speech
from raybench.methods.base import FaceEncoderOptions, Method, register_method
from raybench.nn.attention import ConformerBlock, CrossModalAttention
from raybench.nn.encoders import AudioConv, FrameCNN, build_frame_encoder, masked_mean
from raybench.nn.fusion import create_fusion


class Options(FaceEncoderOptions):
    dim: int = Field(128, ge=1)
    heads: int = Field(4, ge=1)
    num_blocks: int = Field(2, ge=0)
    conv_kernel: int = Field(7, ge=1)
    use_flow: bool = True
    # cnn: a 1-D CNN over the audio features, trained here; embeddings: a speech encoder's frozen
    # embeddings (data.audio.encoder), projected to dim per frame
    audio_backbone: Literal["cnn", "embeddings"] = "cnn"
    lambda_: float = Field(0.5, alias="lambda", ge=0)
    dropout: float = Field(0.1, ge=0, lt=1)

    @field_validator("conv_kernel")
    @classmethod
    def _odd(cls, v: int) -> int:  # "same" padding (kernel // 2) keeps the frame count only for an odd kernel
        if v % 2 == 0:
            raise ValueError("must be odd (the Conformer's convolution keeps the frame count)")
        return v

@register_method("de3")
class DE3(Method):
    tasks = ("categorical", "continuous")
    needs_flow = True
    Options = Options

    def __init__(self, task, num_outputs, opts: Options, n_audio_features=40, audio_steps_per_frame=4, video_emb_dim=0,
                 audio_layers=1, n_audio_emb_features=0, audio_emb_steps_per_frame=1):
        super().__init__(task, num_outputs, opts)
        d, h = opts.dim, opts.heads
        self.frames = build_frame_encoder(opts.backbone, d, opts.weights, opts.cnn_width, in_dim=video_emb_dim)
        if opts.use_flow:
            self.flow = FrameCNN(d, opts.cnn_width, in_channels=2)
            self.ov = create_fusion("cross_attention", [d, d], d, heads=h, dropout=opts.dropout)
        self.audio = (AudioConv(n_audio_features, audio_steps_per_frame, d) if opts.audio_backbone == "cnn" else
                      speech(n_audio_emb_features, audio_layers, audio_emb_steps_per_frame, d, 0.0))
        self.v_blocks = nn.ModuleList(ConformerBlock(d, h, kernel=opts.conv_kernel, dropout=opts.dropout)
                                      for _ in range(opts.num_blocks))
        self.a_blocks = nn.ModuleList(ConformerBlock(d, h, kernel=opts.conv_kernel, dropout=opts.dropout)
                                      for _ in range(opts.num_blocks))
        self.v_from_a = CrossModalAttention(d, h, opts.dropout)
        self.a_from_v = CrossModalAttention(d, h, opts.dropout)
        self.head_v = nn.Linear(d, num_outputs)
        self.head_a = nn.Linear(d, num_outputs)
        self.head_f = nn.Linear(2 * d, num_outputs)

    def forward(self, batch):
        mask = batch.get("mask")
        hv = self.frames(batch[self.face_key])  # (B, T, d)
        if self.opts.use_flow:
            if "flow" not in batch:
                raise KeyError("de3 with use_flow needs optical flow in the batch: prepare with data.flow=true")
            hv = self.ov([hv, self.flow(batch["flow"])], mask)  # (B, T, d): OV attention fusion
        ha = self.audio(batch[self.audio_key], mask)  # (B, T, d)
        for bv, ba in zip(self.v_blocks, self.a_blocks):
            hv, ha = bv(hv, mask), ba(ha, mask)  # intra-modal enhancement
        hv, ha = self.v_from_a(hv, ha, mask), self.a_from_v(ha, hv, mask)  # inter-modal, residual inside
        if self.task == "categorical":
            zv, za = masked_mean(hv, mask), masked_mean(ha, mask)  # (B, d)
            return {"logits": self.head_f(torch.cat([zv, za], -1)), "video": self.head_v(zv),
                    "audio": self.head_a(za)}
        squash = torch.tanh
        return {"va": squash(self.head_f(torch.cat([hv, ha], -1))), "video": squash(self.head_v(hv)),
                "audio": squash(self.head_a(ha))}  # (B, T, 2) each

    def loss(self, out, batch):
        from raybench.nn.losses import task_loss

        key = "logits" if self.task == "categorical" else "va"
        fused = task_loss(self.task, out, batch)
        uni = task_loss(self.task, {key: out["video"]}, batch) + task_loss(self.task, {key: out["audio"]}, batch)
        return fused + float(self.opts.lambda_) * uni
