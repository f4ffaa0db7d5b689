import numpy as np
import pytest

from raybench.config import SWEEPS_DIR, ConfigError, load
from raybench.schema import MethodOptions, TrialConfig
from raybench.trials import param_space, size_trials
from raybench.sweep import parse_args


def test_param_space_maps_every_kind():
    from ray.tune.search.sample import Categorical, Float, Integer, LogUniform

    cfg = load(SWEEPS_DIR / "smoke.yaml", ["tune.search_space={window.length: {grid: [4, 8]}, "
                                           "train.lr: {loguniform: [1.0e-4, 1.0e-2]}, "
                                           "train.weight_decay: {uniform: [0.0, 0.1]}, "
                                           "train.seed: {randint: [0, 5]}, method.fusion: {choice: [concat, attention]}}"])
    ps = param_space(cfg)
    assert ps["window.length"] == {"grid_search": [4, 8]}
    assert isinstance(ps["train.lr"], Float) and isinstance(ps["train.lr"].get_sampler(), LogUniform)
    assert isinstance(ps["train.weight_decay"], Float) and ps["train.weight_decay"].upper == 0.1
    assert isinstance(ps["train.seed"], Integer) and (ps["train.seed"].lower, ps["train.seed"].upper) == (0, 5)
    assert isinstance(ps["method.fusion"], Categorical) and ps["method.fusion"].categories == ["concat", "attention"]


@pytest.mark.parametrize("res,workers,gpu,group,want", [
    ({"CPU": 2}, 2, False, "auto", (0.995, 1)),  # the 2-core machine: 2 workers and the trial function's 0.01
    ({"CPU": 2}, 1, False, "auto", (1.0, 2)),  # one-worker trials in their own process: two at a time
    ({"CPU": 2}, 1, False, "always", (1.0, 1)),  # each a worker group: 1 + 0.01 CPU does not fit twice
    ({"CPU": 16}, 2, False, "auto", (1.0, 7)),
    ({"CPU": 16, "GPU": 4}, 2, True, "auto", (1.0, 2)),  # packed by GPU count
    ({"CPU": 8, "GPU": 8}, 1, True, "auto", (1.0, 8)),
    ({"CPU": 7, "GPU": 8}, 1, True, "auto", (1.0, 7)),  # CPUs bind first
])
def test_size_trials_never_asks_for_more_than_the_cluster(monkeypatch, res, workers, gpu, group, want):
    import ray

    from raybench.trials import trial_resources

    monkeypatch.setattr(ray, "cluster_resources", lambda: res)
    cfg = load(SWEEPS_DIR / "smoke.yaml", [f"train.num_workers={workers}", f"train.use_gpu={str(gpu).lower()}",
                                           f"train.worker_group={group}"])
    cpw, conc = size_trials(cfg)
    assert (cpw, conc) == want
    own = trial_resources(cfg.train, cpw)  # what the trial itself asks for
    in_process = workers == 1 and group == "auto"
    assert own == ({"CPU": cpw, **({"GPU": 1.0} if gpu else {})} if in_process else {"CPU": 0.01})
    per_trial = own["CPU"] + (0 if in_process else workers * cpw)
    assert conc * per_trial <= res["CPU"] + 1e-9
    if gpu:
        assert conc * workers <= res["GPU"]


def test_size_trials_counts_fractional_cpus_exactly(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 1})
    cfg = load(SWEEPS_DIR / "smoke.yaml", ["train.num_workers=1", "train.cpus_per_worker=0.1"])
    assert size_trials(cfg) == (0.1, 10)  # in floats 1.0 // 0.1 is 9.0


def test_fractional_gpus_pack_single_worker_trials_on_one_gpu(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16, "GPU": 1})
    ov = ["train.use_gpu=true", "train.num_workers=1"]
    assert size_trials(load(SWEEPS_DIR / "smoke.yaml", [*ov, "train.gpus_per_worker=0.25"])) == (1.0, 4)
    assert size_trials(load(SWEEPS_DIR / "smoke.yaml", [*ov, "train.gpus_per_worker=0.3"])) == (1.0, 3)
    assert size_trials(load(SWEEPS_DIR / "smoke.yaml", [*ov, "train.gpus_per_worker=0.2"])) == (1.0, 5)
    assert size_trials(load(SWEEPS_DIR / "smoke.yaml", ov)) == (1.0, 1)
    with pytest.raises(ConfigError, match="gpus_per_worker.*num_workers=1"):
        load(SWEEPS_DIR / "smoke.yaml", ["train.use_gpu=true", "train.num_workers=2", "train.gpus_per_worker=0.5"])
    with pytest.raises(ConfigError, match="gpus_per_worker"):
        load(SWEEPS_DIR / "smoke.yaml", ["train.gpus_per_worker=1.5"])


def test_size_trials_refuses_gpus_the_cluster_lacks(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8})
    with pytest.raises(ConfigError, match="use_gpu"):
        size_trials(load(SWEEPS_DIR / "smoke.yaml", ["train.use_gpu=true"]))


def test_parse_args():
    path, ov, _ = parse_args(["sweeps/smoke.yaml", "train.epochs=3", "data.root=/x"])
    assert path == "sweeps/smoke.yaml" and ov == ["train.epochs=3", "data.root=/x"]
    path, ov, _ = parse_args(["train.epochs=3"])
    assert path is None and ov == ["train.epochs=3"]
    path, ov, _ = parse_args(["smoke", "train.epochs=3"])  # a built-in sweep by name
    assert path == "smoke" and ov == ["train.epochs=3"]
    path, ov, _ = parse_args(["smok"])  # not a name: left as an override, which load() refuses
    assert path is None and ov == ["smok"]


def _fold_rows(pred_v, pred_a, true_v, true_a, clips=("a", "b")):
    n = len(pred_v) // len(clips)
    return [{"clip_id": clips[i // n], "frame": i % n, "valence": float(pred_v[i]), "arousal": float(pred_a[i]),
             "valence_true": float(true_v[i]), "arousal_true": float(true_a[i])} for i in range(len(pred_v))]


def test_fold_predictions_merge_by_ccc_centering_per_dimension():
    import numpy as np

    from raybench.train.metrics import ccc_centering
    from raybench.results import merge_fold_predictions

    rng = np.random.default_rng(0)
    t = np.linspace(0, 6, 40)
    tv, ta = 0.6 * np.sin(t), 0.5 * np.cos(t)
    folds_v = [tv + off + 0.3 * rng.standard_normal(40) for off in (0.2, -0.1, 0.05)]
    folds_a = [ta * s + 0.3 * rng.standard_normal(40) for s in (1.0, 0.7, 1.2)]
    rows = [_fold_rows(v, a, tv, ta) for v, a in zip(folds_v, folds_a)]
    rows[1] = rows[1][::-1]  # order of rows does not matter: frames are matched by (clip, frame)
    metrics, merged = merge_fold_predictions(rows, "ccc_centering")
    def per_clip(folds):  # the rows hold two clips of 20 frames: each is merged on its own
        return np.concatenate([ccc_centering([f[:20] for f in folds]), ccc_centering([f[20:] for f in folds])])

    np.testing.assert_allclose([r["valence"] for r in merged], per_clip(folds_v), atol=1e-6)
    np.testing.assert_allclose([r["arousal"] for r in merged], per_clip(folds_a), atol=1e-6)
    # several videos: each is merged on its own (the authors' test-result script), not the concatenation
    from tests.unit.test_published_methods import _ref_centering

    videos = {"short": 7, "mid": 12, "long": 30}
    fold_rows, per_video = [[] for _ in range(3)], {}
    for vid, n in videos.items():
        tt = np.linspace(0, 3, n)
        true = 0.5 * np.sin(tt + n)
        preds = [true + off + 0.2 * rng.standard_normal(n) for off in (0.3, -0.2, 0.0)]
        per_video[vid] = _ref_centering([list(p) for p in preds])
        for f, p in enumerate(preds):
            fold_rows[f] += [{"clip_id": vid, "frame": i, "valence": float(p[i]), "arousal": float(p[i]),
                              "valence_true": float(true[i]), "arousal_true": float(true[i])} for i in range(n)]
    _, merged = merge_fold_predictions([r[::-1] if f == 1 else r for f, r in enumerate(fold_rows)], "ccc_centering")
    got = {(r["clip_id"], r["frame"]): r["valence"] for r in merged}
    for vid, ref in per_video.items():
        np.testing.assert_allclose([got[vid, i] for i in range(videos[vid])], ref, atol=1e-6)
    concat = ccc_centering([np.concatenate([np.array([r["valence"] for r in rows if r["clip_id"] == v])
                                            for v in videos]) for rows in fold_rows])
    assert np.max(np.abs(np.array([got[v, i] for v in videos for i in range(videos[v])]) - concat)) > 1e-3

    def ccc(p, y):
        return 2 * np.cov(p, y, bias=True)[0, 1] / (p.var() + y.var() + (p.mean() - y.mean()) ** 2)

    mv, ma = per_clip(folds_v), per_clip(folds_a)
    assert metrics["ccc_valence"] == pytest.approx(ccc(mv, tv), abs=1e-5)
    assert metrics["ccc_arousal"] == pytest.approx(ccc(ma, ta), abs=1e-5)
    # eval.ccc_over=clips: the mean of the two clips' CCCs of the same merged predictions
    clip_metrics, _ = merge_fold_predictions(rows, "ccc_centering", ccc_over="clips")
    assert clip_metrics["ccc_valence"] == pytest.approx(np.mean([ccc(mv[:20], tv[:20]), ccc(mv[20:], tv[20:])]),
                                                        abs=1e-5)
    # averaging independent errors: the merge beats the folds' mean CCC here
    assert metrics["ccc_valence"] > np.mean([ccc(v, tv) for v in folds_v])
    mean_metrics, mean_rows = merge_fold_predictions(rows, "mean")
    np.testing.assert_allclose([r["valence"] for r in mean_rows], np.clip(np.mean(folds_v, 0), -1, 1), atol=1e-6)
    with pytest.raises(ValueError, match="other test frames"):
        merge_fold_predictions([rows[0], rows[2][:-1]])


def test_fold_predictions_merge_categorical_by_mean_probabilities():
    import numpy as np

    from raybench.results import merge_fold_predictions

    def fold(pa, pb):
        return [{"clip_id": c, "label": y, "pred": int(np.argmax(p)), "p_calm": p[0], "p_angry": p[1]}
                for c, y, p in (("a", 0, pa), ("b", 1, pb))]

    folds = [fold([0.6, 0.4], [0.7, 0.3]), fold([0.2, 0.8], [0.1, 0.9]), fold([0.9, 0.1], [0.3, 0.7])]
    metrics, rows = merge_fold_predictions(folds[::-1])  # "how" does not apply to categorical scores
    assert metrics["acc"] == 1.0 and metrics["uar"] == 1.0  # two of the three folds alone get a clip wrong
    by = {r["clip_id"]: r for r in rows}
    assert by["a"]["p_calm"] == pytest.approx(np.mean([0.6, 0.2, 0.9])) and by["a"]["pred"] == 0
    assert by["b"]["p_angry"] == pytest.approx(np.mean([0.3, 0.9, 0.7])) and by["b"]["pred"] == 1
    with pytest.raises(ValueError, match="other test clips"):
        merge_fold_predictions([folds[0], folds[1][:1]])


def test_asha_last_rung_covers_the_longest_per_method_training(tmp_path):
    from raybench.trials import max_epochs

    p = tmp_path / "s.yaml"
    p.write_text("train: {epochs: 4}\nper_method: {zhang2021: {train: {epochs: 9}}, audio_only: {train: {lr: 0.1}}}\n"
                 "tune: {scheduler: asha, search_space: {method.name: {grid: [audio_only, zhang2021]},"
                 " data.dataset: {grid: [synthetic_ravdess, synthetic_affwild2]}}}\n")
    assert max_epochs(load(p)) == 9
    p.write_text("train: {epochs: 4}\n")
    assert max_epochs(load(p)) == 4


@pytest.mark.parametrize("extra", [["train.lr=0.1"], ["sweeps/smoke.yaml"], ["sweeps/smoke.yaml", "window.hop=2"]])
def test_resume_refuses_overrides_it_would_ignore(extra, tmp_path, capsys, monkeypatch):
    import ray

    from raybench.sweep import main

    monkeypatch.setattr(ray, "init", lambda *a, **k: (_ for _ in ()).throw(AssertionError("Ray started")))
    assert main(["--resume", "sweep-x", f"storage={tmp_path}", *extra]) == 2
    err = capsys.readouterr().err
    assert "--resume sweep-x goes on with the configuration the sweep started with" in err
    assert all(x in err for x in extra) and f"storage={tmp_path}" not in err.split("not applied:")[1].split(".")[0]


def test_resume_takes_a_new_node_wait_and_nothing_else_of_the_saved_configuration_changes(tmp_path, capsys,
                                                                                          monkeypatch):
    import raybench.sweep as sw

    cfg = load(None, ["train.epochs=2", "train.node_wait_s=900"])
    sw.save_sweep_state(str(tmp_path), "sweep-x", cfg)
    seen = {}

    def fake_run_sweep(c, sweep_id=None, resume=False, verbose=0):
        seen.update(cfg=c, sweep_id=sweep_id, resume=resume)
        raise ConfigError(["stop here"], "test")

    monkeypatch.setattr(sw, "run_sweep", fake_run_sweep)
    assert sw.main(["--resume", "sweep-x", f"storage={tmp_path}", "train.node_wait_s=30"]) == 2
    assert seen["sweep_id"] == "sweep-x" and seen["resume"] is True
    assert seen["cfg"].train.node_wait_s == 30
    changed = {"train": {"node_wait_s"}, "storage": True}
    assert seen["cfg"].model_dump(exclude=changed) == cfg.model_dump(exclude=changed)
    assert seen["cfg"].storage == str(tmp_path)  # where the results are now
    # a value the key does not take is named, before Ray starts
    seen.clear()
    assert sw.main(["--resume", "sweep-x", f"storage={tmp_path}", "train.node_wait_s=-5"]) == 2
    err = capsys.readouterr().err
    assert not seen and "train.node_wait_s" in err and "sweep sweep-x with train.node_wait_s=-5" in err
    assert sw.main(["--resume", "sweep-x", f"storage={tmp_path}", "train.node_wait_s=[1"]) == 2
    assert not seen and "cannot apply overrides ['train.node_wait_s=[1']" in capsys.readouterr().err


def test_a_resume_records_where_the_sweep_is_now_in_its_own_mlflow_store(tmp_path, capsys, monkeypatch):
    """Results moved (storage= given with --resume): the sweep goes on there, not in the old place; its
    MLflow store is its own (the default one beside the results, or the $MLFLOW_TRACKING_URI it began
    with), whatever $MLFLOW_TRACKING_URI says in the resuming shell."""
    import shutil

    import raybench.sweep as sw

    seen = {}

    def fake_run_sweep(c, sweep_id=None, resume=False, verbose=0):
        seen["cfg"] = c
        raise ConfigError(["stop here"], "test")

    monkeypatch.setattr(sw, "run_sweep", fake_run_sweep)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    old, new = tmp_path / "old", tmp_path / "new"
    cfg = load(None, [f"storage={old}"])
    sw.save_sweep_state(str(old), "s", cfg, f"sqlite:///{old / 'mlflow.db'}")  # the default store, beside the results
    shutil.move(old, new)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://elsewhere:5000")  # another shell
    assert sw.main(["--resume", "s", f"storage={new}"]) == 2
    assert seen["cfg"].storage == str(new) and seen["cfg"].mlflow.tracking_uri == f"sqlite:///{new / 'mlflow.db'}"
    assert "resuming in the sweep's own MLflow store" in capsys.readouterr().out
    # a sweep that began with $MLFLOW_TRACKING_URI goes on recording there, from a shell without it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://lab:5000")
    cfg = load(None, [f"storage={new}"])
    sw.save_sweep_state(str(new), "t", cfg, "http://lab:5000")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert sw.main(["--resume", "t", f"storage={new}"]) == 2
    assert seen["cfg"].mlflow.tracking_uri == "http://lab:5000" and seen["cfg"].storage == str(new)


def test_a_sweep_saved_before_today_resumes_with_its_own_defaults(tmp_path, capsys):
    """A state saved before data.audio.align, window.phase and zhou2019's deltas: auto existed resumes with the
    behaviour it started with (its clip store, its checkpoints' audio CNN), not today's defaults; a state
    saved now keeps what it has."""
    from raybench.config import resolve_trial_config, validate
    from raybench.sweep import resumed_config

    cfg = load(SWEEPS_DIR / "default.yaml", ["data.audio.features=spectrogram",
                                             "tune.search_space={method.name: {grid: [zhou2019, av_fusion]}}"])
    old = cfg.model_dump(mode="json")
    del old["data"]["audio"]["align"], old["window"]["phase"]
    resumed = validate(resumed_config(old, {}, None), "state")
    assert resumed.data.audio.align == "stretch" and resumed.window.phase == "random"
    assert resolve_trial_config(resumed, {"method.name": "zhou2019"}).method.deltas is True
    assert resolve_trial_config(resumed, {"method.name": "av_fusion"}).method.name == "av_fusion"
    assert "started before 2026-12-04 with its own defaults" in capsys.readouterr().out
    # zhou2019 reached through a choice, or not at all (then no per_method entry, which validation would refuse)
    for names, pinned in ((["zhou2019", "av_fusion"], True), (["de3", "av_fusion"], False)):
        old = cfg.model_dump(mode="json")
        del old["data"]["audio"]["align"], old["window"]["phase"]
        old["tune"]["search_space"]["method.name"] = {"choice": names}
        resumed = validate(resumed_config(old, {}, None), "state")
        assert ("zhou2019" in resumed.per_method) == pinned
        assert ("zhou2019's method.deltas=true" in capsys.readouterr().out) == pinned
    now = validate(resumed_config(cfg.model_dump(mode="json"), {}, None), "state")
    assert now.data.audio.align == "time" and now.window.phase == "auto"
    assert resolve_trial_config(now, {"method.name": "zhou2019"}).method.deltas == "auto"


def test_resume_with_only_storage_looks_for_the_sweep_there(tmp_path, capsys):
    from raybench.sweep import main

    assert main(["--resume", "sweep-x", f"storage={tmp_path}"]) == 2
    assert f"no sweep 'sweep-x' to resume: {tmp_path}/sweep-x/raybench_sweep.json does not exist" in capsys.readouterr().err


def test_trial_status_says_how_a_trial_ended():
    from raybench.results import trial_status

    def row(epochs, best_epoch=0, error=None, best_val=0.5, early_stop=None):
        return {"error": error, "best_val": best_val, "epochs": epochs, "best_epoch": best_epoch,
                "cfg": TrialConfig(method=MethodOptions(name="m"), train={"epochs": 6, "early_stop": early_stop})}

    assert trial_status(row(6)) == ("FINISHED", None)
    assert trial_status(row(3, error="boom"))[0] == "FAILED" and trial_status(row(3, error="boom"))[1] == "boom"
    assert trial_status(row(2, best_val=None))[0] == "FAILED"
    status, why = trial_status(row(6, best_val=float("nan")))  # diverged at every epoch: it cannot be chosen
    assert status == "FAILED" and why.startswith("its validation score was never finite (nan): the model diverged")
    status, why = trial_status(row(3, best_epoch=0, early_stop=2))
    assert status == "KILLED" and why.startswith("early_stop")
    status, why = trial_status(row(2, best_epoch=1, early_stop=2))  # no early stop yet: the scheduler
    assert status == "KILLED" and why == "scheduler: stopped after 2 of 6 epochs (tune.scheduler)"


def test_a_failed_trials_error_is_its_cause_in_one_line():
    from raybench.results import _error_line

    class RayTaskError(Exception):  # what Tune gives: the actor's name first, the cause last
        pass

    e = RayTaskError("\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=11738, ip=192.0.2.2, actor_id=2c73)\n"
                     "  File \"/x/raybench/trials.py\", line 175, in run_trial\n"
                     "    d = data[key]\n\nValueError: frame encoder 'ir50': the keys of '/w.pt' do not fit\n")
    assert _error_line(e) == "ValueError: frame encoder 'ir50': the keys of '/w.pt' do not fit"
    assert _error_line(None) is None
    assert _error_line(RayTaskError("")) == "RayTaskError"


def test_repeats_run_every_configuration_with_consecutive_seeds_and_select_on_the_mean():
    from raybench.results import choose

    cfg = load(SWEEPS_DIR / "smoke.yaml", ["tune.repeats=3", "train.seed=5"])
    assert param_space(cfg)["train.seed"] == {"grid_search": [5, 6, 7]}
    with pytest.raises(ConfigError, match="'tune.search_space.train.seed' and 'tune.repeats' both vary the seed"):
        load(SWEEPS_DIR / "smoke.yaml", ["tune.repeats=2", "tune.search_space={train.seed: {grid: [0, 1]}}"])

    def t(w, seed, v):
        return {"trial_id": f"s/{w}-{seed}", "dataset": "d", "best_val": v, "checkpoint": "c",
                "params": {"window.length": w, "train.seed": seed}}

    # window 4 has the single best trial (0.9), window 8 the best mean over seeds (0.7 vs 0.5)
    trials = [t(4, 5, 0.9), t(4, 6, 0.3), t(4, 7, 0.3), t(8, 7, 0.7), t(8, 5, 0.6), t(8, 6, 0.8)]
    chosen = choose(trials, "d", "max", ("train.seed",))
    assert [x["trial_id"] for x in chosen] == ["s/8-5", "s/8-6", "s/8-7"]  # by seed
    assert choose(trials, "d", "max")[0]["trial_id"] == "s/4-5"  # without repeats: the best trial
    # a diverged trial (NaN score) is never chosen, even first in the list; its group is compared on the rest
    nan = float("nan")
    assert choose([t(2, 5, nan), *trials], "d", "max")[0]["trial_id"] == "s/4-5"
    assert choose([t(2, 5, nan), t(4, 5, 0.2)], "d", "min")[0]["trial_id"] == "s/4-5"
    assert [x["trial_id"] for x in choose([t(8, 8, nan), *trials], "d", "max", ("train.seed",))] == \
        ["s/8-5", "s/8-6", "s/8-7"]
    assert choose([t(2, 5, nan)], "d", "max") == []


def test_a_model_whose_test_failed_is_left_out_of_the_test_mean_and_counted():
    from raybench.results import cv_summary

    def t(seed, val, test, failed=None):
        return {"trial_id": f"s/{seed}", "best_val": val, "params": {"window.length": 4, "train.seed": seed},
                "test": test, **({"test_failed": failed} if failed else {})}

    chosen = [t(0, 0.5, {"test/uar": 0.4}), t(1, 0.7, {}, "UnpicklingError: invalid load key"),
              t(2, 0.6, {"test/uar": 0.8})]
    summary, per_model = cv_summary(chosen, "val/uar", ("train.seed",))
    assert summary["models"] == 3 and summary["test_models"] == 2
    assert summary["val_mean"] == pytest.approx(0.6)  # validation: all three models
    assert summary["test_mean"]["test/uar"] == pytest.approx(0.6) and summary["test_std"]["test/uar"] == \
        pytest.approx(0.2)  # test: the two that have one
    assert "seed1/test/uar" not in per_model and per_model["seed1/best/val/uar"] == 0.7


def test_the_parent_figures_a_record_logs_are_told_from_the_prepare_stages():
    """An earlier record's parent figures that a new record does not log again are set NaN (results.record):
    only those a record logs, with the dataset's prefix in a sweep of several datasets."""
    from raybench.results import _recorded_key

    for k in ("test/uar", "test_merged/ccc", "test_robust/clean/uar", "best/val/uar", "fold0/test/uar",
              "fold1/seed2/best/val/uar", "seed3/test/acc", "test/uar_ci_low"):
        assert _recorded_key(k, ["d"]) and _recorded_key(f"ravdess/{k}", ["ravdess", "crema_d"]), k
    for k in ("data/ravdess/clips", "time/sweep_s", "folds_x"):
        assert not _recorded_key(k, ["d"]) and not _recorded_key(f"ravdess/{k}", ["ravdess", "crema_d"]), k


def test_the_bootstrap_interval_resamples_clips_and_averages_the_models_as_scikit_learn_computes():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    from raybench.results import bootstrap_ci

    rng = np.random.default_rng(3)
    classes = ["a", "b", "c"]
    labels = rng.integers(0, 3, 40)
    models = []
    for _ in range(2):
        p = rng.dirichlet(np.ones(3), 40)
        p[np.arange(40)[:25], labels[:25]] += 1.0  # right on most clips
        p /= p.sum(1, keepdims=True)
        models.append([{"clip_id": f"c{i:02d}", "label": int(labels[i]), "pred": int(p[i].argmax()),
                        **{f"p_{c}": float(p[i, j]) for j, c in enumerate(classes)}} for i in range(40)])
    ci = bootstrap_ci(models, "categorical", classes, resamples=200, seed=7)
    # the same draws, scored with scikit-learn: per draw, each model on the clips drawn (one draw for
    # both: they predict the same clips), averaged
    draw = np.random.default_rng(7)
    uar, acc = [], []
    for _ in range(200):
        u, a = [], []
        idx = draw.integers(0, 40, 40)
        for m in models:
            y, yhat = labels[idx], np.array([m[i]["pred"] for i in idx])
            u.append(balanced_accuracy_score(y, yhat))
            a.append(accuracy_score(y, yhat))
        uar.append(np.mean(u))
        acc.append(np.mean(a))
    assert ci["test/uar"] == pytest.approx((np.quantile(uar, 0.025), np.quantile(uar, 0.975)), abs=1e-6)
    assert ci["test/acc"] == pytest.approx((np.quantile(acc, 0.025), np.quantile(acc, 0.975)), abs=1e-6)
    assert ci["test/uar"][0] < ci["test/uar"][1]
    # three copies of one model are one model: the interval is the test set's, not narrowed by copies
    one = bootstrap_ci(models[:1], "categorical", classes, resamples=200, seed=7)
    copies = bootstrap_ci(models[:1] * 3, "categorical", classes, resamples=200, seed=7)
    assert copies.keys() == one.keys()
    for k in one:  # (the mean of three equal float64 scores may differ from one in its last bit)
        assert copies[k] == pytest.approx(one[k], abs=1e-12)
    # folds: each model its own clips, each drawn from its own (the second model's clips renamed)
    other = [{**r, "clip_id": "f1-" + r["clip_id"]} for r in models[1]]
    ci = bootstrap_ci([models[0], other], "categorical", classes, resamples=200, seed=7)
    draw = np.random.default_rng(7)
    acc = []
    for _ in range(200):
        acc.append(np.mean([accuracy_score(labels[idx], np.array([m[i]["pred"] for i in idx]))
                            for m in models for idx in [draw.integers(0, 40, 40)]]))
    assert ci["test/acc"] == pytest.approx((np.quantile(acc, 0.025), np.quantile(acc, 0.975)), abs=1e-6)
    # folds x seeds: three copies of each fold's model are that fold's model, not three draws of their own
    copies = bootstrap_ci([models[0], other] * 3, "categorical", classes, resamples=200, seed=7)
    assert copies.keys() == ci.keys()
    for k in ci:
        assert copies[k] == pytest.approx(ci[k], abs=1e-12)


def test_the_bootstrap_interval_of_a_perfect_continuous_predictor_is_a_point_and_resamples_videos():
    from raybench.results import bootstrap_ci

    rows = []
    for v, n in (("v0", 50), ("v1", 17), ("v2", 33)):  # videos of different lengths
        for f in range(n):
            x, y = np.sin(f / 7 + len(v)), np.cos(f / 5)
            rows.append({"clip_id": v, "frame": f, "valence": x, "arousal": y, "valence_true": x, "arousal_true": y})
    ci = bootstrap_ci([rows], "continuous", ["valence", "arousal"], resamples=50)
    for k in ("test/ccc", "test/ccc_valence", "test/ccc_arousal"):
        assert ci[k] == pytest.approx((1.0, 1.0), abs=1e-5)


def test_the_terminal_shows_one_line_per_trial_epoch_and_says_when_a_trial_fails(capsys):
    from types import SimpleNamespace

    from raybench.trials import ProgressPrinter

    cfg = load(SWEEPS_DIR / "smoke.yaml", ["train.epochs=7"])
    trial = SimpleNamespace(trial_id="1a2b3_00001", config={"window.length": 4},
                            run_metadata=SimpleNamespace(num_failures=0))
    p = ProgressPrinter(cfg)
    p.on_trial_start(0, [], trial)
    p.on_trial_result(0, [], trial, {"epoch": 2, "train/loss": 1.23456, "val/score": 0.4, "best/val/score": 0.45,
                                     "time/epoch_s": 3.21})
    p.on_trial_result(0, [], trial, {"training_iteration": 0})  # Tune's own bookkeeping result: no line
    p.on_trial_error(0, [], trial)
    assert capsys.readouterr().out.splitlines() == [
        "[raybench] trial 1a2b3_00001 started: window.length=4",
        "[raybench] trial 1a2b3_00001 epoch 3/7: train/loss 1.2346, val 0.400 (best 0.450), 3.2 s",
        "[raybench] trial 1a2b3_00001 FAILED (the cause is in the table at the end; the other trials go on)"]
    assert parse_args(["-v", "sweeps/smoke.yaml"])[2].verbose == 1


def test_a_trial_started_again_after_a_failure_is_said_and_its_wall_time_goes_on(capsys, monkeypatch):
    """Tune starting a failed trial again (tune.max_failures) while the driver runs: a line says so
    (a preempted node, which Tune does not count, said apart), and the trial's wall time runs on through
    the failure and the new start (a resume after the driver died counts only up to its last report)."""
    from types import SimpleNamespace

    import raybench.trials as trials
    from raybench.trials import ProgressPrinter

    clock = [100.0]
    monkeypatch.setattr(trials, "time", SimpleNamespace(time=lambda: clock[0]))
    meta = SimpleNamespace(num_failures=0)
    trial = SimpleNamespace(trial_id="t_00000", config={}, run_metadata=meta, max_failures=2)
    p = ProgressPrinter(load(SWEEPS_DIR / "smoke.yaml", ["train.epochs=3", "tune.max_failures=2"]))
    p.on_trial_start(0, [], trial)
    clock[0] = 110.0
    p.on_trial_result(0, [], trial, {"epoch": 0, "train/loss": 1.0, "val/score": 0.4, "best/val/score": 0.4,
                                     "time/epoch_s": 5.0})
    clock[0], meta.num_failures = 130.0, 1  # its process lost
    p.on_trial_recover(0, [], trial)
    clock[0] = 140.0
    p.on_trial_start(0, [], trial)
    clock[0] = 150.0  # its node preempted: Tune does not count it
    p.on_trial_recover(0, [], trial)
    clock[0] = 160.0
    p.on_trial_start(0, [], trial)
    clock[0] = 200.0
    p.on_trial_complete(0, [], trial)
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == ("[raybench] trial t_00000 failed (failure 1 of tune.max_failures=2): started again from its "
                        "last checkpoint (from scratch if it had none)")
    assert lines[4] == ("[raybench] trial t_00000 failed (its node was preempted: not counted against "
                        "tune.max_failures): started again from its last checkpoint (from scratch if it had none)")
    assert p.timing["t_00000"]["wall_s"] == 100.0 and p.timing["t_00000"]["epochs_s"] == 5.0


def test_quiet_terminal_settings(monkeypatch):
    """Without -v: Ray Data prints no progress or per-execution lines, Ray Data's finish line and the
    per-report line of Ray Train (a logger named by its file) are raised to WARNING; with -v nothing
    is quieted."""
    import logging

    import ray.data
    from ray.train.v2._internal.execution import context

    from raybench.train.loop import quiet_train_worker
    from raybench.trials import quiet_ray

    report = logging.getLogger(context.__file__)
    finish = logging.getLogger("ray.data._internal.execution.streaming_executor")
    monkeypatch.setattr(report, "level", logging.NOTSET)
    monkeypatch.setattr(finish, "level", logging.NOTSET)
    ctx = ray.data.DataContext.get_current()
    monkeypatch.setattr(ctx, "print_on_execution_start", True)
    monkeypatch.setattr(ctx, "enable_progress_bars", ctx.enable_progress_bars)  # restored afterwards
    quiet_train_worker(verbose=1)
    assert report.level == logging.NOTSET
    quiet_train_worker(verbose=0)
    assert report.level == logging.WARNING
    quiet_ray(verbose=0)
    assert not ctx.print_on_execution_start and not ctx.enable_progress_bars
    assert finish.level == logging.WARNING
    quiet_ray(verbose=1)
    assert ctx.print_on_execution_start and ctx.enable_progress_bars


def test_asha_cuts_a_resumed_trial_at_the_rung_its_own_epochs_reach():
    """After a resume Tune's training_iteration restarts at 1; the sweep's ASHA counts the trial's own
    epochs (epochs_done), so a poor trial resumed after epoch 1 is judged at the epoch-2 rung at once."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from raybench.trials import make_scheduler

    def decision(time_attr=None):
        s = make_scheduler(load(SWEEPS_DIR / "smoke.yaml", ["tune.scheduler=asha", "train.epochs=8",
                                                            "tune.grace_period=2"]))
        if time_attr:
            s._time_attr = time_attr  # what Tune's default clock would do
        s.set_search_properties("val/score", "max")
        trials = [SimpleNamespace(trial_id=f"t{i}") for i in range(4)]
        for t in trials:
            s.on_trial_add(None, t)
        for t, score in zip(trials, (0.9, 0.8, 0.7)):  # three trials pass the epoch-2 rung
            for e in (1, 2):
                s.on_trial_result(None, t, {"epochs_done": e, "training_iteration": e, "val/score": score})
        # the fourth, resumed after its first epoch: its second epoch is Tune's first iteration
        return s.on_trial_result(None, trials[3], {"epochs_done": 2, "training_iteration": 1, "val/score": 0.1})

    assert make_scheduler(load(SWEEPS_DIR / "smoke.yaml", ["tune.scheduler=asha"]))._time_attr == "epochs_done"
    assert decision() == TrialScheduler.STOP
    assert decision("training_iteration") == TrialScheduler.CONTINUE  # Tune's clock would let it through


_TRIAL_PROCESS = r'''
import sys

import cloudpickle
import ray.train.torch
import ray.tune.integration.ray_train
from ray import tune

from raybench.config import SWEEPS_DIR, load, resolve_trial_config
from raybench.data.store import random_store
from raybench.trials import data_key, run_trial, trial_data_cfg, worker_memory

class Context:  # what run_trial asks of Tune
    def get_trial_id(self):
        return "t_00000"

class Trainer:  # Ray Train's TorchTrainer, kept from starting: the function it would send on, pickled
    def __init__(self, fn, **kw):
        Trainer.fn, Trainer.kw = fn, kw

    def fit(self):
        pass

tune.get_context = Context
ray.train.torch.TorchTrainer = Trainer
ray.tune.integration.ray_train.TuneReportCallback = ray.train.UserCallback  # (needs a Tune session)
cfg = load(SWEEPS_DIR / "smoke.yaml", ["train.num_workers=2"])
store = random_store(sys.argv[3], [4, 5], image_size=8, n_mels=4)  # what the trial reads: its memory reserved
data = {data_key(trial_data_cfg(resolve_trial_config(cfg, {}), cfg)): store}
run_trial({}, cfg, data, None, sys.argv[1], 1.0, worker_memory(resolve_trial_config(cfg, {}), store))
open(sys.argv[2], "wb").write(cloudpickle.dumps(Trainer.fn))
print(Trainer.kw["scaling_config"].resources_per_worker)
print(sorted(m for m in ("torchmetrics", "raybench.train.loop") if m in sys.modules))
'''

_CONTROLLER = r'''
import sys

import cloudpickle

fn = cloudpickle.loads(open(sys.argv[1], "rb").read())
print(sorted(m for m in ("torchmetrics", "raybench.train.loop") if m in sys.modules))
'''


def test_a_worker_group_trials_own_process_and_ray_trains_controller_do_not_import_the_training_loop(tmp_path):
    """A trial of several workers hands its training function to Ray Train: its own process, and Ray
    Train's controller (which unpickles the function), do not import the loop nor torchmetrics (the
    record stage's confusion figure still draws with it: about 4 s of a 2-core machine per process); the workers import it when they run
    it, and it is the loop's function they run."""
    import subprocess
    import sys

    fn = tmp_path / "fn.pkl"
    out = subprocess.run([sys.executable, "-c", _TRIAL_PROCESS, str(tmp_path / "results"), str(fn), str(tmp_path / "s")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout  # the trial's process
    # each worker asks for its CPU and reserves the memory of the clips it holds (2 clips of 4 and 5
    # frames: 8 x 8 x 3 uint8 frames, 4 steps of 4 float32 features per frame, 2 float32 labels per frame)
    held = 9 * (8 * 8 * 3 + 4 * 4 * 4 + 2 * 4)
    assert out.stdout.strip().splitlines()[-2] == str({"CPU": 1.0, "memory": float(held)}), out.stdout
    out = subprocess.run([sys.executable, "-c", _CONTROLLER, str(fn)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout  # the controller
    # in a worker, the function runs the loop's (replaced here by a recorder)
    import cloudpickle
    import raybench.train.loop as loop

    called = []
    orig = loop.train_loop_per_worker
    loop.train_loop_per_worker = called.append
    try:
        cloudpickle.loads(fn.read_bytes())({"cfg": "c"})
    finally:
        loop.train_loop_per_worker = orig
    assert called == [{"cfg": "c"}]


def test_the_training_loop_imports_no_optional_heavy_library():
    """What every worker, every one-worker trial's process and every evaluation task imports (the loop,
    its metrics, the store, the methods' module) pulls in none of torchmetrics, torchvision, transformers,
    scipy and matplotlib: together about 4 s per process on a 2-core machine (raybench/train/metrics.py)."""
    import subprocess
    import sys

    code = ("import sys, raybench.train.loop, raybench.methods, raybench.results; print(sorted(m for m in "
            "('torchmetrics', 'torchvision', 'transformers', 'scipy', 'matplotlib', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def _trial(method, *over):
    from raybench.config import resolve_trial_config

    return resolve_trial_config(load(SWEEPS_DIR / "smoke.yaml", ["train.num_workers=1", *over]), {"method.name": method})


def test_a_trials_workers_reserve_the_memory_of_the_clips_they_hold(tmp_path):
    """Each worker reserves with Ray what it holds in memory: its method's modalities of every training
    clip when they fit train.cache_gib (nothing when they stream), or train.memory_gib_per_worker."""
    from raybench.data.store import random_store
    from raybench.trials import trial_resources, worker_memory, worker_resources

    data = random_store(tmp_path / "s", [5, 7, 9], image_size=8, n_mels=6, steps_per_frame=4)
    frames = 5 + 7 + 9
    video, audio, labels = frames * 8 * 8 * 3, frames * 4 * 6 * 4, frames * 2 * 4  # uint8, float32, 2 float32
    assert worker_memory(_trial("av_fusion"), data) == video + audio + labels
    assert worker_memory(_trial("audio_only"), data) == audio + labels
    assert worker_memory(_trial("video_only"), data) == video + labels
    data["ids"]["train"] = ["clip00000", "clip00002"]  # another fold: its own clips
    assert worker_memory(_trial("av_fusion"), data) == (5 + 9) * (8 * 8 * 3 + 4 * 6 * 4 + 2 * 4)
    # clips that do not fit the cache stream through a bounded pool: nothing reserved
    fit = (5 + 9) * (8 * 8 * 3 + 4 * 6 * 4 + 2 * 4)
    assert worker_memory(_trial("av_fusion", f"train.cache_gib={(fit - 1) / 2**30}"), data) == 0
    assert worker_memory(_trial("av_fusion", f"train.cache_gib={fit / 2**30}"), data) == fit
    assert worker_memory(_trial("av_fusion", "train.cache_gib=0"), data) == 0
    assert worker_memory(_trial("av_fusion", "train.memory_gib_per_worker=1.5"), data) == int(1.5 * 2**30)
    assert worker_memory(_trial("av_fusion", "train.memory_gib_per_worker=0"), data) == 0
    # a trial in its own process asks for it; a worker group's trial function does not, its workers do
    one = _trial("av_fusion").train
    assert trial_resources(one, 1.0, 1000) == {"CPU": 1.0, "memory": 1000.0}
    assert trial_resources(one, 1.0, 0) == {"CPU": 1.0}
    two = _trial("av_fusion", "train.num_workers=2").train
    assert trial_resources(two, 1.0, 1000) == {"CPU": 0.01}
    assert worker_resources(two, 0.5, 1000) == {"CPU": 0.5, "memory": 1000.0}


def test_a_worker_reserving_more_memory_than_any_node_offers_is_refused_naming_the_key(monkeypatch):
    """Else its trial would wait for resources forever."""
    import ray

    from raybench.trials import check_worker_memory

    gib = 2**30
    monkeypatch.setattr(ray, "nodes", lambda: [
        {"Alive": True, "Resources": {"CPU": 8.0, "memory": 2.0 * gib}},
        {"Alive": False, "Resources": {"CPU": 8.0, "memory": 64.0 * gib}},  # lost
        {"Alive": True, "Resources": {"CPU": 1.0, "memory": 32.0 * gib}},  # too few CPUs for a 2-CPU worker
        {"Alive": True, "Resources": {"CPU": 4.0, "memory": 3.0 * gib, "GPU": 1.0}}])
    check_worker_memory(3 * gib, _trial("av_fusion"), "av_fusion on ravdess", 2.0)  # fits the largest such node
    with pytest.raises(ConfigError) as e:
        check_worker_memory(3 * gib + 1, _trial("av_fusion"), "av_fusion on ravdess", 2.0)
    assert "av_fusion on ravdess" in str(e.value) and "'train.cache_gib'" in str(e.value)
    assert "(2 CPU) offers 3.00 GiB of memory" in str(e.value)
    with pytest.raises(ConfigError, match=r"'train.memory_gib_per_worker' is 4, .* 3.00 GiB"):
        check_worker_memory(4 * gib, _trial("av_fusion", "train.memory_gib_per_worker=4"), "av_fusion on ravdess", 2.0)
    # a GPU worker fits only a node with a GPU: not the 8-CPU node's 2 GiB, the GPU node's 3
    gpu = _trial("av_fusion", "train.use_gpu=true")
    check_worker_memory(3 * gib, gpu, "av_fusion on ravdess", 1.0)
    with pytest.raises(ConfigError, match=r"\(1 CPU, a GPU share\) offers 3.00 GiB"):
        check_worker_memory(3 * gib + 1, gpu, "av_fusion on ravdess", 1.0)
    check_worker_memory(32 * gib, _trial("av_fusion"), "av_fusion on ravdess", 1.0)  # the 1-CPU node's


def test_every_worker_of_a_sweep_reserves_the_most_any_of_its_trials_holds(tmp_path, monkeypatch):
    """One figure for every trial (Tune reuses a trial's process only for equal resources): the most
    over the swept methods and the swept keys that change what a worker holds; checked before anything
    is recorded, a swept value too large included; a method reading embeddings the data lacks adds nothing."""
    import ray

    from raybench.data.store import random_store
    from raybench.trials import check_resources

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 2.0, "memory": 2.0**30}}])
    data = random_store(tmp_path / "s", [5, 7, 9], image_size=8, n_mels=6, steps_per_frame=4)
    summaries = {"d": data}
    frames = 5 + 7 + 9
    video, audio, labels = frames * 8 * 8 * 3, frames * 4 * 6 * 4, frames * 2 * 4
    small = (audio + labels) / 2**30  # audio_only's clips fit, av_fusion's do not
    sweep = lambda *o: load(SWEEPS_DIR / "smoke.yaml", ["train.num_workers=1", *o])  # noqa: E731
    space = "tune.search_space={method.name: {grid: [audio_only, video_embedding]}"
    # (an encoder named, its embeddings not in this data configuration: video_embedding's trials fail alone)
    assert check_resources(sweep(space + "}", f"train.cache_gib={small}", f"data.video.encoder.path={tmp_path}"),
                           summaries)[2] == audio + labels
    space = "tune.search_space={method.name: {grid: [audio_only, av_fusion]}"
    assert check_resources(sweep(space + "}", f"train.cache_gib={small}"), summaries)[2] == audio + labels
    assert check_resources(sweep(space + f", train.cache_gib: {{grid: [{small}, 1.0]}}}}"), summaries)[2] == (
        video + audio + labels)
    assert check_resources(sweep(space + ", window.length: {grid: [4, 8]}}"), summaries)[2] == video + audio + labels
    with pytest.raises(ConfigError, match="'train.memory_gib_per_worker' is 5000"):
        check_resources(sweep(space + ", train.memory_gib_per_worker: {grid: [0, 5000]}}"), summaries)
    # a continuous range over a memory key: its upper bound (a trial may draw it), not the base value
    assert check_resources(sweep(space + f", train.cache_gib: {{uniform: [{small}, 1.0]}}}}", f"train.cache_gib={small}"),
                           summaries)[2] == video + audio + labels
    assert check_resources(sweep(space + ", train.memory_gib_per_worker: {loguniform: [0.25, 0.5]}}"), summaries)[2] == (
        2**29)
    with pytest.raises(ConfigError, match="'train.memory_gib_per_worker' is 5000"):
        check_resources(sweep(space + ", train.memory_gib_per_worker: {uniform: [0, 5000]}}"), summaries)
    assert check_resources(sweep(space + ", train.memory_gib_per_worker: {randint: [0, 2]}}"), summaries)[2] == 2**30


def test_planned_trials_count_every_grid_point_of_every_sample():
    from raybench.config import valid_pairs
    from raybench.trials import planned_trials

    smoke = SWEEPS_DIR / "smoke.yaml"  # window.length: grid of 2
    assert planned_trials(load(smoke)) == 2
    assert planned_trials(load(smoke, ["tune.repeats=3"])) == 6  # a seed grid
    assert planned_trials(load(smoke, ["tune.repeats=3", "tune.num_samples=2"])) == 12
    cfg = load(smoke, ["tune.search_space={train.lr: {loguniform: [1e-4, 1e-2]}}", "tune.num_samples=5"])
    assert planned_trials(cfg) == 2 * 5  # the window grid (merged from the file) for each of 5 samples
    methods = load(SWEEPS_DIR / "synthetic_methods.yaml")  # (method, dataset) pairs whose tasks fit
    grids = [len(v["grid"]) for k, v in methods.tune.search_space.items()
             if "grid" in v and k not in ("method.name", "data.dataset")]
    assert planned_trials(methods) == (len(valid_pairs(methods)) * int(np.prod(grids)) * methods.tune.repeats
                                       * methods.tune.num_samples)


def test_a_sweep_counts_as_ended_only_when_each_planned_trial_ended_through_tunes_callbacks():
    """Tune ends a stopped experiment (Ctrl-C) like a finished one, its trials TERMINATED without a
    callback; trials ended before a resume are TERMINATED at the first step."""
    from types import SimpleNamespace

    from ray.tune.experiment import Trial

    from raybench.trials import ProgressPrinter

    cfg = load(SWEEPS_DIR / "smoke.yaml")  # 2 trials planned

    def run(before: dict[str, str], ended: list[tuple[str, str]], step: bool = True) -> int:
        p = ProgressPrinter(cfg)
        p.setup()
        trials = [SimpleNamespace(trial_id=t, status=s) for t, s in before.items()]
        if step:  # Tune takes no step when a restored experiment has nothing left to run
            p.on_step_begin(0, trials)
        for t, how in ended:
            trial = SimpleNamespace(trial_id=t, status=Trial.TERMINATED)
            (p.on_trial_complete if how == "complete" else p.on_trial_error)(1, trials, trial)
        for t in trials:  # Tune's clean-up at the end stops whatever holds an actor (none before a first step:
            if step:      # Ray 2.60's TuneController._cleanup_trials stops only the trials in _actor_to_trial)
                t.status = Trial.TERMINATED
        p.on_experiment_end(trials)
        return p.unfinished

    pending = {"a": Trial.PENDING, "b": Trial.PENDING}
    assert run(pending, [("a", "complete"), ("b", "error")]) == 0  # finished, one trial failed
    assert run(pending, []) == 2  # stopped before any trial began (waiting for resources)
    assert run(pending, [("a", "complete")]) == 1
    assert run({"a": Trial.PENDING}, [("a", "complete")]) == 1  # b was never made
    assert run({"a": Trial.TERMINATED, "b": Trial.PENDING}, [("b", "complete")]) == 0  # a resume
    assert run({"a": Trial.TERMINATED, "b": Trial.PENDING}, []) == 1  # a resume stopped again
    # a resume of a sweep whose trials had all ended (its record stage cut short, say): nothing unfinished
    assert run({"a": Trial.TERMINATED, "b": Trial.TERMINATED}, [], step=False) == 0
    assert run({"a": Trial.TERMINATED, "b": Trial.PENDING}, [], step=False) == 1  # Ctrl-C before its first step


def test_a_sweep_records_the_labels_and_media_it_started_on_and_a_resume_checks_them(tmp_path, monkeypatch):
    """The state saved when Tune starts keeps each data configuration's label and media digests;
    run_sweep with resume hands those to prepare_all (which refuses other files: test_store_labels.py,
    test_store_media.py)."""
    from raybench import sweep, tracking
    from raybench.sweep import load_sweep_state, run_sweep

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    cfg = load(SWEEPS_DIR / "smoke.yaml", [f"mlflow.tracking_uri={uri}", f"storage={tmp_path / 'results'}"])
    monkeypatch.setattr(tracking, "log_datasets", lambda *a, **k: None)  # (the summaries here are stand-ins)
    seen = []

    def prepare_all(cfg, verbose=0, labels=None, media=None):
        seen.append((labels, media))
        return {"k1": {"dataset": "synthetic_ravdess", "task": "categorical", "label_digests": {"c1": "a" * 16},
                       "media_digests": {"c1": "b" * 16}}}

    def tune_trials(*args, on_start=None, **kw):
        on_start()
        raise RuntimeError("broke")

    monkeypatch.setattr(sweep, "prepare_all", prepare_all)
    monkeypatch.setattr(sweep, "check_resources", lambda cfg, summaries: (1.0, 1, 0))
    monkeypatch.setattr(sweep, "tune_trials", tune_trials)
    for resume in (False, True):
        with pytest.raises(RuntimeError, match="broke"):
            run_sweep(cfg, sweep_id="s1", resume=resume)
    state = load_sweep_state(str(tmp_path / "results"), "s1", whole=True)
    assert state["labels"] == {"k1": {"c1": "a" * 16}} and state["media"] == {"k1": {"c1": "b" * 16}}
    assert seen == [(None, None), ({"k1": {"c1": "a" * 16}}, {"k1": {"c1": "b" * 16}})]


@pytest.mark.parametrize("crash_after_start", [False, True], ids=["before-its-state-is-saved", "after"])
def test_a_crashed_sweeps_runs_name_a_resume_command_only_when_it_can_resume(tmp_path, monkeypatch, crash_after_start):
    """A sweep that crashes after its MLflow run exists closes it FAILED. The reason names
    ``--resume`` only once the sweep's state is saved (just before Tune starts): before that
    ``--resume`` would find no sweep, and the reason says to start it again. Ray's stages are replaced
    (no Ray here); the MLflow store is real."""
    from mlflow.tracking import MlflowClient

    from raybench import sweep
    from raybench.sweep import load_sweep_state, run_sweep

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    cfg = load(SWEEPS_DIR / "smoke.yaml", [f"mlflow.tracking_uri={uri}", f"storage={tmp_path / 'results'}"])
    monkeypatch.setattr(sweep, "prepare_all", lambda cfg, verbose=0, labels=None, media=None: {})
    monkeypatch.setattr(sweep, "check_resources", lambda cfg, summaries: (1.0, 1, 0))

    def tune_trials(*args, on_start=None, **kw):
        if crash_after_start:
            on_start()
        raise RuntimeError("broke")

    monkeypatch.setattr(sweep, "tune_trials", tune_trials)
    with pytest.raises(RuntimeError, match="broke"):
        run_sweep(cfg, sweep_id="s1")
    client = MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    reason = run.data.tags["raybench.status_reason"]
    assert run.info.status == "FAILED" and reason.startswith("the sweep failed: RuntimeError: broke"), reason
    assert ("--resume s1" in reason) == crash_after_start, reason
    if crash_after_start:  # the command it names finds the sweep
        assert load_sweep_state(str(tmp_path / "results"), "s1") is not None
    else:
        assert "start it again" in reason
        with pytest.raises(ConfigError):
            load_sweep_state(str(tmp_path / "results"), "s1")


class _Clock:
    """A clock that moves only when slept on."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def _cluster_over_time(monkeypatch, clock, steps):
    """ray.cluster_resources() and the autoscaler's pending nodes as a cluster whose nodes join over
    time: ``steps`` is [(from second, resources, nodes starting)], the last one reached holds. Returns
    the pending-nodes function for :func:`wait_for_nodes`."""
    import ray

    now = lambda: [x for x in steps if x[0] <= clock.t][-1]  # noqa: E731
    monkeypatch.setattr(ray, "cluster_resources", lambda: now()[1])
    return lambda: now()[2]


# a cluster launched with ray up: the head (no CPU) first, the autoscaler's first report at 4 s (two
# nodes to start), one 1-GPU node joining at 40 s, the second at 50 s, the report saying so at 54 s
LAUNCHED = [(0, {"memory": 1e9}, None), (4, {"memory": 1e9}, 2), (40, {"CPU": 4.0, "GPU": 1.0}, 2),
            (44, {"CPU": 4.0, "GPU": 1.0}, 1), (50, {"CPU": 8.0, "GPU": 2.0}, 1), (54, {"CPU": 8.0, "GPU": 2.0}, 0)]


@pytest.mark.parametrize("steps,wait,want_waited,want_conc", [
    # waits for both nodes: two trials at a time
    pytest.param(LAUNCHED, 900, 54, 2, id="just-launched"),
    pytest.param([(0, {"memory": 1e9}, 2), *LAUNCHED[2:]], 900, 54, 2, id="autoscaler-reported-already"),
    # one trial could start at once, but a node is starting: waits for it (else one trial at a time)
    pytest.param([(0, {"CPU": 4.0, "GPU": 1.0}, 1), (30, {"CPU": 8.0, "GPU": 2.0}, 0)], 900, 30, 2, id="one-node-up"),
    pytest.param([(0, {"CPU": 8.0, "GPU": 2.0}, 0)], 900, 0, 2, id="every-node-up"),
    pytest.param([(0, {"memory": 1e9}, 2), *LAUNCHED[2:]], 0, 0, None, id="no-wait-asked"),  # node_wait_s=0;
    # no CPU: refused
    pytest.param([(0, {"CPU": 4.0}, 0)], 900, 0, None, id="no-gpu-not-growing"),  # refused at once
    pytest.param([(0, {"memory": 1e9}, 0)], 900, 0, None, id="no-cpu-not-growing"),
    # the autoscaler's first report never comes: waited for it a minute (first_report_s), then refused
    pytest.param([(0, {"CPU": 4.0}, None)], 900, 60, None, id="no-report-ever"),
    # node_wait_s reached with a node still starting: sized on what is there
    pytest.param(LAUNCHED[:4], 100, 100, 1, id="wait-reached"),
])
def test_a_sweep_waits_for_the_nodes_its_clusters_autoscaler_is_starting(monkeypatch, capsys, steps, wait,
                                                                         want_waited, want_conc):
    """A cluster answers before the nodes its autoscaler launches have joined (``ray up`` returns then):
    the sweep waits while nodes are starting and sizes its trials on all of them; it never waits on a
    cluster that is not growing. Scripted cluster and clock (2 s polls)."""
    from raybench.trials import size_trials, wait_for_nodes

    clock = _Clock()
    pending = _cluster_over_time(monkeypatch, clock, steps)
    cfg = load(SWEEPS_DIR / "smoke.yaml", ["train.use_gpu=true", "train.num_workers=1", f"train.node_wait_s={wait}"])
    try:
        wait_for_nodes(cfg, clock=clock, sleep=clock.sleep, pending=pending)
        sized = size_trials(cfg)[1]
    except ConfigError as e:
        sized = None
        assert "the cluster has no CPU" in str(e) or "the cluster has 0 GPU(s)" in str(e), e
        if not wait:  # the message says why it did not wait: nodes were starting
            assert "its autoscaler is starting 2 node(s); train.node_wait_s=0" in str(e), e
        if steps == [(0, {"memory": 1e9}, 0)]:  # no CPU, nothing starting: said so
            assert "no CPU (0 CPU(s), 0 GPU(s); its autoscaler is starting no node; train.node_wait_s=900)" in str(e), e
    assert (clock.t, sized) == (want_waited, want_conc)
    out = capsys.readouterr().out
    assert ("waiting for the cluster's nodes" in out) == bool(want_waited), out
    if steps is LAUNCHED and wait:
        assert "it has 0 CPU(s), 0 GPU(s) (a trial needs 1 GPU(s) and a CPU), no report from its autoscaler yet" in out
        assert "still waiting for nodes (30 s): the cluster has 0 CPU(s), 0 GPU(s), its autoscaler is starting 2 node(s)" in out, out
        assert "the cluster has 8 CPU(s), 2 GPU(s) after 54 s\n" in out, out
    if want_conc == 1:
        assert "train.node_wait_s reached: the 1 node(s) still starting are not used" in out, out



def test_the_nodes_an_autoscaler_v2_is_starting_are_counted(monkeypatch):
    """Autoscaler v2 (KubeRay's, with its autoscaler on): nodes requested from the cloud and nodes
    booting both count (the v1 record is read on a real autoscaling cluster in
    tests/integration/test_cluster_job.py; Ray's fake provider does not run v2 from a pip install)."""
    import ray
    import ray.autoscaler.v2.sdk as sdk
    import ray.autoscaler.v2.utils as utils
    from ray.autoscaler.v2.schema import ClusterStatus, LaunchRequest, NodeInfo

    from raybench.trials import read_autoscaler_pending

    status = ClusterStatus(
        pending_launches=[LaunchRequest("g5.xlarge", "gpu", 2, LaunchRequest.Status.PENDING, 0)],
        pending_nodes=[NodeInfo("g5.xlarge", "gpu", "i-1", "10.0.0.5", node_status="setting-up")])
    monkeypatch.setattr(utils, "is_autoscaler_v2", lambda **kw: True)
    monkeypatch.setattr(sdk, "get_cluster_status", lambda address: status)
    monkeypatch.setattr(ray, "get_runtime_context", lambda: type("C", (), {"gcs_address": "127.0.0.1:1"})())
    assert read_autoscaler_pending() == 3
    status.pending_launches, status.pending_nodes = [], []
    assert read_autoscaler_pending() == 0


def test_an_autoscaler_record_that_cannot_be_read_means_no_wait_said_once(monkeypatch, capsys):
    """The record cannot be read (here: its reader raises, as with no Ray in the process or another
    Ray's layout): nothing counts as starting, and a warning says so once (a sweep would size its
    trials on the nodes present). Independent of any Ray this test process may hold."""
    import raybench.trials as trials

    def unreadable():
        raise RuntimeError("no autoscaler record here")

    monkeypatch.setattr(trials, "_PENDING_UNREAD", [])
    monkeypatch.setattr(trials, "read_autoscaler_pending", unreadable)
    assert trials.autoscaler_pending() == 0 and trials.autoscaler_pending() == 0
    out = capsys.readouterr().out
    assert out.count("warning: cannot read what the Ray autoscaler is starting (RuntimeError: no autoscaler "
                     "record here)") == 1, out


S = "2026-12-02_08-00-00"  # the killed driver's session in Tune's file names


def _tune_states(tmp_path, stored: dict[str, bytes], staged: dict[str, bytes] | None):
    """A sweep's storage holding an earlier driver's state and ``stored`` (name -> bytes), and, unless
    ``staged`` is None, the killed driver's staging folder in a Ray temp folder holding ``staged``."""
    sweep = tmp_path / "results" / "sweep-x"
    sweep.mkdir(parents=True)
    (sweep / "experiment_state-2026-12-02_07-00-00.json").write_text('{"trial_data": []}')
    (sweep / "callback-states-2026-12-02_07-00-00.pkl").write_bytes(b"old")
    for n, b in stored.items():
        (sweep / n).write_bytes(b)
    if staged is not None:
        folder = tmp_path / "ray" / "session_2026-12-02_06-00-00_1" / "artifacts" / S / "sweep-x" / "driver_artifacts"
        folder.mkdir(parents=True)
        for n, b in staged.items():
            (folder / n).write_bytes(b)
        (tmp_path / "ray" / "session_latest").symlink_to(tmp_path / "ray" / "session_2026-12-02_06-00-00_1")
    return sweep


WHOLE = {f"experiment_state-{S}.json": b'{"trial_data": [["{}", "{}"]], "runner_data": {}}',
         f"callback-states-{S}.pkl": b"\x80\x04callbacks.", f"basic-variant-state-{S}.json": b'{"a": 1}'}


@pytest.mark.parametrize("cut", [f"experiment_state-{S}.json", f"callback-states-{S}.pkl"])
def test_a_cut_short_tune_state_is_replaced_by_the_drivers_copies(tmp_path, capsys, cut):
    """The stored state (JSON: unreadable) or another file of its driver (a pickle: a strict beginning of the
    driver's copy) cut short: every file of that driver is replaced by the copies; the earlier driver's are
    left; a whole state is left alone."""
    from raybench.trials import mend_tune_state

    stored = dict(WHOLE, **{cut: WHOLE[cut][:9]})
    stored[f"basic-variant-state-{S}.json"] = b'{"a": 0}'  # older than the staged one: replaced with the set
    sweep = _tune_states(tmp_path, stored, WHOLE)
    mend_tune_state(str(tmp_path / "results"), "sweep-x", str(tmp_path / "ray"))
    assert {n: (sweep / n).read_bytes() for n in WHOLE} == WHOLE
    assert (sweep / "callback-states-2026-12-02_07-00-00.pkl").read_bytes() == b"old"
    out = capsys.readouterr().out
    assert f"Tune's saved sweep state in {sweep}: " in out and f"{cut} " in out, out
    assert "its 3 file(s) of that driver" in out and "replaced by the driver's own copies in " in out, out
    mend_tune_state(str(tmp_path / "results"), "sweep-x", str(tmp_path / "ray"))  # whole now: left as it is
    assert capsys.readouterr().out == ""


def test_a_readable_tune_state_older_than_the_drivers_copy_is_left(tmp_path, capsys):
    """Storage holds the driver's last complete copy; its staging folder was written again since (not
    synced before the kill): nothing is cut short, nothing replaced."""
    from raybench.trials import mend_tune_state

    staged = dict(WHOLE, **{f"experiment_state-{S}.json": b'{"trial_data": [], "runner_data": {"newer": 1}}'})
    sweep = _tune_states(tmp_path, WHOLE, staged)
    mend_tune_state(str(tmp_path / "results"), "sweep-x", str(tmp_path / "ray"))
    assert {n: (sweep / n).read_bytes() for n in WHOLE} == WHOLE and capsys.readouterr().out == ""


@pytest.mark.parametrize("staged,temp", [(None, "ray"), ({f"experiment_state-{S}.json": b'{"trial_da'}, "ray"),
                                         (WHOLE, None)], ids=["no-copy", "copy-cut-short-too", "no-ray-node"])
def test_a_cut_short_tune_state_without_a_readable_copy_is_named(tmp_path, staged, temp):
    from raybench.trials import ResumeError, mend_tune_state

    stored = dict(WHOLE, **{f"experiment_state-{S}.json": b'{"trial_data": ['})
    sweep = _tune_states(tmp_path, stored, staged)
    with pytest.raises(ResumeError) as e:
        mend_tune_state(str(tmp_path / "results"), "sweep-x", temp and str(tmp_path / temp))
    assert f"Tune's saved sweep state {sweep}/experiment_state-{S}.json does not read (JSONDecodeError" in str(e.value)
    assert (f"move basic-variant-state-{S}.json, callback-states-{S}.pkl, experiment_state-{S}.json away"
            in str(e.value)), str(e.value)
    assert {n: (sweep / n).read_bytes() for n in stored} == stored  # nothing overwritten


def test_a_sweep_that_cannot_resume_says_why_and_exits_1(tmp_path, capsys, monkeypatch):
    import raybench.sweep as sw
    from raybench.trials import ResumeError

    sw.save_sweep_state(str(tmp_path), "sweep-x", load(None, []))
    monkeypatch.setattr(sw, "run_sweep", lambda *a, **k: (_ for _ in ()).throw(ResumeError("state X does not read")))
    assert sw.main(["--resume", "sweep-x", f"storage={tmp_path}"]) == 1
    assert "raybench: the sweep cannot resume\nstate X does not read" in capsys.readouterr().err


def test_the_report_command_the_sweep_prints_finds_its_store(tmp_path, monkeypatch):
    from raybench import tracking
    from raybench.sweep import report_command

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RAYBENCH_RESULTS", str(tmp_path / "home"))

    def cmd(*overrides):
        cfg = load(SWEEPS_DIR / "smoke.yaml", list(overrides))
        return report_command(cfg, "s-1", tracking.tracking_uri(cfg, create=False))

    assert cmd() == "python -m raybench.report --sweep s-1"  # the default store: found by itself
    assert cmd(f"storage={tmp_path / 'r'}") == f"python -m raybench.report --storage {tmp_path / 'r'} --sweep s-1"
    monkeypatch.chdir(tmp_path)
    assert cmd("storage=r x") == f"python -m raybench.report --storage '{tmp_path / 'r x'}' --sweep s-1"  # resolved
    assert cmd("storage=s3://b/r") == "python -m raybench.report --sweep s-1"  # remote results, local store
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    assert cmd(f"mlflow.tracking_uri={uri}", f"storage={tmp_path / 'r'}") == \
        f"python -m raybench.report --tracking-uri {uri} --sweep s-1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")  # named, for a shell without it
    assert cmd(f"storage={tmp_path / 'r'}") == "python -m raybench.report --tracking-uri http://127.0.0.1:5000 --sweep s-1"


def test_folds_and_seeds_of_a_configuration_share_its_random_values():
    """With folds or repeats, a loguniform learning rate (or any random key) is drawn once per sample and
    kept over the folds and seeds: each configuration is trained on every fold, with every seed."""
    from ray.tune.search.variant_generator import generate_variants

    from raybench.trials import param_space, search_alg

    cfg = load(SWEEPS_DIR / "smoke.yaml", ["data.split.folds=3", "tune.repeats=2", "tune.num_samples=1",
                                           "tune.search_space={data.fold: {grid: [0, 1, 2]}, "
                                           "train.lr: {loguniform: [1e-5, 1e-2]}, method.dropout: {choice: [0.1, 0.3, 0.5]}}"])
    alg = search_alg(cfg, 2)
    assert alg._constant_grid_search and alg.max_concurrent == 2
    windows = cfg.tune.search_space["window.length"]["grid"]  # smoke.yaml's own grid, kept
    for _ in range(3):  # one sample: windows x 3 folds x 2 seeds, one learning rate and dropout for all
        variants = [v for _, v in generate_variants(param_space(cfg), constant_grid_search=alg._constant_grid_search)]
        assert len(variants) == 6 * len(windows) and len({(v["train.lr"], v["method.dropout"]) for v in variants}) == 1
        assert {(v["data.fold"], v["train.seed"]) for v in variants} == {(f, s) for f in range(3) for s in (0, 1)}
    # without folds or repeats, Tune's default: each grid point draws its own
    assert not search_alg(load(SWEEPS_DIR / "smoke.yaml", ["tune.repeats=1"]), 0)._constant_grid_search
