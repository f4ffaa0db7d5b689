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


# frames decoded at once: a decode task's memory holds this many source frames at full resolution
# (1280x720: 2.6 MiB each), whatever the video's length
CHUNK_FRAMES = 8


def decode_clip(path: str, fps: float, image_size: int, sample_rate: int = 16000,
                min_audio_rms: float = 1e-4, audio_path: str | None = None, face: str = "none",
                crops_dir: str | None = None, chunk_frames: int = CHUNK_FRAMES) -> Decoded:
    """Frames of ``path`` at ``fps``, face-cropped as ``face`` says (raybench.data.faces) and resized
    to ``image_size``; its audio track as mono ``sample_rate`` float32, or the audio of
    ``audio_path`` (a separate WAV) when given.

    Frames are decoded ``chunk_frames`` at a time, each chunk cropped and resized before the next
    is decoded, so memory does not grow with the video's length or resolution beyond the resized
    output (``data.face=detect`` first decodes only the few frames it detects faces on)."""
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
    frames, face_found = _decode_frames(vr, path, idx, image_size, face, crops_dir, max(1, chunk_frames))
    del vr
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


def _decode_frames(vr, path: str, idx: np.ndarray, image_size: int, face: str, crops_dir: str | None,
                   chunk: int) -> tuple[np.ndarray, bool]:
    """The output frames (T, S, S, 3) uint8 and whether a face was found: the crop box is chosen first
    (from the frame size, or faces detected on a few frames), then the frames are decoded chunk by
    chunk, each cropped and resized into the output."""
    import cv2

    from raybench.data import faces

    def resize(f: np.ndarray) -> np.ndarray:
        return cv2.resize(f, (image_size, image_size), interpolation=cv2.INTER_AREA)

    if face == "dataset" and crops_dir:
        got = faces.read_crops(crops_dir, idx, transform=resize)  # the organisers' crops, when there
        if got is not None:
            return got, True
    found = True
    if face == "none":
        box = None
    else:
        def frames_at(picks: np.ndarray) -> np.ndarray:
            return _get(vr, path, idx[picks])

        box, found = faces.clip_box_of(len(idx), frames_at, _frame_shape(vr, path, idx), face)
    out = np.empty((len(idx), image_size, image_size, 3), np.uint8)

    def put(pos: int, f: np.ndarray) -> None:
        if box is not None:
            x0, y0, x1, y1 = box
            f = f[y0:y1, x0:x1]
        out[pos] = resize(f)

    for s in range(0, len(idx), chunk):
        try:
            raw = _decord_batch(vr, idx[s : s + chunk])  # (c, H0, W0, 3): one chunk at full resolution
        except Exception as e:  # noqa: BLE001 - decord cannot copy these frames: PyAV decodes the rest
            try:
                for j, f in enumerate(_frames_pyav(path, idx[s:])):
                    put(s + j, f)
            except Exception as e2:
                raise DecodeError(f"cannot decode frames: {_short(e)}; PyAV: {_short(e2)}") from None
            break
        for j, f in enumerate(raw):
            put(s + j, f)
        del raw
    return out, found


def _frame_shape(vr, path: str, idx: np.ndarray) -> tuple[int, int]:
    return tuple(_get(vr, path, idx[:1]).shape[1:3])


def _get(vr, path: str, source_idx: np.ndarray) -> np.ndarray:
    """Source frames ``source_idx`` (N, H0, W0, 3) uint8 RGB (a few: face detection, the frame size)."""
    try:
        return _decord_batch(vr, source_idx)
    except Exception as e:  # noqa: BLE001
        try:
            return np.stack(list(_frames_pyav(path, source_idx)))
        except Exception as e2:
            raise DecodeError(f"cannot decode frames: {_short(e)}; PyAV: {_short(e2)}") from None


def _decord_batch(vr, source_idx: np.ndarray) -> np.ndarray:
    out = vr.get_batch([int(i) for i in source_idx]).asnumpy()
    try:
        # decord 0.6.0 otherwise keeps decoding ahead into its frame queue and holds those frames, so
        # memory grows with the video (dmlc/decord#197, #208); a seek empties the queue
        vr.seek(0)
    except Exception:  # noqa: BLE001 - the frames are good; the next get_batch seeks anyway
        pass
    return out


def _frames_pyav(path: str, idx: np.ndarray):
    """Frames ``idx`` (ascending source indices) decoded with PyAV in one pass over the stream, yielded
    one at a time as (H0, W0, 3) uint8 RGB: decord 0.6.0 fails to copy frames of some widths (16, 24,
    48, 72 px among them). An index past the stream's last frame repeats the last frame decoded."""
    import av

    want = [int(i) for i in idx]
    k, last = 0, None
    with av.open(path) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if k == len(want):
                break
            if i == want[k]:
                last = frame.to_ndarray(format="rgb24")
            while k < len(want) and want[k] <= i:
                if last is None:  # a wanted index before the first decoded one cannot happen (ascending)
                    last = frame.to_ndarray(format="rgb24")
                yield last
                k += 1
    if last is None:
        raise DecodeError("no video frame decoded")
    while k < len(want):
        yield last
        k += 1


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()
    return (msg[-1] if msg else type(e).__name__)[:300]
