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
    with pytest.raises(ValueError, match="too short for one openSMILE analysis window"):
        audio_features(np.zeros(80, np.float32), 1, SR, AudioConfig(features="egemaps"))


@pytest.mark.parametrize("kind,n", [("egemaps_functionals", 88), ("compare_functionals", 6373)])
def test_functionals_have_their_documented_count(kind, n):
    frames = 30
    feats = audio_features(_tone_clip(), frames, SR, AudioConfig(features=kind, frames_per_video_frame=K))
    assert feats.shape == (frames * K, n) and feats.dtype == np.float32 and np.isfinite(feats).all()


def test_functionals_windows_are_the_descriptors_means_at_their_centres():
    """egemaps_functionals' loudness mean (loudness_sma3_amean, the 11th of eGeMAPS v02's 88) over
    0.5 s windows every 0.1 s equals the mean of the low-level loudness (computed here with openSMILE's
    descriptors) over the 10 ms frames that start inside each window, placed at the window's centre:
    a step at a window's centre carries that window's mean."""
    import opensmile

    x = _tone_clip()
    lld = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                          feature_level=opensmile.FeatureLevel.LowLevelDescriptors).process_signal(x, SR)
    starts = lld.index.get_level_values("start").total_seconds().to_numpy()
    loud = lld["Loudness_sma3"].to_numpy()
    func = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                           feature_level=opensmile.FeatureLevel.Functionals).process_signal(x, SR)
    col = list(func.columns).index("loudness_sma3_amean")
    # 3 s at 10 fps, 4 steps per frame: step i's centre is (i + 0.5) / 40 s
    feats = audio_features(x, 30, SR, AudioConfig(features="egemaps_functionals", frames_per_video_frame=K,
                                                  functionals_s=0.5, functionals_hop_s=0.1))
    # windows start at 0, 0.1, ...; each spans 0.5 s of frame starts plus the longest frame (60 ms): the
    # window from 1.0 s has its centre at 1.0 + (0.5 + 0.06) / 2 = 1.28 s; steps are 25 ms apart, so
    # compare at the step whose centre is nearest, within an interpolation between two windows
    for w0 in (0.3, 0.8, 1.0, 1.7, 2.2):
        want = loud[(starts >= w0 - 1e-6) & (starts < w0 + 0.5 - 1e-6)].mean()
        centre = w0 + 0.28
        i = int(round(centre * 40 - 0.5))
        got = feats[i, col]
        nb = [loud[(starts >= w - 1e-6) & (starts < w + 0.5 - 1e-6)].mean() for w in (w0 - 0.1, w0 + 0.1)]
        lo, hi = min(want, *nb), max(want, *nb)
        assert lo - 1e-4 <= got <= hi + 1e-4, (w0, got, want, nb)
        assert abs(got - want) <= abs(nb[0] - want) + abs(nb[1] - want) + 1e-4
    # a window inside the tone's second: loud; a window before it: quiet
    assert feats[int(1.5 * 40), col] > 10 * feats[int(0.3 * 40), col]
    assert func.shape == (1, 88)  # the whole-signal functionals have the same columns


def test_functionals_window_keys_in_the_fingerprint_only_for_functionals():
    from raybench.data.store import fingerprint
    from raybench.schema import DataConfig

    def fp(**audio):  # (data.audio.align: stretch, the audio as it was before 2026-12-04)
        return fingerprint("ravdess", "/data", DataConfig(dataset="ravdess", audio={"align": "stretch", **audio}))

    assert fp() == fp(functionals_s=2.0, functionals_hop_s=0.5)  # log-Mel: the keys do not apply
    # as computed before the functionals existed (at ce42018): stores made then are reused
    assert fp() == "59218a168fc8b64b" and fp(features="egemaps") == "a54cbaff8f2ff2ed"
    assert fp(features="egemaps_functionals") != fp(features="egemaps_functionals", functionals_s=2.0)
    assert fp(features="egemaps_functionals") != fp(features="egemaps")
    with pytest.raises(ValueError, match=r"too short for one 1 s functionals window \(data.audio.functionals_s\)"):
        audio_features(_tone_clip(seconds=0.8), 8, SR, AudioConfig(features="egemaps_functionals"))


def test_a_clip_too_short_for_the_functionals_window_is_skipped_with_the_reason(tmp_path):
    """In the prepare stage such a clip is skipped (counted and listed with its reason), not fatal."""
    from raybench.data.store import decode_row
    from raybench.data.synth import write_mp4
    from raybench.schema import DataConfig

    rng = np.random.default_rng(0)
    for name, seconds in (("short", 0.8), ("long", 2.0)):
        write_mp4(tmp_path / f"{name}.mp4", rng.integers(0, 255, (int(seconds * 10), 32, 32, 3), dtype=np.uint8),
                  10, _tone_clip(seconds=seconds, on=(0.1, seconds - 0.1)), SR)
    cfg = DataConfig(dataset="csv", fps=10, image_size=16, audio=dict(features="egemaps_functionals"))
    row, bad, _ = decode_row({"clip_id": "short", "video_path": str(tmp_path / "short.mp4"), "label": 0}, cfg)
    assert row is None and "ms) is too short for one 1 s functionals window" in bad
    row, bad, _ = decode_row({"clip_id": "long", "video_path": str(tmp_path / "long.mp4"), "label": 0}, cfg)
    assert bad is None and row["audio_shape"] == [20 * 4, 88]
