"""What raybench records about a dataset in MLflow (a local SQLite store, no Ray)."""

from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

from raybench.tracking import face_warning, log_datasets


def _summary(**kw):
    s = {"dataset": "afew", "task": "categorical", "class_names": ["a", "b"], "store_path": "/s/afew-0123456789abcdef",
         "root": "/data/afew", "fps": 10.0, "fingerprint": "0123456789abcdef",
         "counts": {"train": {"clips": 6, "subjects": 3, "faces": 4}, "val": {"clips": 2, "subjects": 1, "faces": 1},
                    "test": {"clips": 2, "subjects": 1, "faces": 0}},
         "skipped": 1, "warnings": 1, "face_found": 5,
         "bad": {"c9": {"reason": "no audio track"}}, "warning_list": ["c3.csv has 15 frames, its video needs 20"],
         "left_out": 3, "left_out_list": [{"files": 3, "why": "1 folder(s) of videos not named after one of the 7 "
                                                            "emotions left out: Train_AFEW/Anger (3 videos)"}]}
    s.update(kw)
    return s


def test_a_dataset_is_an_input_with_counts_and_its_problems_are_kept(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri()))
    log_datasets(uri, run.info.run_id, [_summary()], details=True)
    r = client.get_run(run.info.run_id)
    (inp,) = r.inputs.dataset_inputs
    assert inp.dataset.name == "afew" and inp.dataset.digest.startswith("0123456789abcdef-")
    assert json.loads(inp.dataset.source)["uri"] == "/s/afew-0123456789abcdef"
    profile = json.loads(inp.dataset.profile)
    assert (profile["train_clips"], profile["test_subjects"], profile["skipped"], profile["face_found"]) == (6, 1, 1, 5)
    assert r.data.metrics["data/afew/val_clips"] == 2 and r.data.metrics["data/afew/face_found"] == 5
    # the share of clips with a face, per split
    assert [r.data.metrics[f"data/afew/{s}_face_share"] for s in ("train", "val", "test")] == [4 / 6, 0.5, 0.0]
    assert profile["train_faces"] == 4
    # 5 of 10 clips with a face is under 90%: flagged on the run
    assert r.data.tags["raybench.face_warning.afew"] == face_warning(_summary())
    assert "5 of 10 clips" in r.data.tags["raybench.face_warning.afew"]
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "data")}
    assert arts == {"data/afew_skipped.json", "data/afew_warnings.json", "data/afew_left_out.json"}
    skipped = json.loads((tmp_path / "a" / run.info.run_id / "artifacts" / "data" / "afew_skipped.json").read_text())
    assert skipped == {"c9": {"reason": "no audio track"}}
    # the listed files the manifest left out: counted (metric, profile) and why (artifact)
    assert r.data.metrics["data/afew/left_out"] == 3 and profile["left_out"] == 3
    left = json.loads((tmp_path / "a" / run.info.run_id / "artifacts" / "data" / "afew_left_out.json").read_text())
    assert left == _summary()["left_out_list"]


def test_runs_on_one_store_with_other_splits_keep_their_own_profiles(tmp_path):
    """MLflow keeps one dataset per name and digest in an experiment: folds share a clip store, and
    each run's dataset must still show its own split's counts."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    counts = {f: {"train": {"clips": 6 + f, "subjects": 3}, "val": {"clips": 2 - f, "subjects": 1},
                  "test": {"clips": 2, "subjects": 1}} for f in (0, 1)}
    ids = {f: {"train": [f"c{i}" for i in range(6 + f)], "val": [f"c{i}" for i in range(6 + f, 8)],
               "test": ["c8", "c9"]} for f in (0, 1)}
    runs = {}
    for f in (0, 1, 0):  # fold 0 twice: the same data gets the same digest
        runs.setdefault(f, []).append(client.create_run(exp).info.run_id)
        log_datasets(uri, runs[f][-1], [_summary(counts=counts[f], ids=ids[f])])
    digests = {}
    for f, rs in runs.items():
        for run_id in rs:
            (inp,) = client.get_run(run_id).inputs.dataset_inputs
            assert json.loads(inp.dataset.profile)["train_clips"] == 6 + f
            digests.setdefault(f, set()).add(inp.dataset.digest)
    assert len(digests[0]) == len(digests[1]) == 1 and digests[0] != digests[1]
    assert all(d.startswith("0123456789abcdef-") for ds in digests.values() for d in ds)
    # the same clips in another split (one moved from train to val, counts alike) are other data too
    moved = {**ids[0], "train": ids[0]["train"][1:] + ["c7"], "val": ["c0", "c6"]}
    run_id = client.create_run(exp).info.run_id
    log_datasets(uri, run_id, [_summary(counts=counts[0], ids=moved)])
    assert client.get_run(run_id).inputs.dataset_inputs[0].dataset.digest not in digests[0]
    # the same clips and splits labelled from other annotation files (a corrected release) are other data
    from raybench.data.store import labels_digest

    # (and so are they decoded from other videos under the same names: media)
    for key, profiled, per_clip in [("label_digests", "labels", {"c0": c * 16}) for c in "ab"] + [
            ("media_digests", "media", {"c0": c * 16}) for c in "cd"]:
        run_id = client.create_run(exp).info.run_id
        log_datasets(uri, run_id, [_summary(counts=counts[0], ids=ids[0], **{key: per_clip})])
        (inp,) = client.get_run(run_id).inputs.dataset_inputs
        assert json.loads(inp.dataset.profile)[profiled] == labels_digest(per_clip)
        assert inp.dataset.digest not in digests[0]
        digests[0].add(inp.dataset.digest)


def test_folds_record_how_many_subjects_validate_in_two_of_them(tmp_path):
    """data.split.protocol: chunks with the authors' chunks can put a subject in two folds: counted on
    the run (metric and dataset profile); without folds nothing is recorded."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    runs = {}
    for name, kw in {"chunks": {"folds": {"a_left": 0, "a_right": 1}, "subjects_in_two_folds": 1},
                     "none": {}}.items():
        runs[name] = client.create_run(exp).info.run_id
        log_datasets(uri, runs[name], [_summary(**kw)])
    r = client.get_run(runs["chunks"])
    assert r.data.metrics["data/afew/subjects_in_two_folds"] == 1
    assert json.loads(r.inputs.dataset_inputs[0].dataset.profile)["subjects_in_two_folds"] == 1
    r = client.get_run(runs["none"])
    assert "data/afew/subjects_in_two_folds" not in r.data.metrics
    assert "subjects_in_two_folds" not in json.loads(r.inputs.dataset_inputs[0].dataset.profile)


def test_no_face_warning_without_face_detection_or_with_enough_faces():
    assert face_warning(_summary(face_found=None)) is None
    assert face_warning(_summary(face_found=9)) is None  # 9 of 10
    assert face_warning(_summary(face_found=8)) is not None


def test_device_tags_name_the_cpu_and_the_gpus(monkeypatch):
    import os
    import platform

    import torch

    from raybench.tracking import device_tags

    tags = device_tags()
    assert tags["raybench.cpus"] == str(os.cpu_count()) and tags["raybench.gpus"] == "0"
    assert tags["raybench.device"] == "cpu" and "raybench.versions.cuda" not in tags
    if os.path.exists("/proc/cpuinfo"):
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        assert tags["raybench.cpu_model"] == (names[0] if names else platform.processor() or platform.machine())
    # with GPUs (faked: this machine has none): their model and count, CUDA and cuDNN versions
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: "NVIDIA H200")
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91002)
    tags = device_tags()
    assert (tags["raybench.device"], tags["raybench.gpus"], tags["raybench.gpu_models"]) == ("NVIDIA H200", "2",
                                                                                             "NVIDIA H200")
    assert (tags["raybench.versions.cuda"], tags["raybench.versions.cudnn"]) == ("12.8", "91002")


def test_an_epoch_trained_again_after_a_resume_is_named_and_the_newer_value_is_the_runs(tmp_path):
    from raybench.config import resolve_trial_config
    from raybench.schema import SweepConfig
    from raybench.tracking import TrialLogger

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(exp).info.run_id
    info = {"tracking_uri": uri, "experiment_id": exp, "trial_id": "sweep1/t0", "sweep_id": "sweep1",
            "parent_run_id": parent, "provenance": {"raybench.version": "test"}}
    cfg = resolve_trial_config(SweepConfig(), {})
    first = TrialLogger(info)
    first.start(cfg)
    for epoch, v in enumerate([0.5, 0.6, 0.7]):  # stopped after logging epoch 2, before its checkpoint
        first.log({"val/score": v}, epoch)
    resumed = TrialLogger(info)  # from the checkpoint of epoch 1: epoch 2 is trained again
    resumed.start(cfg)
    assert resumed.run_id == first.run_id
    resumed.log({"val/score": 0.65}, 2)
    run = client.get_run(first.run_id)
    assert run.data.tags["raybench.epochs_logged_twice"] == "2"
    assert run.data.metrics["val/score"] == 0.65  # the run's value is the epoch trained again, as in Tune
    resumed.log({"val/score": 0.8}, 3)
    assert client.get_run(first.run_id).data.tags["raybench.epochs_logged_twice"] == "2"  # epoch 3 is new
    assert sorted((m.step, m.value) for m in client.get_metric_history(first.run_id, "val/score")) == \
        [(0, 0.5), (1, 0.6), (2, 0.65), (2, 0.7), (3, 0.8)]
    again = TrialLogger(info)  # resumed a second time, from the checkpoint of epoch 2: epoch 3 again
    again.start(cfg)
    again.log({"val/score": 0.81}, 3)
    assert client.get_run(first.run_id).data.tags["raybench.epochs_logged_twice"] == "2,3"  # both attempts' epochs


def test_a_failed_trials_run_is_running_again_when_the_trial_goes_on(tmp_path):
    """A trial that failed (its run closed FAILED by the record stage) and is continued by --resume or
    tune.max_failures: its run shows RUNNING while it trains again, not FAILED."""
    from raybench.config import resolve_trial_config
    from raybench.schema import SweepConfig
    from raybench.tracking import TrialLogger

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    info = {"tracking_uri": uri, "experiment_id": exp, "trial_id": "sweep1/t0", "sweep_id": "sweep1",
            "parent_run_id": client.create_run(exp).info.run_id, "provenance": {"raybench.version": "test"}}
    cfg = resolve_trial_config(SweepConfig(), {})
    first = TrialLogger(info)
    first.start(cfg)
    assert client.get_run(first.run_id).info.status == "RUNNING"
    client.set_terminated(first.run_id, status="FAILED")
    again = TrialLogger(info)
    again.start(cfg)
    assert again.run_id == first.run_id and client.get_run(first.run_id).info.status == "RUNNING"


def test_a_resumed_sweeps_parent_run_is_running_again(tmp_path):
    """A sweep whose every trial failed has its parent run closed FAILED; --resume reopens it."""
    from raybench.schema import SweepConfig
    from raybench.tracking import start_parent

    cfg = SweepConfig.model_validate({"mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'm.db'}"}})
    uri, _, run_id = start_parent(cfg, "sweep1", {"raybench.version": "test"})
    client = MlflowClient(uri)
    client.set_terminated(run_id, status="FAILED")
    assert start_parent(cfg, "sweep1", {"raybench.version": "test"})[2] == run_id
    assert client.get_run(run_id).info.status == "RUNNING"


def test_a_sweep_has_nothing_to_resume_only_when_its_record_ended_it_and_no_trial_failed(tmp_path):
    from raybench.schema import SweepConfig
    from raybench.tracking import SWEEP_TAG, close_open_runs, finished_sweep, start_parent

    cfg = SweepConfig.model_validate({"mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'm.db'}"}})
    assert finished_sweep(cfg, "s1") is None and not (tmp_path / "m.db").exists()  # no store: none made
    uri, exp_id, parent = start_parent(cfg, "s1", {"raybench.version": "test"})
    client = MlflowClient(uri)
    trials = [client.create_run(exp_id, tags={SWEEP_TAG: "s1", "raybench.kind": "trial"}).info.run_id
              for _ in range(2)]
    assert finished_sweep(cfg, "s1") is None  # running
    for t in trials:
        client.set_terminated(t, status="FINISHED")
    client.set_terminated(parent, status="FINISHED")
    assert finished_sweep(cfg, "s1") is None  # recorded before the tags: a resume records it again
    client.set_tag(parent, "raybench.trial_errors", "0")  # as record() ends it
    client.set_tag(parent, "raybench.trials_failed", "1")
    assert finished_sweep(cfg, "s1").info.run_id == parent and finished_sweep(cfg, "s2") is None
    client.set_tag(parent, "raybench.trial_errors", "1")  # a trial Tune holds as errored: a resume runs it again
    assert finished_sweep(cfg, "s1") is None
    client.set_tag(parent, "raybench.trial_errors", "0")
    client.set_tag(parent, "raybench.tests_failed", "1")  # a chosen model's test failed: a resume tests again
    assert finished_sweep(cfg, "s1") is None
    client.set_tag(parent, "raybench.tests_retested", "true")  # ... once: it failed again when resumed
    assert finished_sweep(cfg, "s1").info.run_id == parent
    client.set_tag(parent, "raybench.tests_failed", "0")
    client.set_terminated(parent, status="FAILED")  # every trial failed for good: the record's own end
    assert finished_sweep(cfg, "s1").info.run_id == parent
    start_parent(cfg, "s1")  # resumed, then interrupted: closed with a reason
    close_open_runs(uri, exp_id, "s1", "KILLED", "the sweep was interrupted")
    assert finished_sweep(cfg, "s1") is None


def test_a_store_that_does_not_answer_is_not_asked_whether_a_sweep_finished():
    import time

    from raybench.schema import SweepConfig
    from raybench.tracking import finished_sweep

    cfg = SweepConfig.model_validate({"mlflow": {"tracking_uri": "http://127.0.0.1:9"}})  # nothing listens there
    t = time.time()
    assert finished_sweep(cfg, "s1") is None and time.time() - t < 60  # MLflow's own retries: minutes


def test_a_record_run_again_takes_the_earlier_choices_tags_off(tmp_path):
    """A resumed sweep that chooses another trial: the earlier choice is no longer tagged best (its test
    metrics stay, tagged superseded); a trial chosen again keeps its tag; other sweeps are untouched."""
    from raybench.tracking import SWEEP_TAG, TRIAL_TAG, clear_choice_tags

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    runs = {}
    for sweep, trial, tag in (("s", "s/a", "raybench.best"), ("s", "s/b", "raybench.best"),
                              ("s", "s/c", "raybench.best_of_method"), ("s", "s/d", None),
                              ("other", "other/a", "raybench.best")):
        tags = {SWEEP_TAG: sweep, TRIAL_TAG: trial, **({tag: "true"} if tag else {})}
        runs[trial] = client.create_run(exp, tags=tags).info.run_id
        client.log_metric(runs[trial], "test/uar", 0.5)
    cleared = clear_choice_tags(uri, exp, "s", {"raybench.best": {"s/b"}, "raybench.best_of_method": {"s/a"}})
    assert sorted(cleared) == ["s/a", "s/c"]
    tags = {t: client.get_run(r).data.tags for t, r in runs.items()}
    assert "raybench.best" not in tags["s/a"] and "earlier record" in tags["s/a"]["raybench.superseded"]
    assert tags["s/b"]["raybench.best"] == "true" and "raybench.superseded" not in tags["s/b"]
    assert "raybench.best_of_method" not in tags["s/c"] and "raybench.superseded" in tags["s/c"]
    assert "raybench.superseded" not in tags["s/d"] and tags["other/a"]["raybench.best"] == "true"
    assert client.get_run(runs["s/a"]).data.metrics["test/uar"] == 0.5  # what that choice measured stays
    # recorded once more, s/a chosen again: it loses the superseded tag (its best tag is the record's to set)
    assert clear_choice_tags(uri, exp, "s", {"raybench.best": {"s/a"}}) == ["s/b"]
    assert "raybench.superseded" not in client.get_run(runs["s/a"]).data.tags
    assert "raybench.superseded" in client.get_run(runs["s/b"]).data.tags


def test_videomae_clips_padded_to_one_window_are_counted_on_the_run(tmp_path):
    from raybench.data.embed import padded_clips

    assert padded_clips({"a": 16, "b": 15, "c": 3, "d": 40}, 16) == ["b", "c"]
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())).info.run_id
    emb = {"video_emb": {"encoder": "videomae", "fingerprint": "f" * 16, "padded": 2}}
    log_datasets(uri, run, [_summary(embedding_info=emb, embeddings={"video_emb": "/s/emb"})])
    r = client.get_run(run)
    assert r.data.metrics["data/afew/video_emb_padded_clips"] == 2
    assert json.loads(r.inputs.dataset_inputs[0].dataset.profile)["video_emb_padded_clips"] == 2
