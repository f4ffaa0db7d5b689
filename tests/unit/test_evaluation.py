"""Evaluation scores every frame with a real prediction, whatever the training hop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raybench.schema import MethodOptions, TrialConfig
from raybench.train.loop import evaluate


def _row(clip_id: str, va: np.ndarray, size: int = 4, k: int = 2, feats: int = 3) -> dict:
    n = len(va)
    video = np.zeros((n, size, size, 3), np.uint8)
    audio = np.zeros((n * k, feats), np.float32)
    flow = np.zeros((0, 0, 0, 2), np.float16)
    return {"clip_id": clip_id, "label": -1, "num_frames": n, "video": video.tobytes(), "video_shape": list(video.shape),
            "audio": audio.tobytes(), "audio_shape": list(audio.shape), "va": va.astype(np.float32).tobytes(),
            "flow": flow.tobytes(), "flow_shape": list(flow.shape)}


class Perfect(torch.nn.Module):
    """Predicts each window's gold labels (0 where a frame is padding)."""

    def forward(self, batch):
        return {"va": torch.nan_to_num(batch["va"], 0.0)}


@pytest.mark.parametrize("length,hop", [(300, 200), (48, 200), (36, 200), (16, 8), (2000, 200)])
def test_a_perfect_predictor_scores_ccc_1_whatever_the_hop(length, hop):
    rng = np.random.default_rng(0)
    rows = []
    for i, n in enumerate((1000, 637, 90)):  # several clips of different lengths, one shorter than a window
        t = np.arange(n)
        rows.append(_row(f"c{i}", np.stack([np.sin(t / 40 + i), np.cos(t / 25) * 0.5], 1) + rng.normal(0, .05, (n, 2))))
    data = {"task": "continuous", "class_names": ["valence", "arousal"], "audio_mean": [0.0] * 3,
            "audio_std": [1.0] * 3}
    cfg = TrialConfig(method=MethodOptions(name="perfect"), window={"length": length, "hop": hop},
                      train={"batch_size": 8, "amp": False})
    metrics, preds = evaluate(Perfect(), rows, data, cfg, torch.device("cpu"), return_predictions=True)
    assert metrics["ccc_valence"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["ccc_arousal"] == pytest.approx(1.0, abs=1e-6)
    assert len(preds) == 1000 + 637 + 90  # one prediction per frame
    assert all(p["valence"] == pytest.approx(p["valence_true"], abs=1e-6) for p in preds)
