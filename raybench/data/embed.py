"""The embedding stage: pretrained encoders run once over every clip, their embeddings kept in stores
of their own that every later sweep reuses. A speech encoder (``data.audio.encoder``, below) gives
audio embeddings in place of the audio features; an image encoder (``data.video.encoder``: CLIP's
projected image embedding, ViT's or DINOv2's pooled output, from a local Hugging Face folder with its
image processor; VideoMAE's mean-pooled output per window of frames; an IR-50 face backbone's state
dict) gives one embedding per stored frame, the ``video_emb`` modality (store
``...-video-<fingerprint>/``, columns ``video_emb*``), read by the methods that take face embeddings.

``data.audio.encoder.path`` names a local Hugging Face model folder (nothing is ever downloaded) of
wav2vec 2.0, HuBERT, WavLM or Whisper; raybench reads ``config.json`` (the architecture), the weights
and ``preprocessor_config.json`` (the input's sample rate and normalisation) from it, with
``transformers``. Each clip's audio track is decoded again from its source file at the encoder's own
sample rate (the clip store keeps features, not the waveform), encoded in pieces of at most
``chunk_s`` seconds, and its hidden states (one layer, or all of them) are averaged over
``steps_per_frame`` equal steps per video frame of the clip, like the store's audio features: a
window of video frames [s, s+L) pairs with embedding steps [s*k, (s+L)*k).

Layout of an embedding store (``<store_dir>/<dataset>-<clip store fingerprint>-audio-<fingerprint>/``)::

    parts/part-<hash>.parquet   clip_id, num_frames, audio_emb (steps, layers x dim) float32, audio_emb_shape,
                                audio_emb_sum, audio_emb_sumsq: one clip per row group, like the clip store
    log/<time>-<n>.json         one file per run of the stage that encoded clips: how many, how long
    bad/<clip_id>.json          clips the encoder could not take, with the reason (and their media digest)
    media.json                  clip id -> a digest of the video and audio files it was encoded from
    _COMPLETE.json              the encoder's settings, once every clip is done

Its fingerprint covers the clip store's, the encoder's files (their contents' hash, not the path),
the layer, ``steps_per_frame`` and ``chunk_s`` (VideoMAE: ``window_hop``): a sweep over methods, fusions and windows reuses it;
an interrupted stage resumes (clips already in a part are skipped); a clip whose video or audio
file changed since it was encoded (the clip store decodes it again) is encoded again.

Ray Data runs the stage: an actor pool (one model per actor, a GPU each when the cluster has GPUs),
``batch_size`` clips per task, each task one part file. Within a clip, pieces of equal length go
through the encoder as one batch; clips are not padded into one batch (wav2vec 2.0 base takes no
attention mask: padding would change its output).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from raybench import storage
from raybench.schema import AudioEncoderConfig, DataConfig, VideoEncoderConfig

# the model types raybench runs (config.json's model_type) -> how their frames are laid out
KINDS = ("wav2vec2", "hubert", "wavlm", "whisper")
_WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.pth")
EMBED_VERSION = 1


class EncoderError(ValueError):
    """A local encoder folder that raybench cannot use: says which file, what was expected."""


class ClipNotEncodable(ValueError):
    """One clip the encoder cannot take (its audio shorter than the encoder's receptive field): the
    embedding stage skips that clip with this reason (the embedding store's ``bad/<clip id>.json``, not
    retried) instead of stopping. Any other exception of one clip stops the stage: it would fail every
    clip (a library, a bug), as the prepare stage's."""


def _read_json(path: Path, what: str, key: str = "data.audio.encoder.path") -> dict[str, Any]:
    if not path.is_file():
        raise EncoderError(f"{key}: {path.parent} has no {path.name} ({what}); raybench loads only "
                           "local Hugging Face model folders, as `save_pretrained` writes them (README: "
                           "Pretrained encoders)")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise EncoderError(f"{key}: {path} is not valid JSON: {e}") from None


def encoder_spec(cfg: AudioEncoderConfig) -> dict[str, Any]:
    """Check an encoder folder without loading its weights (before Ray starts): its architecture, layer
    count, input sample rate and weights files -> a summary. An ``EncoderError`` names what is missing."""
    if not cfg.path:
        raise EncoderError("data.audio.encoder.path is not set")
    folder = Path(cfg.path).expanduser()
    if not folder.is_dir():
        raise EncoderError(f"data.audio.encoder.path: no folder {folder} (a local Hugging Face model folder: "
                           "config.json, model.safetensors or pytorch_model.bin, preprocessor_config.json)")
    conf = _read_json(folder / "config.json", "the model's configuration")
    kind = conf.get("model_type")
    if kind not in KINDS:
        raise EncoderError(f"data.audio.encoder.path: {folder / 'config.json'} has model_type {kind!r}; raybench "
                           f"runs {', '.join(KINDS)}")
    pre = _read_json(folder / "preprocessor_config.json", "the input's sample rate and normalisation")
    weights = sorted(p for pat in _WEIGHTS for p in folder.glob(pat))
    if not weights:
        raise EncoderError(f"data.audio.encoder.path: {folder} has no weights file ({', '.join(_WEIGHTS)})")
    layers = int(conf.get("encoder_layers" if kind == "whisper" else "num_hidden_layers", 0))
    if cfg.layer != "all" and not 0 <= cfg.layer <= layers:
        raise EncoderError(f"data.audio.encoder.layer must be 'all' or 0..{layers} for {folder} ({kind}, {layers} "
                           f"layers), got {cfg.layer}")
    if kind == "whisper" and cfg.chunk_s > 30:
        raise EncoderError(f"data.audio.encoder.chunk_s must be <= 30 for Whisper ({folder}): its encoder takes "
                           f"at most 30 s, got {cfg.chunk_s}")
    dim = int(conf.get("d_model" if kind == "whisper" else "hidden_size", 0))
    return {"kind": kind, "folder": str(folder.resolve()), "layers": layers + 1, "dim": dim,
            "sample_rate": int(pre.get("sampling_rate", 16000)),
            "kept_layers": layers + 1 if cfg.layer == "all" else 1,
            "files": [str(p) for p in [folder / "config.json", folder / "preprocessor_config.json", *weights]]}


VISION_KINDS = ("clip", "vit", "dinov2", "videomae")
STATE_DICT_SUFFIXES = (".pth", ".pt")  # an IR-50 face backbone's state dict (raybench.nn.irse)


def vision_spec(cfg: VideoEncoderConfig) -> dict[str, Any]:
    """Check an image encoder folder (or IR-50 state dict file) without loading its weights (before Ray
    starts) -> a summary."""
    if not cfg.path:
        raise EncoderError("data.video.encoder.path is not set")
    folder = Path(cfg.path).expanduser()
    key = "data.video.encoder.path"
    if folder.suffix.lower() in STATE_DICT_SUFFIXES:
        _per_frame_only(cfg, folder, "an IR-50 state dict")
        if not folder.is_file():
            raise EncoderError(f"{key}: no file {folder} (an IR-50 face backbone's state dict, .pth or .pt)")
        return {"kind": "ir50", "folder": str(folder.resolve()), "dim": 512, "kept_layers": 1,
                "files": [str(folder.resolve())]}
    if not folder.is_dir():
        raise EncoderError(f"{key}: no folder {folder} (a local Hugging Face model folder: config.json, "
                           "model.safetensors or pytorch_model.bin, preprocessor_config.json; or an IR-50 "
                           "state dict file, .pth or .pt)")
    conf = _read_json(folder / "config.json", "the model's configuration", key)
    kind = conf.get("model_type")
    if kind not in VISION_KINDS:
        raise EncoderError(f"{key}: {folder / 'config.json'} has model_type {kind!r}; raybench runs "
                           f"{', '.join(VISION_KINDS)}")
    _read_json(folder / "preprocessor_config.json", "the input's size and normalisation", key)
    weights = sorted(p for pat in _WEIGHTS for p in folder.glob(pat))
    if not weights:
        raise EncoderError(f"{key}: {folder} has no weights file ({', '.join(_WEIGHTS)})")
    dim = int(conf.get("projection_dim", 0) if kind == "clip" else conf.get("hidden_size", 0))
    if kind != "videomae":
        _per_frame_only(cfg, folder, kind)
    elif cfg.window_hop is not None:
        n = int(conf.get("num_frames", 16))
        if cfg.window_hop > n:
            raise EncoderError(f"data.video.encoder.window_hop={cfg.window_hop} is more than {folder}'s num_frames "
                               f"({n}): frames between its windows would never be seen; use 1..{n}")
    return {"kind": kind, "folder": str(folder.resolve()), "dim": dim, "kept_layers": 1,
            **({"num_frames": int(conf.get("num_frames", 16))} if kind == "videomae" else {}),
            "files": [str(p) for p in [folder / "config.json", folder / "preprocessor_config.json", *weights]]}


def _per_frame_only(cfg: VideoEncoderConfig, folder: Path, what: str) -> None:
    if cfg.window_hop is not None:
        raise EncoderError(f"data.video.encoder.window_hop applies to VideoMAE's windows; {folder} is {what} "
                           "(one embedding per frame): leave it null")


def video_windows(T: int, n: int, hop: int) -> tuple[list[int], np.ndarray]:
    """Windows of ``n`` frames every ``hop`` over a clip of ``T`` frames, the last one ending at the clip's
    end (a clip shorter than ``n`` is one window, padded with its last frame) -> (their starts, for each
    frame the index of the window whose centre, over the frames it really holds, is nearest; ties go to
    the earlier one)."""
    starts = list(range(0, max(1, T - n + 1), hop))
    if T > n and starts[-1] + n < T:
        starts.append(T - n)
    centres = np.array([s + (min(s + n, T) - 1 - s) / 2 for s in starts])
    nearest = np.abs(np.arange(T)[:, None] - centres[None, :]).argmin(1)
    return starts, nearest


@lru_cache(maxsize=16)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def content_hash(files: list[str]) -> str:
    """One hash of the files' contents (names aside): a copy of the same weights elsewhere is the same encoder."""
    h = hashlib.sha256()
    for f in files:
        st = Path(f).stat()
        h.update(_file_hash(f, st.st_size, st.st_mtime_ns).encode())
    return h.hexdigest()


def piece_bounds(n: int, sample_rate: int, chunk_s: float, cap_s: float | None = None) -> list[int]:
    """Sample bounds of the pieces a signal of ``n`` samples is encoded in: ``chunk_s`` seconds each, a
    last piece shorter than one second joined to the one before it. ``cap_s`` (Whisper: 30 s, its
    encoder's span): a joined piece longer than that is cut in two equal halves (before 2026-12-03 it
    was cut at 30 s, which left the sliver the join was meant to avoid, encoded alone)."""
    step = int(round(chunk_s * sample_rate))
    bounds = list(range(0, n, step)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < sample_rate:
        del bounds[-2]
    if cap_s is not None and bounds[-1] - bounds[-2] > cap_s * sample_rate:  # (chunk_s <= cap_s: encoder_spec)
        bounds.insert(-1, bounds[-2] + (bounds[-1] - bounds[-2]) // 2)
    return bounds


def embed_fingerprint(clip_fingerprint: str, cfg: AudioEncoderConfig | VideoEncoderConfig, spec: dict[str, Any]) -> str:
    d = {"version": EMBED_VERSION, "clips": clip_fingerprint, "kind": spec["kind"],
         "weights": content_hash(spec["files"])}
    if isinstance(cfg, AudioEncoderConfig):
        d.update(layer=cfg.layer, steps_per_frame=cfg.steps_per_frame, chunk_s=cfg.chunk_s)
    if spec["kind"] == "videomae":  # its windows' spacing (the default: tiled, its num_frames)
        d.update(window_hop=cfg.window_hop or spec["num_frames"])
    if spec["kind"] == "whisper":  # 2026-12-03: a joined last piece over 30 s is halved (piece_bounds)
        d.update(pieces="halved past 30 s")
    if spec["kind"] == "ir50":  # 2026-12-03: the authors' network sees the centre 40/48 of each face
        d.update(frames="authors' layout: centre crop 40/48")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _load(folder: str, kind: str, key: str, **kw):
    """``AutoModel`` from a local folder, in float32 (a checkpoint saved in float16, as Whisper's are,
    would otherwise load in float16 under transformers 5 and refuse float32 inputs); weights that do
    not fit its configuration are an error."""
    from transformers import AutoModel

    try:
        model, info = AutoModel.from_pretrained(folder, local_files_only=True, output_loading_info=True, **kw)
    except (OSError, ValueError, RuntimeError) as e:  # unreadable weights, shapes that do not fit
        raise EncoderError(f"{key}: cannot load {folder}: {' '.join(str(e).split())[:500]}") from None
    missing = sorted(info.get("missing_keys") or [])
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys") or [])
    if missing or mismatched:
        # transformers fills such weights at random and only warns: embeddings of a random model
        raise EncoderError(
            f"{key}: the weights in {folder} do not fit its config.json ({kind}): {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(mismatched)} of another shape (e.g. {mismatched[:3]}); a folder "
            "from `save_pretrained` of the same model has them all")
    return model.float()


def _load_ir50(path: str, key: str):
    """An IR-50 face backbone (raybench.nn.irse) with the state dict at ``path``, in eval mode: face.evoLVe's
    layout (``input_layer``, ``body``, ``output_layer``: :class:`IR50` at 112 x 112) or zhang2021's
    authors' (``backbone.*`` and ``logits.*``: :class:`AuthorsIR50` at 40 x 40, L2-normalised output)."""
    import torch

    # the embedding stage runs a face model here: the one place the data layer builds a raybench network
    # (pyproject.toml's import contract lets this module import raybench.nn.irse and nn.encoders' loader)
    from raybench.nn.encoders import load_weights, read_state
    from raybench.nn.irse import IR50, AuthorsIR50

    try:
        state = read_state(path, key)  # read once: its keys tell the layout, then it is loaded
    except (OSError, ValueError) as e:
        raise EncoderError(f"{' '.join(str(e).split())[:600]} (expected an IR-50 state dict)") from None
    except Exception as e:  # noqa: BLE001 - an unreadable file, whatever torch raises for it
        raise EncoderError(f"{key}: cannot read {path}: {' '.join(str(e).split())[:300]}") from None
    net = AuthorsIR50() if any(str(k).startswith("backbone.") for k in state) else IR50()
    try:
        load_weights(net, path, key, state=state)
    except (OSError, ValueError) as e:
        raise EncoderError(f"{' '.join(str(e).split())[:600]} (expected an IR-50 state dict: face.evoLVe's layout "
                           "or zhang2021's authors' backbone.* layout)") from None
    return net.eval()


class VisionEncoder:
    """A loaded image encoder: ``encode(frames)`` -> one embedding per frame, float32 (T, dim): CLIP's
    projected image embedding, ViT's and DINOv2's pooled output, IR-50's 512-d output. The folder's
    image processor resizes and normalises the store's frames (uint8 RGB) as the model was trained;
    IR-50 takes them in [-1, 1] (x / 127.5 - 1, as its checkpoints and the training pipeline do) and
    resizes them to its input size itself."""

    def __init__(self, cfg: VideoEncoderConfig, device: str = "cpu"):
        import torch

        self.cfg, self.spec = cfg, vision_spec(cfg)
        folder = self.spec["folder"]
        self.device = device
        self._torch = torch
        if self.spec["kind"] == "ir50":
            self.model = _load_ir50(folder, "data.video.encoder.path").to(device)
            self.processor = None
            return
        from transformers import AutoImageProcessor

        # ViT: the [CLS] token's final hidden state, as for DINO and classification checkpoints, which have
        # no pooler (ViTModel's pooler is a tanh layer that only checkpoints of ViTModel itself hold)
        extra = {"add_pooling_layer": False} if self.spec["kind"] == "vit" else {}
        self.model = _load(folder, self.spec["kind"], "data.video.encoder.path", **extra).eval().to(device)
        self.processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)

    def _encode_windows(self, frames: np.ndarray) -> np.ndarray:
        """VideoMAE: the mean of its last hidden state over a window's tokens (its video classifier's
        pooling), per window of ``num_frames``; each frame takes its nearest window's."""
        torch = self._torch
        n = self.spec["num_frames"]
        starts, nearest = video_windows(len(frames), n, self.cfg.window_hop or n)
        T = len(frames)
        clips = [[frames[min(s + i, T - 1)] for i in range(n)] for s in starts]  # past the end: the last frame
        per_pass = max(1, self.cfg.frame_batch // n)
        out = []
        for a in range(0, len(clips), per_pass):
            x = self.processor(clips[a : a + per_pass], return_tensors="pt").pixel_values
            with torch.inference_mode():
                out.append(self.model(pixel_values=x.to(self.device)).last_hidden_state.mean(1).float().cpu().numpy())
        return np.concatenate(out)[nearest]

    def _encode_ir50(self, frames: np.ndarray) -> np.ndarray:
        """IR-50: the backbone's embedding of each frame, taken in [-1, 1]. zhang2021's authors' network
        sees the centre 40/48 of each face, as their evaluation (and raybench's zhang2021 with
        ``backbone: ir50``) crops it, then resized to 40 px if it is not (before 2026-12-03 the whole
        frame was shrunk to 40 px: the face filled more of the input than the network was trained on)."""
        from raybench.nn.irse import AUTHORS_CROP, AuthorsIR50, centre_crop_box

        torch = self._torch
        if isinstance(self.model, AuthorsIR50):
            y, x, ch, cw = centre_crop_box(*frames.shape[1:3], AUTHORS_CROP)
            frames = frames[:, y : y + ch, x : x + cw]
        out = []
        for a in range(0, len(frames), self.cfg.frame_batch):
            x = torch.from_numpy(np.ascontiguousarray(frames[a : a + self.cfg.frame_batch]))
            x = x.to(self.device).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
            with torch.inference_mode():
                out.append(self.model(x).float().cpu().numpy())
        return np.concatenate(out)

    def encode(self, frames: np.ndarray) -> np.ndarray:
        torch = self._torch
        if self.spec["kind"] == "videomae":
            return self._encode_windows(frames)
        if self.spec["kind"] == "ir50":
            return self._encode_ir50(frames)
        out = []
        for a in range(0, len(frames), self.cfg.frame_batch):
            x = self.processor(images=list(frames[a : a + self.cfg.frame_batch]), return_tensors="pt").pixel_values
            with torch.inference_mode():
                if self.spec["kind"] == "clip":
                    h = self.model.get_image_features(pixel_values=x.to(self.device))
                    h = getattr(h, "pooler_output", h)  # (transformers 5 returns an output object)
                else:
                    o = self.model(pixel_values=x.to(self.device))
                    h = o.pooler_output if self.spec["kind"] == "dinov2" else o.last_hidden_state[:, 0]
            out.append(h.float().cpu().numpy())
        return np.concatenate(out)


PIECES_PER_PASS = 4  # equal-length pieces of one clip per forward pass


class AudioEncoder:
    """A loaded encoder: ``encode(signal)`` -> the hidden states of one mono signal at the encoder's rate,
    (frames, kept layers x dim) float32, and each frame's centre in seconds."""

    def __init__(self, cfg: AudioEncoderConfig, device: str = "cpu"):
        import torch
        from transformers import AutoFeatureExtractor

        self.cfg, self.spec = cfg, encoder_spec(cfg)
        folder = self.spec["folder"]
        model = _load(folder, self.spec["kind"], "data.audio.encoder.path")
        self.fe = AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
        self.model = (model.encoder if self.spec["kind"] == "whisper" else model).eval().to(device)
        self.device = device
        self.sample_rate = self.spec["sample_rate"]
        conf = model.config
        if self.spec["kind"] == "whisper":
            # log-Mel hop (160 samples at 16 kHz) x the second convolution's stride 2: one frame per 20 ms
            self.hop = int(self.fe.hop_length) * 2
            self.field = self.hop
            # its log-Mel frames are centred STFT frames (frame j at j x 160 samples) and the second
            # convolution (kernel 3, stride 2, padding 1) puts encoder frame i at mel frame 2i: at i x hop
            self.offset = 0.0
        else:  # the feature encoder's convolutions: total stride and receptive field, in samples
            self.hop = int(np.prod(conf.conv_stride))
            self.field, step = 1, 1
            for k, s in zip(conf.conv_kernel, conf.conv_stride):
                self.field += (k - 1) * step
                step *= s
            self.offset = self.field / 2  # a frame's centre: the middle of its receptive field
        self._torch = torch

    def _forward(self, pieces: list[np.ndarray]) -> np.ndarray:
        """Equal-length pieces -> hidden states (pieces, frames, kept layers x dim)."""
        torch = self._torch
        if self.spec["kind"] == "whisper":
            x = self.fe(pieces, sampling_rate=self.sample_rate, return_tensors="pt").input_features
        else:
            x = self.fe(pieces, sampling_rate=self.sample_rate, return_tensors="pt").input_values
        with torch.inference_mode():
            out = self.model(x.to(self.device), output_hidden_states=True)
        hs = out.hidden_states
        h = torch.stack(hs, 2) if self.cfg.layer == "all" else hs[self.cfg.layer][:, :, None]  # (P, N, layers, D)
        return h.flatten(2).float().cpu().numpy()

    def frames(self, n_samples: int) -> int:
        """Encoder frames of a piece of ``n_samples`` samples."""
        if self.spec["kind"] == "whisper":
            return max(1, math.ceil(n_samples / self.hop))
        return max(0, (n_samples - self.field) // self.hop + 1)

    def encode(self, signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hidden states of a mono signal at ``sample_rate`` -> (frames, kept layers x dim), frame centres (s).
        Pieces of ``chunk_s`` seconds; a last piece shorter than one second joins the one before it."""
        x = np.ascontiguousarray(signal, np.float32)
        if len(x) < self.field:
            raise ClipNotEncodable(f"the audio ({len(x) / self.sample_rate * 1000:.0f} ms) is shorter than the "
                               f"encoder's receptive field ({self.field / self.sample_rate * 1000:.0f} ms)")
        bounds = piece_bounds(len(x), self.sample_rate, self.cfg.chunk_s, 30.0 if self.spec["kind"] == "whisper" else None)
        pieces = [(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        outs, centres = [], []
        by_len: dict[int, list[int]] = {}
        for i, (a, b) in enumerate(pieces):
            by_len.setdefault(b - a, []).append(i)
        done: dict[int, np.ndarray] = {}
        for length, idx in by_len.items():
            for b in range(0, len(idx), PIECES_PER_PASS):  # a long video's pieces, a few at a time (memory)
                part = idx[b : b + PIECES_PER_PASS]
                h = self._forward([x[pieces[i][0] : pieces[i][1]] for i in part])
                for j, i in enumerate(part):
                    done[i] = h[j, : self.frames(length)].copy()  # Whisper pads to 30 s: its frames past the piece dropped
        for i, (a, _) in enumerate(pieces):
            outs.append(done[i])
            centres.append((a + np.arange(len(done[i])) * self.hop + self.offset) / self.sample_rate)
        return np.concatenate(outs), np.concatenate(centres)


def pool_steps(h: np.ndarray, centres: np.ndarray, duration: float, steps: int) -> np.ndarray:
    """Encoder frames (N, D) with their centre times -> ``steps`` equal steps over ``duration`` seconds
    (float32 (steps, D)): each step the mean of the frames whose centre falls in it; a step with no
    frame (steps finer than frames) linearly interpolated between the frames' centres."""
    idx = np.floor(centres / duration * steps).astype(np.int64)
    ok = (idx >= 0) & (idx < steps)
    sums = np.zeros((steps, h.shape[1]), np.float64)
    counts = np.zeros(steps, np.int64)
    np.add.at(sums, idx[ok], h[ok])
    np.add.at(counts, idx[ok], 1)
    out = sums / np.maximum(counts, 1)[:, None]
    empty = counts == 0
    if empty.any():
        t = (np.nonzero(empty)[0] + 0.5) * duration / steps
        out[empty] = np.stack([np.interp(t, centres, h[:, f]) for f in range(h.shape[1])], 1)
    return out.astype(np.float32)


def _audio(row: dict[str, Any], sample_rate: int, mirror: str | None, root_uri: str | None) -> np.ndarray:
    """A clip's audio track (its video's own, or its separate file), mono at ``sample_rate``."""
    import decord

    from raybench.paths import cache_home

    path = (row.get("meta") or {}).get("audio_path") or row["video_path"]
    path = storage.fetch_if_placeholder(path, mirror, root_uri, cache_home())
    ar = decord.AudioReader(path, ctx=decord.cpu(0), sample_rate=sample_rate, mono=True)
    return ar[:].asnumpy().reshape(-1).astype(np.float32)


class EncodeBatch:
    """Ray Data's actor for the stage: loads the encoder once, then encodes batches of clips and writes
    each batch as one part file of the embedding store (``modality``: audio, from each clip's source
    file; video_emb, from the clip store's frames)."""

    def __init__(self, modality: str, cfg, store_path: str, clip_store: str, mirror: str | None, root_uri: str | None):
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.modality = modality
        self.key = "data.audio.encoder" if modality == "audio_emb" else "data.video.encoder"
        self.enc = AudioEncoder(cfg, device) if modality == "audio_emb" else VisionEncoder(cfg, device)
        self.store_path, self.clip_store, self.mirror, self.root_uri = store_path, clip_store, mirror, root_uri
        self._clips = None  # the clip store, opened once per actor (its part files' footers parsed once)

    def _embed(self, row: dict[str, Any]) -> np.ndarray:
        if self.modality == "audio_emb":
            from raybench.data.features import frames_audio

            sig = _audio(row, self.enc.sample_rate, self.mirror, self.root_uri)
            if "fps" in row:  # data.audio.align: the audio under the clip's frames, as the clip store's features
                sig = frames_audio(sig, int(row["num_frames"]), float(row["fps"]), self.enc.sample_rate, row["align"])
            h, centres = self.enc.encode(sig)
            steps = int(row["num_frames"]) * self.enc.cfg.steps_per_frame
            return pool_steps(h, centres, len(sig) / self.enc.sample_rate, steps)
        from raybench.data.store import ClipStore, decode_arrays

        if self._clips is None:
            self._clips = ClipStore(self.clip_store)
        (r,) = self._clips.iter_clips([row["clip_id"]], ["video", "video_shape", "va"])
        return self.enc.encode(decode_arrays(r)["video"])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        from raybench.data.store import ClipStore, write_part

        store = ClipStore(self.store_path)
        rows, status = [], {"clip_id": [], "reason": [], "fatal": [], "seconds": []}
        for item in batch["row"]:
            row = json.loads(item)
            t0 = time.perf_counter()
            fatal = reason = ""
            src = (row.get("meta") or {}).get("audio_path") if self.modality == "audio_emb" else None
            try:
                rows.append(embedding_row(row["clip_id"], int(row["num_frames"]), self._embed(row), self.modality))
            except ClipNotEncodable as e:  # this clip only: skipped, with the reason, and not tried again
                reason = f"{self.key} ({self.enc.spec['kind']}): {e}"
                store.mark_bad(row["clip_id"], src or row["video_path"], reason, media=row.get("media"))
            except Exception as e:  # noqa: BLE001 - raised by the driver with the clip's name
                fatal = f"clip {row['clip_id']} ({src or row['video_path']}): " + " ".join(f"{type(e).__name__}: {e}".split())
            status["clip_id"].append(row["clip_id"])
            status["reason"].append(reason)
            status["fatal"].append(fatal)
            status["seconds"].append(time.perf_counter() - t0)
            if fatal:
                break
        if rows:
            write_part(store, rows)
        return status


def embedding_row(clip_id: str, num_frames: int, emb: np.ndarray, modality: str = "audio_emb") -> dict[str, Any]:
    """One clip's row of an embedding store: its embeddings (steps, features) under the modality's
    columns (``audio_emb``, ``video_emb``), with their sums for the statistics."""
    e = np.ascontiguousarray(emb, np.float32)
    return {"clip_id": clip_id, "num_frames": num_frames, modality: e.tobytes(), f"{modality}_shape": list(e.shape),
            f"{modality}_sum": e.astype(np.float64).sum(0).tolist(),
            f"{modality}_sumsq": (e.astype(np.float64) ** 2).sum(0).tolist()}


# modality -> (its encoder's config key, the store-name part)
MODALITIES = {"audio_emb": ("audio", "audio"), "video_emb": ("video", "video")}


def _encoder_cfg(data_cfg: DataConfig, modality: str):
    return data_cfg.audio.encoder if modality == "audio_emb" else data_cfg.video.encoder


def _spec(cfg) -> dict[str, Any]:
    return encoder_spec(cfg) if isinstance(cfg, AudioEncoderConfig) else vision_spec(cfg)


def embedding_store_path(data_cfg: DataConfig, dataset: str, clip_fingerprint: str,
                         modality: str = "audio_emb") -> tuple[str, dict[str, Any]]:
    """Where the embeddings of ``data_cfg``'s encoder of ``modality`` (audio_emb, video_emb) for this clip
    store live, and the encoder's summary."""
    from raybench.data.store import store_root

    cfg = _encoder_cfg(data_cfg, modality)
    spec = _spec(cfg)
    fp = embed_fingerprint(clip_fingerprint, cfg, spec)
    name = f"{dataset}-{clip_fingerprint}-{MODALITIES[modality][1]}-{fp}"
    return storage.join(store_root(data_cfg), name), {**spec, "fingerprint": fp}


def padded_clips(num_frames: dict[str, int], window: int) -> list[str]:
    """The clips (id -> frames) shorter than a VideoMAE window of ``window`` frames, sorted: their one
    window repeats their last frame (:meth:`VisionEncoder._encode_windows`)."""
    return sorted(k for k, n in num_frames.items() if n < window)


def build_embeddings(p, clips: list, progress: bool = True, modality: str = "audio_emb") -> dict[str, Any]:
    """Run the encoder of ``modality`` (audio_emb: ``data.audio.encoder``; video_emb: ``data.video.encoder``)
    of ``p.data_cfg`` over the ``clips`` (usable clips of plan ``p``'s clip store) that its embedding
    store lacks -> ``{"path", "encoded", "spec", "libraries", "bad"}``. Clips already there, or marked
    bad there by an earlier run, are skipped, unless their video or audio files changed since
    (``p.media``: they are encoded again). ``bad``: clip id -> ``{"clip_id", "video_path", "reason"}``
    for the ``clips`` the encoder could not take (:class:`ClipNotEncodable`); the caller leaves them out
    of the data variant's usable clips."""
    import ray

    from raybench.data.store import MEDIA_FILE, ClipStore, PrepareError, changed_clips, retried_clips

    cfg = _encoder_cfg(p.data_cfg, modality)
    path, spec = embedding_store_path(p.data_cfg, p.name, p.fingerprint, modality)
    store = ClipStore(path)
    # clips encoded, or marked bad, from other video or audio files than the clip store's now (decoded again
    # from a video replaced under its name): out, to be encoded again (store.changed_clips)
    media = {c.clip_id: p.media[c.clip_id] for c in clips}
    stale = changed_clips(store, clips, media=media) + retried_clips(store, clips, media=media)
    if stale:
        print(f"[raybench] embed: {len(stale)} clip(s) of the embedding store {path} were encoded from other video "
              f"or audio files than the dataset's now ({', '.join(c.clip_id for c in stale[:5])}"
              f"{' ...' if len(stale) > 5 else ''}): encoding them again", flush=True)
        store.drop_clips({c.clip_id for c in stale})
    done, bad = store.done_ids(), store.bad()
    nums = {r["clip_id"]: r["num_frames"] for r in p.store.read_clips([c.clip_id for c in clips],
                                                                       columns=["clip_id", "num_frames"])}
    pending = [c for c in clips if c.clip_id not in done and c.clip_id not in bad]
    store.record(MEDIA_FILE, {c.clip_id: media[c.clip_id] for c in pending})  # (before the encoding: as build)
    encoded = 0
    libs = library_versions()
    log = build_log(str(path)) if done or bad else []  # the earlier runs that encoded clips into it
    if done and (drift := version_drift(log, libs)):
        print(f"[raybench] embed: warning: {path}: {drift}", flush=True)
    if pending:
        verb = "resuming" if done or bad else "building"
        layer = f", layer {cfg.layer}" if modality == "audio_emb" else ""
        print(f"[raybench] embed: {verb} embedding store {path} ({spec['kind']} from {spec['folder']}{layer}; "
              f"{len(pending)} of {len(clips)} clips to encode)", flush=True)
        # the weights checked here, once, before any actor starts (EncoderError)
        AudioEncoder(cfg) if modality == "audio_emb" else VisionEncoder(cfg)
        t0 = time.time()
        gpus = int(ray.cluster_resources().get("GPU", 0))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actors = max(1, min(gpus or max(1, cpus // 4), math.ceil(len(pending) / cfg.batch_size)))
        items = [{"row": json.dumps({**c.to_row(), "num_frames": int(nums[c.clip_id]), "fps": p.data_cfg.fps,
                                     "align": p.data_cfg.audio.align, "media": media[c.clip_id]})}
                 for c in pending]
        rds = ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / cfg.batch_size))
        out = rds.map_batches(EncodeBatch, batch_size=cfg.batch_size, batch_format="numpy", concurrency=actors,
                              num_gpus=1 if gpus else 0, num_cpus=1,
                              fn_constructor_kwargs={"modality": modality, "cfg": cfg, "store_path": str(path),
                                                     "clip_store": str(p.store.path),
                                                     "mirror": str(p.root) if p.root_uri else None,
                                                     "root_uri": p.root_uri})
        n, next_report = 0, 0.1
        for status in out.iter_batches(batch_size=None, batch_format="numpy"):
            fatal = [f for f in status["fatal"] if f]
            if fatal:
                raise PrepareError(f"{p.name}: the embedding stage stopped: {fatal[0]}\n  Clips encoded before it "
                                   f"are kept in {path}; fix the cause and rerun to go on from there.")
            n += len(status["clip_id"])
            encoded += sum(not r for r in status["reason"])
            if progress and n / len(pending) >= next_report:
                print(f"[raybench] embed: {n}/{len(pending)} clips ({time.time() - t0:.0f} s)", flush=True)
                next_report = n / len(pending) + 0.1
        bad = store.bad()
        store.write_index()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        # skipped: clips the encoder could not take (bad/); the versions only of a run that encoded a clip
        entry = {"encoded": encoded, "skipped": n - encoded, "seconds": time.time() - t0, "actors": actors,
                 "gpus": gpus, **(libs if encoded else {})}
        store.write_text(f"log/{stamp}-{encoded}.json", json.dumps(entry))
        log.append(entry)
    else:
        print(f"[raybench] embed: reusing embedding store {path} ({len(clips)} clips, nothing to encode)", flush=True)
        if store.index(store.part_files()) is None:
            store.write_index()
    # the clips encoded by earlier runs too (an embedding store made before media.json, 2026-12-04, takes its clips'
    # files as they are now: one whose clip store decoded a replaced video before it has its old embedding kept)
    store.record(MEDIA_FILE, {c: media[c] for c in store.done_ids() if c in media})
    versions = [{k: e[k] for k in libs if k in e} for e in log]  # each run's that encoded
    versions = [v for v in versions if v]
    info = {"modality": modality, "encoder": spec["kind"], "folder": spec["folder"], "layers": spec["kept_layers"],
            **cfg.model_dump(exclude={"path", "batch_size", "frame_batch"}), "clip_store": str(p.store.path),
            "fingerprint": spec["fingerprint"], "clips": len(store.done_ids()), "bad": len(bad),
            "libraries": [v for i, v in enumerate(versions) if v not in versions[:i]]}
    store.write_text("_COMPLETE.json", json.dumps(info, indent=1))
    padded = []  # VideoMAE: clips shorter than one window, whose window repeats their last frame: said, counted
    if spec["kind"] == "videomae":
        padded = padded_clips({c.clip_id: nums.get(c.clip_id, 0) for c in clips if c.clip_id not in bad},
                              spec["num_frames"])
        if padded:
            print(f"[raybench] embed: {len(padded)} of {len(clips)} clips are shorter than VideoMAE's window of "
                  f"{spec['num_frames']} frames (first: {', '.join(padded[:3])}): their window repeats their last "
                  "frame", flush=True)
    return {"path": str(path), "encoded": encoded, "spec": spec, "libraries": info["libraries"],
            "bad": {c.clip_id: bad[c.clip_id] for c in clips if c.clip_id in bad}, "padded": len(padded)}


def library_versions() -> dict[str, str]:
    """The versions an encoder's output depends on besides its weights (recorded in each run's log;
    not in the fingerprint, so that an upgrade does not silently re-encode a whole dataset)."""
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


def version_drift(log: list[dict[str, Any]], now: dict[str, str]) -> str | None:
    """What differs between the libraries that encoded an embedding store's clips (its ``log``) and
    ``now``'s, or None (a log written before versions were recorded says nothing)."""
    seen = {k: sorted({e[k] for e in log if k in e}) for k in now}
    diff = [f"{k} {', '.join(v)} (this run: {now[k]})" for k, v in seen.items() if v and v != [now[k]]]
    if not diff:
        return None
    return ("its clips were encoded with " + "; ".join(diff) + ": embeddings reused or added now may differ "
            "slightly from the earlier ones; delete the store to encode every clip with this run's versions")


def build_log(path: str) -> list[dict[str, Any]]:
    """The runs of the stage on the embedding store at ``path`` (each with the clips it encoded and
    skipped), oldest first."""
    fs, root = storage.split(path)
    return [json.loads(storage.read_bytes(fs, f)) for f in sorted(storage.list_files(fs, f"{root.rstrip('/')}/log",
                                                                                      ".json"))]
