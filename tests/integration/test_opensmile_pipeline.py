"""openSMILE's eGeMAPS descriptors (and their functionals) through the whole pipeline: prepare stores them, aligned to the
video frames, and a trial trains on them."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("features,n", [("egemaps", 25), ("egemaps_functionals", 88)])
def test_a_sweep_trains_on_egemaps_descriptors(ray_session, tmp_path, features, n):
    from raybench.config import load
    from raybench.data.store import ClipStore
    from raybench.sweep import run_sweep

    path = tmp_path / "sweep.yaml"
    path.write_text("""
name: egemaps
data: {dataset: synthetic_ravdess, fps: 8, image_size: 32, synth: {actors: 3, seconds: 1.5},
       audio: {features: FEATURES, functionals_s: 0.5}}
method: {name: audio_only}
window: {length: 8, hop: 4}
train: {epochs: 1, batch_size: 16, num_workers: 1}
tune: {search_space: {window.length: {grid: [8]}}}
""")
    path.write_text(path.read_text().replace("FEATURES", features))
    cfg = load(path, [])
    cfg.mlflow.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg.storage = str(tmp_path / "results")
    res = run_sweep(cfg)
    assert res.failed == 0 and len(res.trials) == 1
    store = ClipStore(res.prepared["synthetic_ravdess"]["store_path"])
    rows = store.read_clips(columns=["audio_shape", "num_frames"])
    assert rows and all(r["audio_shape"] == [4 * r["num_frames"], n] for r in rows)  # 25 LLDs or 88 functionals, 4 steps a frame
    (t,) = res.trials
    assert 0.0 <= t["val"]["val/uar"] <= 1.0
