"""Test-time conditions for the robustness track (``eval.robustness``), applied to a model's batch
on its device, after the input pipeline's normalisation:

- ``audio_missing``: the audio input (features or speech embeddings) is zero: after standardising
  with the training set's statistics, that is the training mean, what a method sees when the track
  carries no information (none of raybench's methods has a learned missing-modality token; a method
  that had one would read the zeros as its cue).
- ``video_missing``: frames, optical flow and image embeddings are zero (frames: mid grey).
- ``video_occlusion``: the centre half of every frame (a square of half the side) is black; flow
  computed at prepare time is left as it was.
- ``video_blur``: every frame blurred with a Gaussian of sigma = 1/24 of the frame's side (2 px at
  48 px), kernel 4 sigma + 1 wide (torchvision's gaussian_blur).
- ``audio_snr20``, ``audio_snr10``, ``audio_snr0``: white Gaussian noise at that SNR (against the
  clip's mean power) added to each test clip's waveform, decoded again from its source file, and the
  audio features computed again as the store's were (``raybench.data.features.add_noise``).

A condition whose modality the method does not read (audio_missing for video_only, blur for a model
on image embeddings) is not applicable: :func:`applicable` says why, and the record names it rather
than logging the clean numbers under the condition's name.

The cross-corpus track (``eval.cross_corpus``) sees a model through :class:`SharedClasses`: its
class scores cut down to the classes the target corpus shares. Training can drop a modality the same
way the ``*_missing`` conditions do (:func:`drop_modalities`, ``train.modality_dropout``), so that a
fused model has seen them.
"""

from __future__ import annotations

from typing import Callable

import torch

CONDITIONS = ("audio_missing", "video_missing", "video_occlusion", "video_blur", "audio_snr20", "audio_snr10",
              "audio_snr0")

_READS = {"audio_missing": ("audio", "audio_emb"), "video_missing": ("video", "flow", "video_emb"),
          "video_occlusion": ("video",), "video_blur": ("video",),
          # noise on the waveform: the audio features are computed again; a speech encoder's embeddings
          # would need the encoder run again, which the track does not do
          **{f"audio_snr{n}": ("audio",) for n in (20, 10, 0)}}


def snr_db(name: str) -> float | None:
    """The SNR of an ``audio_snr<N>`` condition (white noise added to each test clip's waveform, its
    audio features computed again: ``raybench.results.evaluate_robustness``), else None."""
    return float(name[len("audio_snr"):]) if name.startswith("audio_snr") else None


def applicable(condition: str, inputs: tuple[str, ...]) -> str | None:
    """None when ``condition`` changes what a method reading ``inputs`` sees, else why not."""
    if condition not in _READS:
        raise ValueError(f"unknown robustness condition {condition!r}; known: {', '.join(CONDITIONS)}")
    if snr_db(condition) is not None and "audio_emb" in inputs:
        return "the method reads a speech encoder's embeddings, which would have to be encoded again from the noisy audio"
    if not set(_READS[condition]) & set(inputs):
        return (f"the method reads {', '.join(inputs)}, none of which {condition} changes "
                f"({', '.join(_READS[condition])})")
    return None


def _zero(keys: tuple[str, ...]) -> Callable[[dict], dict]:
    def f(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: (torch.zeros_like(v) if k in keys else v) for k, v in batch.items()}

    return f


def _occlude(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    v = batch["video"].clone()  # (B, T, 3, H, W) in [-1, 1]
    h, w = v.shape[-2:]
    v[..., h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2] = -1.0
    return {**batch, "video": v}


def _blur(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from torchvision.transforms.v2.functional import gaussian_blur  # torchvision comes with timm

    v = batch["video"]
    sigma = max(v.shape[-2:]) / 24
    k = int(4 * sigma) | 1  # odd
    b, t = v.shape[:2]
    out = gaussian_blur(v.reshape(b * t, *v.shape[2:]), [k, k], [sigma, sigma])
    return {**batch, "video": out.reshape(v.shape)}


def condition(name: str) -> Callable[[dict], dict]:
    """The batch transform of one condition."""
    applicable(name, ())  # unknown names raise
    if snr_db(name) is not None:
        raise ValueError(f"{name} changes the waveform, not the batch: the evaluation decodes the clips again")
    return {"audio_missing": _zero(_READS["audio_missing"]), "video_missing": _zero(_READS["video_missing"]),
            "video_occlusion": _occlude, "video_blur": _blur}[name]


def _droppable(inputs: tuple[str, ...], batch: dict | None = None) -> tuple[list[str], list[str]]:
    """The audio and the video keys a method reading ``inputs`` reads (of those in ``batch``, when given)."""
    return tuple([k for k in _READS[f"{m}_missing"] if k in inputs and (batch is None or k in batch)]
                 for m in ("audio", "video"))


def can_drop(inputs: tuple[str, ...]) -> bool:
    """Whether a method reading ``inputs`` reads both an audio and a video input (modality dropout
    applies to it)."""
    return all(_droppable(inputs))


def drop_modalities(batch: dict[str, torch.Tensor], p: float, inputs: tuple[str, ...],
                    generator: torch.Generator | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Modality dropout for training (``train.modality_dropout``): each window of the batch loses, with
    probability ``p``, its audio or its video (equally likely), set to zeros as the ``audio_missing`` and
    ``video_missing`` conditions set them; a method reading ``inputs`` of one modality only is left
    as it is. ``generator``: on the batch's device. Returns (the batch, the number of windows that lost
    audio and video, a tensor of 2 on the device, or None when nothing could be dropped)."""
    audio, video = _droppable(inputs, batch)
    if p <= 0 or not audio or not video:
        return batch, None
    ref = batch[audio[0]]
    b = ref.shape[0]
    u = torch.rand(b, device=ref.device, generator=generator)
    drop = u < p
    drop_audio = drop & (u < p / 2)  # the lower half of the dropped windows lose audio, the rest video
    drop_video = drop & ~drop_audio
    out = dict(batch)
    for keys, mask in ((audio, drop_audio), (video, drop_video)):
        for k in keys:
            keep = (~mask).to(batch[k].dtype).reshape(b, *([1] * (batch[k].dim() - 1)))
            out[k] = batch[k] * keep
    return out, torch.stack([drop_audio.sum(), drop_video.sum()])


class SharedClasses(torch.nn.Module):
    """``model`` with its class scores cut down to ``columns`` (the classes a target corpus shares, in
    the target's shared order): the softmax over them is the model's probabilities renormalised over
    the shared classes. Reads what ``model`` reads (``inputs``, ``needs_flow``)."""

    def __init__(self, model: torch.nn.Module, columns: list[int]):
        super().__init__()
        self.model = model
        self.inputs = getattr(model, "inputs", ("video", "audio"))
        self.needs_flow = getattr(model, "needs_flow", False)
        self.register_buffer("cols", torch.tensor(columns, dtype=torch.long))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = dict(self.model(batch))
        out["logits"] = out["logits"].index_select(-1, self.cols)
        return out
