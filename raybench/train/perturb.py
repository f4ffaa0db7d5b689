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

A condition whose modality the method does not read (audio_missing for video_only, blur for a model
on image embeddings) is not applicable: :func:`applicable` says why, and the record names it rather
than logging the clean numbers under the condition's name. Noise on the waveform (an SNR) would need
the audio decoded again; it is not here.
"""

from __future__ import annotations

from typing import Callable

import torch

CONDITIONS = ("audio_missing", "video_missing", "video_occlusion", "video_blur")

_READS = {"audio_missing": ("audio", "audio_emb"), "video_missing": ("video", "flow", "video_emb"),
          "video_occlusion": ("video",), "video_blur": ("video",)}


def applicable(condition: str, inputs: tuple[str, ...]) -> str | None:
    """None when ``condition`` changes what a method reading ``inputs`` sees, else why not."""
    if condition not in _READS:
        raise ValueError(f"unknown robustness condition {condition!r}; known: {', '.join(CONDITIONS)}")
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
    return {"audio_missing": _zero(_READS["audio_missing"]), "video_missing": _zero(_READS["video_missing"]),
            "video_occlusion": _occlude, "video_blur": _blur}[name]
