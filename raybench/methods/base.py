"""What a method is: an ``nn.Module`` with declared tasks, config keys and inputs."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import torch
import torch.nn as nn
from pydantic import AfterValidator, Field

from raybench.registry import METHODS, did_you_mean
from raybench.schema import MethodOptions


def _backbone(v: str) -> str:
    if v in ("small_cnn", "ir50", "embeddings"):
        return v
    import timm

    names = timm.list_models()
    if v not in names:
        raise ValueError(f"unknown backbone {v!r}{did_you_mean(v, ['small_cnn', 'ir50', 'embeddings', *names])}; use "
                         "small_cnn, ir50, embeddings or a timm model name")
    return v


def _fusion(v: str) -> str:
    from raybench.nn.fusion import FUSIONS

    if v not in FUSIONS:
        raise ValueError(FUSIONS.unknown_message(v))
    return v


# small_cnn | ir50 | embeddings (an image encoder's frozen per-frame embeddings, data.video.encoder) | a timm architecture
Backbone = Annotated[str, AfterValidator(_backbone)]
FusionName = Annotated[str, AfterValidator(_fusion)]  # a name in raybench.nn.fusion.FUSIONS


class FaceEncoderOptions(MethodOptions):
    """The per-frame face encoder keys the published methods share (``nn.encoders.build_frame_encoder``):
    from scratch by default; the papers' pretrained backbones load from ``weights`` (a local path)."""

    backbone: Backbone = "small_cnn"
    weights: str | None = None
    cnn_width: int = Field(16, ge=1)  # small_cnn's width


def _audio_key(opts: MethodOptions) -> str:
    return "audio_emb" if getattr(opts, "audio_backbone", None) == "embeddings" else "audio"


def _face_key(opts: MethodOptions) -> str:
    return "video_emb" if getattr(opts, "backbone", None) == "embeddings" else "video"


class Method(nn.Module):
    """Base class. ``forward(batch) -> {"logits": (B, C)}`` or ``{"va": (B, T, 2)}``."""

    tasks: ClassVar[tuple[str, ...]] = ("categorical", "continuous")
    Options: ClassVar[type[MethodOptions]] = MethodOptions  # the method's keys; a subclass declares its own
    defaults: ClassVar[dict[str, Any]] = {}  # Options' defaults as a dict (set from Options)
    needs_flow: ClassVar[bool] = False
    # the modalities its forward reads (batch keys): the input pipeline reads and sends only these
    inputs: ClassVar[tuple[str, ...]] = ("video", "audio")
    method_name: ClassVar[str] = ""  # set by register_method
    optimizer: ClassVar[str] = "adamw"  # what train.optimizer: null uses
    # the data's shape, given by the training loop: a method takes the ones its __init__ names
    # (audio_layers: the encoder layers an audio step holds side by side, data.audio.encoder.layer: all;
    # video_emb_dim: the width of an image encoder's per-frame embeddings, data.video.encoder; 0: none)
    # n_audio_emb_features, audio_emb_steps_per_frame: a speech encoder's embeddings (audio_emb), 0: none)
    # audio_features: data.audio.features (logmel, spectrogram, ...)
    DATA_KEYS: ClassVar[tuple[str, ...]] = ("n_audio_features", "audio_steps_per_frame", "fps", "audio_layers",
                                            "video_emb_dim", "n_audio_emb_features", "audio_emb_steps_per_frame",
                                            "audio_features")

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.defaults = cls.Options().model_dump(by_alias=True, exclude={"name"})

    def __init__(self, task: str, num_outputs: int, opts: MethodOptions | None = None):
        super().__init__()
        self.task = task
        self.num_outputs = num_outputs
        self.opts = opts if opts is not None else self.Options()  # the method's typed keys
        self.inputs = type(self).inputs_for(self.opts)

    @classmethod
    def inputs_for(cls, opts: MethodOptions) -> tuple[str, ...]:
        """The batch keys a method with these options reads (without building it: the sweep reserves
        the memory of what a trial holds before the trial starts). ``backbone: embeddings``: the face
        embeddings, not the frames; ``audio_backbone: embeddings``: the speech embeddings, not the audio
        features."""
        swap = {"video": _face_key(opts), "audio": _audio_key(opts)}
        return tuple(swap.get(m, m) for m in cls.inputs)

    @property
    def audio_key(self) -> str:
        """The batch key of the audio input: ``audio`` (features), or ``audio_emb`` with ``audio_backbone:
        embeddings``."""
        return _audio_key(self.opts)

    @property
    def face_key(self) -> str:
        """The batch key of the face input: ``video`` (frames), or ``video_emb`` with ``backbone: embeddings``."""
        return _face_key(self.opts)

    @classmethod
    def options(cls, values: dict[str, Any]) -> MethodOptions:
        """The method's typed options from its ``method.*`` keys (``name`` may be among them; the
        defaults fill the rest). A ValueError lists every unknown key and bad value at once."""
        from raybench.schema import check

        name = cls.method_name
        values = {k: v for k, v in values.items() if k != "name"}
        unknown = set(values) - set(cls.defaults)
        if unknown:
            raise ValueError(f"method {name!r}: unknown keys {sorted(unknown)}; its keys: {sorted(cls.defaults)}")
        opts, problems = check(cls.Options, {**values, "name": name}, "method.", f" ({name})")
        if problems:
            raise ValueError("; ".join(problems))
        return opts

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The method's training loss (categorical: cross-entropy; continuous: 1 - CCC)."""
        from raybench.nn.losses import task_loss

        return task_loss(self.task, out, batch)




def register_method(name: str):
    def deco(cls: type[Method]) -> type[Method]:
        cls.method_name = name
        return METHODS.register(name, cls)

    return deco
