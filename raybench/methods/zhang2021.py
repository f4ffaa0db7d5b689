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

The face embedding (``embedding: authors``): the authors' IR-50 copy on 40 x 40 crops, its 512-d
output L2-normalised and fed to the TCN as it is (``raybench.nn.irse.AuthorsIR50``; their
checkpoint layout loads); ``projected`` puts a Linear(512, visual_dim) after face.evoLVe's IR-50 at
112 x 112 instead. The TCNs drop whole channels (``channel_dropout``, their ``Dropout2d``), and the
optimizer is Adam with the weight decay as an L2 term (``Method.optimizer``; ``train.optimizer``
overrides it).

Gradual unfreezing, as the authors' code does it (``base/parameter_control.py``,
``base/trainer.py``; ``unfreeze: authors``, the default). A pretrained face backbone (``weights:``)
starts frozen (``freeze_backbone``; null = frozen exactly when weights are loaded). Releases come at
the start of epoch 0 and whenever the learning rate has fallen below ``release_below_lr`` (their
``min_learning_rate``, 1e-6: with lr 1e-5 and factor 0.1 that is after the second drop, since
1e-5 x 0.1 is a hair above 1e-6 in floating point, as in their run): the next group is released, the
best weights so far are loaded back and the optimizer and plateau schedule start again at
``train.lr``. After ``release_count`` (3) releases, the next such moment ends the trial. The
groups, for IR-50, are the authors' parameter index ranges 4-9, 163-186 and 142-162 of their
backbone (parameters in its registration order: input layer, output layer, body): the output layer,
stage 4, and the last three of stage 3's 14 units. The rest of IR-50 stays frozen. Other backbones release
:func:`raybench.nn.encoders.backbone_groups`, top first. Frozen layers get no update; their batch-norm
statistics still follow the data in training (``frozen_batchnorm: update``, the authors' code puts
the whole model in training mode) or are kept (``keep``). The authors also load the best weights
back after every epoch (``reload_best_each_epoch``).

``unfreeze: per_drop`` is raybench's earlier schedule: each learning-rate drop releases the next
``unfreeze_per_drop`` group(s) of :func:`raybench.nn.encoders.backbone_groups`, top first, nothing
else changes. The release count is part of the checkpoint.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
from pydantic import Field

from raybench.methods.embeddings import speech
from raybench.methods.base import FaceEncoderOptions, Method, register_method
from raybench.nn.audio import MFCCStream, VGGishStream, vggish_patch_frames
from raybench.nn.encoders import backbone_groups, build_frame_encoder
from raybench.nn.fusion import create_fusion
from raybench.nn.irse import AUTHORS_CROP, IR50, centre_crop_box
from raybench.nn.losses import ccc_loss, window_ccc_loss
from raybench.nn.temporal import TCN


class _OneModel(nn.Module):
    def __init__(self, out: int, opts: Options, n_audio_features: int, k: int, fps: float, video_emb_dim: int = 0,
                 audio_layers: int = 1, n_audio_emb_features: int = 0, emb_k: int = 1):
        super().__init__()
        self.face = build_frame_encoder(opts.backbone, opts.visual_dim, opts.weights, opts.cnn_width, opts.embedding,
                                        in_dim=video_emb_dim)
        cd = opts.channel_dropout
        self.v_tcn = TCN(self.face.out_dim, [opts.visual_channels] * opts.levels, opts.kernel, opts.dropout, cd)
        streams, dims = nn.ModuleList(), []
        for s in opts.audio_streams:
            enc = (MFCCStream(n_audio_features, k) if s == "mfcc"
                   else speech(n_audio_emb_features, audio_layers, emb_k, 128, 0.0) if s == "embeddings"
                   else VGGishStream(n_audio_features, k, patch_frames=vggish_patch_frames(fps)))  # 0.96 s
            streams.append(nn.ModuleDict({
                "enc": enc, "tcn": TCN(enc.out_dim, [opts.audio_channels] * opts.levels, opts.kernel,
                                       opts.dropout, cd)}))
            dims.append(opts.audio_channels)
        self.streams = streams
        self.stream_keys = ["audio_emb" if s == "embeddings" else "audio" for s in opts.audio_streams]
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

    def forward(self, video: torch.Tensor, audio: dict[str, torch.Tensor], mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        """``audio``: the batch's audio inputs by key (``audio`` features, ``audio_emb`` speech embeddings)."""
        # the TCNs are causal (a frame sees only earlier ones) and the fusion works per frame, so
        # padding after a clip reaches no valid frame; the audio streams mask it themselves
        v = self.v_tcn(self.face(video))  # (B, T, 128)
        a = [s["tcn"](s["enc"](audio[key], mask)) for s, key in zip(self.streams, self.stream_keys)]  # each (B, T, 32)
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
    # mfcc, vggish (trained here, as the paper's streams), embeddings: a speech encoder's frozen embeddings
    # (data.audio.encoder) projected to VGGish's 128 per frame, in place of the paper's pretrained VGGish
    audio_streams: list[Literal["mfcc", "vggish", "embeddings"]] = Field(["mfcc", "vggish"], min_length=1)
    fusion: Literal["leader_follower", "concat"] = "leader_follower"
    per_dimension: bool = True  # one model per dimension (the authors train valence and arousal apart)
    crop: float = Field(AUTHORS_CROP, gt=0, le=1)  # random crop fraction in training (40 of 48 px in the paper)
    flip: bool = True
    # the face backbone's own embedding L2-normalised, no projection (the authors), or Linear(512, visual_dim)
    embedding: Literal["authors", "projected"] = "authors"
    channel_dropout: bool = True  # the TCNs drop whole channels (the authors' Dropout2d), else elements
    freeze_backbone: bool | None = None  # null: frozen at first when `weights` is set (the paper); true | false
    # gradual unfreezing as the authors' code (see the module docstring) or one release per LR drop
    unfreeze: Literal["authors", "per_drop"] = "authors"
    release_count: int = Field(3, ge=0)  # authors: releases before the next release moment ends the trial
    release_below_lr: float = Field(1e-6, gt=0)  # authors: a release when the LR is below this
    frozen_batchnorm: Literal["update", "keep"] = "update"  # frozen layers' BN statistics in training
    reload_best_each_epoch: bool = True  # the authors load the best weights back after every epoch
    unfreeze_per_drop: int = Field(1, ge=0)  # per_drop: groups released at each LR drop (0: stay frozen)
    # 1 - CCC per window and dimension, averaged (the authors' code), or one CCC over the batch's frames
    loss: Literal["window", "pooled"] = "window"
    output: Literal["linear", "tanh"] = "linear"  # the authors' regressor is linear

# zhang2021's authors' release groups of their IR-50 (ParamControl.init_module_list, mode "ir"):
# index ranges into the backbone's parameters (input layer, output layer, body), in release order
AUTHORS_IR50_GROUPS = ((4, 10), (163, 187), (142, 163))


@register_method("zhang2021")
class Zhang2021(Method):
    tasks = ("continuous",)
    Options = Options
    optimizer = "adam"  # the authors' Adam(weight_decay=1e-3): L2 in the gradient

    @classmethod
    def inputs_for(cls, opts: Options) -> tuple[str, ...]:
        # the audio inputs its streams read: the features (mfcc, vggish), the speech embeddings (embeddings)
        audio_in = tuple(dict.fromkeys("audio_emb" if s == "embeddings" else "audio" for s in opts.audio_streams))
        return tuple(m for m in super().inputs_for(opts) if m != "audio") + audio_in

    def __init__(self, task, num_outputs, opts: Options, n_audio_features=40, audio_steps_per_frame=4, fps=10.0,
                 video_emb_dim=0, audio_layers=1, n_audio_emb_features=0, audio_emb_steps_per_frame=1):
        super().__init__(task, num_outputs, opts)
        if opts.backbone == "embeddings" and opts.freeze_backbone:
            raise ValueError("zhang2021: freeze_backbone with backbone embeddings: the image encoder is frozen "
                             "already (it ran once in the embedding stage)")
        for s in opts.audio_streams:
            if s not in ("mfcc", "vggish", "embeddings"):
                raise ValueError(f"zhang2021: audio_streams entries must be 'mfcc', 'vggish' or 'embeddings', got {s!r}")
        n = num_outputs if opts.per_dimension else 1
        out = 1 if opts.per_dimension else num_outputs
        self.models = nn.ModuleList(_OneModel(out, opts, n_audio_features, audio_steps_per_frame, fps, video_emb_dim,
                                              audio_layers, n_audio_emb_features, audio_emb_steps_per_frame)
                                    for _ in range(n))
        fb = opts.freeze_backbone
        if fb is not None and not isinstance(fb, bool):
            raise ValueError(f"zhang2021: freeze_backbone must be true, false or null, got {fb!r}")
        upd = opts.unfreeze_per_drop
        if not isinstance(upd, int) or isinstance(upd, bool) or upd < 0:
            raise ValueError(f"zhang2021: unfreeze_per_drop must be an integer >= 0, got {upd!r}")
        # per model: the backbone's parameters (the pretrained part) and its release groups, in order
        self._backbone: list[list[nn.Parameter]] = []
        self._groups: list[list[list[nn.Parameter]]] = []
        for m in self.models:
            net = getattr(m.face, "backbone", None)
            if opts.unfreeze == "authors" and isinstance(net, IR50):
                # their Backbone registers input_layer, output_layer, then body: parameters in that order
                params = [*net.input_layer.parameters(), *net.output_layer.parameters(), *net.body.parameters()]
                groups = [params[a:b] for a, b in AUTHORS_IR50_GROUPS]
            else:
                groups = [[p for mod in g for p in mod.parameters()] for g in backbone_groups(m.face)]
                params = [p for g in groups for p in g]
            self._backbone.append(params)
            self._groups.append(groups)
        self._frozen_at_start = bool(opts.weights) if fb is None else fb
        n_groups = len(self._groups[0])
        # backbone groups released so far; a buffer, so checkpoints keep it. Nothing frozen: all released
        self.register_buffer("released_groups", torch.tensor(0 if self._frozen_at_start else n_groups))
        self.reload_best_each_epoch = opts.reload_best_each_epoch

    def frozen_parameters(self) -> list[nn.Parameter]:
        """Parameters that get no update now (the training loop drops their gradients)."""
        if not self._frozen_at_start:
            return []
        k = int(self.released_groups)
        out = []
        for params, groups in zip(self._backbone, self._groups):
            free = {id(p) for g in groups[:k] for p in g}
            out += [p for p in params if id(p) not in free]
        return out

    def epoch_start(self, epoch: int, lr: float) -> str | None:
        """The authors' release moments (``unfreeze: authors``), asked by the loop before each epoch:
        ``"release"`` (the loop loads the best weights back, calls :meth:`release_next` and restarts
        the optimizer and schedule), ``"stop"`` (no release left: the trial ends) or None."""
        if self.opts.unfreeze != "authors" or not self._frozen_at_start or self.opts.release_count == 0:
            return None
        if epoch == 0 or lr < self.opts.release_below_lr:
            done = int(self.released_groups)
            return "release" if done < min(self.opts.release_count, len(self._groups[0])) else "stop"
        return None

    def release_next(self) -> None:
        self.released_groups.fill_(min(len(self._groups[0]), int(self.released_groups) + 1))
        self.train(self.training)

    def restore_weights(self, state: dict) -> None:
        """Load weights (the best so far) and keep the release count."""
        n = int(self.released_groups)
        self.load_state_dict(state)
        self.released_groups.fill_(n)
        self.train(self.training)

    def on_lr_drop(self) -> None:
        """``unfreeze: per_drop``: release the next group(s) of backbone layers (called by the loop at
        each LR drop)."""
        if self.opts.unfreeze != "per_drop":
            return
        n = len(self._groups[0])
        self.released_groups.fill_(min(n, int(self.released_groups) + int(self.opts.unfreeze_per_drop)))
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.opts.frozen_batchnorm == "keep":
            frozen = {id(p) for p in self.frozen_parameters()}
            for m in self.models:
                for mod in m.face.modules():
                    if isinstance(mod, nn.modules.batchnorm._BatchNorm) and id(mod.weight) in frozen:
                        mod.eval()  # frozen layers keep their batch-norm statistics
        return self

    def _augment(self, video: torch.Tensor) -> torch.Tensor:
        """Random crop + flip shared by the whole window (training); centre crop (evaluation)."""
        B, T, C, H, W = video.shape
        y0, x0, ch, cw = centre_crop_box(H, W, self.opts.crop)
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
        return video[..., y0 : y0 + ch, x0 : x0 + cw]

    def loss(self, out, batch):
        """1 - CCC per window and dimension, averaged over the batch's windows (``loss: window``, the
        authors' CCCLoss), or over all the batch's frames pooled (``loss: pooled``). With one model per
        dimension, each model's loss is its own dimension's (the losses are summed over the
        dimensions, not averaged), so each model gets the gradient the authors' single-dimension
        run gives it."""
        fn = ccc_loss if self.opts.loss == "pooled" else window_ccc_loss
        pred, gold, mask = out["va"], batch["va"], batch.get("mask")
        if not self.opts.per_dimension:
            return fn(pred, gold, mask)
        return sum(fn(pred[..., d : d + 1], gold[..., d : d + 1], mask) for d in range(pred.shape[-1]))

    def forward(self, batch):
        # with backbone embeddings the frames were encoded once, before training: no crop or flip
        video = self._augment(batch["video"]) if self.face_key == "video" else batch["video_emb"]
        audio = {k: batch[k] for k in ("audio", "audio_emb") if k in batch}
        va = torch.cat([m(video, audio, batch.get("mask")) for m in self.models], -1)  # (B, T, 2)
        return {"va": va}
