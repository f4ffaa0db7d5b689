"""The robustness track's test-time conditions, against direct computations."""

from __future__ import annotations

import typing

import cv2
import numpy as np
import pytest
import torch

from raybench.schema import EvalConfig
from raybench.train.perturb import CONDITIONS, applicable, condition


def batch(seed=0, h=48):
    g = torch.Generator().manual_seed(seed)
    return {"video": torch.rand(2, 3, 3, h, h, generator=g) * 2 - 1, "audio": torch.randn(2, 12, 40, generator=g),
            "audio_emb": torch.randn(2, 3, 8, generator=g), "mask": torch.ones(2, 3, dtype=torch.bool),
            "label": torch.tensor([1, 2])}


def test_the_schema_offers_exactly_the_conditions_there_are():
    (arg,) = typing.get_args(EvalConfig.model_fields["robustness"].annotation)
    assert set(typing.get_args(arg)) == set(CONDITIONS)


def test_a_missing_modality_is_zero_and_the_other_untouched():
    b = batch()
    a = condition("audio_missing")(b)
    assert not a["audio"].any() and not a["audio_emb"].any() and torch.equal(a["video"], b["video"])
    v = condition("video_missing")(b)
    assert not v["video"].any() and torch.equal(v["audio"], b["audio"]) and torch.equal(v["label"], b["label"])
    assert b["audio"].any()  # the input batch is not changed in place


def test_occlusion_blacks_out_the_centre_half_only():
    b = batch()
    o = condition("video_occlusion")(b)["video"]
    inside = torch.zeros(48, 48, dtype=torch.bool)
    inside[12:36, 12:36] = True
    assert (o[:, :, :, inside] == -1).all()
    assert torch.equal(o[:, :, :, ~inside], b["video"][:, :, :, ~inside])


def test_blur_is_a_gaussian_of_one_24th_of_the_side():
    b = batch()
    out = condition("video_blur")(b)["video"]
    frame = b["video"][1, 2].permute(1, 2, 0).numpy()
    # OpenCV's Gaussian, sigma 2 px at 48 px, kernel 9, reflected border (torchvision's too)
    ref = cv2.GaussianBlur(frame, (9, 9), 2.0, borderType=cv2.BORDER_REFLECT_101)
    np.testing.assert_allclose(out[1, 2].permute(1, 2, 0).numpy(), ref, atol=1e-5)
    assert out.std() < b["video"].std() / 2


def test_a_condition_the_method_cannot_see_is_refused_with_why():
    assert applicable("audio_missing", ("video",)) and applicable("video_blur", ("video_emb", "audio"))
    assert applicable("video_missing", ("video_emb",)) is None and applicable("audio_missing", ("audio",)) is None
    with pytest.raises(ValueError, match="unknown robustness condition 'audio_noise'"):
        condition("audio_noise")
    assert "encoded again" in applicable("audio_snr10", ("audio_emb", "video"))
    assert applicable("audio_snr0", ("audio",)) is None


def test_noise_is_white_at_the_asked_snr_and_drawn_from_its_seed():
    from raybench.data.features import add_noise

    t = np.arange(32000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    for snr in (20, 10, 0):
        y = add_noise(x, snr, seed=1)
        noise = y.astype(np.float64) - x
        assert 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(noise**2)) == pytest.approx(snr, abs=0.1)
        assert abs(np.corrcoef(noise[:-1], noise[1:])[0, 1]) < 0.03  # white: no correlation between samples
    assert np.array_equal(add_noise(x, 10, 1), add_noise(x, 10, 1)) and not np.array_equal(add_noise(x, 10, 1),
                                                                                             add_noise(x, 10, 2))


def test_noisy_rows_compute_the_features_again_from_the_source_waveform(tiny_ravdess, monkeypatch):
    import zlib

    from raybench.data import decode
    from raybench.data.decode import decode_audio, decode_clip
    from raybench.data.features import add_noise, audio_features, frames_audio
    from raybench.data.store import decode_row
    from raybench.results import Waveforms, noisy_rows
    from raybench.schema import DataConfig

    dcfg = DataConfig(fps=8)
    path = str(sorted(tiny_ravdess.rglob("*.mp4"))[0])
    d = decode_clip(path, dcfg.fps, 32, dcfg.sample_rate)
    out, _, _ = decode_row({"clip_id": "c1", "video_path": path, "label": 3}, dcfg)  # what prepare stores
    stored = np.frombuffer(out["audio"], np.float32).reshape(out["audio_shape"])
    row = {"clip_id": "c1", "num_frames": len(d.frames), "audio": stored.tobytes(), "audio_shape": list(stored.shape),
           "label": 3}
    decoded = []  # the clips Waveforms decodes
    monkeypatch.setattr(decode, "decode_audio", lambda *a, **k: decoded.append(a[0]) or decode_audio(*a, **k))
    waves = Waveforms(dcfg, {"c1": [path, None]}, budget=2**30)
    (clean,) = noisy_rows([row], dcfg, waves, snr=300.0)  # noise 300 dB down: the store's features
    np.testing.assert_allclose(np.frombuffer(clean["audio"], np.float32).reshape(clean["audio_shape"]), stored,
                               atol=1e-3)
    (noisy,) = noisy_rows([row], dcfg, waves, snr=0.0)
    # the audio under the clip's frames (data.audio.align: time), with the noise, its features
    wave = frames_audio(decode_audio(path, dcfg.sample_rate), len(d.frames), dcfg.fps, dcfg.sample_rate)
    expected = audio_features(add_noise(wave, 0.0, zlib.crc32(b"c1|0")), len(d.frames), dcfg.sample_rate, dcfg.audio)
    got = np.frombuffer(noisy["audio"], np.float32).reshape(noisy["audio_shape"])
    np.testing.assert_array_equal(got, expected)
    assert np.abs(got - stored).mean() > 0.5 and noisy["label"] == 3  # the rest of the row as it was
    assert decoded == [path]  # the clean waveform was held for the second condition
    # with no room to hold it, it is decoded again for each condition, to the same features
    decoded.clear()
    tight = Waveforms(dcfg, {"c1": [path, None]}, budget=0)
    (again,) = noisy_rows([row], dcfg, tight, snr=0.0)
    next(noisy_rows([row], dcfg, tight, snr=0.0))
    np.testing.assert_array_equal(np.frombuffer(again["audio"], np.float32).reshape(again["audio_shape"]), expected)
    assert decoded == [path, path] and not tight.held


def test_shared_classes_renormalise_the_probabilities_over_the_shared_classes():
    from raybench.train.perturb import SharedClasses

    class Fixed(torch.nn.Module):
        inputs = ("audio",)

        def forward(self, batch):
            return {"logits": batch["audio"]}

    logits = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    cols = [4, 0, 2]  # the target's shared order: its classes are the model's 4, 0 and 2
    out = SharedClasses(Fixed(), cols)({"audio": logits})["logits"]
    p = np.exp(logits.numpy().astype(np.float64))
    p /= p.sum(1, keepdims=True)
    expected = p[:, cols] / p[:, cols].sum(1, keepdims=True)  # P(class | one of the shared classes)
    np.testing.assert_allclose(torch.softmax(out, -1).numpy(), expected, rtol=1e-5)
    assert SharedClasses(Fixed(), cols).inputs == ("audio",)


def test_modality_dropout_zeroes_one_modality_of_the_chosen_windows():
    from raybench.train.perturb import can_drop, drop_modalities

    g = torch.Generator().manual_seed(0)
    b = 4000
    batch = {"audio": torch.randn(b, 8, 5, generator=g) + 3, "video": torch.randn(b, 4, 3, 6, 6, generator=g) + 3,
             "flow": torch.randn(b, 4, 2, 6, 6, generator=g) + 3, "label": torch.arange(b)}
    inputs = ("video", "audio", "flow")
    out, counts = drop_modalities(batch, 0.3, inputs, torch.Generator().manual_seed(1))
    no_audio = (out["audio"] == 0).flatten(1).all(1)
    no_video = (out["video"] == 0).flatten(1).all(1)
    assert torch.equal(no_video, (out["flow"] == 0).flatten(1).all(1))  # flow goes with the frames
    assert not (no_audio & no_video).any()  # never both
    assert abs(no_audio.float().mean().item() - 0.15) < 0.02 and abs(no_video.float().mean().item() - 0.15) < 0.02
    kept = ~(no_audio | no_video)  # the other windows, and the dropped windows' other modality, untouched
    assert torch.equal(out["audio"][~no_audio], batch["audio"][~no_audio])
    assert torch.equal(out["video"][~no_video], batch["video"][~no_video]) and kept.float().mean() > 0.65
    assert torch.equal(out["label"], batch["label"])
    assert counts.tolist() == [int(no_audio.sum()), int(no_video.sum())]
    # the same draws for the same seed; nothing for p = 0 or a method reading one modality
    again, _ = drop_modalities(batch, 0.3, inputs, torch.Generator().manual_seed(1))
    assert all(torch.equal(out[k], again[k]) for k in batch)
    assert drop_modalities(batch, 0.0, inputs) == (batch, None)
    assert drop_modalities(batch, 1.0, ("audio",)) == (batch, None)
    assert can_drop(inputs) and can_drop(("audio_emb", "video_emb")) and not can_drop(("video", "flow"))
    # zeros are what the robustness track's missing conditions feed
    full, _ = drop_modalities(batch, 1.0, inputs, torch.Generator().manual_seed(2))
    gone = (full["video"] == 0).flatten(1).all(1)
    assert torch.equal(full["video"][gone], condition("video_missing")(batch)["video"][gone])


def test_modality_dropout_is_a_probability():
    from pydantic import ValidationError

    from raybench.schema import TrainConfig

    assert TrainConfig(modality_dropout=0.25).modality_dropout == 0.25
    with pytest.raises(ValidationError, match="modality_dropout"):
        TrainConfig(modality_dropout=1.5)
