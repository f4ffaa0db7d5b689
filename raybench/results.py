"""What a sweep reports: the trials' rows, the test evaluation of the configuration chosen on
validation, the cross-validation summary, the merge of fold models' test predictions, and the table."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raybench.config import PAIR_KEY, expand_params, resolve_trial_config
from raybench.schema import SweepConfig, TrialConfig
from raybench.trials import data_key, grouped_keys, trial_data_cfg, trial_gpus


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
    tests_failed: int = 0  # chosen trials whose test evaluation raised (a corrupt best.pt): no test numbers
    tests_retested: bool = False  # ... and they had failed in the record before this one (a resume's)
    cv: dict[str, dict] = field(default_factory=dict)  # dataset -> cross-validation summary (data.fold swept)


def evaluate_checkpoint(cfg: TrialConfig, data: dict, checkpoint_path: str, split: str = "test",
                        storage: str | None = None) -> tuple[dict, list]:
    """Load ``best.pt`` from a trial checkpoint and evaluate it on ``split`` (one process).

    ``checkpoint_path`` is a local folder or a URI, or, when ``storage`` (the sweep's ``storage``
    URI) is given, a path inside that storage's filesystem (as Tune reports it)."""
    from raybench.train.loop import evaluate

    model, rows_of, device = _load_for_eval(cfg, data, checkpoint_path, split, storage)
    return evaluate(model, rows_of(), data, cfg, device, return_predictions=True)


def evaluate_robustness(cfg: TrialConfig, data: dict, checkpoint_path: str, storage: str | None = None
                        ) -> tuple[dict[str, float], dict[str, str]]:
    """The robustness track (``eval.robustness``): a trial's best checkpoint on its test split under
    each condition (:mod:`raybench.train.perturb`), and clean. Returns (metrics named
    ``test_robust/<condition>/<metric>``, with ``clean`` the unperturbed test split; categorical: also
    ``recall_<class>`` per condition), and the conditions not applicable to the method with why."""
    import torch

    from raybench.plots import class_recall
    from raybench.train.feed import method_inputs
    from raybench.train.perturb import applicable, condition, snr_db

    model, rows_of, device = _load_for_eval(cfg, data, checkpoint_path, "test", storage)
    from raybench.train.loop import evaluate

    inputs = method_inputs(model)
    out, skipped = {}, {}
    waves = Waveforms(cfg.data, data.get("sources") or {}, int(cfg.train.cache_gib * 2**30))
    for name in ["clean", *cfg.eval.robustness]:
        if name != "clean" and (why := applicable(name, inputs)):
            skipped[name] = why
            continue
        snr = snr_db(name)
        if snr is not None and "://" in str(data.get("root") or ""):
            skipped[name] = f"the dataset's root {data['root']} is remote: its clips are not decoded again here"
            continue
        rows = rows_of() if snr is None else noisy_rows(rows_of(), cfg.data, waves, snr)
        with torch.no_grad():
            metrics, preds = evaluate(model, rows, data, cfg, device, return_predictions=True,
                                      perturb=None if name == "clean" or snr is not None else condition(name))
        out.update({f"test_robust/{name}/{k}": v for k, v in metrics.items()})
        if data["task"] == "categorical" and preds:
            recall, _ = class_recall(preds, len(data["class_names"]))
            out.update({f"test_robust/{name}/recall_{c}": float(r) for c, r in zip(data["class_names"], recall)
                        if np.isfinite(r)})
    return out, skipped


class Waveforms:
    """Test clips' clean waveforms, decoded from their sources (``sources``: clip id -> [video path,
    audio path or None]) at the store's sample rate; the first ``budget`` bytes of them are held, so
    that the SNR conditions after the first reuse them (the rest is decoded again each time)."""

    def __init__(self, data_cfg, sources: dict[str, list], budget: int):
        self.data_cfg, self.sources, self.budget = data_cfg, sources, budget
        self.held: dict[str, np.ndarray] = {}
        self.used = 0

    def __call__(self, clip_id: str) -> np.ndarray:
        if clip_id in self.held:
            return self.held[clip_id]
        from raybench.data.decode import decode_audio

        video, audio_path = self.sources[clip_id]
        wave = decode_audio(video, self.data_cfg.sample_rate, audio_path)
        if self.used + wave.nbytes <= self.budget:
            self.held[clip_id] = wave
            self.used += wave.nbytes
        return wave


def noisy_rows(rows, data_cfg, waves: Waveforms, snr: float):
    """Store rows with their audio features computed again from their source's waveform (``waves``)
    plus white noise at ``snr`` dB (``data_cfg``: the store's settings); the noise of each clip drawn
    from its id and the SNR, the same in every run."""
    import zlib

    from raybench.data.features import add_noise, audio_features, frames_audio

    for r in rows:
        n = int(r["num_frames"])
        wave = frames_audio(waves(r["clip_id"]), n, data_cfg.fps, data_cfg.sample_rate, data_cfg.audio.align)
        noisy = add_noise(wave, snr, zlib.crc32(f"{r['clip_id']}|{snr:g}".encode()))
        feats = audio_features(noisy, n, data_cfg.sample_rate, data_cfg.audio)
        yield {**r, "audio": np.ascontiguousarray(feats, np.float32).tobytes(), "audio_shape": list(feats.shape)}


def evaluate_cross(cfg: TrialConfig, data: dict, target: dict, checkpoint_path: str, split: str,
                   labels: dict[str, str] | None, storage: str | None = None) -> tuple[dict[str, float], dict, list]:
    """The cross-corpus track: a trial's best checkpoint (trained on ``data``'s corpus) on another
    categorical corpus (``target``, prepared with the same preprocessing), over the classes both have
    (:func:`raybench.labels.label_map`): the target clips of a shared class only, each relabelled to
    its shared index, the model's probabilities renormalised over the shared classes. ``split``: all of
    the target's clips or its test split. Returns (metrics and recall per shared class, the map as
    recorded, the predictions: label and pred as shared class indices)."""
    import torch

    from raybench.data.store import open_store
    from raybench.labels import label_map
    from raybench.plots import class_recall
    from raybench.train.feed import method_inputs, store_columns
    from raybench.train.loop import evaluate
    from raybench.train.perturb import SharedClasses

    pairs = label_map(data["class_names"], target["class_names"], labels)
    model, _, device = _load_for_eval(cfg, data, checkpoint_path, "test", storage)
    ids = [i for s in ("train", "val", "test") for i in target["ids"][s]] if split == "all" else target["ids"]["test"]
    to_shared = {t: k for k, (_, t, _) in enumerate(pairs)}
    store = open_store(target["store_path"], target.get("embeddings"))
    counts = {"clips": 0, "excluded": 0}

    def rows():
        for r in store.iter_clips(ids, store_columns(method_inputs(model), True)):
            if int(r["label"]) in to_shared:
                counts["clips"] += 1
                yield {**r, "label": to_shared[int(r["label"])]}
            else:
                counts["excluded"] += 1

    names = [n for _, _, n in pairs]
    shared = SharedClasses(model, [s for s, _, _ in pairs]).to(device)
    with torch.no_grad():
        metrics, preds = evaluate(shared, rows(), {**data, "class_names": names}, cfg, device, return_predictions=True)
    recall, _ = class_recall(preds, len(names)) if preds else (np.array([]), None)
    metrics.update({f"recall_{n}": float(r) for n, r in zip(names, recall) if np.isfinite(r)})
    metrics.update({"clips": float(counts["clips"]), "excluded_clips": float(counts["excluded"])})
    record = {"source": data["dataset"], "target": target["dataset"], "split": split, **counts,
              "classes": [{"source": data["class_names"][s], "target": target["class_names"][t], "name": n}
                          for s, t, n in pairs]}
    return metrics, record, preds


def _load_for_eval(cfg: TrialConfig, data: dict, checkpoint_path: str, split: str, storage: str | None):
    """(the model with its best weights, a function streaming ``split``'s rows, the device)."""
    import io

    import torch

    from raybench import storage as st
    from raybench.data.store import open_store
    from raybench.train.feed import method_inputs, store_columns
    from raybench.train.loop import build_model

    device = torch.device("cuda" if cfg.train.use_gpu and torch.cuda.is_available() else "cpu")
    model = build_model(cfg, data).to(device)
    if storage and st.is_remote(storage) and not st.is_remote(checkpoint_path):
        fs, path = st.split(storage)[0], checkpoint_path
    else:
        fs, path = st.split(checkpoint_path)
    state = torch.load(io.BytesIO(st.read_bytes(fs, f"{path.rstrip('/')}/best.pt")), map_location=device,
                       weights_only=False)
    model.load_state_dict(state)
    # streamed, one clip at a time, only the columns the method's evaluation reads
    store = open_store(data["store_path"], data.get("embeddings"))
    cols = store_columns(method_inputs(model), True)
    return model, (lambda: store.iter_clips(data["ids"][split], cols)), device


def merge_fold_predictions(fold_preds: list[list[dict]], how: str = "ccc_centering",
                           ccc_over: str = "frames") -> tuple[dict, list[dict]]:
    """Merge the test predictions of several fold models on the same test clips.

    ``fold_preds``: one list of rows per fold, as :func:`evaluate_checkpoint` returns them.
    Continuous rows (clip_id, frame, valence, arousal, *_true) are merged per frame and dimension,
    ``how``: ``ccc_centering`` (Zhang et al. 2021, per video and dimension,
    :func:`raybench.train.metrics.ccc_centering`) or ``mean``. Categorical rows (clip_id,
    label, p_<class>) are merged by averaging the class probabilities (``how`` does not apply).
    Returns the merged predictions' metrics (continuous: CCC over all frames concatenated, or the
    mean of per-clip CCCs with ``ccc_over="clips"``) and rows.
    """
    import torch

    from raybench.train.metrics import TaskMetrics, ccc_centering

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
    positions: dict[str, list[int]] = {}  # clip -> the positions of its frames in ``keys``, in frame order
    for i, (clip, _) in enumerate(keys):
        positions.setdefault(clip, []).append(i)
    for dim in ("valence", "arousal"):
        P = np.array([[idx[k][dim] for k in keys] for idx in index], np.float64)  # (folds, frames)
        out = np.empty(len(keys))
        for pos in positions.values():  # per video, as the authors' test-result script merges
            pos = sorted(pos, key=lambda i: keys[i][1])
            out[pos] = ccc_centering(list(P[:, pos])) if how == "ccc_centering" else np.clip(P[:, pos].mean(0), -1, 1)
        merged[dim] = out
    truth = np.array([[index[0][k]["valence_true"], index[0][k]["arousal_true"]] for k in keys], np.float32)
    pred = np.stack([merged["valence"], merged["arousal"]], 1).astype(np.float32)
    m = TaskMetrics("continuous", 2, ccc_over=ccc_over)
    for pos in positions.values():  # one update per clip (what ccc_over=clips needs)
        m.update(torch.from_numpy(pred[pos]), torch.from_numpy(truth[pos]))
    rows = [{"clip_id": c, "frame": f, "valence": float(pred[i, 0]), "arousal": float(pred[i, 1]),
             "valence_true": float(truth[i, 0]), "arousal_true": float(truth[i, 1])} for i, (c, f) in enumerate(keys)]
    return m.compute(), rows


def trial_rows(cfg: SweepConfig, grid, sweep_id: str) -> list[dict]:
    """One row per Tune trial: its sampled params, typed config, last validation metrics, best
    validation score, own epoch count, checkpoint and error."""
    rows = []
    for r in grid:
        params = expand_params({k: v for k, v in r.config.items() if k in cfg.tune.search_space or k == PAIR_KEY
                                or (k == "train.seed" and cfg.tune.repeats > 1)})
        trial_cfg = resolve_trial_config(cfg, params)
        m = r.metrics or {}
        rows.append({"trial_id": f"{sweep_id}/{m.get('trial_id', '?')}", "params": params, "cfg": trial_cfg,
                     "dataset": trial_cfg.data.dataset, "error": _error_line(r.error),
                     # the trial's own epoch count (Tune's training_iteration restarts at 1 after a resume)
                     "epochs": int(m["epoch"]) + 1 if "epoch" in m else m.get("training_iteration"),
                     "end_ms": int(m["timestamp"] * 1000) if m.get("timestamp") else None,
                     "val": {k: v for k, v in m.items() if k.startswith("val/")},
                     "best_val": m.get("best/val/score"), "checkpoint": m.get("checkpoint_path") or _tune_checkpoint(r),
                     "best_epoch": m.get("best_epoch"), "method_ended": bool(m.get("trial/method_ended"))})
    return rows


def _tune_checkpoint(r) -> str | None:
    """The latest checkpoint Tune kept for a trial that trained in its own process in a sweep started
    before raybench kept those itself (every trial's now comes as ``checkpoint_path`` in its metrics):
    a path in the storage's filesystem."""
    ckpt = getattr(r, "checkpoint", None)
    return ckpt.path if ckpt is not None else None


def _error_line(error: BaseException | None) -> str | None:
    """The cause of a failed trial in one line: the last line of its traceback (Ray's wrapper
    exceptions start with the actor's name, not the error)."""
    if error is None:
        return None
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    cause = lines[-1] if lines else type(error).__name__
    return re.sub(r"\x1b\[[0-9;]*m", "", cause)


def choose(trials: list[dict], dataset: str, mode: str, over: tuple[str, ...] = ()) -> list[dict]:
    """The trials of the configuration best on validation for ``dataset`` (empty when none has a
    score). ``over``: the params a configuration's trials differ in (``data.fold`` in a
    cross-validation, ``train.seed`` with repeats): its trials are grouped and the group with the
    best mean validation score wins, its trials sorted by those params. Without: the best trial.
    A trial whose score is not finite (a diverged model) is left out, as a failed one is (and as the
    report leaves it out)."""
    ok = [t for t in trials if t["dataset"] == dataset and _scored(t) and t["checkpoint"]]
    if not ok:
        return []
    pick = max if mode == "max" else min
    if not over:
        return [pick(ok, key=lambda t: t["best_val"])]
    groups: dict[str, list[dict]] = {}
    for t in ok:
        key = json.dumps({k: v for k, v in t["params"].items() if k not in over}, sort_keys=True, default=str)
        groups.setdefault(key, []).append(t)
    key = pick(groups, key=lambda g: float(np.mean([t["best_val"] for t in groups[g]])))
    return sorted(groups[key], key=lambda t: [t["params"][k] for k in over])


def model_label(t: dict, over: tuple[str, ...]) -> str:
    """One chosen model's prefix in the parent run: ``fold1``, ``seed3`` or ``fold1/seed3``."""
    names = {"data.fold": "fold", "train.seed": "seed"}
    return "/".join(f"{names[k]}{t['params'][k]}" for k in over)


def bootstrap_ci(model_preds: list[list[dict]], task: str, class_names: list[str], resamples: int,
                 seed: int = 0, level: float = 0.95, ccc_over: str = "frames") -> dict[str, tuple[float, float]]:
    """A percentile bootstrap interval of each test metric averaged over the chosen models.

    Each resample draws the test units with replacement: clips for a categorical task, videos
    (all frames of a clip) for a continuous one. Models that predict the same units (seeds of one
    configuration) share each draw: the interval is about the test set, so M copies of one model
    give one model's interval (before 2026-12-03 each model drew its own units, which narrowed the
    interval by about 1/sqrt(M)). Models tested on units of their own (folds) draw from their own
    fold's units, one draw per fold shared by that fold's seeds (before 2026-12-04, with folds and
    seeds together, each model drew on its own). A model's metric on the draw uses raybench's metrics; the draws' model means
    give the interval."""
    import torch

    from raybench.train.metrics import TaskMetrics

    rng = np.random.default_rng(seed)
    per_model = []  # per model: units as (scores, targets) arrays
    unit_ids = []
    for rows in model_preds:
        units: dict[str, list[dict]] = {}
        for r in rows:
            units.setdefault(r["clip_id"], []).append(r)
        ids = sorted(units)
        if task == "categorical":
            x = [np.array([[u[0][f"p_{c}"] for c in class_names]]) for u in (units[i] for i in ids)]
            y = [np.array([units[i][0]["label"]]) for i in ids]
        else:
            x = [np.array([[r["valence"], r["arousal"]] for r in units[i]]) for i in ids]
            y = [np.array([[r["valence_true"], r["arousal_true"]] for r in units[i]]) for i in ids]
        per_model.append((x, y))
        unit_ids.append(ids)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        vals: dict[str, list[float]] = {}
        drawn: dict[tuple, np.ndarray] = {}  # one draw per set of units, shared by the models predicting it
        for (x, y), ids in zip(per_model, unit_ids):
            if tuple(ids) not in drawn:
                drawn[tuple(ids)] = rng.integers(0, len(x), len(x))
            idx = drawn[tuple(ids)]
            m = TaskMetrics(task, len(class_names), ccc_over=ccc_over)
            if task == "categorical":
                m.update(torch.from_numpy(np.concatenate([x[i] for i in idx])).float(),
                         torch.from_numpy(np.concatenate([y[i] for i in idx])))
            else:
                for i in idx:  # one update per drawn video (a video drawn twice counts twice)
                    m.update(torch.from_numpy(x[i]).float(), torch.from_numpy(y[i]).float())
            for k, v in m.compute().items():
                vals.setdefault(k, []).append(v)
        for k, v in vals.items():
            draws.setdefault(f"test/{k}", []).append(float(np.mean(v)))
    a = (1 - level) / 2
    return {k: (float(np.quantile(v, a)), float(np.quantile(v, 1 - a))) for k, v in draws.items()}


def cv_summary(chosen: list[dict], metric: str, over: tuple[str, ...]) -> tuple[dict, dict[str, float]]:
    """A configuration with several models (folds and/or seeds, ``over``): (summary: folds, seeds,
    params, validation and test mean/std over the models; per-model metrics for MLflow)."""
    vals = [t["best_val"] for t in chosen]
    summary = {"folds": sorted({t["params"]["data.fold"] for t in chosen}) if "data.fold" in over else [],
               "seeds": sorted({t["params"]["train.seed"] for t in chosen}) if "train.seed" in over else [],
               "models": len(chosen), "trial_ids": [t["trial_id"] for t in chosen],
               "params": {k: v for k, v in chosen[0]["params"].items() if k not in over},
               "val_mean": float(np.mean(vals)), "val_std": float(np.std(vals)), "test_mean": {}, "test_std": {}}
    fold_metrics = {}
    for t in chosen:
        f = model_label(t, over)
        fold_metrics[f"{f}/best/{metric}"] = t["best_val"]
        fold_metrics.update({f"{f}/{k}": v for k, v in t["test"].items()})
    # a model whose test evaluation failed (``_finish_test``) is left out of the test mean, and counted
    summary["test_models"] = sum(not t.get("test_failed") for t in chosen)
    for k in sorted({k for t in chosen for k in t["test"]}):
        xs = [t["test"][k] for t in chosen if k in t["test"]]
        summary["test_mean"][k], summary["test_std"][k] = float(np.mean(xs)), float(np.std(xs))
    return summary, fold_metrics


def record(cfg: SweepConfig, grid, summaries: dict[str, dict], mlinfo: dict, storage: str,
           metrics: dict[str, str], timing: dict | None = None, cross: dict | None = None) -> SweepResult:
    """RECORD: one row per trial; per dataset the configuration best on validation (averaged over
    folds in a cross-validation) is evaluated on the test split, and only it; fold models sharing a
    test split have their predictions merged; all of it goes to the MLflow parent and trial runs.
    ``timing``: Tune trial id -> its wall and epoch seconds (``trials.ProgressPrinter``), logged to
    each trial's run as ``time/trial_wall_s`` and ``time/trial_fixed_s`` (the wall time outside its
    epochs: scheduling, worker start, setup, teardown)."""
    from raybench import tracking

    sweep_id, uri, exp_id, parent = (mlinfo[k] for k in ("sweep_id", "tracking_uri", "experiment_id",
                                                          "parent_run_id"))
    labels = _labels(summaries)
    result = SweepResult(sweep_id, uri, exp_id, parent, prepared={labels[k]: s for k, s in summaries.items()})
    result.trials = _timed(trial_rows(cfg, grid, sweep_id), timing)
    result.failed = sum(t["error"] is not None or not _scored(t) for t in result.trials)

    # best per dataset, on the validation metric; only it sees the test split
    client = tracking._client(uri)
    over = grouped_keys(cfg)
    names = list(dict.fromkeys(s["dataset"] for s in summaries.values()))
    plan: dict[str, tuple[list[dict], list[dict]]] = {}  # dataset -> (its chosen models, other methods' best)
    for name in names:
        chosen = choose(result.trials, name, cfg.tune.mode, over)
        if not chosen:
            continue
        others = []
        if cfg.eval.test == "each_method":  # every other method's best configuration on this dataset too
            for method in sorted({t["cfg"].method.name for t in result.trials} - {chosen[0]["cfg"].method.name}):
                others += choose([t for t in result.trials if t["cfg"].method.name == method], name,
                                 cfg.tune.mode, over)
        plan[name] = chosen, others
    # what an earlier record of this sweep left on the parent (a resume records again): its figures that this
    # record does not log again (another choice, a test that failed this time) are set NaN at the end
    before = client.get_run(parent).data
    logged: set[str] = set()
    # a record stage run again (a resumed sweep) may choose other trials: the earlier choice's tags go
    tracking.clear_choice_tags(uri, exp_id, sweep_id, {
        "raybench.best": {t["trial_id"] for c, _ in plan.values() for t in c},
        "raybench.best_of_method": {t["trial_id"] for _, o in plan.values() for t in o}})
    # every test, robustness and cross-corpus evaluation is submitted before any is waited for: Ray runs
    # as many at a time as the cluster has CPUs (or GPUs), instead of one model after another
    pending = {t["trial_id"]: _submit_tests(cfg, t, summaries, storage, cross)
               for chosen, others in plan.values() for t in (*chosen, *others)}
    for name in names:
        # the parent's metrics carry the children's names (best/val/uar, test/uar); with several
        # datasets in one sweep, under the dataset's name (ravdess/test/uar)
        prefix = f"{name}/" if len(names) > 1 else ""

        def log_parent(values: dict[str, float]) -> None:
            logged.update(prefix + k for k in values)
            tracking.log_metrics(uri, parent, {prefix + k: v for k, v in values.items()}, step=0)

        if name not in plan:
            continue
        chosen, others = plan[name]
        fold_preds = [_finish_test(cfg, t, pending[t["trial_id"]], summaries, client, mlinfo) for t in chosen]
        for t in others:
            _finish_test(cfg, t, pending[t["trial_id"]], summaries, client, mlinfo, tag="raybench.best_of_method")
        result.best[name] = chosen[0]
        client.set_tag(parent, f"best_trial.{name}", ",".join(t["trial_id"] for t in chosen))
        extra = [{**t.get("robust", {}), **t.get("cross", {})} for t in chosen]
        robust = {k: float(np.mean([e[k] for e in extra if k in e]))  # mean over the models
                  for k in sorted({k for e in extra for k in e})}
        if not over:
            log_parent({**chosen[0]["test"], **robust, f"best/{metrics[name]}": chosen[0]["best_val"]})
            continue
        log_parent(robust)
        summary, fold_metrics = cv_summary(chosen, metrics[name], over)
        if cfg.tune.bootstrap and not all(p for _, _, p in fold_preds):
            print(f"[raybench] warning: {name}: no bootstrap interval: a chosen model has no test predictions "
                  "(its test evaluation failed, see above)", flush=True)
        if cfg.tune.bootstrap and all(p for _, _, p in fold_preds):
            data = summaries[data_key(trial_data_cfg(chosen[0]["cfg"], cfg))]
            summary["test_ci"] = bootstrap_ci([p for _, _, p in fold_preds], data["task"], data["class_names"],
                                              cfg.tune.bootstrap, ccc_over=chosen[0]["cfg"].eval.ccc_over)
            fold_metrics.update({f"{k}_ci_low": lo for k, (lo, hi) in summary["test_ci"].items()})
            fold_metrics.update({f"{k}_ci_high": hi for k, (lo, hi) in summary["test_ci"].items()})
        # folds that share one test split (data.split.protocol: chunks): merge the fold models' test
        # predictions (continuous: Zhang et al. 2021's "CCC centering" by default; categorical: mean
        # class probabilities)
        # (with repeats: the folds of each seed are merged, and the merged metrics averaged over seeds)
        tests = {ids for _, ids, _ in fold_preds}
        n_folds = len(summary["folds"])
        lost = [t["trial_id"] for t in chosen if t.get("test_failed")]
        if n_folds > 1 and len(tests) == 1 and next(iter(tests)) and lost:
            print(f"[raybench] warning: {name}: the fold models' test predictions are not merged: the test "
                  f"evaluation of {', '.join(lost)} failed (see above)", flush=True)
        elif n_folds > 1 and len(tests) == 1 and next(iter(tests)):
            how = cfg.tune.fold_merge if fold_preds[0][0] == "continuous" else "mean probabilities"
            by_seed: dict[Any, list[list[dict]]] = {}
            for t, (_, _, p) in zip(chosen, fold_preds):
                by_seed.setdefault(t["params"].get("train.seed"), []).append(p)
            merged_each = [merge_fold_predictions(ps, how, chosen[0]["cfg"].eval.ccc_over) for ps in by_seed.values()]
            keys = merged_each[0][0]
            summary["test_merged"] = {f"test_merged/{k}": float(np.mean([m[k] for m, _ in merged_each])) for k in keys}
            if len(merged_each) > 1:
                summary["test_merged"].update({f"test_merged/{k}_std": float(np.std([m[k] for m, _ in merged_each]))
                                               for k in keys})
            summary["fold_merge"] = how
            log_parent(summary["test_merged"])
            _log_table(client, parent, merged_each[0][1], f"predictions_test_merged_{name}.csv")
        result.cv[name] = summary
        # cross-validated: the plain names hold the mean over the fold models, _std their spread
        log_parent({**fold_metrics, f"best/{metrics[name]}": summary["val_mean"],
                    f"best/{metrics[name]}_std": summary["val_std"], **summary["test_mean"],
                    **{f"{k}_std": v for k, v in summary["test_std"].items()}})
        folds = {k: s["folds"] for k, s in summaries.items() if s["dataset"] == name and s.get("folds")}
        if folds:
            client.log_dict(parent, next(iter(folds.values())), f"folds_{name}.json")
    result.tests_failed = sum(bool(t.get("test_failed")) for t in result.trials)
    stale = {k: float("nan") for k in before.metrics if k not in logged and _recorded_key(k, names)}
    if stale:  # an earlier record's numbers that do not stand for this one (its choice, its tests)
        tracking.log_metrics(uri, parent, stale, step=0)
    _log_table(client, parent, [_flat_row(t) for t in result.trials], "trials.csv")
    if cfg.eval.val_plots:
        _log_val_plots(cfg, result.trials, summaries, storage, client, mlinfo)
    _close_trial_runs(client, uri, exp_id, result.trials)
    # what a --resume would find (tracking.finished_sweep): Tune's errored trials, which it runs again
    client.set_tag(parent, "raybench.trial_errors", str(sum(t["error"] is not None for t in result.trials)))
    client.set_tag(parent, "raybench.trials_failed", str(result.failed))
    client.set_tag(parent, "raybench.tests_failed", str(result.tests_failed))
    # tested again by a resume (tracking.finished_sweep) and failed again: not retried a third time
    result.tests_retested = bool(result.tests_failed) and before.tags.get("raybench.tests_failed", "0") != "0"
    if result.tests_retested:
        client.set_tag(parent, "raybench.tests_retested", "true")
    elif "raybench.tests_retested" in before.tags:
        client.delete_tag(parent, "raybench.tests_retested")
    client.set_terminated(parent, status="FAILED" if result.failed == len(result.trials) else "FINISHED")
    return result


def _recorded_key(k: str, names: list[str]) -> bool:
    """Whether a parent-run metric is one ``record`` logs (test numbers, the chosen models' validation,
    per-model ``fold<f>/``, ``seed<s>/``), with the dataset's prefix when the sweep has several; not the
    prepare stage's ``data/...``."""
    head, _, rest = k.partition("/")
    if len(names) > 1 and head in names:
        k = rest
    return k.startswith(("test", "best/")) or bool(re.match(r"(fold|seed)[^/]*/", k))


def _timed(rows: list[dict], timing: dict | None) -> list[dict]:
    """``rows`` with the wall time and fixed cost of each trial that finished (``timing``: see ``record``)."""
    for t in rows:
        tm = (timing or {}).get(t["trial_id"].rsplit("/", 1)[-1])
        if tm and tm.get("wall_s") is not None:
            t["wall_s"], t["fixed_s"] = tm["wall_s"], tm["wall_s"] - tm["epochs_s"]
    return rows


def record_interrupted(cfg: SweepConfig, grid, mlinfo: dict, timing: dict | None, why: str) -> None:
    """A sweep Tune ended early (Ctrl-C: Tune stops its trials, saves its state and returns): nothing is
    tested or summarised (``record`` does that when the resumed sweep ends), but no run is left RUNNING
    in MLflow for a sweep that is not: each trial that ended has its run closed with its true status,
    as ``record`` would, every other run of the sweep (the parent, trials cut short) is KILLED with
    ``why`` as its ``raybench.status_reason``. A resume reopens them."""
    from raybench import tracking

    sweep_id, uri, exp_id, parent = (mlinfo[k] for k in ("sweep_id", "tracking_uri", "experiment_id",
                                                          "parent_run_id"))
    rows = _timed(trial_rows(cfg, grid, sweep_id), timing)
    ended = [t for t in rows if t["error"] is not None or "wall_s" in t]
    _close_trial_runs(tracking._client(uri), uri, exp_id, ended)
    tracking.close_open_runs(uri, exp_id, sweep_id, "KILLED", why)


def _submit_tests(cfg: SweepConfig, t: dict, summaries: dict[str, dict], storage: str,
                  cross: dict | None = None) -> dict:
    """Start the evaluations of a chosen trial's best checkpoint as Ray tasks (one CPU each, and one GPU
    when the sweep trains on GPUs): on its test split; with ``eval.robustness``, under those
    conditions; with ``eval.cross_corpus`` (``cross``: the targets' summaries,
    :func:`raybench.trials.prepare_cross`), on those corpora. Returns their object refs, for
    :func:`_finish_test`."""
    import ray

    data = summaries[data_key(trial_data_cfg(t["cfg"], cfg))]
    remote = {"num_cpus": 1, "num_gpus": 1 if cfg.train.use_gpu else 0}
    refs: dict[str, Any] = {"test": None, "robust": None, "cross": {}}
    if data["ids"]["test"]:
        refs["test"] = _evaluator(cfg).remote(t["cfg"], data, t["checkpoint"], "test", storage)
    if t["cfg"].eval.robustness and data["ids"]["test"]:
        refs["robust"] = ray.remote(**remote)(evaluate_robustness).remote(t["cfg"], data, t["checkpoint"], storage)
    for target in t["cfg"].eval.cross_corpus if data["task"] == "categorical" else ():  # (continuous: no map)
        tdata = (cross or {}).get((data_key(trial_data_cfg(t["cfg"], cfg)), target.dataset))
        if tdata is not None:
            refs["cross"][target.dataset] = ray.remote(**remote)(evaluate_cross).remote(
                t["cfg"], data, tdata, t["checkpoint"], target.split, target.labels, storage)
    return refs


def _finish_test(cfg: SweepConfig, t: dict, refs: dict, summaries: dict[str, dict], client, mlinfo: dict,
                 tag: str = "raybench.best") -> tuple[str, tuple, list[dict]]:
    """Wait for a chosen trial's evaluations (:func:`_submit_tests`); log the metrics and predictions to
    its run, tagged ``tag`` (``raybench.best``: the dataset's chosen configuration;
    ``raybench.best_of_method``: its method's, ``eval.test: each_method``). A failing robustness or
    cross-corpus evaluation is printed and tagged, after the clean test numbers are logged. Returns
    (task, test ids, predictions)."""
    import ray

    from raybench import tracking

    data = summaries[data_key(trial_data_cfg(t["cfg"], cfg))]
    failed: dict[str, str | None] = {}
    try:
        test_metrics, preds = ray.get(refs["test"]) if refs["test"] is not None else ({}, [])
    except Exception as e:  # a corrupt or lost best.pt: said, tagged and counted; the record goes on (trials.csv,
        # the other datasets and models), and the sweep exits 1 (SweepResult.tests_failed)
        test_metrics, preds, failed["test"] = {}, [], _error_line(e)
        t["test_failed"] = failed["test"]
    t["test"] = {f"test/{k}": v for k, v in test_metrics.items()}
    t["tested_as"] = tag
    uri = mlinfo["tracking_uri"]
    child = tracking.find_run(uri, mlinfo["experiment_id"], tracking.TRIAL_TAG, t["trial_id"])
    if child:  # the clean test numbers first: a failing track below must not lose them
        tracking.log_metrics(uri, child, t["test"], step=0)
    t["robust"], skipped = {}, {}
    if refs["robust"] is not None:
        try:
            t["robust"], skipped = ray.get(refs["robust"])
        except Exception as e:  # a clip that no longer decodes, a lost file: said and recorded, the rest goes on
            failed["robustness"] = _error_line(e)
        for name, why in skipped.items():
            print(f"[raybench] trial {t['trial_id']}: robustness condition {name} not applicable: {why}", flush=True)
    t["cross"], maps, cross_preds = {}, {}, {}
    for target, ref in refs["cross"].items():
        try:
            m, maps[target], cross_preds[target] = ray.get(ref)
        except Exception as e:
            failed[f"cross_corpus.{target}"] = _error_line(e)
            continue
        t["cross"].update({f"test_cross/{target}/{k}": v for k, v in m.items()})
        print(f"[raybench] trial {t['trial_id']}: cross-corpus {data['dataset']} -> {target} over "
              f"{len(maps[target]['classes'])} shared classes, {maps[target]['clips']} clips "
              f"({maps[target]['excluded']} of other classes left out): "
              + ", ".join(f"{k} {v:.3f}" for k, v in m.items() if k in ("acc", "uar", "f1")), flush=True)
    for what, err in failed.items():
        print(f"[raybench] warning: trial {t['trial_id']}: {what} failed, its numbers are missing: {err}", flush=True)
    if child:
        tracking.log_metrics(uri, child, {**t["robust"], **t["cross"]}, step=0)
        for what, err in failed.items():
            client.set_tag(child, f"raybench.track_failed.{what}", (err or "")[:5000])
        for k in client.get_run(child).data.tags:  # an earlier record's failure that went through this time
            if k.startswith("raybench.track_failed.") and k[len("raybench.track_failed."):] not in failed:
                client.delete_tag(child, k)
        for name, rec in maps.items():  # the label map each cross-corpus figure was computed with
            client.log_dict(child, rec, f"cross_corpus/{name}.json")
            client.log_dict(mlinfo["parent_run_id"], rec, f"cross_corpus/{rec['source']}_to_{name}.json")
            _log_table(client, child, cross_preds[name], f"cross_corpus/predictions_{name}.csv")
        for name, why in skipped.items():
            client.set_tag(child, f"raybench.robust_skipped.{name}", why[:5000])
        client.set_tag(child, tag, "true")
        _log_table(client, child, preds, "predictions_test.csv")
        if preds:
            _log_plot(client, child, preds, data, "test", test_metrics)
    return data["task"], tuple(sorted(data["ids"]["test"])), preds


def _evaluator(cfg: SweepConfig):
    """:func:`evaluate_checkpoint` as a Ray task: one CPU (and one GPU when the sweep trains on GPUs)."""
    import ray

    return ray.remote(num_cpus=1, num_gpus=1 if cfg.train.use_gpu else 0)(evaluate_checkpoint)


def _log_val_plots(cfg: SweepConfig, trials: list[dict], summaries: dict[str, dict], storage: str, client,
                   mlinfo: dict) -> None:
    """Every trial's best checkpoint on its validation split (``eval.val_plots``): the figures and the
    predictions (``predictions_val.csv``) on the trial's run. One Ray task per trial, as many at a time
    as the cluster has CPUs (each holds a validation split in memory); a trial whose figures fail is
    named and skipped, never stopping the record."""
    import ray

    from raybench import tracking

    todo = [(t, summaries[data_key(trial_data_cfg(t["cfg"], cfg))]) for t in trials
            if t.get("checkpoint") and t["error"] is None]
    ev = _evaluator(cfg)
    wave = max(1, int(ray.cluster_resources().get("CPU", 1)))
    for i in range(0, len(todo), wave):
        batch = todo[i : i + wave]
        refs = [ev.remote(t["cfg"], data, t["checkpoint"], "val", storage) for t, data in batch]
        for (t, data), ref in zip(batch, refs):
            try:
                val_metrics, preds = ray.get(ref)
                run = tracking.find_run(mlinfo["tracking_uri"], mlinfo["experiment_id"], tracking.TRIAL_TAG,
                                        t["trial_id"])
                if run and preds:
                    _log_table(client, run, preds, "predictions_val.csv")
                    _log_plot(client, run, preds, data, "val", val_metrics)
            except Exception as e:  # a record without a figure is still a record: say so, go on
                print(f"[raybench] warning: trial {t['trial_id']}: no validation figures ({type(e).__name__}: {e})",
                      flush=True)
        del refs


def _log_plot(client, run_id: str, preds: list[dict], data: dict, split: str = "test",
              metrics: dict | None = None) -> None:
    """The figures of one evaluation: categorical, the confusion matrix and the recall per class
    (``confusion_<split>.png``, ``recall_<split>.png``); continuous, predicted-vs-gold traces of a few
    clips and a predicted-vs-gold scatter with the CCCs (``traces_<split>.png``, ``scatter_<split>.png``)."""
    import matplotlib.pyplot as plt

    from raybench.plots import annotated_frames, confusion_figure, recall_figure, scatter_figure, trace_figure

    ds, m = data["dataset"], metrics or {}
    if data["task"] == "categorical":
        figs = {f"confusion_{split}.png": confusion_figure(preds, data["class_names"],
                                                          f"{ds}: {split} confusion matrix ({len(preds)} clips)"),
                f"recall_{split}.png": recall_figure(preds, data["class_names"], split=split)}
    else:
        ccc = {d: m[f"ccc_{d}"] for d in ("valence", "arousal") if f"ccc_{d}" in m}
        figs = {f"traces_{split}.png": trace_figure(preds, title=f"{ds}: {split} predictions vs gold", split=split),
                f"scatter_{split}.png": scatter_figure(preds, split=split, ccc=ccc,
                                                       title=f"{ds}: {split}, {annotated_frames(preds)} annotated frames")}
    for name, fig in figs.items():
        client.log_figure(run_id, fig, name)
        plt.close(fig)


def _scored(t: dict) -> bool:
    """Whether a trial has a validation score to be chosen on (a finite one: NaN is a diverged model)."""
    return t["best_val"] is not None and bool(np.isfinite(t["best_val"]))


def trial_status(t: dict) -> tuple[str, str | None]:
    """(MLflow status, reason) of a trial row: FAILED with its error, or when it never had a finite
    validation score (a diverged model); KILLED when early stopping or the scheduler (ASHA) ended it
    before its configured epochs; else FINISHED."""
    if t["error"] or t["best_val"] is None:
        return "FAILED", t["error"] or "no validation score was reported"
    if not _scored(t):
        return "FAILED", (f"its validation score was never finite ({t['best_val']}): the model diverged "
                          "(e.g. train.lr too high); it cannot be chosen")
    want, ran = t["cfg"].train.epochs, t["epochs"] or 0
    if ran >= want:
        return "FINISHED", None
    if t.get("method_ended"):
        return "KILLED", (f"method: {t['cfg'].method.name}'s own schedule ended the trial after {ran} of {want} epochs "
                          "(zhang2021: no backbone layer group left to release, method.release_count)")
    es = t["cfg"].train.early_stop
    if es and t.get("best_epoch") is not None and (ran - 1) - t["best_epoch"] >= es:
        return "KILLED", f"early_stop: no better validation score for {es} epochs (train.early_stop)"
    return "KILLED", f"scheduler: stopped after {ran} of {want} epochs (tune.scheduler)"


def gpu_hours(train, wall_s: float) -> float:
    """The GPU-hours a trial held: its wall time x its workers x each worker's share of a GPU
    (``train.gpus_per_worker``; trials packed on one GPU share it); 0 on CPU."""
    return wall_s * trial_gpus(train) / 3600


def _close_trial_runs(client, uri: str, exp_id: str, trials: list[dict]) -> None:
    """End every trial's MLflow run with its true status and end time (a reason tag when it did not
    finish)."""
    from raybench import tracking

    for t in trials:
        run_id = tracking.find_run(uri, exp_id, tracking.TRIAL_TAG, t["trial_id"])
        if run_id is None:
            continue
        status, reason = trial_status(t)
        if t.get("wall_s") is not None:
            client.log_metric(run_id, "time/trial_wall_s", t["wall_s"])
            client.log_metric(run_id, "time/trial_fixed_s", t["fixed_s"])
            client.log_metric(run_id, "time/gpu_hours", gpu_hours(t["cfg"].train, t["wall_s"]))
        if reason:
            client.set_tag(run_id, "raybench.status_reason", reason[:5000])
        elif "raybench.status_reason" in client.get_run(run_id).data.tags:  # a failed trial that went on
            client.delete_tag(run_id, "raybench.status_reason")
        client.set_terminated(run_id, status=status, end_time=t.get("end_ms"))


def _flat_row(t: dict) -> dict:
    return {"trial_id": t["trial_id"], "dataset": t["dataset"], **{k: json.dumps(v) for k, v in t["params"].items()},
            **t["val"], "best_val": t["best_val"], "error": t["error"] or "", **t.get("test", {}),
            "test_error": t.get("test_failed") or "",
            "wall_s": t.get("wall_s"), "fixed_s": t.get("fixed_s")}


def _log_table(client, run_id: str, rows: list[dict], name: str) -> None:
    import pandas as pd

    if not rows:
        return
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / Path(name).name
        pd.DataFrame(rows).to_csv(p, index=False)
        client.log_artifact(run_id, str(p), str(Path(name).parent) if "/" in name else None)


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
    marks = {"raybench.best": " *", "raybench.best_of_method": " +"}
    test_keys = sorted({k for t in result.trials for k in t.get("test", {})})
    lost = any(t.get("test_failed") for t in result.trials)  # a chosen model's test evaluation raised
    head = ["trial", *keys, "epochs", *vals, f"best {metric}", *test_keys, *(["test"] if lost else [])]
    rows = []
    for t in result.trials:
        tid = t["trial_id"].split("/")[-1] + marks.get(t.get("tested_as"), "")
        r = [tid, *[str(t["params"].get(k)) for k in keys]]
        r.append(f"{t['epochs']}/{t['cfg'].train.epochs}" if t.get("epochs") else "-")
        r += [f"{t['val'][v]:.3f}" if v in t["val"] else "-" for v in vals]
        r.append(f"{t['best_val']:.3f}" if t["best_val"] is not None else f"FAILED: {t['error']}")
        r += [f"{t['test'][k]:.3f}" if k in t.get("test", {}) else "" for k in test_keys]
        if lost:
            r.append(f"FAILED: {t['test_failed']}" if t.get("test_failed") else "")
        rows.append(r)
    import pandas as pd

    lines = [pd.DataFrame(rows, columns=head).to_string(index=False, justify="left")]
    lines.append("(* best on validation, the only configuration evaluated on the test split"
                 + ("; + its method's best, evaluated on it too (eval.test: each_method)"
                    if any(t.get("tested_as") == "raybench.best_of_method" for t in result.trials) else "")
                 + "; val columns are the last epoch's; epochs: run/configured, fewer when ASHA stopped the trial)")
    for name, cv in result.cv.items():
        ci = cv.get("test_ci", {})
        tests = ", ".join(f"{k} {cv['test_mean'][k]:.3f} +- {cv['test_std'][k]:.3f}"
                          + (f" [95% CI {ci[k][0]:.3f}, {ci[k][1]:.3f}]" if k in ci else "") for k in cv["test_mean"])
        how = " x ".join(([f"{len(cv['folds'])} folds"] if cv["folds"] else [])
                         + ([f"{len(cv['seeds'])} seeds"] if cv["seeds"] else []))
        lines.append(f"{name}: {cv['models']} models ({how}), best configuration {cv['params']} "
                     f"(mean validation {cv['val_mean']:.3f} +- {cv['val_std']:.3f}); "
                     f"test, mean +- std over the models: {tests or 'no test clips'}"
                     + (f" (over {cv['test_models']} of {cv['models']}: the other test evaluations failed)"
                        if cv.get("test_models", cv["models"]) < cv["models"] else ""))
        if cv.get("test_merged"):
            lines.append(f"{name}: the {len(cv['folds'])} fold models' test predictions merged ({cv['fold_merge']}): "
                         + ", ".join(f"{k} {v:.3f}" for k, v in cv["test_merged"].items()))
    return "\n".join(lines)


