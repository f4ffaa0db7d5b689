"""Decode one clip with decord: frames resampled to a target fps, resized; audio mono 16 kHz.

Raises ``DecodeError`` with the path and reason for anything that cannot be used
(unreadable container, no video frames, no audio track, silent audio).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class DecodeError(RuntimeError):
    pass


@dataclass
class Decoded:
    frames: np.ndarray  # (T, H, W, 3) uint8, at the target fps
    audio: np.ndarray  # (N,) float32, mono, at the target sample rate
    source_fps: float
    source_frames: int
    frame_index: np.ndarray  # (T,) source frame index of each output frame
    face_found: bool = True  # data.face=detect: whether a face was found (else a centre crop)


def resample_indices(n_source: int, source_fps: float, fps: float) -> np.ndarray:
    """Source frame index for each output frame at ``fps`` (nearest earlier frame)."""
    duration = n_source / source_fps
    n_out = max(1, int(np.floor(duration * fps + 1e-6)))
    idx = np.floor(np.arange(n_out) * source_fps / fps + 1e-6).astype(np.int64)
    return np.clip(idx, 0, n_source - 1)


def decode_clip(path: str, fps: float, image_size: int, sample_rate: int = 16000,
                min_audio_rms: float = 1e-4, audio_path: str | None = None, face: str = "none",
                crops_dir: str | None = None) -> Decoded:
    """Frames of ``path`` at ``fps``, face-cropped as ``face`` says (raybench.data.faces) and resized
    to ``image_size``; its audio track as mono ``sample_rate`` float32, or the audio of
    ``audio_path`` (a separate WAV) when given."""
    import cv2
    import decord

    try:
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    except Exception as e:  # decord raises RuntimeError / DECORDError with a C++ message
        raise DecodeError(f"cannot open video: {_short(e)}") from None
    n_src = len(vr)
    src_fps = float(vr.get_avg_fps() or 0)
    if n_src == 0 or src_fps <= 0:
        raise DecodeError(f"no video frames (frames={n_src}, fps={src_fps})")
    idx = resample_indices(n_src, src_fps, fps)
    try:
        raw = vr.get_batch(list(idx)).asnumpy()  # (T, H0, W0, 3)
    except Exception as e:
        # decord 0.6.0 fails to copy frames of some widths (16, 24, 48, 72 px among them):
        # decode those with PyAV instead
        try:
            raw = _frames_pyav(path, idx)
        except Exception as e2:
            raise DecodeError(f"cannot decode frames: {_short(e)}; PyAV: {_short(e2)}") from None
    del vr
    from raybench.data.faces import crop

    raw, face_found = crop(raw, face, crops_dir, idx)
    frames = np.stack([cv2.resize(f, (image_size, image_size), interpolation=cv2.INTER_AREA) for f in raw])
    try:
        ar = decord.AudioReader(audio_path or path, ctx=decord.cpu(0), sample_rate=sample_rate, mono=True)
        audio = ar[:].asnumpy().reshape(-1).astype(np.float32)
    except Exception as e:
        src = f" in {audio_path}" if audio_path else ""
        raise DecodeError(f"no usable audio track{src}: {_short(e)}") from None
    if audio.size == 0:
        raise DecodeError("no usable audio track: 0 samples")
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    if rms < min_audio_rms:
        raise DecodeError(f"silent audio track (rms {rms:.2e} < {min_audio_rms:.0e})")
    return Decoded(frames=frames, audio=audio, source_fps=src_fps, source_frames=n_src, frame_index=idx,
                   face_found=face_found)


def _frames_pyav(path: str, idx: np.ndarray) -> np.ndarray:
    import av

    want = set(int(i) for i in idx)
    got: dict[int, np.ndarray] = {}
    with av.open(path) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i in want:
                got[i] = frame.to_ndarray(format="rgb24")
            if i >= max(want):
                break
    last = got[max(got)]
    return np.stack([got.get(int(i), last) for i in idx])


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()
    return (msg[-1] if msg else type(e).__name__)[:300]
