"""The synthetic categorical set means something: fusion beats chance and either modality alone.

DATASETS.md designs the classes so that audio alone confuses happy/surprised and
video alone confuses neutral/calm and angry/disgust: fused models must do better.
"""

from __future__ import annotations

from raybench.config import SWEEPS_DIR, load


def test_fusion_beats_chance_and_each_modality(ray_session, tmp_path):
    from raybench.sweep import run_sweep

    # the default sweep's data and training (10 actors: 6 train, 2 validate), one window length; with
    # fewer actors the validation split is one actor and its UAR swings by 0.3 between epochs
    cfg = load(SWEEPS_DIR / "default.yaml", [
        "tune.search_space={method.name: {grid: [audio_only, video_only, av_fusion]}, window.length: {grid: [8]}}",
        "eval.robustness=[audio_missing, video_missing]",
    ])
    cfg.mlflow.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg.storage = str(tmp_path / "results")
    res = run_sweep(cfg)
    assert res.failed == 0
    best = {t["params"]["method.name"]: t["best_val"] for t in res.trials}
    print(f"[learning] best val/uar: {best}")
    chance = 1 / 8
    assert best["av_fusion"] > 4 * chance, best
    assert best["av_fusion"] > best["audio_only"] + 0.05, best
    assert best["av_fusion"] > best["video_only"] + 0.05, best
    assert res.best["synthetic_ravdess"]["params"]["method.name"] == "av_fusion"

    # the robustness track on the chosen fused model: without the voice, the pairs that only the voice
    # tells apart (neutral/calm, angry/disgust) lose recall; without the face, happy/surprised do
    r = res.best["synthetic_ravdess"]["robust"]
    print(f"[learning] robustness: {r}")

    def pair(cond, classes):
        return sum(r[f"test_robust/{cond}/recall_{c}"] for c in classes) / len(classes)

    voice, face = ("neutral", "calm", "angry", "disgust"), ("happy", "surprised")
    assert pair("audio_missing", voice) < pair("clean", voice) - 0.1, r
    assert pair("video_missing", face) < pair("clean", face) - 0.1, r
    assert r["test_robust/clean/uar"] == res.best["synthetic_ravdess"]["test"]["test/uar"]
