"""Audio features with torchaudio or openSMILE, aligned to video frames.

``audio_features`` returns (T * k, F): k feature steps per video frame, so a
window of video frames [s, s+L) pairs with audio steps [s*k, (s+L)*k).
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from raybench.schema import AudioConfig


@lru_cache(maxsize=8)
def _transform(kind: str, sample_rate: int, n_fft: int, win: int, hop: int, n_mels: int):
    import torchaudio

    if kind == "logmel":
        return torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, win_length=win, hop_length=hop, n_mels=n_mels,
            window_fn=torch.hann_window, power=2.0)
    if kind == "spectrogram":
        # Zhou et al.: Hamming window, log magnitude
        return torchaudio.transforms.Spectrogram(n_fft=n_fft, win_length=win, hop_length=hop,
                                                 window_fn=torch.hamming_window, power=1.0)
    raise ValueError(f"data.audio.features must be logmel, spectrogram or one of {', '.join(OPENSMILE_SETS)}, got {kind!r}")


WINDOW_MS = {"logmel": 25.0, "spectrogram": 40.0}  # data.audio.win_ms: null picks the feature's own


def window_ms(cfg: AudioConfig) -> float:
    """The analysis window of ``data.audio`` in ms: ``win_ms``, or the feature kind's own (25 ms log-Mel;
    40 ms for Zhou et al. 2019's speech spectrogram)."""
    return float(cfg.win_ms or WINDOW_MS.get(cfg.features, 25.0))


# openSMILE's low-level descriptors (the ``opensmile`` package; its wheel ships the library and the
# configurations): eGeMAPS v02 (25 per 10 ms step: loudness, spectral balance, MFCC 1-4, F0, jitter,
# shimmer, HNR, formants) and ComParE 2016 (65 per 10 ms step). Not log-compressed: they are in their
# own units (the training pipeline standardises each with the training set's statistics).
# Their functionals (``<set>_functionals``: eGeMAPS v02's 88, ComParE 2016's 6373; MERBench's and
# EmoBox's handcrafted baselines use them per utterance) are computed here over sliding windows of
# ``data.audio.functionals_s`` every ``functionals_hop_s``, in one openSMILE run per clip, through the
# opensmile package's own option for it (``frameModeFunctionalsConf``: openSMILE's ``frameMode = fixed``).
# A window's functionals are those of the descriptors whose frames start inside it.
OPENSMILE_SETS = {"egemaps": ("eGeMAPSv02", 25), "compare": ("ComParE_2016", 65),
                  "egemaps_functionals": ("eGeMAPSv02", 88), "compare_functionals": ("ComParE_2016", 6373)}


class AudioTooShort(ValueError):
    """A clip's audio is shorter than one analysis window of its features: that clip is skipped."""


def _frame_mode_conf(window_s: float, hop_s: float) -> str:
    """An openSMILE frame-mode include for sliding functionals windows, in raybench's cache folder, named
    after its content (a file there with other content is rewritten)."""
    import hashlib

    from raybench.paths import cache_home

    text = f"frameMode = fixed\nframeSize = {window_s!r}\nframeStep = {hop_s!r}\nframeCenterSpecial = left\n"
    p = cache_home() / "opensmile" / f"fixed-{hashlib.sha256(text.encode()).hexdigest()[:16]}.conf"
    if not p.is_file() or p.read_text() != text:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, p)
    return str(p)


@lru_cache(maxsize=4)
def _smile(kind: str, window_s: float = 1.0, hop_s: float = 0.1):
    import opensmile  # an ImportError here stops prepare with its cause (envcheck checks it first)

    fset = getattr(opensmile.FeatureSet, OPENSMILE_SETS[kind][0])
    if kind.endswith("_functionals"):
        return opensmile.Smile(feature_set=fset, feature_level=opensmile.FeatureLevel.Functionals,
                               options={"frameModeFunctionalsConf": _frame_mode_conf(window_s, hop_s)})
    return opensmile.Smile(feature_set=fset, feature_level=opensmile.FeatureLevel.LowLevelDescriptors)


def opensmile_features(audio: np.ndarray, steps: int, sample_rate: int, kind: str, window_s: float = 1.0,
                       hop_s: float = 0.1) -> np.ndarray:
    """openSMILE's low-level descriptors of a mono signal (``kind``: egemaps or compare), or their
    functionals over windows of ``window_s`` every ``hop_s`` (``egemaps_functionals``,
    ``compare_functionals``), each placed at the centre of its window (openSMILE's own start and end
    times) and linearly interpolated at the centres of ``steps`` equal steps over the signal ->
    float32 (steps, F). Steps before the first window's centre or after the last one's take that
    window's values."""
    import warnings

    x = np.ascontiguousarray(audio, np.float32)
    with warnings.catch_warnings():  # "Segment too short, filling with NaN": said below, with the clip's length
        warnings.simplefilter("ignore", UserWarning)
        df = _smile(kind, float(window_s), float(hop_s)).process_signal(x, sample_rate)
    if not len(df) or np.isnan(df.to_numpy(np.float64)).all():
        what = (f"one {window_s:g} s functionals window (data.audio.functionals_s) and openSMILE's analysis frame"
                if kind.endswith("_functionals") else "one openSMILE analysis window")
        raise AudioTooShort(f"data.audio.features={kind}: the audio ({len(x) / sample_rate * 1000:.0f} ms) is too short "
                         f"for {what}")
    starts = df.index.get_level_values("start").total_seconds().to_numpy()
    ends = df.index.get_level_values("end").total_seconds().to_numpy()
    centres = (starts + ends) / 2
    t = (np.arange(steps) + 0.5) * (len(x) / sample_rate) / steps
    values = df.to_numpy(np.float64)
    out = np.stack([np.interp(t, centres, values[:, f]) for f in range(values.shape[1])], 1)
    return out.astype(np.float32)


def frames_audio(audio: np.ndarray, num_frames: int, fps: float, sample_rate: int, align: str = "time") -> np.ndarray:
    """The part of a clip's track under its ``num_frames`` frames at ``fps`` (``data.audio.align``):
    ``time``: its first round(num_frames / fps * sample_rate) samples, zeros past the track's end, so
    that frame t's features are the audio of [t / fps, (t + 1) / fps); ``stretch``: the track as it is
    (its features are then spread over the frames whatever its length)."""
    if align == "stretch":
        return audio
    n = int(round(num_frames * sample_rate / fps))
    if len(audio) >= n:
        return audio[:n]
    return np.concatenate([audio, np.zeros(n - len(audio), audio.dtype)])


def audio_features(audio: np.ndarray, num_frames: int, sample_rate: int, cfg: AudioConfig) -> np.ndarray:
    """Features of a mono signal at ``num_frames * k`` steps -> float32 (T*k, F): log-Mel or log
    spectrogram (torchaudio, resampled in time), or openSMILE's descriptors (``opensmile_features``)."""
    kind = cfg.features
    if kind in OPENSMILE_SETS:
        return opensmile_features(audio, num_frames * cfg.frames_per_video_frame, sample_rate, kind,
                                  cfg.functionals_s, cfg.functionals_hop_s)
    win = int(round(window_ms(cfg) * sample_rate / 1000))
    hop = int(round(cfg.hop_ms * sample_rate / 1000))
    n_fft = max(cfg.n_fft, win)
    k = cfg.frames_per_video_frame
    if len(audio) <= n_fft // 2:  # torchaudio pads each end by n_fft // 2 by reflection: it needs more samples
        raise AudioTooShort(f"data.audio.features={kind}: the audio ({len(audio) / sample_rate * 1000:.1f} ms, "
                            f"{len(audio)} samples) is too short for one analysis window (more than n_fft/2 = "
                            f"{n_fft // 2} samples)")
    tf = _transform(kind, sample_rate, n_fft, win, hop, cfg.n_mels)
    with torch.no_grad():
        spec = tf(torch.from_numpy(np.ascontiguousarray(audio, np.float32)))  # (F, Tspec)
        spec = torch.log(spec + 1e-6)
        # align: the clip's audio covers the same span as its frames
        steps = num_frames * k
        out = F.interpolate(spec[None], size=steps, mode="linear", align_corners=False)[0]  # (F, T*k)
    return out.T.contiguous().numpy().astype(np.float32)  # (T*k, F)


def add_noise(audio: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """``audio`` plus white Gaussian noise ``snr_db`` below its mean power over the whole clip (the
    robustness track's ``audio_snr<N>`` conditions); the noise is drawn from ``seed``."""
    x = audio.astype(np.float64)
    power = float(np.mean(x**2))
    noise = np.random.default_rng(seed).standard_normal(x.size) * np.sqrt(power / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


def resample_labels(va: np.ndarray, frame_index: np.ndarray) -> np.ndarray:
    """Per-source-frame labels [N, 2] -> labels of the chosen frames [T, 2] (NaN past the end)."""
    out = np.full((len(frame_index), va.shape[1]), np.nan, np.float32)
    ok = frame_index < len(va)
    out[ok] = va[frame_index[ok]]
    return out


def optical_flow(frames: np.ndarray, algorithm: str = "farneback") -> np.ndarray:
    """Dense optical flow between consecutive frames with OpenCV: (T, H, W, 3) uint8 -> (T, H, W, 2) float16.

    Frame t holds the flow from frame t-1 to t (pixels); frame 0 is zero.
    ``algorithm``: ``farneback`` (the default) or ``dis`` (DIS, medium preset).
    """
    import cv2

    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    out = np.zeros(frames.shape[:3] + (2,), np.float16)
    if algorithm == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        calc = lambda a, b: dis.calc(a, b, None)  # noqa: E731
    elif algorithm == "farneback":
        calc = lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 9, 3, 5, 1.1, 0)  # noqa: E731
    else:
        raise ValueError(f"data.flow_algorithm must be 'farneback' or 'dis', got {algorithm!r}")
    for t in range(1, len(gray)):
        out[t] = calc(gray[t - 1], gray[t])
    return out
