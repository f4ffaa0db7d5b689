"""Sweep-level benchmarks (``python -m raybench.bench --trial-cost``): a real sweep, timed per trial.

``--trial-cost [SWEEP]`` runs a sweep file (default: the default sweep, ``sweeps/default.yaml``) with
the benchmark's positional overrides, in a temporary results folder and MLflow store, and prints for
every trial its wall time (from Tune starting it to its end, on the driver's clock), the time in its
epochs (the sum of ``time/epoch_s``: training and validation) and the rest, its fixed cost (Tune's
scheduling, worker start, imports, setup, the last checkpoint, teardown). The goal: the fixed cost
is at most 10% of a trial's wall time (the ratio printed is the fixed share over 0.10).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

FIXED_SHARE_GOAL = 0.10


def one_trial_run(result):
    """The MLflow run of a one-trial sweep's only trial (``result``: what ``run_sweep`` returned)."""
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(result.tracking_uri).search_runs(
        [result.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    if len(runs) != 1:
        raise RuntimeError(f"expected the sweep's one trial run, MLflow has {len(runs)}")
    return runs[0]


def trial_cost(sweep: str | None, overrides: list[str]) -> dict:
    """Run the sweep; print and return its trials' timings."""
    from raybench.config import load
    from raybench.sweep import run_sweep

    with tempfile.TemporaryDirectory(prefix="raybench-trial-cost-") as d:
        cfg = load(sweep, overrides)
        cfg.storage = str(Path(d) / "results")
        cfg.mlflow.tracking_uri = f"sqlite:///{Path(d) / 'mlflow.db'}"
        t0 = time.perf_counter()
        result = run_sweep(cfg)
        total = time.perf_counter() - t0
    rows = [t for t in result.trials if t.get("wall_s") is not None]
    print(f"\n{'trial':<24}{'epochs':>7}{'wall s':>9}{'epochs s':>10}{'fixed s':>9}{'fixed share':>13}")
    for t in rows:
        print(f"{t['trial_id'].rsplit('/', 1)[-1]:<24}{t['epochs'] or 0:>7}{t['wall_s']:>9.1f}"
              f"{t['wall_s'] - t['fixed_s']:>10.1f}{t['fixed_s']:>9.1f}{t['fixed_s'] / t['wall_s']:>13.2f}")
    wall = sum(t["wall_s"] for t in rows)
    fixed = sum(t["fixed_s"] for t in rows)
    share = fixed / wall if wall else float("nan")
    print(f"{len(rows)} trials, sweep {total:.0f} s in all; per trial: wall {wall / max(1, len(rows)):.1f} s, fixed "
          f"{fixed / max(1, len(rows)):.1f} s")
    print(f"fixed cost share {share:.2f}  limit {FIXED_SHARE_GOAL:.2f}  ratio {share / FIXED_SHARE_GOAL:.2f}")
    return {"sweep_s": total, "trials": rows, "fixed_share": share}


DDP_GOAL = 1.6


def ddp_scaling(sweep: str | None, overrides: list[str], workers: int = 2) -> dict:
    """``--ddp-scaling``: one trial of the sweep's base configuration (no search space), trained with
    one worker (one CPU, one thread) and then with ``workers`` DDP workers (a CPU each); the training
    windows per second (``time/train_samples_per_s``, every rank's windows over rank 0's training time,
    the mean over epochs after the first) of each, and their ratio against the goal (1.6 for 2)."""
    from mlflow.tracking import MlflowClient

    from raybench.config import DEFAULT_SWEEP, load_raw, validate
    from raybench.sweep import run_sweep

    rates = {}
    for n in (1, workers):
        with tempfile.TemporaryDirectory(prefix="raybench-ddp-") as d:
            raw = load_raw(sweep, [*overrides, f"train.num_workers={n}", "train.cpus_per_worker=1",
                                   "eval.val_plots=false"])
            raw.setdefault("tune", {})["search_space"] = {}  # the base configuration only (an override merges)
            cfg = validate(raw, str(sweep or DEFAULT_SWEEP))
            cfg.storage = str(Path(d) / "results")
            cfg.mlflow.tracking_uri = f"sqlite:///{Path(d) / 'mlflow.db'}"
            result = run_sweep(cfg)
            client = MlflowClient(result.tracking_uri)
            run = one_trial_run(result)
            hist = sorted(client.get_metric_history(run.info.run_id, "time/train_samples_per_s"),
                          key=lambda m: m.step)
            later = [m.value for m in hist[1:]] or [m.value for m in hist]
            rates[n] = sum(later) / len(later)
        print(f"[bench] {n} worker(s): {rates[n]:.1f} training windows/s (mean of epochs 2-{len(hist)})", flush=True)
    ratio = rates[workers] / rates[1]
    goal = DDP_GOAL if workers == 2 else 0.8 * workers
    print(f"DDP {workers} workers / 1 process: {ratio:.2f}  limit {goal:.2f}  ratio {ratio / goal:.2f}")
    return {"rates": rates, "speedup": ratio}
