"""The published methods through the whole pipeline (prepare -> training in one-worker trials -> Tune -> MLflow)."""

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
train: {epochs: 6, batch_size: 16, lr: 3.0e-4, num_workers: 1}
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
train: {epochs: 1, batch_size: 16, num_workers: 1}
tune: {search_space: {method.use_flow: {grid: [true, false]}}}
""")
    res = run_sweep(cfg)  # the store keeps flow because de3 needs it
    assert res.failed == 0 and len(res.trials) == 2
    store = ClipStore(__import__("pathlib").Path(res.prepared["synthetic_ravdess"]["store_path"]))
    row = store.read_clips(columns=["flow_shape", "video_shape"])[0]
    assert row["flow_shape"][:3] == row["video_shape"][:3] and row["flow_shape"][3] == 2
    assert {t["params"]["method.use_flow"] for t in res.trials} == {True, False}
    assert all("val/uar" in t["val"] for t in res.trials)


def test_zhang2021_authors_unfreezing_in_the_training_loop(ray_session, tmp_path):
    """With a pretrained backbone, the loop releases a group at epoch 0 and at every moment the LR is
    below release_below_lr (set high here, so every epoch is one), restarting the optimizer at
    train.lr; after release_count releases the next moment ends the trial."""
    import torch
    from mlflow.tracking import MlflowClient

    from raybench.nn.encoders import build_frame_encoder
    from raybench.sweep import run_sweep

    torch.save(build_frame_encoder("small_cnn", 16, None, 4).state_dict(), tmp_path / "face.pt")
    cfg = _cfg(tmp_path, f"""
name: zhang2021-release
data: {{dataset: synthetic_affwild2, fps: 8, image_size: 32, synth: {{videos: 6, video_seconds: 6.0}}}}
method: {{name: zhang2021, visual_dim: 16, cnn_width: 4, levels: 1, weights: {tmp_path / 'face.pt'},
         release_count: 2, release_below_lr: 1.0}}
window: {{length: 16, hop: 8}}
train: {{epochs: 6, batch_size: 8, lr: 1.0e-3, num_workers: 1}}
tune: {{search_space: {{window.length: {{grid: [16]}}}}}}
""")
    res = run_sweep(cfg)
    assert res.failed == 0
    (t,) = res.trials
    client = MlflowClient(res.tracking_uri)
    run = client.search_runs([res.experiment_id], f"tags.`raybench.trial_id` = '{t['trial_id']}'")[0]
    released = [m.value for m in client.get_metric_history(run.info.run_id, "train/released_groups")]
    lrs = [m.value for m in client.get_metric_history(run.info.run_id, "train/lr")]
    assert released == [1, 2]  # epoch 0: the first release; epoch 1: the second; epoch 2: the trial ends
    assert lrs == [1e-3, 1e-3]  # each release restarts the optimizer at train.lr
    # ended by the method's schedule before its 6 epochs: recorded as such, not blamed on a scheduler
    assert run.info.status == "KILLED" and "own schedule ended the trial after 2 of 6" in run.data.tags[
        "raybench.status_reason"]
