"""Audio encoders over the store's log-Mel / spectrogram steps (B, T*k, F), k steps per video frame."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def with_deltas(x: torch.Tensor, step_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, S, F) -> (B, 3, S, F): the features, their deltas and delta-deltas over time
    (torchaudio's ``compute_deltas``, which repeats the edge steps past each end).

    ``step_mask`` (B, S): valid steps, padding after them. The padded steps are first given the last
    valid step's value, so the deltas of the valid steps are those of the unpadded clip (what the
    edge repetition gives it); the padded steps of the result are 0."""
    import torchaudio.functional as AF

    def edge(y: torch.Tensor) -> torch.Tensor:  # (B, F, S): padded steps repeat the last valid one
        if step_mask is None:
            return y
        last = (step_mask.long().sum(1) - 1).clamp_min(0)  # (B,)
        pos = torch.arange(y.shape[-1], device=y.device).unsqueeze(0)  # (1, S)
        idx = torch.minimum(pos, last.unsqueeze(1))  # (B, S)
        return torch.gather(y, 2, idx.unsqueeze(1).expand_as(y))

    t = edge(x.transpose(1, 2))  # (B, F, S): compute_deltas works on the last dim
    d1 = edge(AF.compute_deltas(t))  # the delta-deltas' input is repeated past the end too
    d2 = AF.compute_deltas(d1)
    out = torch.stack([t, d1, d2], 1).transpose(2, 3)  # (B, 3, S, F)
    return out if step_mask is None else out * step_mask[:, None, :, None].to(out.dtype)


def per_frame(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, T*k, D) -> (B, T, D): mean over each frame's k steps."""
    B, S, D = x.shape
    return x.view(B, S // k, k, D).mean(2)


class MFCCStream(nn.Module):
    """MFCC (DCT-II of the log-Mel bands, 13 coefficients) with deltas and delta-deltas: 39-d per
    frame. (B, T*k, F) -> (B, T, 39)."""

    def __init__(self, n_mels: int, k: int, n_mfcc: int = 13):
        super().__init__()
        import torchaudio.functional as AF

        self.k = k
        self.register_buffer("dct", AF.create_dct(n_mfcc, n_mels, norm="ortho"))  # (F, 13)
        self.out_dim = 3 * n_mfcc

    def forward(self, audio: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` (B, T): valid frames (the deltas of the valid ones do not see the padding)."""
        from raybench.nn.encoders import step_mask

        m = audio @ self.dct  # (B, T*k, 13)
        d = with_deltas(m, step_mask(mask, self.k))  # (B, 3, T*k, 13)
        return per_frame(d.permute(0, 2, 1, 3).flatten(2), self.k)  # (B, T, 39)


def _vgg(c_in: int, widths: list[int]) -> nn.Sequential:
    layers, c = [], c_in
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        c = w
    return nn.Sequential(*layers)


def vggish_patch_frames(fps: float, seconds: float = 0.96) -> int:
    """Video frames a VGGish example spans: its 0.96 s at the store's frame rate (at least 1)."""
    return max(1, round(seconds * fps))


class VGGishStream(nn.Module):
    """VGGish-style: a 2-D CNN over a log-Mel patch centred on each video frame
    (``patch_frames`` frames long: VGGish's 0.96 s is :func:`vggish_patch_frames` at the store's fps;
    hop one frame) -> 128-d per frame.

    (B, T*k, F) -> (B, T, out_dim)
    """

    def __init__(self, n_mels: int, k: int, out_dim: int = 128, patch_frames: int = 9,
                 widths: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        self.k, self.patch = k, patch_frames * k
        self.cnn = _vgg(1, list(widths))
        self.proj = nn.Linear(widths[-1], out_dim)
        self.out_dim = out_dim

    def forward(self, audio: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` (B, T): valid frames; padded audio steps are zeroed, as the patches of an
        unpadded clip see zeros past its end."""
        from raybench.nn.encoders import step_mask, zero_padded

        B, S, Fb = audio.shape
        T = S // self.k
        # patch t spans steps [t*k + k//2 - P//2, ...): centred on the middle of frame t's k steps (before
        # 2026-12-04 on its start, half a frame early)
        left = self.patch // 2 - self.k // 2
        audio = zero_padded(audio, step_mask(mask, self.k), time_dim=1)
        x = F.pad(audio.transpose(1, 2), (left, self.patch - self.k - left))  # (B, F, S + patch - k)
        patches = x.unfold(-1, self.patch, self.k)  # (B, F, T, patch)
        patches = patches.permute(0, 2, 3, 1).reshape(B * T, 1, self.patch, Fb)  # (B*T, 1, P, F)
        h = self.cnn(patches).mean((2, 3))  # (B*T, C)
        return self.proj(h).view(B, T, -1)  # (B, T, out_dim)


class AudioRegionCNN(nn.Module):
    """AlexNet-like 2-D CNN over the window's time-frequency image; its last conv map gives R
    region vectors. (B, C, S, F) -> (B, R, out_dim), and the regions' mask (B, R).

    With ``step_mask`` (B, S), padded steps are zeroed before each convolution, and a pooled step
    counts as valid only when every step it pools is (floor pooling, as the unpadded image gets):
    the valid regions are those of the unpadded clip, with the same values."""

    def __init__(self, c_in: int, out_dim: int = 256, widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        self.cnn = _vgg(c_in, list(widths))
        self.proj = nn.Linear(widths[-1], out_dim)
        self.out_dim = out_dim

    def forward(self, tf_image: torch.Tensor,
                step_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        from raybench.nn.encoders import zero_padded

        h, m = tf_image, step_mask
        for layer in self.cnn:
            if isinstance(layer, nn.Conv2d):
                h = zero_padded(h, m, time_dim=2)
            h = layer(h)
            if isinstance(layer, nn.MaxPool2d) and m is not None:
                n = m.long().sum(1) // 2  # valid steps after floor pooling
                m = torch.arange(h.shape[2], device=h.device).unsqueeze(0) < n.unsqueeze(1)
        # (B, C', s, f) -> regions (B, s*f, out_dim), time-major; a region is valid when its step is
        regions = self.proj(h.flatten(2).transpose(1, 2))
        if m is None:
            return regions, None
        return regions, m.unsqueeze(-1).expand(-1, -1, h.shape[3]).flatten(1)  # (B, s*f)


class LayerWeightedAudio(nn.Module):
    """Audio steps (B, T*k, layers x D), standardised -> per video frame (B, T, dim): a learned softmax
    weight per layer (``layers`` > 1) summed over the layers, the frame's k steps averaged, a linear
    projection with ReLU and dropout."""

    def __init__(self, n_features: int, layers: int, k: int, dim: int, dropout: float):
        super().__init__()
        if n_features % layers:
            raise ValueError(f"{n_features} audio features are not {layers} layers of equal width")
        self.layers, self.k, self.width = layers, k, n_features // layers
        self.layer_weights = nn.Parameter(torch.zeros(layers)) if layers > 1 else None
        self.proj = nn.Sequential(nn.Linear(self.width, dim), nn.ReLU(), nn.Dropout(dropout))
        self.out_dim = dim

    def weights(self) -> torch.Tensor:
        """The layers' weights in the sum (they add up to 1)."""
        if self.layer_weights is None:
            return torch.ones(1)
        return torch.softmax(self.layer_weights, 0)

    def forward(self, audio: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(Frame by frame: ``mask`` is not needed, padding reaches no valid frame.)"""
        B, S, _ = audio.shape
        x = audio.reshape(B, S, self.layers, self.width)
        x = (x * self.weights().to(x.dtype)[:, None]).sum(2) if self.layer_weights is not None else x[:, :, 0]
        x = x.reshape(B, S // self.k, self.k, self.width).mean(2)  # (B, T, width)
        return self.proj(x)
