"""Evaluation scores every frame with a real prediction, whatever the training hop, and computes
continuous metrics over the annotated source frames (``eval.ccc_over``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raybench.schema import MethodOptions, TrialConfig
from raybench.train.loop import evaluate


def _row(clip_id: str, va: np.ndarray, size: int = 4, k: int = 2, feats: int = 3, source_va: np.ndarray | None = None,
         source_fps: float = 10.0, label_rate: float | None = None) -> dict:
    """A store row; ``va`` at data.fps (10), ``source_va`` the annotation at ``label_rate`` (default: the
    video's ``source_fps``; both default to ``va`` itself, a video already at 10 fps)."""
    n = len(va)
    src = va if source_va is None else source_va
    n_source = n if source_va is None else int(round(n * source_fps / 10.0))
    video = np.zeros((n, size, size, 3), np.uint8)
    audio = np.zeros((n * k, feats), np.float32)
    flow = np.zeros((0, 0, 0, 2), np.float16)
    return {"clip_id": clip_id, "label": -1, "num_frames": n, "video": video.tobytes(), "video_shape": list(video.shape),
            "audio": audio.tobytes(), "audio_shape": list(audio.shape), "va": va.astype(np.float32).tobytes(),
            "flow": flow.tobytes(), "flow_shape": list(flow.shape), "source_fps": source_fps, "source_frames": n_source,
            "source_va": np.asarray(src, np.float32).tobytes(), "source_va_rate": label_rate or source_fps}


DATA = {"task": "continuous", "class_names": ["valence", "arousal"], "audio_mean": [0.0] * 3, "audio_std": [1.0] * 3,
        "fps": 10.0}


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
    data = dict(DATA)
    cfg = TrialConfig(method=MethodOptions(name="perfect"), window={"length": length, "hop": hop},
                      train={"batch_size": 8, "amp": False})
    metrics, preds = evaluate(Perfect(), rows, data, cfg, torch.device("cpu"), return_predictions=True)
    assert metrics["ccc_valence"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["ccc_arousal"] == pytest.approx(1.0, abs=1e-6)
    assert len(preds) == 1000 + 637 + 90  # one prediction per frame
    assert all(p["valence"] == pytest.approx(p["valence_true"], abs=1e-6) for p in preds)


def _ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's CCC with population moments, written from its definition (np.cov, bias=True)."""
    c = np.cov(x, y, bias=True)
    return float(2 * c[0, 1] / (c[0, 0] + c[1, 1] + (x.mean() - y.mean()) ** 2))


def _source_case(label_rate_of=None):
    """Three videos of different lengths at 15 fps (source), decoded at 10 fps: the stored labels at
    10 fps are the annotation of the source frames decord decoded (0, 1, 3, 4, 6, ...)."""
    rng = np.random.default_rng(3)
    rows, truths, shown = [], [], []
    for i, n_src in enumerate((300, 151, 47)):
        rate = label_rate_of(n_src) if label_rate_of else 15.0
        n_lab = int(np.ceil(n_src / 15.0 * rate - 1e-6))
        t = np.arange(n_lab) / rate
        src = np.stack([np.sin(3 * t + i), np.cos(2 * t) * 0.5], 1) + rng.normal(0, 0.2, (n_lab, 2))
        src[5] = np.nan  # an unannotated step
        n_out = int(np.floor(n_src / 15.0 * 10 + 1e-6))
        decoded = [int(np.floor(j * 1.5 + 1e-6)) for j in range(n_out)]  # source frame of each 10 fps frame
        lab = [min(int(np.floor(s / 15.0 * rate + 1e-6)), n_lab - 1) for s in decoded]
        va = src[lab]  # the 10 fps labels the store keeps; the perfect predictor predicts these
        rows.append(_row(f"c{i}", va, source_va=src, source_fps=15.0, label_rate=rate))
        rows[-1]["source_frames"] = n_src
        # expected, written out: step j is shown by source frame floor(j / rate * 15); its prediction is
        # that of the latest decoded source frame at or before it
        pred = []
        for j in range(n_lab):
            s = int(np.floor(j / rate * 15 + 1e-6))
            k = max(o for o in range(n_out) if decoded[o] <= s)
            pred.append(np.nan_to_num(va[k], nan=0.0))  # the predictor says 0 where its label is missing
        truths.append(src)
        shown.append(np.array(pred))
    return rows, truths, shown


@pytest.mark.parametrize("label_rate_of", [None, lambda n: 25.0], ids=["per-frame labels", "labels at 25 Hz"])
@pytest.mark.parametrize("ccc_over", ["frames", "clips"])
def test_continuous_metrics_are_over_the_annotated_source_frames(label_rate_of, ccc_over):
    rows, truths, preds_expected = _source_case(label_rate_of)
    cfg = TrialConfig(method=MethodOptions(name="perfect"), window={"length": 16, "hop": 8},
                      train={"batch_size": 8, "amp": False}, eval={"ccc_over": ccc_over})
    metrics, preds = evaluate(Perfect(), rows, dict(DATA), cfg, torch.device("cpu"), return_predictions=True)
    assert len(preds) == sum(len(t) for t in truths)  # one row per annotated source step, not per 10 fps frame
    got = np.array([[p["valence"], p["arousal"]] for p in preds])
    np.testing.assert_allclose(got, np.concatenate(preds_expected), atol=1e-6)
    for d, name in enumerate(("ccc_valence", "ccc_arousal")):
        ok = [~np.isnan(t[:, d]) for t in truths]
        if ccc_over == "frames":  # one CCC over every annotated frame of every clip
            want = _ccc(np.concatenate([p[m, d] for p, m in zip(preds_expected, ok)]),
                        np.concatenate([t[m, d] for t, m in zip(truths, ok)]))
        else:  # the mean of the clips' CCCs
            want = np.mean([_ccc(p[m, d], t[m, d]) for p, t, m in zip(preds_expected, truths, ok)])
        assert metrics[name] == pytest.approx(want, abs=1e-5)
    # a perfect predictor at 10 fps is not perfect on the 15 fps frames it did not see
    assert metrics["ccc"] < 0.999


def test_at_the_source_rate_the_source_frames_are_the_frames():
    rng = np.random.default_rng(1)
    rows = [_row(f"c{i}", rng.normal(0, 0.3, (n, 2))) for i, n in enumerate((40, 25))]
    cfg = TrialConfig(method=MethodOptions(name="perfect"), train={"batch_size": 8, "amp": False})
    metrics, preds = evaluate(Perfect(), rows, dict(DATA), cfg, torch.device("cpu"), return_predictions=True)
    assert len(preds) == 65 and metrics["ccc"] == pytest.approx(1.0, abs=1e-6)


def test_a_store_row_without_source_annotation_is_a_clear_error():
    row = _row("old", np.zeros((20, 2)))
    del row["source_va"]
    cfg = TrialConfig(method=MethodOptions(name="perfect"), train={"batch_size": 8, "amp": False})
    with pytest.raises(ValueError, match="clip old: .*older raybench: delete it"):
        evaluate(Perfect(), [row], dict(DATA), cfg, torch.device("cpu"))


class ClipEcho(torch.nn.Module):
    """Outputs that tell clips apart: each frame's mean pixel (continuous), each window's mean over its
    valid frames times (1..C) (categorical logits); padding never counts."""

    def __init__(self, task: str, n: int = 4):
        super().__init__()
        self.task, self.n = task, n

    def forward(self, batch):
        per_frame = batch["video"].mean(dim=(2, 3, 4))  # (B, T)
        if self.task == "continuous":
            return {"va": torch.stack([per_frame, -per_frame], -1)}
        m = batch["mask"].float()
        v = (per_frame * m).sum(1) / m.sum(1)
        return {"logits": v[:, None] * torch.arange(1, self.n + 1, dtype=v.dtype)}


@pytest.mark.parametrize("task", ["categorical", "continuous"])
def test_windows_batched_across_clips_give_the_per_clip_results(task, tmp_path):
    """Evaluation batches windows of several clips together: the metrics and predictions are those of
    one window at a time (eval_batch_size 1), clips of different lengths, some padded, each output
    distinct per clip (a window's output scored as another clip's would change them)."""
    from raybench.data.store import ClipStore, random_store

    data = random_store(tmp_path / "s", [5, 23, 12, 40, 8], task=task, image_size=16, n_mels=8, n_classes=4)
    store = ClipStore(data["store_path"])
    out = {}
    for ebs in (1, 7):
        cfg = TrialConfig(method=MethodOptions(name="echo"), window={"length": 10, "hop": 5},
                          train={"eval_batch_size": ebs, "amp": False})
        out[ebs] = evaluate(ClipEcho(task), store.iter_clips(data["ids"]["val"]), data, cfg, torch.device("cpu"),
                            return_predictions=True)
    (m1, p1), (m7, p7) = out[1], out[7]
    assert m1.keys() == m7.keys() and all(m1[k] == pytest.approx(m7[k], abs=1e-6) for k in m1)
    assert len(p1) == len(p7) == (5 if task == "categorical" else 5 + 23 + 12 + 40 + 8)
    key = "p_c3" if task == "categorical" else "valence"
    got = {(p["clip_id"], p.get("frame")): p[key] for p in p7}
    assert got == pytest.approx({(p["clip_id"], p.get("frame")): p[key] for p in p1}, abs=1e-6)
    assert len({round(v, 6) for v in got.values()}) > 5 if task == "continuous" else len(set(got.values())) == 5
