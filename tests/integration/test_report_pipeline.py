"""python -m raybench.report on an MLflow store made by two sweeps in this session: the cells hold the
sweeps' own numbers, empty cells stay empty, the page renders in a real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from raybench.config import SWEEPS_DIR, load

COMMON = ["data.synth.actors=4", "data.synth.seconds=1.0", "data.fps=8", "data.synth.videos=6",
          "data.synth.video_seconds=8.0", "train.epochs=2", "train.num_workers=1", "window.hop=4"]


@pytest.fixture(scope="module")
def store(ray_session, tmp_path_factory):
    """Sweep A: audio_only and av_fusion on both synthetic sets, windows 4 and 8, two seeds each, every
    method's best tested (eval.test: each_method); sweep B: video_only on synthetic RAVDESS only, one
    seed (so video_only x synthetic Aff-Wild2 is a cell that was never run), with the robustness and
    cross-corpus tracks (tested on synthetic CREMA-D). Sweep A trains with modality dropout."""
    from raybench.report import main
    from raybench.sweep import run_sweep

    tmp = tmp_path_factory.mktemp("report")

    def cfg(*o):  # storage= a local folder: the sweeps' MLflow store is its mlflow.db (found by --storage)
        return load(SWEEPS_DIR / "smoke.yaml", [*COMMON, *o, f"storage={tmp / 'results'}"])

    a = run_sweep(cfg("name=report-a", "tune.repeats=2", "eval.test=each_method", "eval.robustness=[audio_snr0]",
                      "train.modality_dropout=0.4",
                      "tune.search_space={method.name: {grid: [audio_only, av_fusion]}, "
                      "data.dataset: {grid: [synthetic_ravdess, synthetic_affwild2]}}"))
    b = run_sweep(cfg("name=report-b", "method.name=video_only", "tune.search_space={window.length: {grid: [8]}}",
                      "eval.robustness=[audio_missing, video_missing, video_occlusion]",
                      "eval.cross_corpus=[{dataset: synthetic_crema_d}, "
                      "{dataset: synthetic_ravdess, labels: {calm: neutral, angry: angry}}]"))
    assert a.failed == 0 and b.failed == 0 and len(a.trials) == 16 and len(b.trials) == 1
    assert a.tracking_uri == b.tracking_uri == f"sqlite:///{tmp / 'results' / 'mlflow.db'}"
    out = tmp / "results" / "report"  # --storage's default report folder
    rc = main(["--storage", str(tmp / "results"), "--log-to-parent",
               "--screenshot", str(tmp / "shot.png"), "--screenshot-height", "1000"])
    assert rc == 0
    return {"a": a, "b": b, "out": out, "uri": a.tracking_uri, "shot": tmp / "shot.png",
            "cells": {(c["method"], c["dataset"]): c for c in json.loads((out / "cells.json").read_text())}}


def test_every_cell_holds_its_methods_best_configuration_as_the_sweep_saw_it(store):
    import pandas as pd

    rows = [{"method": t["cfg"].method.name, "dataset": t["dataset"], "window": t["params"].get("window.length", 8),
             "sweep": s, "val": t["best_val"], "test": t.get("test", {}), "run": t["trial_id"]}
            for s in ("a", "b") for t in store[s].trials]
    df = pd.DataFrame(rows).sort_values("run")  # trial order: a tie goes to the first, as the sweep chooses
    assert set(store["cells"]) == {(m, d) for m, d in df[["method", "dataset"]].itertuples(index=False)}
    for (method, dataset), g in df.groupby(["method", "dataset"]):
        cell = store["cells"][(method, dataset)]
        means = g.groupby(["sweep", "window"], sort=False)["val"].mean()
        best = means.idxmax()
        chosen = g[(g["sweep"] == best[0]) & (g["window"] == best[1])]
        vals = chosen["val"].to_numpy()
        assert cell["val"]["mean"] == pytest.approx(vals.mean()) and cell["val"]["n"] == len(vals)
        assert cell["val"]["std"] == pytest.approx(vals.std())
        if len(vals) > 1:
            sem = stats.sem(vals)
            lo, hi = stats.t.interval(0.95, len(vals) - 1, loc=vals.mean(), scale=sem) if sem > 0 else [vals.mean()] * 2
            assert (cell["val"]["ci_low"], cell["val"]["ci_high"]) == pytest.approx((lo, hi))
        else:
            assert cell["val"]["ci_low"] is None  # one model: no interval
        assert cell["candidates"] == len(means)
        # the sweep tested exactly this configuration's models (eval.test: each_method; sweep B: its only one)
        tested = g[g["test"].map(bool)]
        assert sorted(tested["run"]) == sorted(chosen["run"])
        metric = "test/ccc" if dataset == "synthetic_affwild2" else "test/uar"
        xs = np.array([t[metric] for t in chosen["test"]])
        assert cell["test"][metric]["mean"] == pytest.approx(xs.mean())
        assert cell["test"][metric]["std"] == pytest.approx(xs.std())
        assert cell["cost"]["parameters"] > 0 and cell["cost"]["gpu_hours"] == 0  # CPU trials hold no GPU


def test_a_method_never_run_on_a_dataset_leaves_an_empty_cell(store):
    assert ("video_only", "synthetic_affwild2") not in store["cells"]
    md = (store["out"] / "leaderboard.md").read_text()
    head = next(line for line in md.splitlines() if line.startswith("| method | synthetic_affwild2"))
    row = next(line for line in md.splitlines() if line.startswith("| video_only |"))
    assert head.split("|")[2].strip().startswith("synthetic_affwild2")
    assert row.split("|")[2].strip() == "" and row.split("|")[3].strip().startswith("0.")
    html = (store["out"] / "index.html").read_text()
    assert html.count('<td class="empty"></td>') == 1
    tex = (store["out"] / "leaderboard.tex").read_text().split("\\end{table}")[0]  # the validation table
    row = next(line for line in tex.splitlines() if line.startswith("video\\_only &"))
    c = store["cells"][("video_only", "synthetic_ravdess")]
    assert row.split(" & ")[1] == "--" and row.split(" & ")[2].removeprefix("\\textbf{").startswith(f"{c['val']['mean']:.3f}")


def test_the_report_is_logged_to_each_sweeps_parent_run(store):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store["uri"])
    for s in ("a", "b"):
        arts = {a.path for a in client.list_artifacts(store[s].parent_run_id, "report")}
        assert {"report/index.html", "report/leaderboard.md", "report/cells.json"} <= arts


def _browser():
    from raybench.report import find_browser

    b = find_browser()
    if b is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Chromium for the report's browser test (.ci/run installs it)")
        pytest.skip("no Chromium on the PATH (apt-get install chromium)")
    return b


def test_the_page_renders_in_headless_chromium_with_its_tables_and_figures(store):
    browser = _browser()
    page = (store["out"] / "index.html").resolve().as_uri()
    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                        "--virtual-time-budget=5000", "--dump-dom", page], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    assert '<table id="leaderboard">' in dom and "<th>audio_only</th>" in dom
    shown, total = map(int, re.search(r'<body data-figures="(\d+)/(\d+)"', dom).groups())
    assert total >= 3 and shown == total  # every embedded figure decoded (scores, curves, the trials' own)
    console = [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln]
    assert not console, console  # no script error, no console message at all
    with open(store["shot"], "rb") as f:  # the --screenshot picture: a PNG of the asked size
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (1280, 1000)


def test_unknown_experiment_or_sweep_is_named_with_what_the_store_has(store, capsys):
    from raybench.report import main

    assert main(["--tracking-uri", store["uri"], "--experiment", "nope"]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "raybench-report-a" in err
    assert main(["--tracking-uri", store["uri"], "--sweep", "nope-1"]) == 2
    assert store["a"].sweep_id in capsys.readouterr().err


def test_robustness_and_cross_corpus_are_logged_with_their_label_map(store):
    import pandas as pd
    from mlflow.tracking import MlflowClient
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    (t,) = store["b"].trials
    client = MlflowClient(store["uri"])
    run = client.search_runs([store["b"].experiment_id], f"tags.`raybench.trial_id` = '{t['trial_id']}'")[0]
    m, tags = run.data.metrics, run.data.tags
    # robustness: a condition video_only cannot see is named, not logged as clean numbers
    assert "test_robust/audio_missing/uar" not in m and "video" in tags["raybench.robust_skipped.audio_missing"]
    assert m["test_robust/clean/uar"] == pytest.approx(m["test/uar"])
    assert {"test_robust/video_missing/uar", "test_robust/video_occlusion/uar"} <= set(m)
    # cross-corpus: the six classes synthetic RAVDESS and CREMA-D share, every CREMA-D clip (4 actors x 6)
    with open(client.download_artifacts(run.info.run_id, "cross_corpus/synthetic_crema_d.json")) as f:
        rec = json.load(f)
    assert [(c["source"], c["target"]) for c in rec["classes"]] == [
        ("neutral", "neutral"), ("happy", "happy"), ("sad", "sad"), ("angry", "anger"), ("fearful", "fear"),
        ("disgust", "disgust")]
    assert rec["clips"] == 24 and rec["excluded"] == 0 and m["test_cross/synthetic_crema_d/clips"] == 24
    preds = pd.read_csv(client.download_artifacts(run.info.run_id, "cross_corpus/predictions_synthetic_crema_d.csv"))
    assert len(preds) == 24 and preds["pred"].between(0, 5).all()
    assert m["test_cross/synthetic_crema_d/uar"] == pytest.approx(balanced_accuracy_score(preds["label"], preds["pred"]))
    assert m["test_cross/synthetic_crema_d/acc"] == pytest.approx(accuracy_score(preds["label"], preds["pred"]))
    # an explicit map of two classes (calm -> neutral): the target's neutral (4 actors x 1) and angry (4 x 2)
    # clips relabelled to the two shared classes, the other 48 left out
    with open(client.download_artifacts(run.info.run_id, "cross_corpus/synthetic_ravdess.json")) as f:
        rec = json.load(f)
    assert [c["name"] for c in rec["classes"]] == ["calm_as_neutral", "angry"]
    assert (rec["clips"], rec["excluded"]) == (12, 48)
    preds = pd.read_csv(client.download_artifacts(run.info.run_id, "cross_corpus/predictions_synthetic_ravdess.csv"))
    assert sorted(preds["label"].value_counts().items()) == [(0, 4), (1, 8)] and preds["pred"].isin([0, 1]).all()
    assert m["test_cross/synthetic_ravdess/uar"] == pytest.approx(balanced_accuracy_score(preds["label"], preds["pred"]))
    assert "test_cross/synthetic_ravdess/recall_calm_as_neutral" in m
    cell = store["cells"][("video_only", "synthetic_ravdess")]
    assert cell["cross"]["synthetic_crema_d"]["mean"] == pytest.approx(m["test_cross/synthetic_crema_d/uar"])
    assert set(cell["robust"]) == {"clean", "video_missing", "video_occlusion"}
    html = (store["out"] / "index.html").read_text()
    assert '<table id="cross">' in html and '<table id="robustness">' in html


def test_audio_noise_is_logged_for_every_tested_model_that_reads_audio(store):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store["uri"])
    tested = [t for t in store["a"].trials if t.get("test")]
    assert len(tested) == 8  # 2 methods x 2 datasets x 2 seeds, each method's best (eval.test: each_method)
    for t in tested:
        run = client.search_runs([store["a"].experiment_id], f"tags.`raybench.trial_id` = '{t['trial_id']}'")[0]
        main = "ccc" if t["dataset"] == "synthetic_affwild2" else "uar"
        assert run.data.metrics[f"test_robust/clean/{main}"] == pytest.approx(t["test"][f"test/{main}"])
        assert f"test_robust/audio_snr0/{main}" in run.data.metrics  # audio_only and av_fusion both hear


def test_modality_dropout_trains_the_fused_models_without_a_modality_on_its_share_of_windows(store):
    """Sweep A trains with train.modality_dropout=0.4: av_fusion's windows lose audio or video (0.2 of
    them each, drawn per window), audio_only's none (it reads one modality)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store["uri"])
    for t in store["a"].trials:
        run = client.search_runs([store["a"].experiment_id], f"tags.`raybench.trial_id` = '{t['trial_id']}'")[0]
        m = run.data.metrics
        if t["cfg"].method.name == "audio_only":
            assert "train/windows_without_audio" not in m
            continue
        seen = m["train/windows_seen"]
        for k in ("train/windows_without_audio", "train/windows_without_video"):
            # binomial(seen, 0.2): within 5 standard deviations
            assert abs(m[k] - 0.2 * seen) <= 5 * (seen * 0.2 * 0.8) ** 0.5 + 1, (k, m[k], seen)
