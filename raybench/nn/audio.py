"""Audio encoders over the store's log-Mel / spectrogram steps (B, T*k, F), k steps per video frame."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def with_deltas(x: torch.Tensor) -> torch.Tensor:
    """(B, S, F) -> (B, 3, S, F): the features, their deltas and delta-deltas over time."""
    import torchaudio.functional as AF

    t = x.transpose(1, 2)  # (B, F, S): compute_deltas works on the last dim
    d1 = AF.compute_deltas(t)
    d2 = AF.compute_deltas(d1)
    return torch.stack([t, d1, d2], 1).transpose(2, 3)  # (B, 3, S, F)


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

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        m = audio @ self.dct  # (B, T*k, 13)
        d = with_deltas(m)  # (B, 3, T*k, 13)
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

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        B, S, Fb = audio.shape
        T = S // self.k
        half = self.patch // 2
        x = F.pad(audio.transpose(1, 2), (half, self.patch - half - self.k))  # (B, F, S + patch - k)
        patches = x.unfold(-1, self.patch, self.k)  # (B, F, T, patch)
        patches = patches.permute(0, 2, 3, 1).reshape(B * T, 1, self.patch, Fb)  # (B*T, 1, P, F)
        h = self.cnn(patches).mean((2, 3))  # (B*T, C)
        return self.proj(h).view(B, T, -1)  # (B, T, out_dim)


class AudioRegionCNN(nn.Module):
    """AlexNet-like 2-D CNN over the window's time-frequency image; its last conv map gives R
    region vectors. (B, C, S, F) -> (B, R, out_dim)."""

    def __init__(self, c_in: int, out_dim: int = 256, widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        self.cnn = _vgg(c_in, list(widths))
        self.proj = nn.Linear(widths[-1], out_dim)
        self.out_dim = out_dim

    def forward(self, tf_image: torch.Tensor) -> torch.Tensor:
        h = self.cnn(tf_image)  # (B, C', s, f)
        return self.proj(h.flatten(2).transpose(1, 2))  # (B, R = s*f, out_dim)
