"""End to end on a local Ray: prepare (Ray Data), train (Ray Train, 2 DDP workers), sweep (Tune), MLflow.

The smoke sweep, ASHA and the failing trial run 2-worker Ray Train trials; the tests of what a sweep
records (store reuse, folds, schedules, repeats, the continuous task) run one-worker trials, the
default sweep's kind: a worker group costs about 30 s per trial on a 2-core machine."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from raybench.config import SWEEPS_DIR, load
from raybench.data.store import PrepareError, prepare
from raybench.schema import data_config

TINY = ["data.synth.actors=4", "data.synth.seconds=1.0", "data.fps=8"]


def sweep_cfg(tmp: Path, *overrides: str, path=SWEEPS_DIR / "smoke.yaml") -> dict:
    cfg = load(path, [*TINY, *overrides])
    cfg.mlflow.tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    cfg.storage = str(tmp / "results")
    return cfg


@pytest.fixture(scope="module")
def smoke(ray_session, tmp_path_factory):
    from raybench.sweep import run_sweep

    tmp = tmp_path_factory.mktemp("smoke")
    cfg = sweep_cfg(tmp)
    return cfg, run_sweep(cfg)


def test_smoke_sweep_runs_every_trial_and_tests_only_the_best(smoke):
    cfg, res = smoke
    assert res.failed == 0 and len(res.trials) == 2
    assert sorted(t["params"]["window.length"] for t in res.trials) == [4, 8]
    for t in res.trials:
        assert t["epochs"] == cfg.train.epochs
        assert {"val/acc", "val/uar", "val/f1"} <= set(t["val"])
        # checkpoints live where the sweep says: <storage>/<sweep id>/checkpoints/<trial id>/
        trial_dir = Path(cfg.storage) / res.sweep_id / "checkpoints" / t["trial_id"].split("/")[-1]
        assert Path(t["checkpoint"]).parent == trial_dir and (Path(t["checkpoint"]) / "best.pt").is_file()
    assert list((Path(cfg.storage) / res.sweep_id).glob("experiment_state*.json"))  # Tune's own state beside them
    (best,) = res.best.values()
    assert set(best["test"]) == {"test/acc", "test/uar", "test/f1"}
    vals = [t["best_val"] for t in res.trials]
    assert best["best_val"] == max(vals)
    assert sum("test" in t for t in res.trials) == 1


def test_a_worker_group_trial_starts_no_preemption_watcher(smoke):
    """Ray Train's PreemptionWatcher (a process per worker group, whose notices raybench never reads)
    is off: the smoke sweep's 2-worker trials started their workers and no watcher."""
    from ray.util.state import list_actors

    classes = [a.class_name for a in list_actors(limit=10000)]
    assert classes.count("RayTrainWorker") >= 4, classes  # two trials of two workers (the listing works)
    assert "PreemptionWatcher" not in classes, classes


def test_mlflow_holds_one_parent_and_a_child_per_trial(smoke):
    from mlflow.tracking import MlflowClient

    cfg, res = smoke
    client = MlflowClient(res.tracking_uri)
    runs = client.search_runs([res.experiment_id])
    parents = [r for r in runs if r.data.tags.get("raybench.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == res.parent_run_id]
    assert len(parents) == 1 and parents[0].info.run_id == res.parent_run_id
    assert len(children) == 2 and len(runs) == 3
    for c in children:
        tags = c.data.tags
        assert tags["method"] == "av_fusion" and tags["dataset"] == "synthetic_ravdess"
        assert tags["window"] in ("4", "8") and tags["seed"] == "0" and tags["fusion"] == "concat"
        assert "fold" not in tags  # no folds in this sweep: no fold tag (not the string "None")
        w = tags["window"]
        assert c.info.run_name == (f"av_fusion fusion=concat synthetic_ravdess window={w} "
                                   f"({tags['raybench.trial_id'].split('/')[-1]})")
        assert c.data.params["window.length"] == tags["window"]
        assert c.data.params["train.epochs"] == str(cfg.train.epochs)
        hist = client.get_metric_history(c.info.run_id, "val/uar")
        assert [m.step for m in hist] == list(range(cfg.train.epochs))
        arts = {a.path for a in client.list_artifacts(c.info.run_id)}
        assert "config.yaml" in arts
        assert c.info.status == "FINISHED" and c.info.end_time >= c.info.start_time  # closed, with a duration
    best = [c for c in children if c.data.tags.get("raybench.best") == "true"]
    assert len(best) == 1 and "test/uar" in best[0].data.metrics
    assert {"predictions_test.csv", "confusion_test.png", "recall_test.png"} <= {
        x.path for x in client.list_artifacts(best[0].info.run_id)}
    for c in children:  # the model's cost on every trial run
        assert c.data.metrics["model/parameters"] >= c.data.metrics["model/trainable_parameters"] > 0
        assert c.data.metrics["model/gflops_per_window"] > 0
    for c in children:  # every trial's validation figures and predictions
        assert {"predictions_val.csv", "confusion_val.png", "recall_val.png"} <= {
            x.path for x in client.list_artifacts(c.info.run_id)}
    # provenance on every run: versions, the git commit of this checkout, the trial's device
    from importlib import metadata

    for r in runs:
        assert r.data.tags["raybench.versions.torch"] == metadata.version("torch")
        assert r.data.tags["raybench.version"] == metadata.version("raybench")
        if (Path(__file__).parents[2] / ".git").exists():
            head = subprocess.run(["git", "-C", str(Path(__file__).parents[2]), "rev-parse", "HEAD"],
                                  capture_output=True, text=True).stdout.strip()
            assert r.data.tags["mlflow.source.git.commit"] == head
    assert all(c.data.tags["raybench.device"] == "cpu" for c in children)
    from raybench.tracking import cpu_model

    assert all(c.data.tags["raybench.gpus"] == "0" and c.data.tags["raybench.cpu_model"] == cpu_model()
               for c in children)
    # what each run trained on: the dataset as an MLflow input (store fingerprint, counts per split)
    prep = res.prepared["synthetic_ravdess"]
    for r in [client.get_run(res.parent_run_id), *children]:
        (inp,) = client.get_run(r.info.run_id).inputs.dataset_inputs
        assert inp.dataset.name == "synthetic_ravdess" and inp.dataset.digest.startswith(prep["fingerprint"] + "-")
        assert prep["store_path"].endswith(prep["fingerprint"])
        profile = json.loads(inp.dataset.profile)
        assert [profile[f"{s}_clips"] for s in ("train", "val", "test")] == [len(prep["ids"][s])
                                                                           for s in ("train", "val", "test")]
        assert profile["skipped"] == 0 and profile["face_found"] is None
        m = client.get_run(r.info.run_id).data.metrics
        assert m["data/synthetic_ravdess/train_clips"] == len(prep["ids"]["train"])
        assert m["data/synthetic_ravdess/train_subjects"] == prep["counts"]["train"]["subjects"] > 0
    # the UI opens the experiment on its training runs, not on the GenAI view
    assert client.get_experiment(res.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    pm = client.get_run(res.parent_run_id).data.metrics
    # the parent holds the chosen trial's numbers under the same names as the trial runs
    assert pm["test/uar"] == best[0].data.metrics["test/uar"]
    assert pm["best/val/uar"] == best[0].data.metrics["best/val/uar"]
    assert "trials.csv" in {a.path for a in client.list_artifacts(res.parent_run_id)}
    # a local SQLite store keeps its artifacts beside the database, not in the current directory
    db = Path(res.tracking_uri[len("sqlite:///"):])
    assert client.get_experiment(res.experiment_id).artifact_location == (db.parent / "mlartifacts").as_uri()
    assert list((db.parent / "mlartifacts").rglob("config.yaml"))


def test_second_sweep_reuses_the_clip_store(smoke, tmp_path):
    from raybench.sweep import run_sweep

    cfg, first = smoke
    store = Path(first.prepared["synthetic_ravdess"]["store_path"])
    before = {p: p.stat().st_mtime_ns for p in (store / "parts").glob("*.parquet")}
    assert before
    cfg2 = sweep_cfg(tmp_path, "train.epochs=1", "train.num_workers=1",
                     "tune.search_space={window.length: {grid: [6, 10]}}")
    res = run_sweep(cfg2)
    assert res.failed == 0 and len(res.trials) == 2
    assert res.prepared["synthetic_ravdess"]["decoded"] == 0
    assert res.prepared["synthetic_ravdess"]["store_path"] == str(store)
    assert {p: p.stat().st_mtime_ns for p in (store / "parts").glob("*.parquet")} == before


def test_bad_videos_are_skipped_and_named(ray_session, tiny_ravdess, tmp_path):
    import numpy as np

    from raybench.data.synth import write_mp4

    root = tmp_path / "ravdess"
    shutil.copytree(tiny_ravdess, root)
    corrupt = root / "Actor_01" / "01-01-05-02-02-02-01.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(500))
    silent = root / "Actor_02" / "01-01-05-02-02-02-02.mp4"
    write_mp4(silent, np.zeros((8, 64, 64, 3), np.uint8), 8, None, 16000)
    data = dict(load(SWEEPS_DIR / "smoke.yaml").data.model_dump(), dataset="ravdess", root=str(root),
                store_dir=str(tmp_path / "stores"), max_bad_fraction=0.1)
    prep = prepare(data)
    assert set(prep.bad) == {corrupt.stem, silent.stem}
    assert "cannot open video" in prep.bad[corrupt.stem]["reason"]
    assert "audio" in prep.bad[silent.stem]["reason"]
    assert prep.bad[corrupt.stem]["video_path"] == str(corrupt)
    assert len(prep.clips) == 45 and corrupt.stem not in {c.clip_id for c in prep.clips}
    # past the threshold the stage fails with the list; nothing decoded is lost
    with pytest.raises(PrepareError) as e:
        prepare(dict(data, max_bad_fraction=0.01))
    assert str(corrupt) in str(e.value) and str(silent) in str(e.value)
    # an interrupted store resumes: only the missing clips are decoded again
    part = sorted((prep.store.path / "parts").glob("*.parquet"))[0]
    import pyarrow.parquet as pq

    lost = pq.read_table(part, columns=["clip_id"]).num_rows
    part.unlink()
    again = prepare(data)
    assert again.decoded == lost and len(again.clips) == 45


@pytest.mark.timeout(900)
def test_continuous_pipeline_reports_ccc_and_merges_chunk_folds(ray_session, tmp_path):
    """The continuous task under Zhang et al.'s protocol (data.split.protocol: chunks): every fold
    model is tested on the same test videos, and their predictions are merged by CCC centering."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from raybench.results import format_table, merge_fold_predictions
    from raybench.sweep import run_sweep

    cfg = sweep_cfg(tmp_path, "data.dataset=synthetic_affwild2", "data.synth.videos=6",
                    "data.synth.video_seconds=8.0", "train.epochs=2", "data.split.folds=2",
                    "data.split.protocol=chunks", "train.num_workers=1",
                    "tune.search_space={window.length: {grid: [16]}, data.fold: {grid: [0, 1]}}", "window.hop=8")
    res = run_sweep(cfg)
    assert res.failed == 0 and len(res.trials) == 2
    for t in res.trials:
        assert {"val/ccc", "val/ccc_valence", "val/ccc_arousal"} <= set(t["val"])
        assert -1 <= t["val"]["val/ccc"] <= 1
        assert set(t["test"]) == {"test/ccc", "test/ccc_valence", "test/ccc_arousal"}
    ids = [s["ids"] for s in res.prepared.values()]
    assert len(ids) == 2 and ids[0]["test"] == ids[1]["test"] and len(ids[0]["test"]) == 1
    assert not set(ids[0]["val"]) & set(ids[1]["val"]) and set(ids[0]["val"]) <= set(ids[1]["train"])
    cv = res.cv["synthetic_affwild2"]
    assert cv["fold_merge"] == "ccc_centering"
    assert set(cv["test_merged"]) == {"test_merged/ccc", "test_merged/ccc_valence", "test_merged/ccc_arousal"}
    assert "merged (ccc_centering)" in format_table(res, {"synthetic_affwild2": "val/ccc"})
    # the merge logged on the parent run is CCC centering of the two fold models' test predictions
    client = MlflowClient(res.tracking_uri)
    folds = []
    for t in sorted(res.trials, key=lambda t: t["params"]["data.fold"]):
        run = client.search_runs([res.experiment_id], f"tags.`raybench.trial_id` = '{t['trial_id']}'")[0]
        folds.append(pd.read_csv(client.download_artifacts(run.info.run_id, "predictions_test.csv", str(tmp_path)))
                     .to_dict("records"))
        assert {"traces_test.png", "scatter_test.png", "traces_val.png", "scatter_val.png"} <= {
            x.path for x in client.list_artifacts(run.info.run_id)}
    # scored on the annotated source frames (15 fps synthetic videos), not on the 8 fps frames trained on
    from raybench.data.store import ClipStore

    prep = next(iter(res.prepared.values()))
    src = ClipStore(prep["store_path"]).read_clips(prep["ids"]["test"], columns=["source_frames", "num_frames"])
    assert len(folds[0]) == sum(r["source_frames"] for r in src) > sum(r["num_frames"] for r in src)
    expected, _ = merge_fold_predictions(folds, "ccc_centering")
    pm = client.get_run(res.parent_run_id).data.metrics
    for k, v in expected.items():
        assert pm[f"test_merged/{k}"] == pytest.approx(v, abs=1e-5)
    arts = {a.path for a in client.list_artifacts(res.parent_run_id)}
    assert "predictions_test_merged_synthetic_affwild2.csv" in arts
    # an annotation file changed after its clip was decoded (a corrected release): the store, which keeps the
    # old labels, decodes that clip again (and no other) with the new file; put back, again with the old one
    from raybench.data.annotations import read_annotation
    from raybench.data.store import build, plan
    from raybench.trials import data_variants

    dcfg = data_variants(cfg)[0]
    clip = plan(dcfg).clips[0]
    ann = Path(clip.va_path)
    original = ann.read_text()
    lines = original.splitlines(keepends=True)
    store = ClipStore(prep["store_path"])
    others = {r["clip_id"]: r["source_va"] for r in store.read_clips(columns=["clip_id", "source_va"])
              if r["clip_id"] != clip.clip_id}

    def stored_va():
        (row,) = store.read_clips([clip.clip_id], columns=["source_va"])
        return np.frombuffer(row["source_va"], np.float32).reshape(-1, 2)

    try:
        ann.write_text("".join(lines[:-2] + lines[-1:] + lines[-2:-1]))  # two frames' values swapped
        swapped = read_annotation(clip.to_row())
        assert not np.array_equal(stored_va(), swapped)
        again = build(plan(dcfg), progress=False)
        assert again.decoded == 1 and str(again.store.path) == prep["store_path"]
        np.testing.assert_array_equal(stored_va(), swapped)
    finally:
        ann.write_text(original)
    assert build(plan(dcfg), progress=False).decoded == 1  # put back: decoded again with the old file
    np.testing.assert_array_equal(stored_va(), read_annotation(clip.to_row()))
    assert build(plan(dcfg), progress=False).decoded == 0  # nothing changed since
    # a clip marked bad for its annotation is decoded again once the file is mended (one of 6 clips bad is
    # over the default data.max_bad_fraction, which chooses no clip: not fingerprinted)
    tolerant = dcfg.model_copy(update={"max_bad_fraction": 0.5})
    try:
        ann.write_text("valence,arousal\nnot a number\n")
        marked = build(plan(tolerant), progress=False)
        assert marked.decoded == 0 and marked.bad[clip.clip_id]["reason"].startswith("bad annotation")
    finally:
        ann.write_text(original)
    mended = build(plan(tolerant), progress=False)
    assert str(mended.store.path) == prep["store_path"]
    assert mended.decoded == 1 and clip.clip_id not in mended.bad
    np.testing.assert_array_equal(stored_va(), read_annotation(clip.to_row()))
    assert {r["clip_id"]: r["source_va"] for r in store.read_clips(columns=["clip_id", "source_va"])
            if r["clip_id"] != clip.clip_id} == others  # every other clip's row as it was, once
    # its video replaced under its name (its frames mirrored, re-encoded): that clip alone decoded again from the
    # new file; the old bytes put back, from them again (before 2026-12-04 the store kept the first video's frames)
    import decord

    from raybench.data.synth import write_mp4

    video = Path(clip.video_path)
    kept = video.read_bytes()

    def stored_frames() -> bytes:
        (row,) = store.read_clips([clip.clip_id], columns=["video"])
        return row["video"]

    first = stored_frames()
    vr = decord.VideoReader(str(video))
    audio = decord.AudioReader(str(video), sample_rate=16000, mono=True)[:].asnumpy()[0]
    try:
        write_mp4(video, vr.get_batch(range(len(vr))).asnumpy()[:, :, ::-1].copy(), vr.get_avg_fps(), audio, 16000)
        del vr
        replaced = build(plan(dcfg), progress=False)
        assert replaced.decoded == 1 and clip.clip_id not in replaced.bad and stored_frames() != first
    finally:
        video.write_bytes(kept)
    assert build(plan(dcfg), progress=False).decoded == 1 and stored_frames() == first
    assert build(plan(dcfg), progress=False).decoded == 0
    assert {r["clip_id"]: r["source_va"] for r in store.read_clips(columns=["clip_id", "source_va"])
            if r["clip_id"] != clip.clip_id} == others


@pytest.mark.timeout(600)
@pytest.mark.parametrize("workers", [1, 2], ids=["in-trial-process", "worker-group"])
def test_asha_stops_a_poor_trial_early_and_the_sweep_finishes(ray_session, tmp_path, workers):
    """ASHA stops the trial that does not learn (lr 1e-7) at its rung (epoch 2 of 4); the stopped
    trial's workers and placement group are released, so the sweep goes on to the end. Both ways a
    trial trains: in its Tune trial's own process (one worker) and in a Ray Train worker group.

    On the default sweep's data (as test_learning, whose store it reuses): there audio_only is past
    0.35 validation UAR after 2 epochs, while on the tiny smoke set both trials could still tie at
    chance at the rung (then ASHA rightly stops neither)."""
    import time

    import ray
    from ray.util.placement_group import placement_group_table

    from raybench.results import format_table
    from raybench.sweep import run_sweep

    cfg = load(SWEEPS_DIR / "default.yaml", [
        "method.name=audio_only", "tune.scheduler=asha", "tune.grace_period=2", "train.epochs=4",
        "tune.max_concurrent_trials=1", f"train.num_workers={workers}",
        "tune.search_space={train.lr: {grid: [2.0e-3, 1.0e-7]}, window.length: {grid: [8]}}"])
    cfg.tune.search_space.pop("method.name", None)
    cfg.mlflow.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg.storage = str(tmp_path / "results")
    res = run_sweep(cfg)
    by_lr = {t["params"]["train.lr"]: t for t in res.trials}
    assert by_lr[2.0e-3]["epochs"] == 4 and by_lr[2.0e-3]["best_val"] > 0.3, by_lr[2.0e-3]["val"]
    assert by_lr[1.0e-7]["epochs"] == 2, by_lr[1.0e-7]["val"]  # stopped at the rung, not failed
    assert by_lr[1.0e-7]["error"] is None and res.failed == 0
    assert res.best["synthetic_ravdess"]["trial_id"] == by_lr[2.0e-3]["trial_id"]
    assert "2/4" in format_table(res, {"synthetic_ravdess": "val/uar"})
    from mlflow.tracking import MlflowClient

    client = MlflowClient(res.tracking_uri)
    runs = {r.data.tags["raybench.trial_id"]: r for r in client.search_runs(
        [res.experiment_id], f"tags.mlflow.parentRunId = '{res.parent_run_id}'")}
    stopped, good = runs[by_lr[1.0e-7]["trial_id"]], runs[by_lr[2.0e-3]["trial_id"]]
    assert stopped.info.status == "KILLED" and good.info.status == "FINISHED"
    assert stopped.data.tags["raybench.status_reason"].startswith("scheduler: stopped after 2 of 4 epochs")
    # nothing of the stopped trial is left holding resources
    deadline = time.time() + 60
    while any(p["state"] != "REMOVED" for p in placement_group_table().values()) or \
            ray.available_resources().get("CPU", 0) < 1.9:
        assert time.time() < deadline, (placement_group_table(), ray.available_resources())
        time.sleep(1)


def test_one_worker_trials_train_in_their_own_process_with_their_own_checkpoints(smoke, tmp_path):
    """train.num_workers=1: no Ray Train worker group; each trial keeps its latest complete checkpoint in
    its own folder (raybench's, not Tune's: Tune is told its path), the test split is evaluated from it,
    and each trial's run records its wall and fixed time."""
    from mlflow.tracking import MlflowClient

    from raybench.sweep import run_sweep

    cfg = sweep_cfg(tmp_path, "train.num_workers=1", "tune.search_space={window.length: {grid: [4, 6, 8]}}")
    res = run_sweep(cfg)
    assert res.failed == 0 and len(res.trials) == 3
    sweep_dir = Path(cfg.storage) / res.sweep_id
    for t in res.trials:
        assert t["epochs"] == cfg.train.epochs
        ckpt = Path(t["checkpoint"])
        assert ckpt.parent == sweep_dir / "checkpoints" / t["trial_id"].split("/")[-1]
        assert ckpt.name == f"epoch_{cfg.train.epochs - 1:06d}"
        assert (ckpt / "best.pt").is_file() and (ckpt / "last.pt").is_file() and (ckpt / "complete.json").is_file()
        assert [p.name for p in ckpt.parent.iterdir()] == [ckpt.name]  # the latest only (it holds the best too)
        assert 0 < t["fixed_s"] < t["wall_s"]
    # Tune kept none of its own
    assert not [p for p in sweep_dir.rglob("checkpoint_*") if p.is_dir()]
    (best,) = res.best.values()
    assert set(best["test"]) == {"test/acc", "test/uar", "test/f1"}
    client = MlflowClient(res.tracking_uri)
    for r in client.search_runs([res.experiment_id], f"tags.mlflow.parentRunId = '{res.parent_run_id}'"):
        m = r.data.metrics
        assert 0 < m["time/trial_fixed_s"] < m["time/trial_wall_s"]
        # the small synthetic set fits train.cache_gib: held in memory after the first epoch
        assert m["data/cached"] == 1.0 and 0 < m["data/train_gib"] < cfg.train.cache_gib
        steps = [x.step for x in client.get_metric_history(r.info.run_id, "val/uar")]
        assert steps == list(range(cfg.train.epochs))  # one value per epoch, from the trial's own process


def test_trials_are_packed_by_the_memory_their_workers_reserve(ray_session, tmp_path, capsys):
    """Two one-worker trials fit the session's 2 CPUs at once (as in the test above), but each worker
    reserves 60% of the node's memory (train.memory_gib_per_worker): Ray runs them one after the other."""
    import re

    from raybench.sweep import run_sweep

    node = max(n["Resources"].get("memory", 0.0) for n in ray_session.nodes() if n["Alive"])
    cfg = sweep_cfg(tmp_path, "train.num_workers=1", "train.epochs=1",
                    f"train.memory_gib_per_worker={0.6 * node / 2**30}",
                    "tune.search_space={window.length: {grid: [4, 8]}}")
    res = run_sweep(cfg)
    assert res.failed == 0 and len(res.trials) == 2
    out = capsys.readouterr().out
    assert "2 trial(s) at a time, each worker reserving " in out  # by CPUs: two
    events = re.findall(r"\[raybench\] trial \S+ (started|finished)", out)
    assert events == ["started", "finished", "started", "finished"], out[-3000:]  # by memory: one
    # a worker no node could hold: refused before anything is recorded (its trial would wait forever)
    from mlflow.tracking import MlflowClient

    from raybench.config import ConfigError

    with pytest.raises(ConfigError, match=r"'train.memory_gib_per_worker' is .* the trial would never start"):
        run_sweep(sweep_cfg(tmp_path, "train.num_workers=1", f"train.memory_gib_per_worker={2 * node / 2**30}"))
    runs = MlflowClient(res.tracking_uri).search_runs([res.experiment_id])
    assert [r.data.tags.get("raybench.kind") for r in runs].count("sweep") == 1


@pytest.mark.timeout(900)
def test_two_fold_sweep_records_per_fold_and_aggregated_metrics(smoke, tmp_path):
    import json

    import numpy as np
    from mlflow.tracking import MlflowClient

    from raybench.results import format_table
    from raybench.sweep import run_sweep

    cfg = sweep_cfg(tmp_path, "data.split.folds=2", "train.epochs=1", "train.num_workers=1",
                    "tune.search_space={data.fold: {grid: [0, 1]}, window.length: {grid: [4, 8]}}")
    res = run_sweep(cfg)
    assert res.failed == 0 and len(res.trials) == 4
    cv = res.cv["synthetic_ravdess"]
    # the chosen configuration has the best validation score averaged over the folds
    means = {}
    for t in res.trials:
        means.setdefault(t["params"]["window.length"], []).append(t["best_val"])
    best_window = max(means, key=lambda w: np.mean(means[w]))
    assert cv["params"]["window.length"] == best_window and cv["folds"] == [0, 1]
    assert cv["val_mean"] == pytest.approx(np.mean(means[best_window]))
    chosen = [t for t in res.trials if t["trial_id"] in cv["trial_ids"]]
    assert {t["params"]["data.fold"] for t in chosen} == {0, 1}
    assert all("test/uar" in t["test"] for t in chosen)
    assert not any("test" in t for t in res.trials if t not in chosen)  # only the chosen config is tested
    uars = [t["test"]["test/uar"] for t in sorted(chosen, key=lambda t: t["params"]["data.fold"])]
    assert cv["test_mean"]["test/uar"] == pytest.approx(np.mean(uars))
    assert cv["test_std"]["test/uar"] == pytest.approx(np.std(uars))
    assert "2 models (2 folds)" in format_table(res, {"synthetic_ravdess": "val/uar"})
    assert "test_merged" not in cv  # subject folds test on different clips: nothing to merge

    client = MlflowClient(res.tracking_uri)
    pm = client.get_run(res.parent_run_id).data.metrics
    assert pm["fold0/test/uar"] == pytest.approx(uars[0]) and pm["fold1/test/uar"] == pytest.approx(uars[1])
    assert pm["test/uar"] == pytest.approx(np.mean(uars)) and pm["test/uar_std"] == pytest.approx(np.std(uars))
    assert pm["best/val/uar"] == pytest.approx(cv["val_mean"]) and "fold0/best/val/uar" in pm
    arts = {a.path for a in client.list_artifacts(res.parent_run_id)}
    assert "folds_synthetic_ravdess.json" in arts
    folds = json.loads(open(client.download_artifacts(res.parent_run_id, "folds_synthetic_ravdess.json",
                                                      str(tmp_path))).read())
    assert sorted(folds) == ["actor01", "actor02", "actor03", "actor04"] and set(folds.values()) == {0, 1}
    children = client.search_runs([res.experiment_id], f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
    assert sorted(c.data.tags["fold"] for c in children) == ["0", "0", "1", "1"]
    # the fold assignment is also kept in the clip store
    store = Path(res.prepared[next(iter(res.prepared))]["store_path"])
    assert json.loads((store / "folds" / "k2-seed0.json").read_text()) == folds


@pytest.mark.timeout(600)
def test_plateau_schedule_lowers_the_lr_and_early_stop_ends_the_trial(smoke, tmp_path):
    from mlflow.tracking import MlflowClient

    from raybench.sweep import run_sweep

    # lr 1e-7 never improves on the first epoch's validation score
    cfg = sweep_cfg(tmp_path, "train.epochs=6", "train.lr=1.0e-7", "train.lr_schedule=plateau", "train.num_workers=1",
                    "train.plateau_patience=0", "train.early_stop=2", "tune.search_space={window.length: {grid: [4]}}")
    res = run_sweep(cfg)
    (t,) = res.trials
    assert res.failed == 0 and t["epochs"] == 3  # best at epoch 0, then 2 epochs without improvement
    client = MlflowClient(res.tracking_uri)
    (child,) = client.search_runs([res.experiment_id], f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
    assert child.info.status == "KILLED" and child.data.tags["raybench.status_reason"].startswith("early_stop")
    lrs = [m.value for m in sorted(client.get_metric_history(child.info.run_id, "train/lr"), key=lambda m: m.step)]
    assert lrs == pytest.approx([1e-7, 1e-8, 1e-9])


def test_a_failing_trial_is_recorded_failed_with_its_cause_and_the_others_finish(ray_session, tmp_path):
    import torch
    from mlflow.tracking import MlflowClient

    from raybench.results import format_table
    from raybench.sweep import run_sweep

    bad = tmp_path / "wrong_net.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, bad)  # a state dict of another network
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text((SWEEPS_DIR / "smoke.yaml").read_text().replace(
        "method: {name: av_fusion, dim: 32, cnn_width: 8}",
        "method: {name: zhou2019, visual_dim: 16, audio_dim: 16, fbp_o: 32, cnn_width: 8}").replace(
        "window.length: {grid: [4, 8]}", "window.length: {grid: [4]}"))
    cfg = sweep_cfg(tmp_path, "train.epochs=1", f"tune.search_space={{method.weights: {{grid: [null, {bad}]}}}}",
                    path=sweep)
    res = run_sweep(cfg)
    assert res.failed == 1 and len(res.trials) == 2
    failed = next(t for t in res.trials if t["error"])
    assert failed["params"]["method.weights"] == str(bad)
    # the cause, not Ray's wrapper: the file and what is wrong with it
    assert failed["error"].startswith("ValueError: frame encoder 'small_cnn': the keys of")
    assert str(bad) in failed["error"] and "do not fit the architecture" in failed["error"]
    assert f"FAILED: {failed['error']}" in format_table(res, {"synthetic_ravdess": "val/uar"})
    ok = next(t for t in res.trials if not t["error"])
    assert res.best["synthetic_ravdess"]["trial_id"] == ok["trial_id"] and "test/uar" in ok["test"]
    client = MlflowClient(res.tracking_uri)
    runs = {r.data.params["method.weights"]: r for r in
            client.search_runs([res.experiment_id], f"tags.mlflow.parentRunId = '{res.parent_run_id}'")}
    assert runs[str(bad)].info.status == "FAILED" and runs[str(bad)].info.end_time
    assert runs[str(bad)].data.tags["raybench.status_reason"] == failed["error"]
    assert runs["None"].info.status == "FINISHED"
    assert client.get_run(res.parent_run_id).info.status == "FINISHED"  # not every trial failed


def test_an_error_that_is_not_a_clip_problem_stops_prepare_with_the_cause_and_first_clip(ray_session, tiny_ravdess,
                                                                                         tmp_path):
    """An error raised for every clip (here an unknown audio feature kind slipped past validation to the
    workers with pydantic's unvalidated ``model_copy``; a library
    that does not load on a worker behaves the same) stops the stage with one raybench message, marks no
    clip bad, and a fixed rerun goes on."""
    data = data_config(dict(load(SWEEPS_DIR / "smoke.yaml").data.model_dump(), dataset="ravdess",
                            root=str(tiny_ravdess),
                            store_dir=str(tmp_path / "stores")))
    broken = data.model_copy(update={"audio": data.audio.model_copy(update={"features": "mfcc"})})
    with pytest.raises(PrepareError) as e:
        prepare(broken)
    msg = str(e.value)
    assert msg.startswith("ravdess: the prepare stage stopped: clip ")
    assert ("ValueError: data.audio.features must be logmel, spectrogram or one of egemaps, compare, "
            "egemaps_functionals, compare_functionals, got 'mfcc'") in msg
    clip = msg.split("clip ", 1)[1].split(" ", 1)[0]
    assert (tiny_ravdess / f"Actor_{clip.split('-')[-1]}" / f"{clip}.mp4").exists()  # a real clip, and its file
    assert f"({tiny_ravdess}" in msg and "Traceback" not in msg and "UserCodeException" not in msg
    assert not list(tmp_path.rglob("bad/*.json"))  # no clip blamed for it
    assert prepare(data).decoded == 45


def test_repeats_train_each_configuration_with_several_seeds_and_report_mean_std_and_ci(ray_session, tmp_path):
    from mlflow.tracking import MlflowClient

    from raybench.results import format_table
    from raybench.sweep import run_sweep

    cfg = sweep_cfg(tmp_path, "train.epochs=1", "train.num_workers=1", "tune.repeats=2", "tune.bootstrap=200",
                    "tune.search_space={window.length: {grid: [4]}}")
    res = run_sweep(cfg)
    assert res.failed == 0 and sorted(t["params"]["train.seed"] for t in res.trials) == [0, 1]
    assert all(t["cfg"].train.seed == t["params"]["train.seed"] for t in res.trials)
    cv = res.cv["synthetic_ravdess"]
    assert cv["models"] == 2 and cv["seeds"] == [0, 1] and cv["folds"] == []
    uars = [t["test"]["test/uar"] for t in sorted(res.trials, key=lambda t: t["params"]["train.seed"])]
    assert cv["test_mean"]["test/uar"] == pytest.approx(np.mean(uars))
    lo, hi = cv["test_ci"]["test/uar"]
    assert 0 <= lo <= hi <= 1
    pm = MlflowClient(res.tracking_uri).get_run(res.parent_run_id).data.metrics
    assert pm["test/uar"] == pytest.approx(np.mean(uars)) and pm["test/uar_std"] == pytest.approx(np.std(uars))
    assert (pm["test/uar_ci_low"], pm["test/uar_ci_high"]) == pytest.approx((lo, hi))
    assert pm["seed0/test/uar"] == pytest.approx(uars[0]) and pm["seed1/test/uar"] == pytest.approx(uars[1])
    table = format_table(res, {"synthetic_ravdess": "val/uar"})
    assert "2 models (2 seeds)" in table and f"[95% CI {lo:.3f}, {hi:.3f}]" in table


def test_a_sweep_that_crashes_after_its_trials_leaves_no_run_running(ray_session, tmp_path, monkeypatch):
    """A crash in the record stage (here: its test of the best model raising) closes the sweep's run and
    its trials' runs FAILED with the error and the resume command, instead of leaving them RUNNING."""
    from mlflow.tracking import MlflowClient

    import raybench.sweep as sweep_mod

    def broken(*a, **k):
        raise RuntimeError("the record stage broke")

    monkeypatch.setattr(sweep_mod, "record", broken)
    cfg = sweep_cfg(tmp_path, "train.epochs=1", "tune.search_space={window.length: {grid: [4]}}",
                    "train.num_workers=1")
    with pytest.raises(RuntimeError, match="the record stage broke"):
        sweep_mod.run_sweep(cfg)
    client = MlflowClient(cfg.mlflow.tracking_uri)
    (exp,) = [e for e in client.search_experiments() if e.name.startswith("raybench-")]
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["raybench.kind"] for r in runs) == ["sweep", "trial"]
    for r in runs:
        assert r.info.status == "FAILED" and r.info.end_time, r.info
        reason = r.data.tags["raybench.status_reason"]
        assert reason.startswith("the sweep failed: RuntimeError: the record stage broke") and "--resume" in reason


def test_a_chosen_model_whose_test_evaluation_fails_is_counted_and_the_rest_is_recorded(ray_session, tmp_path,
                                                                                          monkeypatch, capsys):
    """A chosen trial's best.pt that no longer loads (corrupted after training): its test numbers are missing,
    said, tagged and counted (the sweep exits 1), and the record goes on: trials.csv, the runs closed."""
    from mlflow.tracking import MlflowClient

    import raybench.sweep as sweep_mod

    real = sweep_mod.record

    kept = {}

    def corrupt_then_record(cfg, grid, *a, **k):
        for r in grid:
            best = Path(r.metrics["checkpoint_path"]) / "best.pt"
            kept[best] = best.read_bytes()
            best.write_bytes(b"not a checkpoint")
        return real(cfg, grid, *a, **k)

    monkeypatch.setattr(sweep_mod, "record", corrupt_then_record)
    cfg = sweep_cfg(tmp_path, "train.epochs=1", "tune.search_space={window.length: {grid: [4]}}",
                    "train.num_workers=1")
    res = sweep_mod.run_sweep(cfg)
    (t,) = res.trials
    assert res.failed == 0 and res.tests_failed == 1 and t["test"] == {} and t["test_failed"]
    out = capsys.readouterr().out
    assert f"warning: trial {t['trial_id']}: test failed, its numbers are missing: " in out
    assert f"FAILED: {t['test_failed']}" in sweep_mod.format_table(res, {"synthetic_ravdess": "val/uar"})
    client = MlflowClient(cfg.mlflow.tracking_uri)
    parent = client.get_run(res.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["raybench.tests_failed"] == "1"
    (child,) = client.search_runs([res.experiment_id], f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
    assert child.data.tags["raybench.track_failed.test"] == t["test_failed"]
    assert child.info.status == "FINISHED" and not any(k.startswith("test/") for k in child.data.metrics)
    rows = (Path(client.download_artifacts(res.parent_run_id, "trials.csv", str(tmp_path)))).read_text()
    assert "test_error" in rows.splitlines()[0] and t["test_failed"].split(":")[0] in rows
    # --resume tests it again (the failure may have been passing: a file that did not come); here the checkpoint
    # is mended first, and the record's failure tag goes with the test that now goes through
    from raybench.tracking import finished_sweep

    assert finished_sweep(cfg, res.sweep_id) is None
    for best, content in kept.items():
        best.write_bytes(content)
    monkeypatch.setattr(sweep_mod, "record", real)
    again = sweep_mod.run_sweep(cfg, sweep_id=res.sweep_id, resume=True)
    assert again.tests_failed == 0 and set(again.trials[0]["test"]) == {"test/acc", "test/uar", "test/f1"}
    child = client.get_run(child.info.run_id)
    assert "raybench.track_failed.test" not in child.data.tags and "test/uar" in child.data.metrics
    assert client.get_run(res.parent_run_id).data.tags["raybench.tests_failed"] == "0"


def test_the_autoscalers_report_is_read_on_a_local_ray(ray_session):
    """On a Ray without an autoscaler config (the integration tests' own, started in this process) the report
    says no node is starting: a sweep there never waits."""
    import time

    from raybench.trials import read_autoscaler_pending

    end = time.time() + 30  # (its first report comes a few seconds after Ray starts)
    while read_autoscaler_pending() is None and time.time() < end:
        time.sleep(0.5)
    assert read_autoscaler_pending() == 0  # read (an unreadable record raises here), nothing starting
