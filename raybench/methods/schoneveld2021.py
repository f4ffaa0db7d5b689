"""schoneveld2021: distilled face CNN + VGGish-style audio CNN + recurrent fusion (PRL 2021).

METHODS.md section 2: a face CNN student per frame (its penultimate embedding is
the frame feature), optionally trained by knowledge distillation from a teacher;
a VGGish-style 2-D CNN over log-Mel patches (0.96 s, hop one video frame) ->
128-d per step; model-level fusion: per-step concatenation -> 2-layer LSTM or GRU
(hidden 256) -> a head per step (valence/arousal, loss 1 - CCC) or pooled over
time (categorical; ``pool: last | mean``).

Distillation, two ways (both optional; the paper's abstract and the team's spec describe a
student distilled first and then used as the frame feature extractor):

- a stage of its own, before training: ``python -m raybench.distill`` trains the face CNN against
  a teacher on a folder of face images (AffectNet, FEC, ...) and writes what ``weights`` loads
  (:mod:`raybench.distill`);
- joint, on the training clips' frames: ``distill_teacher`` is a TorchScript file mapping face
  frames (N, 3, H, W) in [-1, 1] to class logits (N, C_t). A per-frame student head learns from it:
  alpha T^2 KL(softmax(t/T) || softmax(s/T)) (:func:`raybench.nn.losses.distillation_loss`), plus,
  on categorical data, (1 - alpha) CE of the pooled student head on the labels, added to the task
  loss.

Without either, the student trains directly with the task loss.
"""

from __future__ import annotations

from typing import Literal

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from raybench.methods.embeddings import speech
from raybench.methods.base import FaceEncoderOptions, FusionName, Method, register_method
from raybench.nn.audio import VGGishStream, vggish_patch_frames
from raybench.nn.encoders import build_frame_encoder, masked_mean
from raybench.nn.fusion import create_fusion
from raybench.nn.losses import distillation_loss
from raybench.nn.temporal import RNN


def load_teacher(path: str, what: str = "schoneveld2021: distill_teacher") -> torch.jit.ScriptModule:
    """The teacher, frozen, on the CPU; ``what`` names the setting that gave ``path`` in errors."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{what} {str(p)!r} does not exist; expected a TorchScript "
                                "file (torch.jit.save) mapping face frames (N, 3, H, W) to logits (N, C)")
    try:
        teacher = torch.jit.load(str(p), map_location="cpu")
    except Exception as e:
        raise ValueError(f"{what} {str(p)!r} is not a TorchScript file: {e}") from None
    teacher.eval()
    for q in teacher.parameters():
        q.requires_grad_(False)
    return teacher


class Options(FaceEncoderOptions):
    # backbone: the paper: a distilled face CNN (give `weights:` for a checkpoint)
    visual_dim: int = Field(256, ge=1)
    audio_dim: int = Field(128, ge=1)
    patch_seconds: float = Field(0.96, gt=0)  # VGGish patch (0.96 s), in frames at the store's data.fps
    fusion: FusionName = "concat"
    fused_dim: int = Field(256, ge=1)
    rnn: Literal["lstm", "gru"] = "lstm"
    hidden: int = Field(256, ge=1)
    layers: int = Field(2, ge=1)
    pool: Literal["last", "mean"] = "mean"  # categorical
    dropout: float = Field(0.1, ge=0, lt=1)
    # vggish: the VGGish-style CNN over log-Mel patches (the paper's, trained here); embeddings: a speech
    # encoder's frozen embeddings (data.audio.encoder), projected to audio_dim per frame
    audio_backbone: Literal["vggish", "embeddings"] = "vggish"
    distill_teacher: str | None = None
    distill_temperature: float = Field(4.0, gt=0)
    distill_alpha: float = Field(0.5, ge=0, le=1)

@register_method("schoneveld2021")
class Schoneveld2021(Method):
    tasks = ("categorical", "continuous")
    Options = Options

    def __init__(self, task, num_outputs, opts: Options, n_audio_features=40, audio_steps_per_frame=4, fps=10.0,
                 video_emb_dim=0, audio_layers=1, n_audio_emb_features=0, audio_emb_steps_per_frame=1):
        super().__init__(task, num_outputs, opts)
        if opts.distill_teacher and opts.backbone == "embeddings":
            raise ValueError("schoneveld2021: distill_teacher distils a face CNN on frames; backbone embeddings has none")
        self.face = build_frame_encoder(opts.backbone, opts.visual_dim, opts.weights, opts.cnn_width,
                                        in_dim=video_emb_dim)
        self.audio = (VGGishStream(n_audio_features, audio_steps_per_frame, opts.audio_dim,
                                   vggish_patch_frames(fps, opts.patch_seconds)) if opts.audio_backbone == "vggish" else
                      speech(n_audio_emb_features, audio_layers, audio_emb_steps_per_frame, opts.audio_dim, 0.0))
        self.fusion = create_fusion(opts.fusion, [opts.visual_dim, opts.audio_dim], opts.fused_dim)
        self.rnn = RNN(opts.fused_dim, opts.hidden, opts.layers, opts.rnn, dropout=opts.dropout)
        self.head = nn.Sequential(nn.Dropout(opts.dropout), nn.Linear(self.rnn.out_dim, num_outputs))
        self._teacher = [load_teacher(opts.distill_teacher)] if opts.distill_teacher else []
        if self._teacher:
            with torch.no_grad():
                n_t = self._teacher[0](torch.zeros(1, 3, 32, 32)).shape[-1]
            self.student_frame = nn.Linear(opts.visual_dim, n_t)
            if task == "categorical":
                self.student_clip = nn.Linear(opts.visual_dim, num_outputs)

    def forward(self, batch):
        mask = batch.get("mask")
        v = self.face(batch[self.face_key])  # (B, T, Dv)
        a = self.audio(batch[self.audio_key], mask)  # (B, T, 128): padded audio masked out
        h = self.rnn(self.fusion([v, a], mask))  # (B, T, H): padded frames are no keys of cross_attention
        out = {}
        if self.task == "continuous":
            out["va"] = torch.tanh(self.head(h))  # (B, T, 2)
        else:
            if self.opts.pool == "last":
                last = (mask.long().sum(1) - 1).clamp_min(0) if mask is not None else torch.full(
                    (h.shape[0],), h.shape[1] - 1, device=h.device)
                pooled = h[torch.arange(h.shape[0], device=h.device), last]  # (B, H)
            else:
                pooled = masked_mean(h, mask)  # (B, H)
            out["logits"] = self.head(pooled)  # (B, C)
        if self._teacher and self.training:
            out["student_frame"] = self.student_frame(v)  # (B, T, C_t)
            if self.task == "categorical":
                out["student_clip"] = self.student_clip(masked_mean(v, mask))  # (B, C)
        return out

    def loss(self, out, batch):
        loss = super().loss(out, batch)
        if "student_frame" not in out:
            return loss
        teacher = self._teacher[0].to(batch["video"].device)
        T, alpha = float(self.opts.distill_temperature), float(self.opts.distill_alpha)
        frames = batch["video"].flatten(0, 1)  # (B*T, 3, H, W)
        with torch.no_grad():
            t_logits = teacher(frames)  # (B*T, C_t)
        s_logits = out["student_frame"].flatten(0, 1)  # (B*T, C_t)
        keep = batch["mask"].flatten() if "mask" in batch else slice(None)
        distill = alpha * distillation_loss(s_logits[keep], t_logits[keep], T)
        if "student_clip" in out:
            distill = distill + (1 - alpha) * F.cross_entropy(out["student_clip"], batch["label"])
        return loss + distill
