"""openSMILE's descriptors as the store's audio features (data.audio.features: egemaps | compare):
their documented shapes, and their alignment to video frames on a signal with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from raybench.data.features import audio_features
from raybench.schema import AudioConfig

SR, FPS, K = 16000, 10, 4


def _tone_clip(seconds=3.0, on=(1.0, 2.0), hz=440.0):
    """Silence with a tone of ``hz`` from on[0] to on[1] s (a little noise, so that silence is not all zeros)."""
    t = np.arange(int(seconds * SR)) / SR
    x = 1e-4 * np.random.default_rng(0).standard_normal(len(t))
    inside = (t >= on[0]) & (t < on[1])
    x[inside] += 0.3 * np.sin(2 * np.pi * hz * t[inside])
    return x.astype(np.float32)


@pytest.mark.parametrize("kind,n", [("egemaps", 25), ("compare", 65)])
def test_descriptors_have_their_documented_count_and_k_steps_per_video_frame(kind, n):
    frames = 30  # 3 s at 10 fps
    feats = audio_features(_tone_clip(), frames, SR, AudioConfig(features=kind, frames_per_video_frame=K))
    assert feats.shape == (frames * K, n) and feats.dtype == np.float32
    assert np.isfinite(feats).all()


def test_egemaps_loudness_and_pitch_follow_the_tone_in_time():
    frames = 30
    feats = audio_features(_tone_clip(), frames, SR, AudioConfig(features="egemaps", frames_per_video_frame=K))
    step_time = (np.arange(frames * K) + 0.5) / (FPS * K)  # each step's centre, s
    loud, f0 = feats[:, 0], feats[:, 10]  # Loudness_sma3, F0semitoneFrom27.5Hz_sma3nz (eGeMAPS v02's order)
    inside = (step_time > 1.1) & (step_time < 1.9)
    outside = (step_time < 0.9) | (step_time > 2.1)
    assert loud[inside].min() > 10 * max(loud[outside].max(), 1e-3)
    # 440 Hz is 12 * log2(440 / 27.5) = 48 semitones above 27.5 Hz; unvoiced steps are 0
    assert np.allclose(f0[inside], 48.0, atol=0.5)
    assert np.abs(f0[outside]).max() < 1e-6
    # the onset is found where it is: the first loud step is the one at 1.0 s (+- one 25 ms step and the
    # analysis window's half width)
    first = np.argmax(loud > 0.5 * loud[inside].min())
    assert abs(step_time[first] - 1.0) <= 0.025 + 0.03


def test_audio_shorter_than_a_window_is_a_clear_error():
    with pytest.raises(ValueError, match="shorter than one openSMILE analysis window"):
        audio_features(np.zeros(80, np.float32), 1, SR, AudioConfig(features="egemaps"))
