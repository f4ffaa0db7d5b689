"""Frame, audio and temporal encoders.

Shapes: B batch, T video frames, k audio steps per frame, F audio features,
D feature width.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FrameCNN(nn.Module):
    """A small per-frame CNN trained from scratch: (B, T, 3, H, W) -> (B, T, D)."""

    def __init__(self, out_dim: int = 128, width: int = 16, depth: int = 4, in_channels: int = 3):
        super().__init__()
        layers, c = [], in_channels
        for i in range(depth):
            layers += [conv_block(c, width * 2**i), nn.MaxPool2d(2)]
            c = width * 2**i
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(c, out_dim)
        self.out_dim = out_dim

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        B, T = video.shape[:2]
        x = self.features(video.flatten(0, 1))  # (B*T, C, h, w)
        x = x.mean((2, 3))  # (B*T, C)
        return self.proj(x).view(B, T, -1)  # (B, T, D)


class TimmFrameEncoder(nn.Module):
    """Any timm architecture, applied per frame: (B, T, 3, H, W) -> (B, T, D)."""

    def __init__(self, backbone: nn.Module, out_dim: int):
        super().__init__()
        self.backbone = backbone
        self.proj = nn.Linear(backbone.num_features, out_dim)
        self.out_dim = out_dim

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        B, T = video.shape[:2]
        return self.proj(self.backbone(video.flatten(0, 1))).view(B, T, -1)  # (B, T, D)


def read_state(path: str, what: str) -> dict:
    """A local checkpoint's state dict (the file's, or the one under 'state_dict' / 'model'), with
    DataParallel's ``module.`` prefixes removed."""
    from pathlib import Path

    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{what}: weights file {str(p)!r} does not exist")
    state = torch.load(p, map_location="cpu", weights_only=False)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{what}: {str(p)!r} holds a {type(state).__name__}, expected a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(module: nn.Module, path: str, what: str, state: dict | None = None) -> None:
    """Load a local checkpoint (a state dict, or one under 'state_dict' / 'model') into ``module``
    (``state``: that checkpoint's :func:`read_state`, when the caller has read it already)."""
    p = path
    state = read_state(path, what) if state is None else state
    own = module.state_dict()
    if not set(own) & set(state) and any(k.startswith("backbone.") for k in state):
        # zhang2021's authors' checkpoints (their my_res50): the network under "backbone.", the
        # classifier it was pretrained with under "logits." (not part of the backbone: left out)
        state = {k.removeprefix("backbone."): v for k, v in state.items() if not k.startswith("logits.")}
    # batch norm's num_batches_tracked came with PyTorch 0.4.1: an older checkpoint lacks it, and torch
    # itself loads such a file (the count starts at 0; it only matters with momentum=None)
    missing = [k for k in own if k not in state and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    bad_shape = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad_shape:
        raise ValueError(
            f"{what}: the keys of {str(p)!r} do not fit the architecture: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(bad_shape)} of another shape (e.g. {bad_shape[:3]})")
    module.load_state_dict(state)


class L2Embedding(nn.Module):
    """A frame network's own embedding, L2-normalised per frame, no projection:
    (B, T, 3, H, W) -> (B, T, D) (zhang2021's authors feed their IR-50's output to the TCN so)."""

    def __init__(self, net: nn.Module, dim: int):
        super().__init__()
        self.backbone = net
        self.out_dim = dim

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        B, T = video.shape[:2]
        if isinstance(self.backbone, FrameCNN):  # takes the (B, T, ...) video itself
            out = self.backbone(video)
        else:
            out = self.backbone(video.flatten(0, 1)).view(B, T, -1)
        return nn.functional.normalize(out, dim=-1)


class EmbeddingFrameEncoder(nn.Module):
    """``backbone: embeddings``: an image encoder's frozen per-frame embeddings (the ``video_emb`` input,
    computed once by the embedding stage) in place of a face CNN: (B, T, E) -> (B, T, out_dim) by layer
    normalisation and a linear projection (``projected``), or L2-normalised with no projection
    (``authors``: what zhang2021's authors feed their TCN from their IR-50; width E)."""

    def __init__(self, in_dim: int, out_dim: int, embedding: str = "projected"):
        super().__init__()
        self.authors = embedding == "authors"
        self.out_dim = in_dim if self.authors else out_dim
        self.proj = nn.Identity() if self.authors else nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(emb, dim=-1) if self.authors else self.proj(emb)


def build_frame_encoder(backbone: str, out_dim: int, weights: str | None = None, width: int = 16,
                        embedding: str = "projected", in_dim: int = 0) -> nn.Module:
    """``small_cnn`` (trained from scratch, the default), ``ir50`` (raybench.nn.irse, the papers' face
    backbone) or any timm architecture by name, built without downloading anything; ``weights``
    loads a local checkpoint into the backbone. ``embeddings``: no network on frames, the image
    encoder's frozen per-frame embeddings of width ``in_dim`` (:class:`EmbeddingFrameEncoder`).

    ``embedding``: ``projected`` (a linear layer to ``out_dim`` after a pretrained backbone; IR-50 at
    112 x 112, face.evoLVe's layout) or ``authors`` (zhang2021's authors: the backbone's own
    embedding L2-normalised, no projection; IR-50 is their copy at 40 x 40,
    :class:`raybench.nn.irse.AuthorsIR50`; ``small_cnn`` keeps its ``out_dim`` output). The encoder's
    width is its ``out_dim`` attribute."""
    if embedding not in ("projected", "authors"):
        raise ValueError(f"embedding must be 'projected' or 'authors', got {embedding!r}")
    if backbone == "embeddings":  # frozen per-frame embeddings of width ``in_dim`` (data.video.encoder)
        if weights:
            raise ValueError("backbone embeddings takes no weights: the image encoder is data.video.encoder.path")
        if in_dim < 1:
            raise ValueError("backbone embeddings reads face embeddings: set data.video.encoder.path (a local "
                             "image encoder folder)")
        return EmbeddingFrameEncoder(in_dim, out_dim, embedding)
    if backbone == "small_cnn":
        net: nn.Module = FrameCNN(out_dim, width)
        enc: nn.Module = net if embedding == "projected" else L2Embedding(net, out_dim)
        target = net
    elif backbone == "ir50":
        from raybench.nn.irse import IR50, AuthorsIR50

        net = AuthorsIR50() if embedding == "authors" else IR50()
        enc = L2Embedding(net, 512) if embedding == "authors" else TimmFrameEncoder(net, out_dim)
        target = net
    else:
        import timm

        from raybench.registry import did_you_mean

        if backbone not in timm.list_models():
            raise ValueError(f"unknown backbone {backbone!r}{did_you_mean(backbone, timm.list_models())}; "
                             "use small_cnn, ir50 or a timm model name")
        net = timm.create_model(backbone, pretrained=False, num_classes=0)
        enc = L2Embedding(net, net.num_features) if embedding == "authors" else TimmFrameEncoder(net, out_dim)
        target = net
    if weights:
        load_weights(target, weights, f"frame encoder {backbone!r}")
    return enc


def backbone_groups(enc: nn.Module) -> list[list[nn.Module]]:
    """The pretrained part of a frame encoder from :func:`build_frame_encoder` as groups of layers,
    top (output) first: the order in which gradual unfreezing releases them.

    IR-50: the output layer, stage 4, the second and first halves of stage 3, stage 2, then stage 1
    with the input layer (the authors of zhang2021 release the output layer, then stage 4, then half
    of stage 3). ``small_cnn``: its projection, then each conv block from the last. A timm model:
    its top-level children that hold parameters, from the last. A ``TimmFrameEncoder``'s own
    projection is new (not in the checkpoint) and is not part of any group.
    """
    if isinstance(enc, EmbeddingFrameEncoder):  # its encoder ran once, frozen, in the embedding stage
        return []
    if isinstance(enc, L2Embedding):
        enc = enc.backbone
    if isinstance(enc, FrameCNN):
        blocks = [m for m in enc.features if any(True for _ in m.parameters())]
        return [[enc.proj], *[[b] for b in reversed(blocks)]]
    net = enc.backbone if isinstance(enc, TimmFrameEncoder) else enc
    from raybench.nn.irse import IR50

    if isinstance(net, IR50):
        b = list(net.body)
        return [[net.output_layer], b[21:24], b[14:21], b[7:14], b[3:7], [*b[0:3], net.input_layer]]
    return [[m] for m in reversed(list(net.children())) if any(True for _ in m.parameters())]


class AudioConv(nn.Module):
    """1-D CNN over audio feature steps, pooled to one vector per video frame.

    (B, T*k, F) -> (B, T, D)
    """

    def __init__(self, n_features: int, k: int, out_dim: int = 128, width: int = 64):
        super().__init__()
        self.k = k
        self.net = nn.Sequential(
            nn.Conv1d(n_features, width, 5, padding=2), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
            nn.Conv1d(width, width, 5, padding=2), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
        )
        self.proj = nn.Linear(width, out_dim)
        self.out_dim = out_dim

    def forward(self, audio: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` (B, T): valid video frames; padded steps are zeroed before each convolution, so
        the valid frames' outputs are those of the unpadded clip (the convolutions' own zero padding)."""
        B, Tk, _ = audio.shape
        sm = step_mask(mask, self.k)
        x = zero_padded(audio.transpose(1, 2), sm)  # (B, F, T*k)
        for i, layer in enumerate(self.net):
            x = layer(zero_padded(x, sm) if isinstance(layer, nn.Conv1d) and i else x)
        x = x.view(B, x.shape[1], Tk // self.k, self.k).mean(-1)  # (B, W, T)
        return self.proj(x.transpose(1, 2))  # (B, T, D)


class TemporalConv(nn.Module):
    """Residual dilated 1-D convolutions over time: (B, T, D) -> (B, T, D).

    Non-causal (``same`` padding): each output frame sees frames before and after. With ``mask``
    (B, T), padded frames are zeroed before each block, so padding never reaches a valid frame.
    """

    def __init__(self, dim: int, layers: int = 2, kernel: int = 3, dropout: float = 0.1):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(dim, dim, kernel, padding=(kernel // 2) * 2**i, dilation=2**i),
                nn.BatchNorm1d(dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
            )
            for i in range(layers)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = x.transpose(1, 2)  # (B, D, T)
        for blk in self.blocks:
            h = h + blk(zero_padded(h, mask))
        return h.transpose(1, 2)  # (B, T, D)


def step_mask(mask: torch.Tensor | None, k: int) -> torch.Tensor | None:
    """Frame mask (B, T) -> audio step mask (B, T*k)."""
    return None if mask is None else mask.repeat_interleave(k, dim=1)


def zero_padded(x: torch.Tensor, mask: torch.Tensor | None, time_dim: int = -1) -> torch.Tensor:
    """``x`` with the padded time steps (``mask`` (B, T) False) set to 0; ``time_dim`` is x's time
    axis (the batch axis is 0). What makes a convolution over time see a padded clip as the
    unpadded one: its own zero padding past the end."""
    if mask is None:
        return x
    shape = [1] * x.dim()
    shape[0], shape[time_dim] = mask.shape[0], mask.shape[1]
    return x * mask.view(shape).to(x.dtype)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T, D), (B, T) bool -> (B, D): mean over the valid steps."""
    if mask is None:
        return x.mean(1)
    m = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)
