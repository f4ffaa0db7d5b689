"""Temporal models: the TCN of Zhang et al. 2021 and LSTM/GRU wrappers.

Shapes: (B, T, D) in, (B, T, D') out.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import weight_norm


class Chomp1d(nn.Module):
    """Drop the last ``n`` steps: turns a left+right padded conv into a causal one."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : -self.n] if self.n else x


class TemporalBlock(nn.Module):
    """Weight-normalised causal Conv1d -> chomp -> LeakyReLU -> Dropout, twice; residual
    (1x1 conv where the channel count changes); LeakyReLU. (B, Cin, T) -> (B, Cout, T).

    ``channel_dropout``: drop whole channels of a sequence (``nn.Dropout1d``), as the authors' code
    does (``nn.Dropout2d`` on (B, C, T), which PyTorch applies per channel); else element-wise. The
    1x1 residual convolution is Xavier-initialised with gain sqrt(2), as theirs (their Xavier
    initialisation of the weight-normalised convolutions is overwritten by weight normalisation)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int, dropout: float,
                 channel_dropout: bool = False):
        super().__init__()
        pad = (kernel - 1) * dilation
        drop = nn.Dropout1d if channel_dropout else nn.Dropout
        self.net = nn.Sequential(
            weight_norm(nn.Conv1d(c_in, c_out, kernel, padding=pad, dilation=dilation)), Chomp1d(pad),
            nn.LeakyReLU(), drop(dropout),
            weight_norm(nn.Conv1d(c_out, c_out, kernel, padding=pad, dilation=dilation)), Chomp1d(pad),
            nn.LeakyReLU(), drop(dropout),
        )
        self.downsample = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None
        if self.downsample is not None:
            nn.init.xavier_uniform_(self.downsample.weight, gain=2**0.5)
        self.act = nn.LeakyReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = x if self.downsample is None else self.downsample(x)
        return self.act(self.net(x) + res)


class TCN(nn.Module):
    """Stack of temporal blocks with dilations 1, 2, 4, ...: (B, T, Din) -> (B, T, channels[-1]).

    Receptive field: 1 + 2 (kernel - 1) (2^levels - 1) frames (121 for kernel 5, 4 levels).
    """

    def __init__(self, d_in: int, channels: list[int], kernel: int = 5, dropout: float = 0.1,
                 channel_dropout: bool = False):
        super().__init__()
        blocks, c = [], d_in
        for i, ch in enumerate(channels):
            blocks.append(TemporalBlock(c, ch, kernel, 2**i, dropout, channel_dropout))
            c = ch
        self.net = nn.Sequential(*blocks)
        self.out_dim = c
        self.receptive_field = 1 + 2 * (kernel - 1) * (2 ** len(channels) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.transpose(1, 2)).transpose(1, 2)  # (B, T, C)


class RNN(nn.Module):
    """LSTM or GRU over time: (B, T, Din) -> (B, T, hidden * directions)."""

    def __init__(self, d_in: int, hidden: int = 256, layers: int = 2, kind: str = "lstm",
                 bidirectional: bool = False, dropout: float = 0.1):
        super().__init__()
        cls = {"lstm": nn.LSTM, "gru": nn.GRU}.get(kind)
        if cls is None:
            raise ValueError(f"rnn must be 'lstm' or 'gru', got {kind!r}")
        self.rnn = cls(d_in, hidden, layers, batch_first=True, bidirectional=bidirectional,
                       dropout=dropout if layers > 1 else 0.0)
        self.out_dim = hidden * (2 if bidirectional else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]  # (B, T, H)
