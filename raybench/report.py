"""``python -m raybench.report``: the benchmark's comparison, read back from an MLflow store.

Every trial run (tag ``raybench.kind = trial``) of the chosen experiments and sweeps is a model. A
**cell** is one method on one dataset; its candidate **configurations** are its models grouped by
sweep and by every parameter except the seed (``train.seed``) and the fold (``data.fold``), so a
configuration's models are its repeats and folds. Each cell shows the configuration best on its
selection metric (the trials' ``best/val/score``: the best epoch's validation score, the metric the
sweep selected on), averaged over its models, as the sweep itself chooses (``results.choose``);
a method never run on a dataset leaves its cell empty (never a zero).

A cell's numbers: mean and standard deviation over its models (``np.std``, as the sweep's own
``_std`` metrics) and a 95% confidence interval for the mean over models, Student's t with n - 1
degrees of freedom (mean +- t * s / sqrt(n), s the sample standard deviation; none for one model:
repeat it with ``tune.repeats``). The test split's numbers come from the models the sweep evaluated
on it (the best configuration per dataset, or per method with ``eval.test: each_method``).

Writes ``leaderboard.md`` (figures beside it under ``figures/``) and a self-contained ``index.html``
(figures embedded, no network), and with ``--log-to-parent`` logs the folder to each sweep's parent
run under ``report/``.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

# what the papers report, on their datasets and in their setups (README, "What the papers report");
# shown beside our cells, labelled as theirs; keyed by (method, dataset registry name)
PAPERS: dict[tuple[str, str], str] = {
    ("zhou2019", "afew"): "65.5 % val, 62.48 % test accuracy, 7 classes (EmotiW 2019, 3rd place)",
    ("zhang2021", "affwild2"): "CCC valence / arousal 0.469 / 0.649 val, 0.463 / 0.492 test (ABAW 2021)",
    ("schoneveld2021", "recola"): "best valence CCC on RECOLA at publication (no figure read from the paper here)",
}

# a configuration's models differ in these; everything else identifies the configuration
REPEAT_KEYS = ("train.seed", "data.fold")
# params that name where a sweep wrote, not what it trained
_BOOKKEEPING = ("name", "storage", "mlflow.", "data.root", "data.store_dir", "data.synth.")


@dataclass
class Model:
    """One trial run."""

    run_id: str
    experiment_id: str
    sweep_id: str
    trial_id: str
    name: str
    method: str
    dataset: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str] = field(default_factory=dict)
    merged: dict[str, float] = field(default_factory=dict)  # its sweep's merged fold predictions, when chosen

    @property
    def unfinished(self) -> bool:
        """A run its sweep left cut short: interrupted or crashed as a whole (``raybench.status_reason``
        "the sweep ..."; a resume finishes it) or still RUNNING; ASHA, early stopping and a method's own
        schedule end runs for good (KILLED with their reason), and those compete."""
        return self.status == "RUNNING" or self.tags.get("raybench.status_reason", "").startswith("the sweep ")

    @property
    def test_failed(self) -> bool:
        """Its sweep chose it and its test evaluation failed (``raybench.results._finish_test``)."""
        return "raybench.track_failed.test" in self.tags

    @property
    def metric(self) -> str:
        """The selection metric's name (``val/uar``, ``val/ccc``, ...)."""
        names = sorted(k[len("best/"):] for k in self.metrics if k.startswith("best/val/") and k != "best/val/score")
        return names[0] if names else "val/score"

    @property
    def score(self) -> float | None:
        return self.metrics.get("best/val/score")


@dataclass
class Stat:
    """Mean, std (over models, ddof 0), 95% Student-t interval of the mean (None for one model), n."""

    mean: float
    std: float
    n: int
    lo: float | None = None
    hi: float | None = None

    def text(self, digits: int = 3) -> str:
        s = f"{self.mean:.{digits}f}"
        if self.n > 1:  # one model has no spread to show: "± 0.000" would claim one
            s += f" ± {self.std:.{digits}f}"
        if self.lo is not None:
            s += f" [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"
        return s + f" (n={self.n})"


def stat(xs: list[float], level: float = 0.95) -> Stat:
    """Mean and spread of one metric over a configuration's models, with a Student-t interval."""
    from scipy import stats

    a = np.asarray(xs, np.float64)
    s = Stat(float(a.mean()), float(a.std()), len(a))
    if len(a) > 1:
        half = float(stats.t.ppf(0.5 + level / 2, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))
        s.lo, s.hi = s.mean - half, s.mean + half
    return s


@dataclass
class Cell:
    method: str
    dataset: str
    metric: str
    mode: str
    models: list[Model]  # the chosen configuration's
    candidates: int  # configurations compared
    config: dict[str, str]  # what sets the chosen configuration apart from the cell's others
    val: Stat
    test: dict[str, Stat] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)
    failed: int = 0
    robust: dict[str, Stat] = field(default_factory=dict)  # condition (clean first) -> the test metric under it
    cross: dict[str, Stat] = field(default_factory=dict)  # target corpus -> the metric on it (shared classes)
    test_failed: int = 0  # chosen models whose test evaluation failed (no test numbers)
    # the fold models' test predictions merged (test_merged/<metric>: the sweep's parent run; chunk folds)
    merged: dict[str, float] = field(default_factory=dict)

    @property
    def main(self) -> str:
        """The test metric named like the selection metric (``uar``, ``ccc``)."""
        return self.metric.split("/", 1)[1]


# the robustness conditions in the report's order: clean, then each modality from mild to gone
CONDITION_ORDER = ("clean", "audio_snr20", "audio_snr10", "audio_snr0", "audio_missing", "video_blur",
                   "video_occlusion", "video_missing")


def condition_order(name: str) -> tuple[int, str]:
    return (CONDITION_ORDER.index(name) if name in CONDITION_ORDER else len(CONDITION_ORDER), name)


def _is_bookkeeping(k: str) -> bool:
    return any(k == b or (b.endswith(".") and k.startswith(b)) for b in _BOOKKEEPING)


def repeat_keys(m: Model) -> tuple[str, ...]:
    """The params a model's configuration repeats over, as its sweep grouped them
    (``raybench.trials.grouped_keys``): the fold when the search space sweeps it, the seed only with
    ``tune.repeats`` > 1 (a seed listed in the search space makes configurations of their own, as
    ``raybench.results.choose`` treats it). Runs of a sweep that grouped nothing are each a configuration
    of their own, as ``choose`` takes the best trial (``tune.num_samples`` over a ``choice`` may draw one
    configuration twice: two trials, not two repeats)."""
    try:
        repeats = int(m.params.get("tune.repeats", "1"))
    except ValueError:
        repeats = 1
    folds = any(k == "tune.search_space.data.fold" or k.startswith("tune.search_space.data.fold.") for k in m.params)
    return (("data.fold",) if folds else ()) + (("train.seed",) if repeats > 1 else ())


def config_key(m: Model) -> str:
    keys = repeat_keys(m)
    return json.dumps([m.sweep_id, m.metric, {k: v for k, v in sorted(m.params.items())
                                              if k not in keys and not _is_bookkeeping(k)}]
                      + ([] if keys else [m.trial_id]))


def collect(uri: str, experiments: list[str] | None = None, sweeps: list[str] | None = None) -> list[Model]:
    """Every trial run in the store (or in the named experiments / sweeps: the store is asked for
    those sweeps' runs only; before 2026-12-04 every trial run was read, then filtered)."""
    from mlflow.tracking import MlflowClient

    from raybench.tracking import all_experiments, search_all

    client = MlflowClient(tracking_uri=uri)
    if experiments:
        exps = []
        for name in experiments:
            e = client.get_experiment_by_name(name)
            if e is None:
                known = ", ".join(sorted(x.name for x in all_experiments(client)))
                raise ReportError(f"--experiment {name!r}: no such experiment in {uri} (known: {known or 'none'})")
            exps.append(e.experiment_id)
    else:
        exps = [e.experiment_id for e in all_experiments(client)]
    quoted = [s for s in sweeps or [] if "'" in s or "\\" in s]
    if quoted:  # (no sweep id has one: the sweep's name is letters, digits, '_', '.' and '-')
        raise ReportError(f"--sweep {quoted[0]!r}: a sweep id has no quote or backslash")

    def search(kind: str, tag: str) -> list:  # the runs of one kind, of the named sweeps only when named
        return [r for exp in exps for sweep in sweeps or [None] for r in search_all(
            client, [exp], f"tags.`raybench.kind` = '{kind}'" + (f" and tags.`{tag}` = '{sweep}'" if sweep else ""))]

    runs = search("trial", "raybench.sweep_id")
    models = [Model(r.info.run_id, r.info.experiment_id, r.data.tags.get("raybench.sweep_id", ""),
                    r.data.tags.get("raybench.trial_id", r.info.run_id), r.info.run_name or "",
                    r.data.tags.get("method", r.data.params.get("method.name", "?")),
                    r.data.tags.get("dataset", r.data.params.get("data.dataset", "?")), r.info.status,
                    dict(r.data.params), dict(r.data.metrics), dict(r.data.tags)) for r in runs]
    if sweeps:
        have = {m.sweep_id for m in models}
        missing = [s for s in sweeps if s not in have]
        if missing:
            there = {r.data.tags.get("raybench.sweep_id.parent", "") for exp in exps
                     for r in search_all(client, [exp], "tags.`raybench.kind` = 'sweep'")} - {""}
            raise ReportError(f"--sweep {', '.join(missing)}: no trial runs of that sweep in {uri} "
                              f"(sweeps there: {', '.join(sorted(there)) or 'none'})")
    # the parents' merged fold predictions (test_merged/...; "<dataset>/test_merged/..." with several
    # datasets in a sweep), for the cells of the configuration each sweep chose
    parents: dict[str, dict[str, float]] = {}
    for r in search("sweep", "raybench.sweep_id.parent"):
        merged = {k: v for k, v in r.data.metrics.items() if "test_merged/" in k and math.isfinite(v)}
        if merged:
            parents[r.data.tags.get("raybench.sweep_id.parent", "")] = merged
    for m in models:
        if m.tags.get("raybench.best") == "true" and m.sweep_id in parents:
            ds = parents[m.sweep_id]
            own = {k.split("/", 1)[1]: v for k, v in ds.items() if k.startswith(f"{m.dataset}/test_merged/")}
            m.merged = own or {k: v for k, v in ds.items() if k.startswith("test_merged/")}
    return models


class ReportError(Exception):
    pass


def dataset_metrics(models: list[Model]) -> dict[str, str]:
    """Each dataset's selection metric: the one most of its scored runs were selected on (a column
    compares one metric; runs of other sweeps that selected on another are left out, and said)."""
    count: dict[str, dict[str, int]] = {}
    for m in models:
        if m.score is not None:
            c = count.setdefault(m.dataset, {})
            c[m.metric] = c.get(m.metric, 0) + 1
    return {d: sorted(c, key=lambda k: (-c[k], k))[0] for d, c in count.items()}


def cells(models: list[Model], notes: list[str] | None = None,
          unscored: dict[tuple[str, str], int] | None = None) -> dict[tuple[str, str], Cell]:
    """(method, dataset) -> its cell: the configuration best on mean validation score (over its
    models: seeds with ``tune.repeats``, folds), as ``raybench.results.choose`` picks it in a sweep: every
    run with a validation score counts (a trial that failed after scoring too). ``notes`` gets what
    was left out: runs selected on another metric, runs their sweep left unfinished (interrupted,
    crashed or still running: ``Model.unfinished``), cells whose every run failed; ``unscored``:
    (method, dataset) -> how many runs, for the cells that have runs and none with a finite score."""
    metric_of = dataset_metrics([m for m in models if not m.unfinished])
    by_cell: dict[tuple[str, str], list[Model]] = {}
    for m in models:
        by_cell.setdefault((m.method, m.dataset), []).append(m)
    out = {}
    for key, all_runs in sorted(by_cell.items()):
        cut = [m for m in all_runs if m.unfinished]
        ms = [m for m in all_runs if not m.unfinished]
        if cut and notes is not None:
            notes.append(f"{key[0]} on {key[1]}: {len(cut)} run(s) of sweeps that did not finish (interrupted, "
                         f"crashed or still running: {', '.join(sorted({m.sweep_id for m in cut}))}) left out; "
                         "resume them (--resume) to count them")
        scored = [m for m in ms if m.score is not None and math.isfinite(m.score)]
        other = [m for m in scored if m.metric != metric_of.get(key[1])]
        if other and notes is not None:
            notes.append(f"{key[0]} on {key[1]}: {len(other)} run(s) selected on "
                         f"{', '.join(sorted({m.metric for m in other}))} left out (the column compares "
                         f"{metric_of[key[1]]})")
        # in trial order: a tie goes to the first configuration, as in the sweep's own choice
        ok = sorted((m for m in scored if m.metric == metric_of.get(key[1])), key=lambda m: (m.sweep_id, m.trial_id))
        if not ok:
            if ms and not scored:  # it ran, and nothing has a score: said, never shown as "not run"
                if unscored is not None:
                    unscored[key] = len(ms)
                if notes is not None:
                    notes.append(f"{key[0]} on {key[1]}: all {len(ms)} run(s) failed or diverged (no finite "
                                 "validation score): no configuration to show")
            continue
        mode = ok[0].params.get("tune.mode", "max")
        groups: dict[str, list[Model]] = {}
        for m in ok:
            groups.setdefault(config_key(m), []).append(m)
        pick = max if mode == "max" else min
        best = pick(groups, key=lambda g: float(np.mean([m.score for m in groups[g]])))
        chosen = sorted(groups[best], key=lambda m: [m.params.get(k, "") for k in REPEAT_KEYS])
        varying = {k for k in {k for m in ok for k in m.params}
                   if k not in repeat_keys(chosen[0]) and not _is_bookkeeping(k) and len({m.params.get(k) for m in ok}) > 1}
        config = {k: chosen[0].params.get(k, "") for k in sorted(varying)}
        if len({m.sweep_id for m in ok}) > 1:
            config = {"sweep": chosen[0].sweep_id, **config}
        c = Cell(key[0], key[1], chosen[0].metric, mode, chosen, len(groups), config,
                 stat([m.score for m in chosen]), failed=sum(m.status == "FAILED" for m in ms))
        for k in sorted({k for m in chosen for k in m.metrics if k.startswith("test/")}):
            xs = [m.metrics[k] for m in chosen if k in m.metrics]
            c.test[k] = stat(xs)
        c.test_failed = sum(m.test_failed for m in chosen)
        c.merged = chosen[0].merged if all(m.merged == chosen[0].merged for m in chosen) else {}
        c.cost = cost(chosen)
        conds = sorted({k.split("/")[1] for m in chosen for k in m.metrics
                        if k.startswith("test_robust/") and k.endswith(f"/{c.main}")}, key=condition_order)
        for cond in conds:
            k = f"test_robust/{cond}/{c.main}"
            c.robust[cond] = stat([m.metrics[k] for m in chosen if k in m.metrics])
        for target in sorted({k.split("/")[1] for m in chosen for k in m.metrics
                              if k.startswith("test_cross/") and k.endswith(f"/{c.main}")}):
            k = f"test_cross/{target}/{c.main}"
            c.cross[target] = stat([m.metrics[k] for m in chosen if k in m.metrics])
        out[key] = c
    return out


def cost(models: list[Model]) -> dict[str, float]:
    """A configuration's cost: its model's size and compute, and over its models the training time
    (mean wall time per trial), GPU-hours (their sum), training windows/s (mean of the last epoch's)
    and peak memory (the largest)."""
    def col(k: str) -> list[float]:
        return [m.metrics[k] for m in models if k in m.metrics]

    out: dict[str, float] = {}
    for k, name in (("model/parameters", "parameters"), ("model/trainable_parameters", "trainable_parameters"),
                    ("model/gflops_per_window", "gflops_per_window")):
        if col(k):
            out[name] = col(k)[0]
    if col("time/trial_wall_s"):
        out["train_s"] = float(np.mean(col("time/trial_wall_s")))
    gh = [m.metrics.get("time/gpu_hours") for m in models]
    if all(g is not None for g in gh):
        out["gpu_hours"] = float(sum(gh))
    if col("time/train_samples_per_s"):
        out["windows_per_s"] = float(np.mean(col("time/train_samples_per_s")))
    if col("memory/peak_rss_gib"):
        out["peak_rss_gib"] = float(max(col("memory/peak_rss_gib")))
    if col("gpu/peak_mem_gib"):
        out["gpu_peak_gib"] = float(max(col("gpu/peak_mem_gib")))
    return out


# --- figures ----------------------------------------------------------------------------------


def scores_figure(table: dict[tuple[str, str], Cell], methods: list[str], datasets: list[str],
                  unscored: dict[tuple[str, str], int] | None = None):
    """Per dataset, a bar per method: the selection metric's mean over the chosen configuration's
    models with its 95% interval, and the test mean (diamond) where the sweep evaluated it; "not run",
    or "all N runs failed" (``unscored``), where there is no cell."""
    from raybench.plots import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(5.0, 4.2 * len(datasets)), 0.5 * len(methods) + 1.8),
                             squeeze=False, sharey=True)
    y = np.arange(len(methods))
    for ax, ds in zip(axes[0], datasets):
        here = [table.get((m, ds)) for m in methods]
        mean = [c.val.mean if c else np.nan for c in here]
        err = np.array([[c.val.mean - c.val.lo, c.val.hi - c.val.mean] if c and c.val.lo is not None else [0, 0]
                        for c in here]).T
        ax.barh(y, mean, xerr=err, color="tab:blue", alpha=0.8, capsize=3, label="validation (95% CI)")
        for i, c in enumerate(here):
            if c is None:
                n = (unscored or {}).get((methods[i], ds))
                ax.text(0.01, i, "not run" if n is None else f"all {n} runs failed", va="center", fontsize=8,
                        color="grey" if n is None else "tab:red")
            elif c.test:
                t = c.test.get(f"test/{c.main}")
                if t is not None:
                    ax.plot(t.mean, i, "D", color="tab:orange", label="test" if i == 0 or "test" not in
                            ax.get_legend_handles_labels()[1] else None)
        metric = sorted({c.metric for c in here if c})
        ax.set_title(f"{ds}\n{' / '.join(metric)}", fontsize=10)
        ax.set_xlabel(" / ".join(metric) or "score")
        ax.set_yticks(y, methods)
        # the axis takes the intervals too (a t interval of few models can pass 1, a CCC's fall below 0)
        ends = [x for c in here if c for x in (c.val.mean, c.val.lo, c.val.hi) if x is not None and np.isfinite(x)]
        ends += [t.mean for c in here if c and (t := c.test.get(f"test/{c.main}")) is not None]
        lo, hi = min([0.0, *ends]), max([1.0, *ends])
        ax.set_xlim(lo - 0.02 if lo < 0 else 0.0, hi + 0.05)
    axes[0, 0].invert_yaxis()  # once: the axes share y, and each inversion flips it for all of them
    axes[0, -1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def robustness_figure(table: dict[tuple[str, str], Cell], datasets: list[str]):
    """Per dataset, each method's test metric clean and under each robustness condition (the mean
    over its models, error bars: the 95% interval where there are several); points, not lines: the
    conditions are not a scale."""
    from raybench.plots import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(5.0, 5.0 * len(datasets)), 3.8), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        here = sorted((k[0], c) for k, c in table.items() if k[1] == ds and c.robust)
        conds = sorted({x for _, c in here for x in c.robust}, key=condition_order)
        for j, (method, c) in enumerate(here):
            x = [i for i, cond in enumerate(conds) if cond in c.robust]
            y = [c.robust[conds[i]].mean for i in x]
            err = np.array([[c.robust[conds[i]].mean - c.robust[conds[i]].lo, c.robust[conds[i]].hi
                             - c.robust[conds[i]].mean] if c.robust[conds[i]].lo is not None else [0, 0]
                            for i in x]).T
            shift = (j - (len(here) - 1) / 2) * 0.12  # side by side within a condition
            ax.errorbar(np.array(x) + shift, y, yerr=err if len(x) else None, marker="o", linestyle="none",
                        capsize=3, label=method)
        ax.set_xticks(range(len(conds)), [x.replace("_", "\n") for x in conds], fontsize=8)
        metric = sorted({c.main for _, c in here})
        ax.set_title(f"{ds}: test {' / '.join(metric)} under each condition", fontsize=9)
        ax.set_ylabel(f"test {' / '.join(metric)}")
        if here:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def curves_figure(client, table: dict[tuple[str, str], Cell], dataset: str):
    """Learning curves on one dataset: each method's validation metric per epoch, the mean over its
    chosen configuration's models (a band: their min to max)."""
    from raybench.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    metrics = set()
    for (method, ds), c in sorted(table.items()):
        if ds != dataset:
            continue
        hist = [{h.step: h.value for h in client.get_metric_history(m.run_id, c.metric)} for m in c.models]
        # every epoch any model ran (ASHA or early stopping end some sooner): the mean over those that ran it
        steps = sorted(set().union(*[set(h) for h in hist])) if hist else []
        if not steps:
            continue
        v = np.array([[h.get(s, np.nan) for s in steps] for h in hist])
        x = np.array(steps) + 1
        (line,) = ax.plot(x, np.nanmean(v, 0), marker=".", label=method)
        if len(hist) > 1:
            ax.fill_between(x, np.nanmin(v, 0), np.nanmax(v, 0), color=line.get_color(), alpha=0.15)
        metrics.add(c.metric)
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(" / ".join(sorted(metrics)))
    ax.set_title(f"{dataset}: validation per epoch\n(chosen configurations: the mean over the models that ran "
                 "each epoch; band: min to max)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# per-trial figures logged by the sweep (raybench.results._log_plot), test first
_TRIAL_FIGURES = ("confusion_test.png", "recall_test.png", "traces_test.png", "scatter_test.png",
                  "confusion_val.png", "recall_val.png", "traces_val.png", "scatter_val.png")


def trial_figures(client, cell: Cell, dest: Path) -> list[Path]:
    """The chosen configuration's first model's figures (its test figures when the sweep evaluated it on
    the test split, else its validation ones), copied from its run's artifacts."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file otherwise
    m = cell.models[0]
    have = {a.path for a in client.list_artifacts(m.run_id)}
    split = "test" if any(f.endswith("_test.png") and f in have for f in _TRIAL_FIGURES) else "val"
    out = []
    for f in _TRIAL_FIGURES:
        if f in have and f.endswith(f"_{split}.png"):
            with tempfile.TemporaryDirectory() as d:
                src = client.download_artifacts(m.run_id, f, d)
                target = dest / f"{cell.dataset}__{cell.method}__{f}"
                shutil.copyfile(src, target)
            out.append(target)
    return out


# --- writing --------------------------------------------------------------------------------


def _num(v: float | None, digits: int = 3) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    # a GitHub pipe table is three lines of joins; pandas' to_markdown would add tabulate for it
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(esc, head)) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def run_url(ui: str, m: Model) -> str:
    return f"{ui.rstrip('/')}/#/experiments/{m.experiment_id}/runs/{m.run_id}"


COST_COLUMNS = (("parameters", "parameters", 0), ("trainable_parameters", "trainable", 0),
                ("gflops_per_window", "GFLOPs / window", 3), ("train_s", "training s / model", 1),
                ("gpu_hours", "GPU-hours (all models)", 4), ("windows_per_s", "training windows/s", 1),
                ("peak_rss_gib", "peak RSS GiB", 2), ("gpu_peak_gib", "peak GPU GiB", 2))


@dataclass
class Report:
    uri: str
    table: dict[tuple[str, str], Cell]
    methods: list[str]
    datasets: list[str]
    sweeps: list[str]
    models: int
    notes: list[str] = field(default_factory=list)  # what the report left out, and why
    unscored: dict[tuple[str, str], int] = field(default_factory=dict)  # cells whose every run failed: how many
    figures: dict[str, Path] = field(default_factory=dict)  # caption -> file
    cell_figures: dict[tuple[str, str], list[Path]] = field(default_factory=dict)


def build(uri: str, out: Path, experiments: list[str] | None = None, sweeps: list[str] | None = None,
          figures: bool = True) -> Report:
    """Read the store, choose each cell's configuration, draw the figures into ``out/figures``."""
    from mlflow.tracking import MlflowClient

    models = collect(uri, experiments, sweeps)
    if not models:
        raise ReportError(f"no raybench trial runs in {uri}"
                          + (f" (experiments {', '.join(experiments)})" if experiments else "")
                          + ": run a sweep first (python -m raybench.sweep)")
    notes: list[str] = []
    unscored: dict[tuple[str, str], int] = {}
    table = cells(models, notes, unscored)
    methods = sorted({m.method for m in models})
    datasets = sorted({m.dataset for m in models})
    rep = Report(uri, table, methods, datasets, sorted({m.sweep_id for m in models}), len(models), notes,
                 unscored=unscored)
    if not figures:
        return rep
    import matplotlib.pyplot as plt

    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri)
    fig = scores_figure(table, methods, datasets, unscored)
    rep.figures["Selection metric per method and dataset (bars: validation, 95% CI; diamonds: test)"] = \
        _save(fig, figdir / "scores.png")
    plt.close(fig)
    with_robust = [ds for ds in datasets if any(k[1] == ds and c.robust for k, c in table.items())]
    if with_robust:
        fig = robustness_figure(table, with_robust)
        rep.figures["Robustness: the test metric clean and under each condition (eval.robustness)"] = \
            _save(fig, figdir / "robustness.png")
        plt.close(fig)
    for ds in datasets:
        if any(k[1] == ds for k in table):
            fig = curves_figure(client, table, ds)
            rep.figures[f"Learning curves, {ds}"] = _save(fig, figdir / f"curves_{ds}.png")
            plt.close(fig)
    for key, c in table.items():
        rep.cell_figures[key] = trial_figures(client, c, figdir)
    return rep


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=100)
    return path


@dataclass
class Section:
    """One table of the report below the leaderboard, as both documents show it: each cell a string,
    or a list of (text, url) links."""
    id: str  # the HTML table's id
    title: str
    head: list[str]
    rows: list[list]
    intro: str = ""


def leader_rows(rep: Report) -> list[tuple[str, list[dict | None]]]:
    """The leaderboard: per method, per dataset, None (never run) or its cell's text: ``val``, ``test``
    (the same metric on the test split, or ""), ``paper`` (the paper's own figure, or ""), ``best``
    (the best cell of its dataset on the selection metric)."""
    best = {}
    for ds in rep.datasets:
        here = [c for k, c in rep.table.items() if k[1] == ds]
        if here:
            pick = max if here[0].mode == "max" else min
            best[ds] = pick(here, key=lambda c: c.val.mean).method
    rows = []
    for m in rep.methods:
        row: list[dict | None] = []
        for ds in rep.datasets:
            c = rep.table.get((m, ds))
            if c is None:
                n = rep.unscored.get((m, ds))
                row.append(None if n is None else {"val": f"all {n} runs failed", "test": "",
                                                   "paper": PAPERS.get((m, ds), ""), "best": False})
                continue
            row.append({"val": c.val.text(), "test": test_text(c), "paper": PAPERS.get((m, ds), ""),
                        "best": best.get(ds) == m})
        rows.append((m, row))
    return rows


def test_text(c: Cell) -> str:
    """A cell's test number as the leaderboard shows it: its metric over the models, the fold models'
    merged predictions beside it (chunk folds), and the models whose test evaluation failed."""
    t = c.test.get(f"test/{c.main}")
    parts = [t.text()] if t else []
    merged = c.merged.get(f"test_merged/{c.main}")
    if merged is not None:
        parts.append(f"folds merged {merged:.3f}")
    if c.test_failed:
        parts.append(f"test failed for {c.test_failed} of {len(c.models)} models")
    return "; ".join(parts)


def dataset_heads(rep: Report) -> list[tuple[str, str]]:
    """(dataset, its selection metric(s)) per leaderboard column."""
    return [(ds, " / ".join(sorted({c.metric for k, c in rep.table.items() if k[1] == ds}))) for ds in rep.datasets]


def sections(rep: Report, ui: str) -> list[Section]:
    """The tables below the leaderboard, in order; a table with nothing to show is left out (the
    papers', test, robustness and cross-corpus tables)."""
    cs = list(rep.table.values())
    out = []
    papers = [[m, ds, txt] for (m, ds), txt in sorted(PAPERS.items()) if m in rep.methods]
    if papers:
        out.append(Section("papers", "What the papers report (theirs: their datasets and setups, not ours)",
                           ["method", "dataset", "reported"], papers))
    out.append(Section("configurations", "Chosen configurations",
                       ["method", "dataset", "configurations compared", "chosen", "models (MLflow runs)", "failed"],
                       [[c.method, c.dataset, str(c.candidates),
                         ", ".join(f"{k}={v}" for k, v in c.config.items()) or "(the only one)",
                         [(m.trial_id.rsplit("/", 1)[-1], run_url(ui, m)) for m in c.models], str(c.failed)]
                        for c in cs]))
    tests = sorted({k for c in cs for k in c.test})
    if tests:
        out.append(Section("test", "Test split (where the sweep evaluated the configuration)",
                           ["method", "dataset", *tests],
                           [[c.method, c.dataset, *[c.test[k].text() if k in c.test else "" for k in tests]]
                            for c in cs if c.test]))
    conds = robust_conditions(rep)
    if conds:
        out.append(Section("robustness", "Robustness (test split, eval.robustness)",
                           ["method", "dataset", "metric", *conds],
                           [[c.method, c.dataset, f"test/{c.main}",
                             *[c.robust[x].text() if x in c.robust else "" for x in conds]] for c in cs if c.robust]))
    targets = sorted({x for c in cs for x in c.cross})
    if targets:
        out.append(Section("cross", "Cross-corpus (trained on the row's dataset, tested on another over the classes "
                                     "both have; eval.cross_corpus)",
                           ["method", "trained on", "metric", *[f"tested on {x}" for x in targets]],
                           [[c.method, c.dataset, f"test/{c.main}",
                             *[c.cross[x].text() if x in c.cross else "" for x in targets]] for c in cs if c.cross]))
    cols = [(k, h, d) for k, h, d in COST_COLUMNS if any(k in c.cost for c in cs)]
    out.append(Section("cost", "Cost", ["method", "dataset", *[h for _, h, _ in cols]],
                       [[c.method, c.dataset, *[_fmt_cost(c.cost.get(k), d) for k, _, d in cols]] for c in cs],
                       "Per chosen configuration: model size and compute per evaluation window, mean wall time per "
                       "trial, GPU-hours summed over its models, training windows/s (last epoch), peak memory."))
    return out


INTRO = ("Each cell: the configuration best on the validation metric named under the dataset (the mean over its "
         "models: seeds and folds), mean ± std over those models, [95% CI of the mean, Student's t], (n models; one "
         "model: its value alone); "
         "test: the same for the test split where the sweep evaluated that configuration (folds merged: the fold "
         "models' test predictions merged, as the sweep's parent run holds them). The best cell per dataset "
         "is bold. An empty cell: the method was not run on that dataset; \"all N runs failed\": it was, and no run "
         "has a finite validation score.")


def leaderboard_md(rep: Report, ui: str) -> str:
    """The report as Markdown (figures linked from ``figures/``)."""
    def md_cell(v) -> str:
        return ", ".join(f"[{t}]({u})" for t, u in v) if isinstance(v, list) else v

    lines = [f"# raybench leaderboard", "",
             f"{rep.models} trial runs of {len(rep.sweeps)} sweep(s) ({', '.join(rep.sweeps)}) in `{rep.uri}`, "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.", "", INTRO, ""]
    rows = [[m, *["" if c is None else ("**{}**" if c["best"] else "{}").format(
        c["val"] + (f"; test {c['test']}" if c["test"] else "")) for c in row]] for m, row in leader_rows(rep)]
    lines += [_md_table(["method", *[f"{ds} ({metric})" for ds, metric in dataset_heads(rep)]], rows), ""]
    lines += [f"Note: {n}" for n in rep.notes] + ([""] if rep.notes else [])
    for sec in sections(rep, ui):
        lines += [f"## {sec.title}", ""] + ([sec.intro, ""] if sec.intro else [])
        lines += [_md_table(sec.head, [[md_cell(v) for v in r] for r in sec.rows]), ""]
    for caption, p in rep.figures.items():
        lines += [f"![{caption}](figures/{p.name})", ""]
    for (m, ds), figs in rep.cell_figures.items():
        if figs:
            lines += [f"### {m} on {ds}", "", *[f"![{f.name}](figures/{f.name})" for f in figs], ""]
    return "\n".join(lines)


def _tex_stat(x: Stat) -> str:
    """A cell's numbers in LaTeX: mean $\\pm$ std ($n{=}$models); one model: its value and n."""
    return f"{x.mean:.3f}" + (f" $\\pm$ {x.std:.3f}" if x.n > 1 else "") + f" ($n{{=}}{x.n}$)"


def leaderboard_tex(rep: Report) -> str:
    """The leaderboard as LaTeX for a paper (``leaderboard.tex``): a booktabs table of the validation
    cells (the best per dataset in bold) and one of the same configurations on the test split, written by
    pandas' Styler (its LaTeX escaping for the method and dataset names; needs booktabs). A method never
    run on a dataset, or a configuration the sweep did not test, is "--"."""
    import pandas as pd

    heads = [f"{ds} ({metric})" for ds, metric in dataset_heads(rep)]
    val = pd.DataFrame([[(f"failed ($n{{=}}{rep.unscored[(m, ds)]}$ runs)" if (m, ds) in rep.unscored else "--")
                          if (c := rep.table.get((m, ds))) is None else _tex_stat(c.val)
                         for ds in rep.datasets] for m in rep.methods], index=rep.methods, columns=heads)
    bold = pd.DataFrame([[bool(c and c["best"]) for c in row] for _, row in leader_rows(rep)],
                        index=rep.methods, columns=heads)
    test = pd.DataFrame([["--" if (c := rep.table.get((m, ds))) is None or f"test/{c.main}" not in c.test
                          else _tex_stat(c.test[f"test/{c.main}"]) for ds in rep.datasets] for m in rep.methods],
                        index=rep.methods,
                        columns=[f"{ds} ({metric.replace('val/', 'test/')})" for ds, metric in dataset_heads(rep)])

    def table(df: pd.DataFrame, caption: str, label: str, strong: pd.DataFrame | None = None) -> str:
        sty = df.style.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
        if strong is not None:  # the cells hold LaTeX already ($\pm$): only the names are escaped
            sty = sty.apply(lambda _: strong.map(lambda b: "textbf:--rwrap;" if b else ""), axis=None)
        return sty.to_latex(hrules=True, caption=caption, label=label, position="t", position_float="centering",
                            column_format="l" + "c" * len(df.columns))

    models = "over its models (seeds and folds: $n$), mean $\\pm$ standard deviation"
    head = [f"% raybench leaderboard: {rep.models} trial runs of {len(rep.sweeps)} sweep(s) "
            f"({', '.join(rep.sweeps)}) in {rep.uri}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
            "% needs \\usepackage{booktabs}", ""]
    return "\n".join(head) + table(
        val, f"Validation: each method's configuration best on the dataset's selection metric, {models}; the best "
        "per dataset in bold; --: not run; failed: run, and no run has a finite validation score.",
        "tab:raybench-val", bold) + "\n" + table(
        test, f"Test split: the same configurations where the sweep tested them, {models}; --: not run or not "
        "tested.", "tab:raybench-test")


def robust_conditions(rep: Report) -> list[str]:
    """The robustness conditions any cell has, clean first."""
    return sorted({x for c in rep.table.values() for x in c.robust}, key=condition_order)


def _fmt_cost(v: float | None, digits: int) -> str:
    if v is None:
        return ""
    return f"{v:,.0f}" if digits == 0 else f"{v:.{digits}f}"


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>raybench leaderboard</title>
<style>
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0 1.6em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #eee; }
td.empty { background: #f6f6f6; }
td.best { font-weight: bold; }
.ci { color: #555; font-size: 0.85em; }
figure { display: inline-block; margin: 0.5em; }
figcaption { font-size: 0.85em; color: #444; }
img { max-width: 100%; }
</style></head>
<body>
<h1>raybench leaderboard</h1>
<p>{{ n_models }} trial runs of {{ sweeps|length }} sweep(s) ({{ sweeps|join(", ") }}) in <code>{{ uri }}</code>,
{{ when }} UTC.</p>
<p>{{ intro }}</p>
<table id="leaderboard">
<tr><th>method</th>{% for ds, metric in datasets %}<th>{{ ds }}<br><span class="ci">{{ metric }}</span></th>{% endfor %}</tr>
{% for m, row in rows %}<tr><th>{{ m }}</th>{% for cell in row %}{% if cell %}<td class="{{ 'best' if cell.best else '' }}">{{ cell.val }}
{% if cell.test %}<br><span class="ci">test {{ cell.test }}</span>{% endif %}
{% if cell.paper %}<br><span class="ci">paper (theirs): {{ cell.paper }}</span>{% endif %}</td>
{% else %}<td class="empty"></td>{% endif %}{% endfor %}</tr>
{% endfor %}</table>
{% for n in notes %}<p class="note">Note: {{ n }}</p>
{% endfor %}
{% for sec in sections %}<h2>{{ sec.title }}</h2>
{% if sec.intro %}<p>{{ sec.intro }}</p>{% endif %}
<table id="{{ sec.id }}"><tr>{% for h in sec.head %}<th>{{ h }}</th>{% endfor %}</tr>
{% for r in sec.rows %}<tr>{% for v in r %}<td>{% if v is string %}{{ v }}{% else %}{% for name, url in v %}<a href="{{ url }}">{{ name }}</a> {% endfor %}{% endif %}</td>{% endfor %}</tr>
{% endfor %}</table>
{% endfor %}
<h2>Figures</h2>
{% for caption, src in figures %}<figure><img src="{{ src }}" alt="{{ caption }}"><figcaption>{{ caption }}</figcaption></figure>
{% endfor %}
{% for title, figs in cell_figures %}<h3>{{ title }}</h3>
{% for caption, src in figs %}<figure><img src="{{ src }}" alt="{{ caption }}"><figcaption>{{ caption }}</figcaption></figure>
{% endfor %}{% endfor %}
<script>
// for a headless check: how many figures decoded (a broken embedded image has no natural width)
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  document.body.dataset.figures = imgs.filter((i) => i.complete && i.naturalWidth > 0).length + "/" + imgs.length;
});
</script>
</body></html>
"""


def _data_uri(p: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()


def index_html(rep: Report, ui: str) -> str:
    """The report as one HTML page with its figures embedded (opens with no network)."""
    import jinja2

    env = jinja2.Environment(autoescape=True)
    return env.from_string(_HTML).render(
        n_models=rep.models, notes=rep.notes, sweeps=rep.sweeps, uri=rep.uri, intro=INTRO,
        when=f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M}", datasets=dataset_heads(rep), rows=leader_rows(rep),
        sections=sections(rep, ui),
        figures=[(cap, _data_uri(p)) for cap, p in rep.figures.items()],
        cell_figures=[(f"{m} on {ds}", [(f.name, _data_uri(f)) for f in figs])
                      for (m, ds), figs in rep.cell_figures.items() if figs])


def write(rep: Report, out: Path, ui: str) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"leaderboard.md": out / "leaderboard.md", "index.html": out / "index.html",
             "leaderboard.tex": out / "leaderboard.tex", "cells.json": out / "cells.json"}
    files["leaderboard.md"].write_text(leaderboard_md(rep, ui))
    files["leaderboard.tex"].write_text(leaderboard_tex(rep))
    files["index.html"].write_text(index_html(rep, ui))
    files["cells.json"].write_text(json.dumps([cell_json(c) for c in rep.table.values()], indent=1))
    return files


def cell_json(c: Cell) -> dict:
    """A cell as data (``cells.json``: for scripts and tests)."""
    def s(x: Stat) -> dict:
        return {"mean": x.mean, "std": x.std, "n": x.n, "ci_low": x.lo, "ci_high": x.hi}

    return {"method": c.method, "dataset": c.dataset, "metric": c.metric, "mode": c.mode, "val": s(c.val),
            "test": {k: s(v) for k, v in c.test.items()}, "config": c.config, "candidates": c.candidates,
            "failed": c.failed, "runs": [m.run_id for m in c.models], "cost": c.cost,
            "robust": {k: s(v) for k, v in c.robust.items()}, "cross": {k: s(v) for k, v in c.cross.items()},
            "test_failed": c.test_failed, "merged": c.merged}


def log_to_parents(rep: Report, out: Path) -> list[str]:
    """Log the report folder under ``report/`` to the parent run of every sweep it covers."""
    from mlflow.tracking import MlflowClient

    from raybench.tracking import all_experiments

    client = MlflowClient(tracking_uri=rep.uri)
    done = []
    models = {m.sweep_id: m for c in rep.table.values() for m in c.models}
    for sweep in rep.sweeps:
        exp = models[sweep].experiment_id if sweep in models else None
        exps = [exp] if exp else [e.experiment_id for e in all_experiments(client)]
        runs = client.search_runs(exps, filter_string=f"tags.`raybench.sweep_id.parent` = '{sweep}'", max_results=1)
        if runs:
            client.log_artifacts(runs[0].info.run_id, str(out), "report")
            done.append(runs[0].info.run_id)
    return done


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    """A Chromium-family browser on the PATH (Debian: ``apt-get install chromium``), or None."""
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 2400) -> Path:
    """A picture of the page as headless Chromium draws it (the README's is made this way)."""
    import subprocess

    browser = find_browser()
    if browser is None:
        raise ReportError(f"--screenshot needs a Chromium browser on the PATH ({', '.join(BROWSERS)}); "
                          "on Debian: apt-get install chromium")
    png.parent.mkdir(parents=True, exist_ok=True)
    # --no-sandbox: Chromium refuses to run as root (containers, CI) with its sandbox on
    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--window-size={width},{height}", f"--screenshot={png}", html.resolve().as_uri()],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or not png.is_file():
        raise ReportError(f"{browser} could not draw {html} (exit {r.returncode}): {r.stderr.strip()[-500:]}")
    return png


def main(argv: list[str] | None = None) -> int:
    from raybench import tracking

    p = argparse.ArgumentParser(prog="python -m raybench.report",
                                description="Write the benchmark report (leaderboard.md, index.html, leaderboard.tex, figures) "
                                "from the trial runs in an MLflow store.")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow store (default: $MLFLOW_TRACKING_URI, else the sweeps' default local store)")
    p.add_argument("--storage", default=None, metavar="PATH",
                   help="the local results folder a sweep was given with storage=PATH: its MLflow store "
                   "(PATH/mlflow.db, unless --tracking-uri or $MLFLOW_TRACKING_URI names another) and the "
                   "default report folder (PATH/report)")
    p.add_argument("--experiment", action="append", default=None, help="only this experiment (repeatable)")
    p.add_argument("--sweep", action="append", default=None, help="only this sweep id (repeatable)")
    p.add_argument("--out", default=None, help="report folder (default: <results folder>/report)")
    p.add_argument("--ui-url", default="http://127.0.0.1:5000",
                   help="the MLflow UI's address, for the links to runs (default: what `mlflow ui` serves)")
    p.add_argument("--log-to-parent", action="store_true",
                   help="also log the report under report/ to each covered sweep's MLflow parent run")
    p.add_argument("--screenshot", metavar="PNG", default=None,
                   help="also draw index.html to this PNG with headless Chromium (width 1280 px)")
    p.add_argument("--screenshot-height", type=int, default=2400, help="the picture's height in px (default 2400)")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    if a.storage and "://" in a.storage:
        print(f"raybench: --storage {a.storage}: a sweep with remote storage keeps its MLflow store in the local "
              "results folder (the default one, or --tracking-uri): give that, not --storage", file=sys.stderr)
        return 2
    uri = a.tracking_uri or tracking.default_tracking_uri(a.storage, create=False)
    out = Path(a.out).expanduser().resolve() if a.out else tracking.results_dir(a.storage) / "report"
    try:
        problem = tracking.store_problem(uri, "--tracking-uri" if a.tracking_uri else "$MLFLOW_TRACKING_URI")
        if problem:
            raise ReportError(problem)
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
            raise ReportError(f"no MLflow store at {uri}: run a sweep first (python -m raybench.sweep), or name "
                              "the store with --tracking-uri (or, for a sweep run with storage=PATH, --storage PATH)")
        rep = build(uri, out, a.experiment, a.sweep)
    except ReportError as e:
        print(f"raybench: {e}", file=sys.stderr)
        return 2
    files = write(rep, out, a.ui_url)
    filled = len(rep.table)
    for n in rep.notes:
        print(f"[raybench] note: {n}", file=sys.stderr)
    print(f"[raybench] report of {rep.models} trial runs, {len(rep.methods)} methods x {len(rep.datasets)} datasets "
          f"({filled} cells filled) from {uri}:")
    for f in files.values():
        print(f"  {f}")
    if a.log_to_parent:  # before the screenshot: a missing browser does not keep the report from the runs
        runs = log_to_parents(rep, out)
        print(f"[raybench] logged under report/ to the parent run(s) {', '.join(runs) or '(none found)'}")
    if a.screenshot:
        try:
            print(f"  {screenshot(files['index.html'], Path(a.screenshot), height=a.screenshot_height)}")
        except ReportError as e:
            print(f"raybench: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
