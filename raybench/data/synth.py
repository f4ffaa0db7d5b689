"""Synthetic audio-visual emotion datasets, written as real MP4 files (H.264 + AAC).

Two layouts, both the real datasets' own, so the same adapters read them:

- ``ravdess``: ``Actor_XX/MM-VV-EE-II-SS-RR-AA.mp4``, 8 emotions, 2 intensities
  (neutral has no strong), 2 statements, repetitions; categorical.
- ``affwild2``: ``videos/<name>.mp4`` with ``annotations/VA_Set/{Train_Set,
  Validation_Set}/<name>.txt`` (first line ``valence,arousal``, then one line per
  video frame, -5 where not annotated); continuous.

A rendered face (OpenCV drawing) and a voiced audio track (harmonic synthesis)
both carry the emotion. Per-actor identity (face shape and colour, base pitch)
and per-clip nuisance (position jitter, lighting, pixel and audio noise) carry
none.

Categorical cues (see ``EMOTIONS``). The classes are built so that neither
modality alone separates all of them:

==========  ======================================  ===========================
pair        what differs                            who can tell them apart
==========  ======================================  ===========================
neutral     voice only (calm: lower, slower, softer  audio
/ calm      voice, same face)
angry       voice only (disgust: low, slow, dark     audio
/ disgust   voice, same face)
happy       face only (surprised: open mouth, wide   video
/ surprised eyes, raised brows; same voice)
sad         facial *motion* (fearful trembles) and   audio, or video with
/ fearful   voice; same static face                  temporal modelling / flow
==========  ======================================  ===========================

So the best audio-only model confuses happy/surprised (at most 7/8 of the
classes), a per-frame video model confuses three pairs (at most 5/8), and a
fused model can separate all 8. Expected ordering on validation:
fusion > audio-only > video-only (tests/integration check fusion > both).

Continuous cues: valence and arousal are smooth random processes per video.
The face follows valence more (mouth curvature, brows), the voice follows
arousal more (energy, pitch, rate). The labels lag the expression by
``lag_seconds`` (the face and voice at time t show the label of time t + lag),
so a temporal window helps until it covers the lag.

Command line: ``python -m raybench.data.synth --help``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Bumped when the same options give different files: names the default folder of a generated set
# (datasets/synthetic.py). 2: identical bytes for identical options (no x264 macroblock-tree).
GENERATOR_VERSION = 2

# RAVDESS emotion codes 01..08, in order.
EMOTION_NAMES = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")

# Face cues: curve (smile +), open (mouth opening), brow_tilt (+ inner ends raised),
# brow_h (+ raised), eye (+ wider), tremor (head-shake amplitude, high frequency).
# Voice cues: pitch (semitones vs the actor's base), slope (semitones over the
# utterance), energy (dB), rate (syllable-rate factor), tilt (+ brighter spectrum).
_F0 = dict(curve=0.0, open=0.0, brow_tilt=0.0, brow_h=0.0, eye=0.0, tremor=0.0)
_V0 = dict(pitch=0.0, slope=0.0, energy=0.0, rate=1.0, tilt=0.0)
_FACE_HAPPY = dict(_F0, curve=1.0, open=0.25, brow_h=0.3)
_FACE_SURPRISED = dict(_F0, open=1.0, brow_h=1.0, eye=1.0)
_FACE_SAD = dict(_F0, curve=-1.0, brow_tilt=1.0, eye=-0.5)
_FACE_ANGRY = dict(_F0, curve=-0.3, brow_tilt=-1.0, brow_h=-0.6, eye=0.4)
_VOICE_HAPPY = dict(pitch=4.0, slope=3.0, energy=3.0, rate=1.2, tilt=0.3)

EMOTIONS: dict[str, dict[str, dict[str, float]]] = {
    "neutral": {"face": _F0, "voice": _V0},
    "calm": {"face": _F0, "voice": dict(pitch=-3.0, slope=-3.0, energy=-6.0, rate=0.7, tilt=-0.3)},
    "happy": {"face": _FACE_HAPPY, "voice": _VOICE_HAPPY},
    "surprised": {"face": _FACE_SURPRISED, "voice": _VOICE_HAPPY},
    "sad": {"face": _FACE_SAD, "voice": dict(pitch=-4.0, slope=-2.0, energy=-4.0, rate=0.75, tilt=-0.5)},
    "fearful": {"face": dict(_FACE_SAD, tremor=1.0), "voice": dict(pitch=6.0, slope=0.0, energy=0.0, rate=1.4, tilt=0.0)},
    "angry": {"face": _FACE_ANGRY, "voice": dict(pitch=2.0, slope=-1.0, energy=6.0, rate=1.3, tilt=0.8)},
    "disgust": {"face": _FACE_ANGRY, "voice": dict(pitch=-2.0, slope=2.0, energy=0.0, rate=0.85, tilt=-0.8)},
}
INTENSITY_SCALE = {1: 1.0, 2: 1.5}  # RAVDESS intensity 01 normal, 02 strong


@dataclass
class Actor:
    index: int  # 1-based, RAVDESS numbering (odd male, even female)
    face_w: float
    face_h: float
    skin: tuple[int, int, int]
    base_f0: float

    @classmethod
    def make(cls, index: int, rng: np.random.Generator) -> "Actor":
        female = index % 2 == 0
        skin = tuple(int(c) for c in rng.integers([140, 100, 70], [240, 190, 160]))
        return cls(
            index=index,
            face_w=float(rng.uniform(0.28, 0.36)),
            face_h=float(rng.uniform(0.36, 0.44)),
            skin=skin,  # type: ignore[arg-type]
            base_f0=float(rng.uniform(180, 240) if female else rng.uniform(95, 140)),
        )


@dataclass
class Performance:
    """What one clip shows: face and voice cue values, per-clip nuisance."""

    face: dict[str, float]
    voice: dict[str, float]
    jitter: tuple[float, float] = (0.0, 0.0)
    light: float = 1.0
    pixel_noise: float = 4.0
    audio_snr_db: float = 25.0
    syllables: list[float] = field(default_factory=list)  # relative syllable durations


# ---------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------


def render_face(size: int, actor: Actor, face: dict[str, float], talk: float, offset: tuple[float, float],
                light: float) -> np.ndarray:
    """Draw one RGB frame (uint8, [size, size, 3]). ``talk`` in [0, 1] opens the mouth."""
    import cv2

    s = float(size)
    img = np.full((size, size, 3), 90, np.uint8)
    cx, cy = s / 2 + offset[0] * s, s / 2 + offset[1] * s
    fw, fh = actor.face_w * s, actor.face_h * s
    P = lambda x, y: (int(round(x)), int(round(y)))  # noqa: E731
    cv2.ellipse(img, P(cx, cy), P(fw, fh), 0, 0, 360, actor.skin, -1, cv2.LINE_AA)
    # eyes
    eye_y = cy - 0.18 * fh
    eye_open = max(0.02, 0.09 + 0.05 * face["eye"]) * fh
    for side in (-1, 1):
        ex = cx + side * 0.38 * fw
        cv2.ellipse(img, P(ex, eye_y), P(0.17 * fw, eye_open), 0, 0, 360, (250, 250, 250), -1, cv2.LINE_AA)
        cv2.circle(img, P(ex, eye_y), max(1, int(0.07 * fw)), (30, 30, 30), -1, cv2.LINE_AA)
        # brows: inner end moves with tilt, both with height
        by = eye_y - (0.22 + 0.10 * face["brow_h"]) * fh
        inner = (cx + side * 0.12 * fw, by - 0.10 * face["brow_tilt"] * fh)
        outer = (cx + side * 0.62 * fw, by + 0.03 * face["brow_tilt"] * fh)
        cv2.line(img, P(*inner), P(*outer), (50, 35, 25), max(1, int(round(0.06 * fh))), cv2.LINE_AA)
    # mouth: upper lip a parabola with corners up for a smile; opening below it
    mw, my = 0.45 * fw, cy + 0.48 * fh
    xs = np.linspace(-1, 1, 15)
    upper = my - 0.16 * fh * face["curve"] * (xs**2 - 0.3)
    opening = (0.03 + 0.10 * max(0.0, face["open"]) + 0.08 * talk) * fh * (1 - xs**2)
    pts_up = [P(cx + x * mw, y) for x, y in zip(xs, upper)]
    pts_lo = [P(cx + x * mw, y + o) for x, y, o in zip(xs[::-1], upper[::-1], opening[::-1])]
    cv2.fillPoly(img, [np.array(pts_up + pts_lo, np.int32)], (120, 20, 30), cv2.LINE_AA)
    return np.clip(img.astype(np.float32) * light, 0, 255).astype(np.uint8)


def synth_voice(seconds: float, sr: int, actor: Actor, voice_track: dict[str, np.ndarray] | dict[str, float],
                syllables: list[float], rng: np.random.Generator, snr_db: float) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic voice: returns (signal float32 [n], syllable envelope per sample in [0, 1]).

    ``voice_track`` values are scalars or per-sample arrays (continuous data).
    """
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    get = lambda k: np.broadcast_to(np.asarray(voice_track[k], np.float64), (n,))  # noqa: E731
    pitch, slope, energy, rate, tilt = (get(k) for k in ("pitch", "slope", "energy", "rate", "tilt"))
    # syllable envelope: durations scaled by 1/rate, 25 % pause after each syllable
    env = np.zeros(n)
    pos, i = 0.05 * seconds, 0
    base_syll = 0.22
    while pos < seconds * 0.95:
        r = float(rate[min(int(pos * sr), n - 1)])
        d = base_syll * syllables[i % len(syllables)] / max(r, 0.3)
        a, b = int(pos * sr), min(n, int((pos + d) * sr))
        if b > a:
            env[a:b] = np.sin(np.linspace(0, np.pi, b - a)) ** 0.7
        pos += d * 1.25
        i += 1
    semis = pitch + slope * (t / max(seconds, 1e-6) - 0.5) + 0.3 * np.sin(2 * np.pi * 5.5 * t)
    f0 = actor.base_f0 * 2 ** (semis / 12)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    sig = np.zeros(n)
    exponent = 1.6 - 0.7 * tilt
    for k in range(1, 16):
        amp = k ** (-exponent)
        ok = (k * f0) < sr / 2 - 200
        sig += np.where(ok, amp * np.sin(k * phase), 0.0)
    sig *= env * 10 ** (energy / 20)
    sig /= 6.0
    noise_rms = 0.1 * 10 ** (-snr_db / 20)
    sig += rng.normal(0, noise_rms, n)
    return np.clip(sig, -1, 1).astype(np.float32), env


def write_mp4(path: Path, frames: np.ndarray, fps: float, audio: np.ndarray | None, sr: int) -> None:
    """Write frames [T, H, W, 3] uint8 (+ mono float32 audio) as H.264 + AAC MP4, atomically."""
    write_video(path, frames, fps, audio, sr)


def write_wav(path: Path, audio: np.ndarray, sr: int) -> None:
    """Mono float32 audio in [-1, 1] -> 16-bit PCM WAV (as CREMA-D's AudioWAV ships)."""
    import wave

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


# container (by file extension) -> (video codec, audio codec, audio sample format)
CODECS = {".mp4": ("libx264", "aac", "fltp"), ".flv": ("libx264", "aac", "fltp"),
          ".avi": ("mpeg4", "pcm_s16le", "s16")}


def write_video(path: Path, frames, fps: float, audio: np.ndarray | None, sr: int,
                preset: str = "veryfast") -> None:
    """Write frames [T, H, W, 3] uint8 (or any iterable of (H, W, 3) frames, encoded as they come)
    (+ mono float32 audio) with PyAV, atomically. The container follows the extension: .mp4 and .flv
    (H.264 + AAC, as RAVDESS and CREMA-D ship), .avi (MPEG-4 part 2 + PCM, as AFEW ships)."""
    import itertools
    from fractions import Fraction

    import av
    import cv2

    it = iter(frames)
    first = next(it)
    frames = itertools.chain([first], it)

    path = Path(path)
    vcodec, acodec, afmt = CODECS[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")
    with av.open(str(tmp), "w", format={".flv": "flv", ".avi": "avi"}.get(path.suffix.lower())) as out:
        vs = out.add_stream(vcodec, rate=Fraction(fps).limit_denominator(1001))
        vs.width, vs.height = first.shape[1], first.shape[0]
        vs.pix_fmt = "yuv420p"
        # the same frames give the same bytes: one encoder thread, and no macroblock-tree rate control
        # (with it, libx264 through PyAV 18 gave 2-9 different files over 12-20 encodes of the same
        # synthetic clip in one process, measured 2026-12-01; a quarter of the synthetic RAVDESS set
        # differed between two generations, and the models trained on it with them)
        if vcodec == "libx264":
            vs.options = {"crf": "18", "preset": preset, "x264-params": "threads=1:lookahead-threads=1:mbtree=0"}
        vs.codec_context.thread_count = 1
        a_s = out.add_stream(acodec, rate=sr, layout="mono") if audio is not None else None
        for fr in frames:
            # RGB -> I420 with OpenCV: deterministic, unlike the encoder's own conversion
            yuv = cv2.cvtColor(np.ascontiguousarray(fr), cv2.COLOR_RGB2YUV_I420)
            for pkt in vs.encode(av.VideoFrame.from_ndarray(yuv, format="yuv420p")):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        if a_s is not None:
            hop = 1024
            for i in range(0, len(audio), hop):
                chunk = audio[None, i : i + hop]
                if afmt == "s16":
                    chunk = (np.clip(chunk, -1, 1) * 32767).astype(np.int16)
                af = av.AudioFrame.from_ndarray(chunk, format=afmt, layout="mono")
                af.sample_rate, af.pts = sr, i
                for pkt in a_s.encode(af):
                    out.mux(pkt)
            for pkt in a_s.encode():
                out.mux(pkt)
    os.replace(tmp, path)


def write_long_video(path: Path, seconds: float, fps: float = 30.0, width: int = 1280, height: int = 720,
                     sr: int = 16000) -> Path:
    """A long high-resolution test video (a moving square on a gradient, a tone), encoded frame by frame
    so that writing it holds one frame: for the decoding memory test and benchmark."""
    n = int(round(seconds * fps))
    base = np.zeros((height, width, 3), np.uint8)
    base[..., 0] = np.linspace(0, 200, width, dtype=np.uint8)[None, :]
    base[..., 2] = np.linspace(0, 200, height, dtype=np.uint8)[:, None]
    side = height // 4

    def frames():
        for i in range(n):
            f = base.copy()
            x = int((width - side) * (0.5 + 0.5 * np.sin(i / fps)))
            y = int((height - side) * (0.5 + 0.5 * np.cos(i / (2 * fps))))
            f[y : y + side, x : x + side] = (240, 240, 60)
            yield f

    t = np.arange(int(seconds * sr)) / sr
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.5 * t))).astype(np.float32)
    write_video(Path(path), frames(), fps, audio, sr, preset="ultrafast")
    return Path(path)


# ---------------------------------------------------------------------------
# RAVDESS layout (categorical)
# ---------------------------------------------------------------------------

STATEMENT_RHYTHM = {1: [1.0, 0.7, 1.2, 0.8, 0.9, 1.4], 2: [0.8, 1.1, 0.9, 1.3, 0.7, 1.2]}


def ravdess_name(emotion: int, intensity: int, statement: int, repetition: int, actor: int,
                 modality: int = 1, channel: int = 1) -> str:
    return f"{modality:02d}-{channel:02d}-{emotion:02d}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}.mp4"


def _scaled(cues: dict[str, float], neutral: dict[str, float], scale: float) -> dict[str, float]:
    return {k: neutral[k] + scale * (v - neutral[k]) for k, v in cues.items()}


def _ravdess_clip(job: dict) -> str:
    rng = np.random.default_rng(job["seed"])
    actor: Actor = job["actor"]
    emo, inten, stmt = job["emotion"], job["intensity"], job["statement"]
    name = EMOTION_NAMES[emo - 1]
    scale = INTENSITY_SCALE[inten]
    face = _scaled(EMOTIONS[name]["face"], _F0, scale)
    voice = _scaled(EMOTIONS[name]["voice"], _V0, scale)
    # per-clip nuisance, no label information
    voice = {k: v + rng.normal(0, 0.5 if k in ("pitch", "slope", "energy") else 0.04) for k, v in voice.items()}
    face = {k: v + rng.normal(0, 0.06) for k, v in face.items()}
    sec, fps, size, sr = job["seconds"], job["fps"], job["size"], job["sample_rate"]
    rhythm = [d * rng.uniform(0.9, 1.1) for d in STATEMENT_RHYTHM[stmt]]
    audio, env = synth_voice(sec, sr, actor, voice, rhythm, rng, snr_db=float(rng.uniform(15, 30)))
    n_frames = int(round(sec * fps))
    jitter = rng.uniform(-0.06, 0.06, 2)
    light = float(rng.uniform(0.75, 1.2))
    noise = float(rng.uniform(2, 8))
    tremor_f = rng.uniform(3.5, 5.0)
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    for i in range(n_frames):
        t = i / fps
        talk = float(env[min(int(t * sr), len(env) - 1)])
        tremor = face["tremor"] * 0.035 * np.array([np.sin(2 * np.pi * tremor_f * t), np.cos(2 * np.pi * tremor_f * 1.3 * t)])
        img = render_face(size, actor, face, talk, (jitter[0] + tremor[0], jitter[1] + tremor[1]), light)
        frames[i] = np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)
    write_mp4(Path(job["path"]), frames, fps, audio, sr)
    return job["path"]


def generate_ravdess(root: str | Path, actors: int = 10, statements: int = 2, repetitions: int = 2,
                     seconds: float = 2.0, fps: float = 15, size: int = 64, sample_rate: int = 16000,
                     seed: int = 0, workers: int | None = None) -> Path:
    """Write a synthetic RAVDESS tree (speech, audio-video files) under ``root``; return root."""
    root = Path(root).expanduser()
    rng = np.random.default_rng(seed)
    jobs = []
    for a in range(1, actors + 1):
        actor = Actor.make(a, np.random.default_rng([seed, a]))
        for emo in range(1, 9):
            for inten in (1, 2) if emo != 1 else (1,):
                for stmt in range(1, statements + 1):
                    for rep in range(1, repetitions + 1):
                        path = root / f"Actor_{a:02d}" / ravdess_name(emo, inten, stmt, rep, a)
                        jobs.append(dict(
                            path=str(path), actor=actor, emotion=emo, intensity=inten, statement=stmt,
                            repetition=rep, seconds=seconds, fps=fps, size=size, sample_rate=sample_rate,
                            seed=[seed, a, emo, inten, stmt, rep],
                        ))
    del rng
    _run_jobs(_ravdess_clip, jobs, workers)
    _write_info(root, "ravdess", dict(actors=actors, statements=statements, repetitions=repetitions,
                                      seconds=seconds, fps=fps, size=size, sample_rate=sample_rate, seed=seed,
                                      clips=len(jobs)))
    return root


# CREMA-D's emotion codes -> this generator's emotions (the same cues as the RAVDESS layout's classes)
CREMA_D_CODES = {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
CREMA_D_SENTENCES = ("DFA", "IEO", "IOM", "ITH", "ITS", "IWL", "IWW", "KDI", "MTI", "TAI", "TIE", "TSI")


def generate_crema_d(root: str | Path, actors: int = 10, statements: int = 2, seconds: float = 2.0, fps: float = 15,
                     size: int = 64, sample_rate: int = 16000, seed: int = 0, workers: int | None = None) -> Path:
    """Write a synthetic CREMA-D tree (``VideoFlash/<actor>_<sentence>_<EMO>_XX.flv``, H.264 + AAC)
    under ``root``: CREMA-D's six emotions with the cues of the RAVDESS layout's classes of the same
    name, spoken by other actors (ids 1001..; their looks and voices drawn apart from the RAVDESS
    set's), ``statements`` sentences each, one take at the strong intensity (neutral: normal). A
    second categorical corpus for the cross-corpus track (``eval.cross_corpus``)."""
    root = Path(root).expanduser()
    jobs = []
    for a in range(1, actors + 1):
        actor = Actor.make(a, np.random.default_rng([seed, 1000 + a]))
        for code, name in CREMA_D_CODES.items():
            emo = EMOTION_NAMES.index(name) + 1
            for stmt in range(1, statements + 1):
                sentence = CREMA_D_SENTENCES[(stmt - 1) % len(CREMA_D_SENTENCES)]
                jobs.append(dict(
                    path=str(root / "VideoFlash" / f"{1000 + a}_{sentence}_{code}_XX.flv"), actor=actor,
                    emotion=emo, intensity=1 if name == "neutral" else 2, statement=1 + (stmt - 1) % 2,
                    repetition=1, seconds=seconds, fps=fps, size=size, sample_rate=sample_rate,
                    seed=[seed, 1000 + a, emo, stmt],
                ))
    _run_jobs(_ravdess_clip, jobs, workers)
    _write_info(root, "crema_d", dict(actors=actors, statements=statements, seconds=seconds, fps=fps, size=size,
                                      sample_rate=sample_rate, seed=seed, clips=len(jobs)))
    return root


# ---------------------------------------------------------------------------
# Aff-Wild2 layout (continuous)
# ---------------------------------------------------------------------------


def smooth_process(n: int, fps: float, rng: np.random.Generator, amplitude: float = 0.85) -> np.ndarray:
    """A smooth random process in [-amplitude, amplitude]: a sum of slow sinusoids."""
    t = np.arange(n) / fps
    x = np.zeros(n)
    for _ in range(4):
        f = rng.uniform(0.03, 0.25)
        x += rng.uniform(0.4, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    x = x / (np.abs(x).max() + 1e-9)
    return amplitude * x


def _affwild2_video(job: dict) -> str:
    rng = np.random.default_rng(job["seed"])
    sec, fps, size, sr, lag = job["seconds"], job["fps"], job["size"], job["sample_rate"], job["lag_seconds"]
    n = int(round(sec * fps))
    lag_frames = int(round(lag * fps))
    # expression processes over [0, n + lag); label at frame i = expression at frame i - lag
    expr_v = smooth_process(n + lag_frames, fps, rng)
    expr_a = smooth_process(n + lag_frames, fps, rng)
    ev, ea = expr_v[lag_frames:], expr_a[lag_frames:]  # expression shown at frame i
    lab_v, lab_a = expr_v[:n], expr_a[:n]  # label of frame i (lags the expression)
    actor = Actor.make(job["index"], np.random.default_rng([job["seed"][0], 1000 + job["index"]]))
    # voice follows arousal more; per-sample tracks
    ts = np.arange(int(round(sec * sr))) / sr
    fi = np.minimum((ts * fps).astype(int), n - 1)
    voice = dict(pitch=4.0 * ea[fi] + 1.5 * ev[fi], slope=np.zeros_like(ts), energy=8.0 * ea[fi],
                 rate=1.0 + 0.35 * ea[fi], tilt=0.6 * ea[fi])
    rhythm = list(rng.uniform(0.7, 1.3, 7))
    audio, env = synth_voice(sec, sr, actor, voice, rhythm, rng, snr_db=float(rng.uniform(15, 30)))
    jitter = rng.uniform(-0.05, 0.05, 2)
    light = float(rng.uniform(0.8, 1.15))
    frames = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        face = dict(curve=1.2 * ev[i] + 0.1 * ea[i], open=max(0.0, 0.4 * ea[i]), brow_tilt=-0.5 * ev[i] * (ea[i] > 0),
                    brow_h=0.4 * ev[i] + 0.3 * ea[i], eye=0.6 * ea[i], tremor=0.0)
        drift = 0.02 * np.array([np.sin(i / fps * 0.7), np.cos(i / fps * 0.5)])
        talk = float(env[min(int(i / fps * sr), len(env) - 1)])
        img = render_face(size, actor, face, talk, (jitter[0] + drift[0], jitter[1] + drift[1]), light)
        frames[i] = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    write_mp4(Path(job["video_path"]), frames, fps, audio, sr)
    # annotation: valence,arousal per video frame; one unannotated stretch (-5)
    va = np.stack([lab_v, lab_a], 1)
    gap = max(1, n // 20)
    start = int(rng.integers(0, max(1, n - gap)))
    va[start : start + gap] = -5
    ann = Path(job["ann_path"])
    ann.parent.mkdir(parents=True, exist_ok=True)
    tmp = ann.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write("valence,arousal\n")
        for v, a in va:
            f.write(f"{v:.4f},{a:.4f}\n" if v != -5 else "-5,-5\n")
    os.replace(tmp, ann)
    return job["video_path"]


def affwild2_video_name(i: int, size: int) -> str:
    return f"{i}-30-{size}x{size}"


def generate_affwild2(root: str | Path, videos: int = 12, seconds: float = 20.0, fps: float = 15, size: int = 64,
                      sample_rate: int = 16000, lag_seconds: float = 0.6, val_videos: int | None = None,
                      seed: int = 0, workers: int | None = None) -> Path:
    """Write a synthetic Aff-Wild2 VA tree under ``root``; return root."""
    root = Path(root).expanduser()
    val_videos = max(1, videos // 3) if val_videos is None else val_videos
    jobs = []
    for i in range(1, videos + 1):
        name = affwild2_video_name(i, size)
        split = "Validation_Set" if i > videos - val_videos else "Train_Set"
        jobs.append(dict(
            index=i, video_path=str(root / "videos" / f"{name}.mp4"),
            ann_path=str(root / "annotations" / "VA_Set" / split / f"{name}.txt"),
            seconds=seconds, fps=fps, size=size, sample_rate=sample_rate, lag_seconds=lag_seconds,
            seed=[seed, i],
        ))
    _run_jobs(_affwild2_video, jobs, workers)
    _write_info(root, "affwild2", dict(videos=videos, seconds=seconds, fps=fps, size=size, sample_rate=sample_rate,
                                       lag_seconds=lag_seconds, val_videos=val_videos, seed=seed))
    return root


def generate_affwild2_long(root: str | Path, videos: int = 8, seconds: float = 60.0, fps: float = 30.0,
                           width: int = 1280, height: int = 720, val_videos: int | None = None,
                           seed: int = 0) -> Path:
    """An Aff-Wild2-shaped tree for the scale rehearsal (``python -m raybench.bench --rehearsal``):
    ``videos`` long videos at ``width`` x ``height`` and ``fps`` (one generated video, copied: the
    decoding cost is what matters, not the content), each with its own per-frame valence-arousal
    file in the real layout (one unannotated stretch of -5). Returns root."""
    root = Path(root).expanduser()
    val_videos = max(1, videos // 4) if val_videos is None else val_videos
    n = round(seconds * fps)
    first = None
    for i in range(1, videos + 1):
        name = f"{i}-30-{width}x{height}"
        video = root / "videos" / f"{name}.mp4"
        if first is None:
            first = write_long_video(video, seconds, fps, width, height)
        else:
            shutil.copy(first, video)
        rng = np.random.default_rng([seed, i])
        va = np.stack([smooth_process(n, fps, rng), smooth_process(n, fps, rng)], 1)
        gap = max(1, n // 20)
        start = int(rng.integers(0, max(1, n - gap)))
        va[start : start + gap] = -5
        split = "Validation_Set" if i > videos - val_videos else "Train_Set"
        ann = root / "annotations" / "VA_Set" / split / f"{name}.txt"
        ann.parent.mkdir(parents=True, exist_ok=True)
        ann.write_text("valence,arousal\n" + "".join("-5,-5\n" if v == -5 else f"{v:.4f},{a:.4f}\n" for v, a in va))
    return root


# ---------------------------------------------------------------------------


def _run_jobs(fn, jobs: list[dict], workers: int | None) -> None:
    workers = workers or min(len(jobs), os.cpu_count() or 1, 4)
    if workers <= 1 or len(jobs) < 4:
        for j in jobs:
            fn(j)
        return
    with ProcessPoolExecutor(workers) as ex:
        list(ex.map(fn, jobs, chunksize=max(1, len(jobs) // (workers * 4))))


def _write_info(root: Path, layout: str, params: dict) -> None:
    (root / "raybench_synthetic.json").write_text(json.dumps({"layout": layout, **params}, indent=1))


def generate(layout: str, root: str | Path, **kw) -> Path:
    """Generate into a temporary sibling folder, then move it into place (no half-written trees)."""
    root = Path(root).expanduser()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        {"ravdess": generate_ravdess, "affwild2": generate_affwild2, "crema_d": generate_crema_d}[layout](tmp, **kw)
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m raybench.data.synth",
        description="Write a synthetic audio-visual emotion dataset (real H.264 + AAC MP4 files) "
        "in the RAVDESS or CREMA-D (categorical) or Aff-Wild2 (continuous valence/arousal) layout.",
    )
    p.add_argument("layout", choices=["ravdess", "crema_d", "affwild2"])
    p.add_argument("root", help="output folder (replaced if it exists)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=float, default=15)
    p.add_argument("--size", type=int, default=64, help="frame width and height in pixels")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--actors", type=int, default=10, help="ravdess: number of actors")
    p.add_argument("--statements", type=int, default=2, help="ravdess (1 or 2), crema_d: statements per emotion")
    p.add_argument("--repetitions", type=int, default=2, help="ravdess: repetitions per statement")
    p.add_argument("--seconds", type=float, default=None, help="clip length (ravdess 2.0, affwild2 20.0)")
    p.add_argument("--videos", type=int, default=12, help="affwild2: number of videos")
    p.add_argument("--lag", type=float, default=0.6, help="affwild2: seconds the labels lag the expression")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count, at most 4)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    common = dict(fps=a.fps, size=a.size, sample_rate=a.sample_rate, seed=a.seed, workers=a.workers)
    if a.layout == "ravdess":
        root = generate("ravdess", a.root, actors=a.actors, statements=a.statements, repetitions=a.repetitions,
                        seconds=a.seconds or 2.0, **common)
    elif a.layout == "crema_d":
        root = generate("crema_d", a.root, actors=a.actors, statements=a.statements, seconds=a.seconds or 2.0,
                        **common)
    else:
        root = generate("affwild2", a.root, videos=a.videos, seconds=a.seconds or 20.0, lag_seconds=a.lag, **common)
    info = json.loads((root / "raybench_synthetic.json").read_text())
    print(f"wrote synthetic {a.layout} dataset to {root}: {info}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
