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
