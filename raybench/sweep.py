"""``python -m raybench.sweep [SWEEP.yaml] [key=value ...]``: prepare, sweep, record.

1. PREPARE every dataset the sweep can reach (Ray Data -> Parquet clip store).
2. SWEEP with Ray Tune: each trial is a Ray Train ``TorchTrainer`` (DDP).
3. RECORD in MLflow: a parent run for the sweep, a child run per trial; the
   best configuration (on the validation metric) is evaluated on the test
   split, and only that one.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raybench.config import (PAIR_KEY, ConfigError, expand_params, load, pairs_swept, resolve_trial_config,
                              search_values, set_dotted, valid_pairs)

PAIR_KEY_DATASET = "data.dataset"


def data_summary(prep) -> dict[str, Any]:
    """What a trial needs to know about a prepared dataset (small, picklable)."""
    train_ids = prep.ids("train")
    mean, std = prep.store.audio_stats(train_ids)
    row = prep.store.read_clips(train_ids[:1], columns=["audio_shape", "num_frames"])[0]
    return {
        "dataset": prep.dataset, "task": prep.task, "class_names": prep.class_names,
        "store_path": str(prep.store.path), "root": prep.root,
        "ids": {s: prep.ids(s) for s in ("train", "val", "test")},
        "audio_mean": mean.tolist(), "audio_std": std.tolist(),
        "n_audio_features": int(row["audio_shape"][1]),
        "audio_steps_per_frame": int(row["audio_shape"][0] // row["num_frames"]),
        "decoded": prep.decoded, "bad": {k: v["reason"] for k, v in prep.bad.items()},
        "folds": {c.subject: c.fold for c in prep.clips if c.fold is not None},
    }


def data_key(data_cfg: dict) -> str:
    """Identifies one data configuration (dataset x preprocessing x split) within a sweep."""
    return hashlib.sha1(json.dumps(data_cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]


def data_variants(cfg: dict) -> list[dict]:
    """Every data configuration the sweep can reach: the finite values of the swept ``data.*`` keys."""
    space = cfg["tune"]["search_space"]
    keys = [k for k in space if k.startswith("data.")]
    values = [search_values(space[k]) for k in keys]
    if PAIR_KEY_DATASET in keys and pairs_swept(cfg):
        i = keys.index(PAIR_KEY_DATASET)
        values[i] = list(dict.fromkeys(d for _, d in valid_pairs(cfg)))
    out = {}
    for combo in itertools.product(*values):
        d = copy.deepcopy(cfg["data"])
        for k, v in zip(keys, combo):
            set_dotted(d, k[len("data."):], v)
        if d["dataset"] != cfg["data"]["dataset"]:
            d["root"] = None  # data.root names the base dataset's copy
        out[data_key(d)] = d
    return list(out.values())


def trial_data_cfg(cfg: dict) -> dict:
    d = copy.deepcopy(cfg["data"])
    if d["dataset"] != cfg.get("_base_dataset", d["dataset"]):
        d["root"] = None
    return d


def training_sets(summaries: dict[str, dict]) -> dict[str, Any]:
    """One Ray Dataset of training clips per data configuration.

    The clips any configuration of a store trains on are read once for the whole sweep and held in
    Ray's object store (every trial and epoch reuse them). Configurations that train on a subset of
    them (the folds of a cross-validation) get a lazy filter of that one copy, not a copy each.
    """
    from raybench.data.store import ClipStore, id_filter

    union: dict[str, set[str]] = {}
    for s in summaries.values():
        union.setdefault(s["store_path"], set()).update(s["ids"]["train"])
    base = {path: ClipStore(path).ray_dataset(sorted(ids)).materialize() for path, ids in union.items()}
    out = {}
    for k, s in summaries.items():
        keep = set(s["ids"]["train"])
        ds = base[s["store_path"]]
        out[k] = ds if keep == union[s["store_path"]] else ds.filter(expr=id_filter(keep), num_cpus=0.25)
    return out


def param_space(cfg: dict) -> dict[str, Any]:
    from ray import tune

    out = {}
    space = dict(cfg["tune"]["search_space"])
    if pairs_swept(cfg):  # one grid over the (method, dataset) pairs whose tasks fit
        for k in ("method.name", "data.dataset"):
            space.pop(k)
        out[PAIR_KEY] = tune.grid_search([{"method.name": m, "data.dataset": d} for m, d in valid_pairs(cfg)])
    for key, spec in space.items():
        kind, arg = next(iter(spec.items()))
        out[key] = {
            "grid": lambda a: tune.grid_search(list(a)),
            "choice": lambda a: tune.choice(list(a)),
            "uniform": lambda a: tune.uniform(*a),
            "loguniform": lambda a: tune.loguniform(*a),
            "randint": lambda a: tune.randint(*a),
        }[kind](arg)
    return out


def size_trials(cfg: dict) -> tuple[float, int]:
    """(CPUs per training worker, max concurrent trials) from the cluster's resources.

    A trial holds ``num_workers`` worker bundles plus 0.01 CPU for the trial
    function; one CPU is left for Ray Data's tasks (some of them, such as
    listing files, ask for a whole CPU). Trials never ask for more than the
    cluster has, so they never deadlock.
    """
    import ray

    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 1)), float(res.get("GPU", 0))
    t = cfg["train"]
    n = int(t["num_workers"])
    reserve = 1.0
    cpw = float(t["cpus_per_worker"])
    if n * cpw + reserve + 0.01 > cpus:
        cpw = max(0.1, (cpus - reserve - 0.01) / n)
    per_trial = n * cpw + 0.01
    conc = max(1, int((cpus - reserve) // per_trial))
    if t["use_gpu"]:
        gpw = float(t.get("gpus_per_worker", 1.0))
        if gpus < n * gpw:
            raise ConfigError([f"'train.use_gpu' is true with train.num_workers={n} x gpus_per_worker={gpw:g}, "
                               f"but the cluster has {gpus:g} GPU(s)"], "config")
        conc = min(conc, int(gpus / (n * gpw) + 1e-9))  # true division: 1 // 0.2 is 4.0 in floats
    if cfg["tune"]["max_concurrent_trials"]:
        conc = min(conc, int(cfg["tune"]["max_concurrent_trials"]))
    return round(cpw, 3), conc


def max_epochs(cfg: dict) -> int:
    """The longest any trial may train (ASHA's last rung): ``train.epochs``, or more for a method
    that ``per_method`` gives more epochs."""
    return max([int(cfg["train"]["epochs"])] + [int(o["train"]["epochs"]) for o in (cfg.get("per_method") or {}).values()
                                                if "epochs" in (o.get("train") or {})])


def run_trial(params: dict, base: dict, data: dict, train_sets: dict, mlinfo: dict | None, storage: str,
              cpw: float) -> None:
    """Tune function trainable: build and fit one TorchTrainer for the sampled ``params``."""
    import ray.data
    import ray.train
    from ray import tune
    from ray.train import CheckpointConfig, DataConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from raybench.tracking import TrialLogger
    from raybench.train.loop import train_loop_per_worker

    ray.data.DataContext.get_current().enable_progress_bars = False
    from raybench.storage import ray_storage

    cfg = resolve_trial_config(base, params)
    cfg["train"]["cpus_per_worker"] = cpw
    storage_path, storage_fs = ray_storage(storage)
    d = data[data_key(trial_data_cfg(cfg))]
    ctx = tune.get_context()
    trial_id, trial_name = ctx.get_trial_id(), ctx.get_trial_name()
    info = dict(mlinfo, trial_id=f"{mlinfo['sweep_id']}/{trial_id}", trial_name=trial_name) if mlinfo else None
    t = cfg["train"]
    use_gpu = bool(t["use_gpu"])
    res = {"CPU": cpw, **({"GPU": float(t.get("gpus_per_worker", 1.0))} if use_gpu else {})}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg, "data": d, "logger": TrialLogger(info) if info else None},
        scaling_config=ScalingConfig(num_workers=int(t["num_workers"]), use_gpu=use_gpu, resources_per_worker=res),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        datasets={"train": train_sets[data_key(trial_data_cfg(cfg))]},
        dataset_config=DataConfig(datasets_to_split=["train"]),
        run_config=ray.train.RunConfig(
            name=f"{mlinfo['sweep_id'] if mlinfo else 'sweep'}-{trial_id}", storage_path=storage_path,
            storage_filesystem=storage_fs,
            checkpoint_config=CheckpointConfig(num_to_keep=1), callbacks=[TuneReportCallback()]),
    )
    trainer.fit()


def evaluate_checkpoint(cfg: dict, data: dict, checkpoint_path: str, split: str = "test",
                        storage: str | None = None) -> tuple[dict, list]:
    """Load ``best.pt`` from a trial checkpoint and evaluate it on ``split`` (one process).

    ``checkpoint_path`` is a local folder or a URI, or, when ``storage`` (the sweep's ``storage``
    URI) is given, a path inside that storage's filesystem (as Tune reports it)."""
    import io

    import torch

    from raybench import storage as st
    from raybench.data.store import ClipStore
    from raybench.train.loop import build_model, evaluate

    device = torch.device("cuda" if cfg["train"]["use_gpu"] and torch.cuda.is_available() else "cpu")
    model = build_model(cfg, data).to(device)
    if storage and st.is_remote(storage) and not st.is_remote(checkpoint_path):
        fs, path = st.split(storage)[0], checkpoint_path
    else:
        fs, path = st.split(checkpoint_path)
    state = torch.load(io.BytesIO(st.read_bytes(fs, f"{path.rstrip('/')}/best.pt")), map_location=device,
                       weights_only=False)
    model.load_state_dict(state)
    rows = ClipStore(data["store_path"]).read_clips(data["ids"][split])
    return evaluate(model, rows, data, cfg, device, return_predictions=True)


def merge_fold_predictions(fold_preds: list[list[dict]], how: str = "ccc_centering") -> tuple[dict, list[dict]]:
    """Merge the test predictions of several fold models on the same test clips.

    ``fold_preds``: one list of rows per fold, as :func:`evaluate_checkpoint` returns them.
    Continuous rows (clip_id, frame, valence, arousal, *_true) are merged per frame and dimension,
    ``how``: ``ccc_centering`` (Zhang et al. 2021, over all test frames,
    :func:`raybench.train.metrics.ccc_centering`) or ``mean``. Categorical rows (clip_id,
    label, p_<class>) are merged by averaging the class probabilities (``how`` does not apply).
    Returns the merged predictions' metrics (continuous: CCC over all frames concatenated) and rows.
    """
    import torch

    from raybench.train.metrics import ccc_centering
    from raybench.train.metrics import TaskMetrics

    continuous = "frame" in fold_preds[0][0]
    key = (lambda r: (r["clip_id"], r["frame"])) if continuous else (lambda r: r["clip_id"])
    keys = [key(r) for r in fold_preds[0]]
    index = [{key(r): r for r in rows} for rows in fold_preds]
    for i, idx in enumerate(index[1:], 1):
        if set(idx) != set(keys):
            raise ValueError(f"fold predictions {i} cover other test {'frames' if continuous else 'clips'} than "
                             "fold 0: they cannot be merged")
    if not continuous:
        classes = [c[2:] for c in fold_preds[0][0] if c.startswith("p_")]
        probs = np.mean([[[idx[k][f"p_{c}"] for c in classes] for k in keys] for idx in index], 0)  # (N, C)
        labels = np.array([index[0][k]["label"] for k in keys])
        m = TaskMetrics("categorical", len(classes))
        m.update(torch.from_numpy(probs).float(), torch.from_numpy(labels))
        rows = [{"clip_id": k, "label": int(labels[i]), "pred": int(probs[i].argmax()),
                 **{f"p_{c}": float(p) for c, p in zip(classes, probs[i])}} for i, k in enumerate(keys)]
        return m.compute(), rows
    merged = {}
    for dim in ("valence", "arousal"):
        P = [np.array([idx[k][dim] for k in keys], np.float64) for idx in index]
        merged[dim] = ccc_centering(P) if how == "ccc_centering" else np.clip(np.mean(P, 0), -1, 1)
    truth = np.array([[index[0][k]["valence_true"], index[0][k]["arousal_true"]] for k in keys], np.float32)
    pred = np.stack([merged["valence"], merged["arousal"]], 1).astype(np.float32)
    m = TaskMetrics("continuous", 2)
    m.update(torch.from_numpy(pred), torch.from_numpy(truth))
    rows = [{"clip_id": c, "frame": f, "valence": float(pred[i, 0]), "arousal": float(pred[i, 1]),
             "valence_true": float(truth[i, 0]), "arousal_true": float(truth[i, 1])} for i, (c, f) in enumerate(keys)]
    return m.compute(), rows


@dataclass
class SweepResult:
    sweep_id: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    trials: list[dict] = field(default_factory=list)
    best: dict[str, dict] = field(default_factory=dict)  # dataset -> best trial (with test metrics)
    prepared: dict[str, dict] = field(default_factory=dict)
    failed: int = 0
    cv: dict[str, dict] = field(default_factory=dict)  # dataset -> cross-validation summary (data.fold swept)


STATE_FILE = "raybench_sweep.json"


def save_sweep_state(storage: str, sweep_id: str, cfg: dict) -> None:
    """The resolved config of a sweep, kept beside its Tune results so ``--resume`` can rebuild it."""
    from raybench import storage as st

    text = json.dumps({"sweep_id": sweep_id, "cfg": {k: v for k, v in cfg.items() if k != "_base_dataset"}},
                      default=str, indent=1)
    fs, root = st.split(storage)
    st.write_bytes(fs, f"{root}/{sweep_id}/{STATE_FILE}", text.encode())


def load_sweep_state(storage: str, sweep_id: str) -> dict:
    from raybench import storage as st

    fs, root = st.split(storage)
    path = f"{root}/{sweep_id}/{STATE_FILE}"
    try:
        return json.loads(st.read_bytes(fs, path).decode())["cfg"]
    except (FileNotFoundError, OSError):
        raise ConfigError([f"no sweep {sweep_id!r} to resume: {path} does not exist (is storage= the one the "
                           "sweep used?)"], "--resume") from None


def run_sweep(cfg: dict, sweep_id: str | None = None, resume: bool = False) -> SweepResult:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from raybench import tracking
    from raybench.data.store import build, plan
    from raybench.train.loop import default_metric

    t_start = time.time()
    # 1. PREPARE: every dataset x preprocessing configuration the sweep can reach, once. The file
    # listings first (a missing root, a wrong layout, too few subjects fail here, before Ray starts),
    # then the decoding, on Ray Data
    cfg = dict(cfg, _base_dataset=cfg["data"]["dataset"])
    plans = {data_key(dcfg): plan(dcfg) for dcfg in data_variants(cfg)}
    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True)
    summaries: dict[str, dict] = {}
    for key, p in plans.items():
        t0, dcfg = time.time(), p.data_cfg
        s = summaries[key] = data_summary(build(p))
        print(f"[raybench] prepared {dcfg['dataset']}: {sum(len(v) for v in s['ids'].values())} clips "
              f"(train/val/test {', '.join(str(len(v)) for v in s['ids'].values())}), decoded {s['decoded']}, "
              f"skipped {len(s['bad'])}, {time.time() - t0:.0f} s", flush=True)
    ray.data.DataContext.get_current().enable_progress_bars = False
    train_sets = training_sets(summaries)
    # each dataset is judged on its own task's metric; Tune sees it as val/score
    metrics = {s["dataset"]: cfg["tune"]["metric"] or default_metric(s["task"]) for s in summaries.values()}
    metric = "val/score"
    mode = cfg["tune"]["mode"]

    # 3. RECORD (parent run)
    sweep_id = sweep_id or f"{cfg.get('name', 'sweep')}-{time.strftime('%Y%m%d-%H%M%S')}-" \
        f"{hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:6]}"
    uri, exp_id, parent = tracking.start_parent(cfg, sweep_id)
    mlinfo = {"tracking_uri": uri, "experiment_id": exp_id, "parent_run_id": parent, "sweep_id": sweep_id}
    storage = str(cfg["storage"] or tracking.results_dir(cfg) / "tune")
    if "://" not in storage:
        Path(storage).mkdir(parents=True, exist_ok=True)

    # 2. SWEEP
    cpw, conc = size_trials(cfg)
    print(f"[raybench] sweep {sweep_id}: {cfg['train']['num_workers']} worker(s) x {cpw:g} CPU per trial, "
          f"{conc} trial(s) at a time; selecting on "
          f"{', '.join(sorted(set(metrics.values())))} ({mode})", flush=True)
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=max_epochs(cfg),
                               grace_period=min(int(cfg["tune"]["grace_period"]), int(cfg["train"]["epochs"])))
                 if cfg["tune"]["scheduler"] == "asha" else FIFOScheduler())
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=cfg, data=summaries, train_sets=train_sets, mlinfo=mlinfo,
                             storage=storage, cpw=cpw),
        {"CPU": 0.01})
    from raybench.storage import join, ray_storage

    exp_dir = join(storage, sweep_id)
    storage_path, storage_fs = ray_storage(storage)
    exp_path = f"{storage_path.rstrip('/')}/{sweep_id}"
    if resume and tune.Tuner.can_restore(exp_path, storage_filesystem=storage_fs):
        # finished trials are kept; unfinished and errored ones go on from their last checkpoint
        print(f"[raybench] resuming sweep {sweep_id} from {exp_dir}", flush=True)
        tuner = tune.Tuner.restore(exp_path, trainable, resume_unfinished=True, restart_errored=True,
                                   param_space=param_space(cfg), storage_filesystem=storage_fs)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(cfg),
            tune_config=tune.TuneConfig(metric=metric, mode=mode, scheduler=scheduler,
                                        num_samples=int(cfg["tune"]["num_samples"]), max_concurrent_trials=conc),
            run_config=tune.RunConfig(name=sweep_id, storage_path=storage_path, storage_filesystem=storage_fs,
                                      verbose=1),
        )
    save_sweep_state(storage, sweep_id, cfg)
    print(f"[raybench] to resume this sweep if it is interrupted:  python -m raybench.sweep --resume {sweep_id}"
          + ("" if cfg["storage"] is None else f" storage={cfg['storage']}"), flush=True)
    grid = tuner.fit()

    labels = _labels(summaries)
    result = SweepResult(sweep_id, uri, exp_id, parent, prepared={labels[k]: s for k, s in summaries.items()})
    best_key = "best/val/score"
    for r in grid:
        params = expand_params({k: v for k, v in r.config.items() if k in cfg["tune"]["search_space"]
                                or k == PAIR_KEY})
        trial_cfg = resolve_trial_config(cfg, params)
        m = r.metrics or {}
        row = {"trial_id": f"{sweep_id}/{m.get('trial_id', '?')}", "params": params, "cfg": trial_cfg,
               "dataset": trial_cfg["data"]["dataset"], "error": str(r.error).splitlines()[0] if r.error else None,
               "epochs": m.get("training_iteration"), "val": {k: v for k, v in m.items() if k.startswith("val/")},
               "best_val": m.get(best_key), "checkpoint": m.get("checkpoint_path")}
        result.failed += r.error is not None or row["best_val"] is None
        result.trials.append(row)

    # best per dataset, on the validation metric; only it sees the test split
    client = tracking._client(uri)
    cross_val = "data.fold" in cfg["tune"]["search_space"]
    pick = max if mode == "max" else min
    for name in dict.fromkeys(s["dataset"] for s in summaries.values()):
        ok = [t for t in result.trials if t["dataset"] == name and t["best_val"] is not None and t["checkpoint"]]
        if not ok:
            continue
        if cross_val:
            # the configuration with the best validation score averaged over folds; each of its fold
            # trials is tested on its own held-out fold
            groups: dict[str, list[dict]] = {}
            for t in ok:
                key = json.dumps({k: v for k, v in t["params"].items() if k != "data.fold"}, sort_keys=True, default=str)
                groups.setdefault(key, []).append(t)
            key = pick(groups, key=lambda g: float(np.mean([t["best_val"] for t in groups[g]])))
            chosen = sorted(groups[key], key=lambda t: t["params"]["data.fold"])
        else:
            chosen = [pick(ok, key=lambda t: t["best_val"])]
        fold_preds = []
        for best in chosen:
            data = summaries[data_key(trial_data_cfg(best["cfg"]))]
            test_metrics, preds = {}, []
            if data["ids"]["test"]:
                ev = ray.remote(num_cpus=1, num_gpus=1 if cfg["train"]["use_gpu"] else 0)(evaluate_checkpoint)
                test_metrics, preds = ray.get(ev.remote(best["cfg"], data, best["checkpoint"], "test", storage))
            fold_preds.append((data["task"], tuple(sorted(data["ids"]["test"])), preds))
            best["test"] = {f"test/{k}": v for k, v in test_metrics.items()}
            child = tracking.find_run(uri, exp_id, tracking.TRIAL_TAG, best["trial_id"])
            if child:
                tracking.log_metrics(uri, child, best["test"], step=0)
                client.set_tag(child, "raybench.best", "true")
                _log_table(client, child, preds, "predictions_test.csv")
        result.best[name] = chosen[0]
        client.set_tag(parent, f"best_trial.{name}", ",".join(t["trial_id"] for t in chosen))
        if not cross_val:
            tracking.log_metrics(uri, parent, chosen[0]["test"], step=0)
            tracking.log_metrics(uri, parent, {f"best_{metrics[name]}": chosen[0]["best_val"]}, step=0)
            continue
        vals = [t["best_val"] for t in chosen]
        summary = {"folds": [t["params"]["data.fold"] for t in chosen], "trial_ids": [t["trial_id"] for t in chosen],
                   "params": {k: v for k, v in chosen[0]["params"].items() if k != "data.fold"},
                   "val_mean": float(np.mean(vals)), "val_std": float(np.std(vals)), "test_mean": {}, "test_std": {}}
        fold_metrics = {}
        for t in chosen:
            f = t["params"]["data.fold"]
            fold_metrics[f"fold{f}/best_{metrics[name]}"] = t["best_val"]
            fold_metrics.update({f"fold{f}/{k}": v for k, v in t["test"].items()})
        for k in sorted({k for t in chosen for k in t["test"]}):
            xs = [t["test"][k] for t in chosen if k in t["test"]]
            summary["test_mean"][k], summary["test_std"][k] = float(np.mean(xs)), float(np.std(xs))
        # folds that share one test split (data.split.protocol: chunks): merge the fold models' test
        # predictions (continuous: Zhang et al. 2021's "CCC centering" by default; categorical: mean
        # class probabilities)
        tests = {ids for _, ids, _ in fold_preds}
        if len(fold_preds) > 1 and len(tests) == 1 and next(iter(tests)):
            how = cfg["tune"]["fold_merge"] if fold_preds[0][0] == "continuous" else "mean probabilities"
            merged, rows = merge_fold_predictions([p for _, _, p in fold_preds], how)
            summary["test_merged"] = {f"test_merged/{k}": v for k, v in merged.items()}
            summary["fold_merge"] = how
            tracking.log_metrics(uri, parent, summary["test_merged"], step=0)
            _log_table(client, parent, rows, f"predictions_test_merged_{name}.csv")
        result.cv[name] = summary
        tracking.log_metrics(uri, parent, {
            **fold_metrics, f"best_{metrics[name]}_mean": summary["val_mean"],
            f"best_{metrics[name]}_std": summary["val_std"],
            **{f"{k}_mean": v for k, v in summary["test_mean"].items()},
            **{f"{k}_std": v for k, v in summary["test_std"].items()}}, step=0)
        folds = {k: s["folds"] for k, s in summaries.items() if s["dataset"] == name and s.get("folds")}
        if folds:
            client.log_dict(parent, next(iter(folds.values())), f"folds_{name}.json")
    _log_table(client, parent, [_flat_row(t) for t in result.trials], "trials.csv")
    client.set_terminated(parent, status="FAILED" if result.failed == len(result.trials) else "FINISHED")
    print(format_table(result, metrics), flush=True)
    print(f"[raybench] Tune results and checkpoints: {exp_dir}", flush=True)
    print(f"[raybench] sweep finished in {time.time() - t_start:.0f} s. Results: MLflow experiment "
          f"{tracking.experiment_name(cfg)!r}, parent run {parent}", flush=True)
    if uri.startswith(("sqlite:", "file:", "/")):
        print(f"[raybench] open them with:  mlflow ui --backend-store-uri {uri}", flush=True)
    else:
        print(f"[raybench] open them at:  {uri}", flush=True)
    return result


def _flat_row(t: dict) -> dict:
    return {"trial_id": t["trial_id"], "dataset": t["dataset"], **{k: json.dumps(v) for k, v in t["params"].items()},
            **t["val"], "best_val": t["best_val"], "error": t["error"] or "", **t.get("test", {})}


def _log_table(client, run_id: str, rows: list[dict], name: str) -> None:
    import pandas as pd

    if not rows:
        return
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        pd.DataFrame(rows).to_csv(p, index=False)
        client.log_artifact(run_id, str(p))


def _labels(summaries: dict[str, dict]) -> dict[str, str]:
    """A readable name per store: the dataset, with the data key when a dataset has several."""
    count: dict[str, int] = {}
    for s in summaries.values():
        count[s["dataset"]] = count.get(s["dataset"], 0) + 1
    return {k: s["dataset"] if count[s["dataset"]] == 1 else f"{s['dataset']}@{k[:6]}" for k, s in summaries.items()}


def format_table(result: SweepResult, metrics: dict[str, str]) -> str:
    metric = " / ".join(sorted(set(metrics.values())))
    keys = sorted({k for t in result.trials for k in t["params"]})
    vals = sorted({k for t in result.trials for k in t["val"]} - {"val/score"})
    best_ids = {t["trial_id"] for t in result.trials if "test" in t}
    test_keys = sorted({k for t in result.trials for k in t.get("test", {})})
    head = ["trial", *keys, "epochs", *vals, f"best {metric}", *test_keys]
    rows = []
    for t in result.trials:
        tid = t["trial_id"].split("/")[-1] + (" *" if t["trial_id"] in best_ids else "")
        r = [tid, *[str(t["params"].get(k)) for k in keys]]
        r.append(f"{t['epochs']}/{t['cfg']['train']['epochs']}" if t.get("epochs") else "-")
        r += [f"{t['val'][v]:.3f}" if v in t["val"] else "-" for v in vals]
        r.append(f"{t['best_val']:.3f}" if t["best_val"] is not None else f"FAILED: {t['error']}")
        r += [f"{t['test'][k]:.3f}" if k in t.get("test", {}) else "" for k in test_keys]
        rows.append(r)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
    lines = [fmt(head), fmt(["-" * w for w in widths]), *map(fmt, rows)]
    lines.append("(* best on validation, the only configuration evaluated on the test split; "
                 "val columns are the last epoch's; epochs: run/configured, fewer when ASHA stopped the trial)")
    for name, cv in result.cv.items():
        tests = ", ".join(f"{k} {cv['test_mean'][k]:.3f} +- {cv['test_std'][k]:.3f}" for k in cv["test_mean"])
        lines.append(f"{name}: {len(cv['folds'])}-fold cross-validation, best configuration {cv['params']} "
                     f"(mean validation over folds {cv['val_mean']:.3f} +- {cv['val_std']:.3f}); "
                     f"test, one result per fold model: {tests or 'no test clips'}")
        if cv.get("test_merged"):
            lines.append(f"{name}: the {len(cv['folds'])} fold models' test predictions merged ({cv['fold_merge']}): "
                         + ", ".join(f"{k} {v:.3f}" for k, v in cv["test_merged"].items()))
    return "\n".join(lines)


def parse_args(argv: list[str]) -> tuple[str | None, list[str], argparse.Namespace]:
    p = argparse.ArgumentParser(
        prog="python -m raybench.sweep",
        description="Run a raybench sweep: prepare data (Ray Data), train every trial (Ray Train, "
        "DDP), sweep (Ray Tune), record in MLflow. With no file, runs sweeps/default.yaml.",
    )
    p.add_argument("args", nargs="*", help="[SWEEP.yaml] [key=value ...] (OmegaConf dotlist overrides)")
    p.add_argument("--resume", metavar="SWEEP_ID", default=None,
                   help="go on with an interrupted sweep (the id it printed): finished trials are kept, the "
                   "others continue from their last checkpoint, MLflow runs are continued, not duplicated. "
                   "Pass storage=... if the sweep used one.")
    a = p.parse_args(argv)
    path, overrides = None, []
    for x in a.args:
        if "=" not in x and path is None and x.endswith((".yaml", ".yml")):
            path = x
        else:
            overrides.append(x)
    return path, overrides, a


def main(argv: list[str] | None = None) -> int:
    path, overrides, args = parse_args(sys.argv[1:] if argv is None else argv)
    from raybench.envcheck import require

    require()  # a broken torch/torchaudio/decord/... install: one message and exit 2, before Ray starts
    try:
        if args.resume:
            from raybench import tracking
            from raybench.config import validate

            # a resumed sweep goes on with the configuration it started with (Tune restores its trials
            # and search space from storage): anything that would change it is refused, not ignored
            refused = ([path] if path else []) + [o for o in overrides if not o.startswith("storage=")]
            if refused:
                raise ConfigError([f"--resume {args.resume} goes on with the configuration the sweep started "
                                   f"with; these would change it and are not applied: {', '.join(refused)}. "
                                   "With --resume give only storage= (where the sweep keeps its results); to "
                                   "change settings, start a new sweep"], "--resume")
            storage = next((o.split("=", 1)[1] for o in overrides if o.startswith("storage=")), None)
            storage = storage or str(tracking.results_dir({"storage": None}) / "tune")
            cfg = validate(load_sweep_state(storage, args.resume), source=f"sweep {args.resume}")
        else:
            cfg = load(path, overrides)
    except ConfigError as e:
        print(f"raybench: invalid configuration\n{e}", file=sys.stderr)
        return 2
    from raybench.data.datasets import LayoutError
    from raybench.data.store import PrepareError

    try:
        result = run_sweep(cfg, sweep_id=args.resume, resume=bool(args.resume))
    except ConfigError as e:
        print(f"raybench: invalid configuration\n{e}", file=sys.stderr)
        return 2
    except (PrepareError, LayoutError) as e:
        print(f"raybench: data preparation failed\n{e}", file=sys.stderr)
        return 1
    if result.failed:
        print(f"raybench: {result.failed} of {len(result.trials)} trial(s) failed (see the table above)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
