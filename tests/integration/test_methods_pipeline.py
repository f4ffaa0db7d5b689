"""The published methods through the whole pipeline (prepare -> Ray Train DDP -> Tune -> MLflow)."""

from __future__ import annotations

from raybench.config import load


def _cfg(tmp_path, text, *overrides):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    cfg = load(path, list(overrides))
    cfg.mlflow.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg.storage = str(tmp_path / "results")
    return cfg


def test_zhang2021_learns_the_synthetic_continuous_set(ray_session, tmp_path):
    from raybench.sweep import run_sweep

    cfg = _cfg(tmp_path, """
name: zhang2021-synthetic
data: {dataset: synthetic_affwild2, fps: 10, image_size: 48, synth: {videos: 8, video_seconds: 16.0}}
method: {name: zhang2021, visual_dim: 64}
window: {length: 32, hop: 16}
train: {epochs: 6, batch_size: 16, lr: 3.0e-4, num_workers: 2}
tune: {search_space: {window.length: {grid: [32]}}}
""")
    res = run_sweep(cfg)
    assert res.failed == 0
    (t,) = res.trials
    assert t["cfg"].method.name == "zhang2021"
    print("zhang2021 best val CCC", t["best_val"])
    assert t["best_val"] > 0.05, t  # a positive validation CCC (chance is 0)
    assert "test/ccc" in res.best["synthetic_affwild2"]["test"]


def test_de3_with_optical_flow_from_the_prepare_stage(ray_session, tmp_path):
    from raybench.data.store import ClipStore
    from raybench.sweep import run_sweep

    cfg = _cfg(tmp_path, """
name: de3-flow
data: {dataset: synthetic_ravdess, fps: 8, image_size: 32, synth: {actors: 3, seconds: 1.0}}
method: {name: de3, dim: 32}
window: {length: 8, hop: 4}
train: {epochs: 1, batch_size: 16, num_workers: 2}
tune: {search_space: {method.use_flow: {grid: [true, false]}}}
""")
    res = run_sweep(cfg)  # the store keeps flow because de3 needs it
    assert res.failed == 0 and len(res.trials) == 2
    store = ClipStore(__import__("pathlib").Path(res.prepared["synthetic_ravdess"]["store_path"]))
    row = store.read_clips(columns=["flow_shape", "video_shape"])[0]
    assert row["flow_shape"][:3] == row["video_shape"][:3] and row["flow_shape"][3] == 2
    assert {t["params"]["method.use_flow"] for t in res.trials} == {True, False}
    assert all("val/uar" in t["val"] for t in res.trials)
