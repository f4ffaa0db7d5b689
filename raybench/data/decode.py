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
    # output frames that repeat the last frame decoded: the stream ended before the frames the
    # container's count (decord's) promised; ``frames_decoded`` source frames were decoded then
    repeated: int = 0
    frames_decoded: int | None = None
    # data.face=dataset: output frames with no crop of the dataset's (the crop before it repeats)
    crops_missing: int = 0
    # data.face=dataset: the clip had none of the dataset's crops; its face was detected instead
    crops_fallback: bool = False


def resample_indices(n_source: int, source_fps: float, fps: float) -> np.ndarray:
    """Source frame index for each output frame at ``fps`` (nearest earlier frame)."""
    duration = n_source / source_fps
    n_out = max(1, int(np.floor(duration * fps + 1e-6)))
    idx = np.floor(np.arange(n_out) * source_fps / fps + 1e-6).astype(np.int64)
    return np.clip(idx, 0, n_source - 1)


def decode_clip(path: str, fps: float, image_size: int, sample_rate: int = 16000,
                min_audio_rms: float = 1e-4, audio_path: str | None = None, face: str = "none",
                crops_dir: str | None = None, face_detector: str = "haar", fetch_crop=None) -> Decoded:
    """Frames of ``path`` at ``fps``, face-cropped as ``face`` says (raybench.data.faces) and resized
    to ``image_size``; its audio track as mono ``sample_rate`` float32, or the audio of
    ``audio_path`` (a separate WAV) when given.

    decord reads the video's length and frame rate (and, for ``data.face=detect``, the few frames
    faces are detected on). The frames themselves are decoded with PyAV in one pass over the stream,
    one thread, each wanted frame cropped and resized as it comes, so memory does not grow with the
    video's length or resolution beyond the resized output. decord 0.6.0's own reader decodes ahead
    into a queue that grows while its caller works (dmlc/decord#197, #208): a 90 s 720p video took
    up to 4.7 GiB whole, and 0.1-1 GiB in chunks, varying with timing. Both go through FFmpeg's
    decoder and RGB conversion: the frames are the same (tests/unit/test_decode.py checks it)."""
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
    missing: dict = {}
    frames, box, face_found = _crop_box(vr, path, idx, image_size, face, crops_dir, face_detector, missing,
                                        fetch_crop)
    del vr  # before PyAV's pass: decord's reader thread would go on decoding ahead meanwhile
    ended: dict = {}
    if frames is None:
        frames = _decode_frames(path, idx, image_size, box, ended)
    audio = decode_audio(path, sample_rate, audio_path, min_audio_rms)
    return Decoded(frames=frames, audio=audio, source_fps=src_fps, source_frames=n_src, frame_index=idx,
                   face_found=face_found, repeated=ended.get("repeated", 0), frames_decoded=ended.get("decoded"),
                   crops_missing=missing.get("frames", 0), crops_fallback=missing.get("fallback", False))


def decode_audio(path: str, sample_rate: int = 16000, audio_path: str | None = None,
                 min_audio_rms: float = 1e-4) -> np.ndarray:
    """The audio track of ``path`` (or the file ``audio_path``) as mono ``sample_rate`` float32;
    DecodeError when there is none or it is silent."""
    import decord

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
    return audio


def _resize(f: np.ndarray, image_size: int) -> np.ndarray:
    import cv2

    return cv2.resize(f, (image_size, image_size), interpolation=cv2.INTER_AREA)


def _crop_box(vr, path: str, idx: np.ndarray, image_size: int, face: str, crops_dir: str | None,
              face_detector: str = "haar", missing: dict | None = None, fetch_crop=None):
    """(frames, None, True) when the dataset's own crops are used (``data.face=dataset``, resized as
    they are read); else (None, the crop box (x0, y0, x1, y1) or None for the whole frame, whether a
    face was found). ``detect`` decodes only the few frames it detects faces on; so does ``dataset``
    for a clip with none of the dataset's crops (``missing["fallback"]``: the caller says it)."""
    from raybench.data import faces

    if face == "dataset":
        got = faces.read_crops(crops_dir, idx, transform=lambda f: _resize(f, image_size), missing=missing,
                               fetch=fetch_crop) if crops_dir else None
        if got is not None:
            return got, None, True
        if missing is not None:  # no crop at all: the frames are decoded and cropped as below
            missing.clear()
            missing["fallback"] = True
    if face == "none":
        return None, None, True
    if face == "center":
        return None, faces.center_box(tuple(_get(vr, path, idx[:1]).shape[1:3])), True
    picks = np.unique(np.linspace(0, len(idx) - 1, min(len(idx), faces.DETECT_FRAMES)).round().astype(int))
    box, found = faces.clip_box(_get(vr, path, idx[picks]), faces.DETECTORS[face_detector])
    return None, box, found


def _decode_frames(path: str, idx: np.ndarray, image_size: int, box, ended: dict | None = None) -> np.ndarray:
    """PyAV decodes frames ``idx``, each cropped to ``box`` and resized into the output as it comes:
    (T, S, S, 3) uint8. ``ended``: see :func:`_frames_pyav`."""
    out = np.empty((len(idx), image_size, image_size, 3), np.uint8)
    try:
        for j, f in enumerate(_frames_pyav(path, idx, ended)):
            if box is not None:
                x0, y0, x1, y1 = box
                f = f[y0:y1, x0:x1]
            out[j] = _resize(f, image_size)
    except DecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - PyAV's errors name FFmpeg's reason
        raise DecodeError(f"cannot decode frames: {_short(e)}") from None
    return out


def _get(vr, path: str, source_idx: np.ndarray) -> np.ndarray:
    """A few source frames ``source_idx`` (N, H0, W0, 3) uint8 RGB, decoded by decord (PyAV when
    decord 0.6.0 cannot copy them: some widths, 16, 24, 48, 72 px among them)."""
    try:
        return vr.get_batch([int(i) for i in source_idx]).asnumpy()
    except Exception as e:  # noqa: BLE001
        try:
            return np.stack(list(_frames_pyav(path, source_idx)))
        except Exception as e2:
            raise DecodeError(f"cannot decode frames: {_short(e)}; PyAV: {_short(e2)}") from None


def _frames_pyav(path: str, idx: np.ndarray, ended: dict | None = None):
    """Frames ``idx`` (ascending source indices) decoded with PyAV in one pass over the stream (one
    thread), yielded one at a time as (H0, W0, 3) uint8 RGB. Indices past the stream's end (a
    container that counts more frames than its stream has) get the stream's last frame; then ``ended``
    (a dict) gets ``repeated`` (how many) and ``decoded`` (the frames the stream had)."""
    import av

    want = [int(i) for i in idx]
    k, last, tail, i = 0, None, None, -1
    with av.open(path) as c:
        stream = c.streams.video[0]
        stream.thread_count = 1
        for i, frame in enumerate(c.decode(stream)):
            if k == len(want):
                break
            tail = frame
            if want[k] <= i:
                last = frame.to_ndarray(format="rgb24")
            while k < len(want) and want[k] <= i:
                yield last
                k += 1
        if tail is None:
            raise DecodeError("no video frame decoded")
        if k < len(want):  # the stream ended early: its last frame stands in for the rest
            last = tail.to_ndarray(format="rgb24")
            if ended is not None:
                ended.update(repeated=len(want) - k, decoded=i + 1)
    while k < len(want):
        yield last
        k += 1


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()
    return (msg[-1] if msg else type(e).__name__)[:300]
