"""The report's arithmetic without MLflow: configurations, selection, intervals, empty cells."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from raybench.report import Model, Report, cells, index_html, leaderboard_md, leaderboard_tex, stat


def model(method, dataset, score, seed=0, lr="0.001", sweep="s1", status="FINISHED", metric="val/uar",
          mode="max", repeats=2, **metrics):
    params = {"method.name": method, "data.dataset": dataset, "train.seed": str(seed), "train.lr": lr,
              "tune.mode": mode, "tune.repeats": str(repeats), "mlflow.tracking_uri": f"sqlite:///x{seed}.db",
              "name": sweep}
    m = {"best/val/score": score, f"best/{metric}": score} if score is not None else {}
    m.update({k.replace("__", "/"): v for k, v in metrics.items()})
    return Model(f"run-{method}-{dataset}-{lr}-{seed}-{sweep}", "1", sweep, f"{sweep}/t{seed}", "", method, dataset,
                 status, params, m)


def test_interval_is_students_t_over_the_models():
    xs = [0.61, 0.70, 0.66]
    s = stat(xs)
    lo, hi = stats.t.interval(0.95, len(xs) - 1, loc=np.mean(xs), scale=stats.sem(xs))
    assert (s.lo, s.hi) == pytest.approx((lo, hi))
    assert s.mean == pytest.approx(np.mean(xs)) and s.std == pytest.approx(np.std(xs)) and s.n == 3
    one = stat([0.5])
    assert one.lo is None and one.hi is None and one.std == 0 and one.text() == "0.500 (n=1)"  # no "± 0.000"
    assert s.text() == f"{np.mean(xs):.3f} ± {np.std(xs):.3f} [{lo:.3f}, {hi:.3f}] (n=3)"


def test_each_cell_is_its_methods_best_configuration_on_mean_validation_over_seeds():
    ms = [model("a", "d1", 0.9, seed=0, lr="0.01"), model("a", "d1", 0.5, seed=1, lr="0.01"),  # mean 0.7
          model("a", "d1", 0.75, seed=0, lr="0.001"), model("a", "d1", 0.74, seed=1, lr="0.001"),  # mean 0.745
          model("a", "d1", None, seed=2, lr="0.1", status="FAILED"),
          model("b", "d1", 0.6, **{"test__uar": 0.55}), model("b", "d2", 0.3, metric="val/ccc")]
    table = cells(ms)
    assert set(table) == {("a", "d1"), ("b", "d1"), ("b", "d2")}  # (a, d2) never ran: no cell at all
    a = table[("a", "d1")]
    assert [m.params["train.lr"] for m in a.models] == ["0.001", "0.001"]
    assert a.val.mean == pytest.approx(0.745) and a.candidates == 2 and a.failed == 1
    assert a.config == {"train.lr": "0.001"}  # what sets it apart (the bookkeeping params do not)
    assert table[("b", "d2")].metric == "val/ccc"
    assert table[("b", "d1")].test["test/uar"].mean == pytest.approx(0.55)


def test_a_minimised_metric_picks_the_lowest_mean():
    ms = [model("a", "d", 0.3, lr="1", mode="min"), model("a", "d", 0.2, lr="2", mode="min")]
    assert cells(ms)[("a", "d")].models[0].params["train.lr"] == "2"


def test_the_same_configuration_in_two_sweeps_is_two_candidates():
    ms = [model("a", "d", 0.8, sweep="s1"), model("a", "d", 0.9, sweep="s2")]
    c = cells(ms)[("a", "d")]
    assert c.candidates == 2 and c.models[0].sweep_id == "s2" and c.config == {"sweep": "s2"}


def test_empty_cells_stay_empty_in_both_documents():
    ms = [model("a", "d1", 0.8, seed=0), model("a", "d1", 0.7, seed=1), model("b", "d2", 0.4)]
    table = cells(ms)
    rep = Report("sqlite:///x.db", table, ["a", "b"], ["d1", "d2"], ["s1"], len(ms))
    md = leaderboard_md(rep, "http://ui")
    row_a = next(line for line in md.splitlines() if line.startswith("| a |"))
    assert row_a.endswith("|  |") and "0.750 ± 0.050" in row_a  # a on d2: an empty cell, not a zero
    html = index_html(rep, "http://ui")
    assert html.count('<td class="empty"></td>') == 2  # (a, d2) and (b, d1)
    assert "http://ui/#/experiments/1/runs/run-a-d1-0.001-0-s1" in html


def test_a_trial_that_failed_after_scoring_is_a_candidate_as_in_the_sweeps_choice():
    ms = [model("a", "d", 0.9, lr="1", status="FAILED"), model("a", "d", 0.5, lr="2")]
    c = cells(ms)[("a", "d")]
    assert c.models[0].params["train.lr"] == "1" and c.failed == 1 and c.candidates == 2


def test_seeds_are_repeats_only_with_tune_repeats():
    ms = [model("a", "d", 0.9, seed=0, repeats=1), model("a", "d", 0.5, seed=1, repeats=1)]
    c = cells(ms)[("a", "d")]  # seeds listed in the search space: configurations of their own
    assert c.candidates == 2 and c.val.n == 1 and c.val.mean == 0.9 and c.config == {"train.seed": "0"}
    c = cells([model("a", "d", 0.9, seed=0), model("a", "d", 0.5, seed=1)])[("a", "d")]
    assert c.candidates == 1 and c.val.n == 2 and c.val.mean == pytest.approx(0.7)


def test_runs_selected_on_another_metric_are_left_out_and_said():
    notes = []
    ms = [model("a", "d", 0.6), model("a", "d", 0.7, seed=1), model("a", "d", 0.99, lr="9", metric="val/acc")]
    c = cells(ms, notes)[("a", "d")]
    assert c.metric == "val/uar" and c.val.mean == pytest.approx(0.65)
    assert notes == ["a on d: 1 run(s) selected on val/acc left out (the column compares val/uar)"]


def test_gpu_hours_count_each_workers_share_of_a_gpu():
    from raybench.results import gpu_hours
    from raybench.schema import TrainConfig

    assert gpu_hours(TrainConfig(num_workers=2, use_gpu=True), 3600) == 2.0
    assert gpu_hours(TrainConfig(num_workers=1, use_gpu=True, gpus_per_worker=0.25), 7200) == 0.5
    assert gpu_hours(TrainConfig(num_workers=4), 3600) == 0.0


def test_the_latex_tables_hold_each_cells_numbers_escaped_names_and_the_best_in_bold():
    ms = [model("late_fusion", "d_1", 0.8, seed=0, test__uar=0.70),
          model("late_fusion", "d_1", 0.7, seed=1, test__uar=0.60),
          model("b", "d_1", 0.9, seed=0), model("b", "d_2", 0.4, seed=0)]
    rep = Report("sqlite:///x.db", cells(ms), ["b", "late_fusion"], ["d_1", "d_2"], ["s1"], len(ms))
    tex = leaderboard_tex(rep)
    val, test = tex.split("\\end{table}")[:2]
    for t in (val, test):
        assert t.count("\\begin{tabular}{lcc}") == 1 and "\\toprule" in t and "\\bottomrule" in t
        rows = [ln for ln in t.splitlines() if ln.endswith("\\\\")]
        assert len(rows) == 3 and all(ln.count("&") == 2 for ln in rows)  # header + one row per method
        assert rows[0] == " & d\\_1 (" + ("val" if t is val else "test") + "/uar) & d\\_2 (" + \
            ("val" if t is val else "test") + "/uar) \\\\"
    mean, std = np.mean([0.8, 0.7]), np.std([0.8, 0.7])
    # b is best on d_1 (0.9 > 0.75) and the only one on d_2: bold; late_fusion never ran on d_2: --
    assert "b & \\textbf{0.900 ($n{=}1$)} & \\textbf{0.400 ($n{=}1$)} \\\\" in val
    assert f"late\\_fusion & {mean:.3f} $\\pm$ {std:.3f} ($n{{=}}2$) & -- \\\\" in val
    tmean, tstd = np.mean([0.70, 0.60]), np.std([0.70, 0.60])  # b was not tested: --; no bold on test
    assert f"late\\_fusion & {tmean:.3f} $\\pm$ {tstd:.3f} ($n{{=}}2$) & -- \\\\" in test
    assert "b & -- & -- \\\\" in test and "textbf" not in test
    assert tex.count("{") == tex.count("}")


def test_a_method_whose_every_run_failed_is_said_not_shown_as_not_run():
    ms = [model("a", "d1", 0.8), model("b", "d1", None, status="FAILED"), model("b", "d1", float("nan"), seed=1,
                                                                                 status="FAILED")]
    notes, unscored = [], {}
    table = cells(ms, notes, unscored)
    assert set(table) == {("a", "d1")} and unscored == {("b", "d1"): 2}
    assert notes == ["b on d1: all 2 run(s) failed or diverged (no finite validation score): no configuration to show"]
    rep = Report("sqlite:///x.db", table, ["a", "b"], ["d1"], ["s1"], len(ms), notes, unscored=unscored)
    row_b = next(line for line in leaderboard_md(rep, "http://ui").splitlines() if line.startswith("| b |"))
    assert row_b == "| b | all 2 runs failed |"
    assert "b & failed ($n{=}2$ runs) \\\\" in leaderboard_tex(rep).split("\\end{table}")[0]
    assert "all 2 runs failed" in index_html(rep, "http://ui")


def test_without_folds_or_repeats_each_run_is_a_configuration_as_the_sweeps_choice():
    """tune.num_samples over a choice can draw one configuration twice: two trials the sweep compares one by
    one (results.choose takes the best trial), not two repeats to average."""
    ms = [model("a", "d", 0.80, seed=0, lr="0.1", repeats=1), model("a", "d", 0.70, seed=0, lr="0.1", repeats=1),
          model("a", "d", 0.78, seed=0, lr="0.3", repeats=1), model("a", "d", 0.77, seed=0, lr="0.3", repeats=1)]
    for i, m in enumerate(ms):
        m.trial_id, m.run_id = f"s1/t{i}", f"run{i}"
    c = cells(ms)[("a", "d")]
    assert [m.trial_id for m in c.models] == ["s1/t0"] and c.val.n == 1 and c.candidates == 4


def test_swept_folds_are_one_configurations_models():
    ms = [model("a", "d", v, seed=0, lr=lr, repeats=1) for lr, v in (("1", 0.6), ("1", 0.8), ("2", 0.75), ("2", 0.7))]
    for i, m in enumerate(ms):
        m.params.update({"data.fold": str(i % 2), "tune.search_space.data.fold.grid": "[0, 1]"})
        m.trial_id, m.run_id = f"s1/t{i}", f"run{i}"
    c = cells(ms)[("a", "d")]
    assert c.candidates == 2 and c.val.mean == pytest.approx(0.725) and [m.params["data.fold"] for m in c.models] == \
        ["0", "1"]


def test_runs_of_an_unfinished_sweep_are_left_out_and_said():
    done = model("a", "d", 0.7, seed=0, sweep="s1")
    cut = model("a", "d", 0.9, seed=0, sweep="s2", status="KILLED")
    cut.tags = {"raybench.status_reason": "the sweep was interrupted (Ctrl-C); resume: ..."}
    running = model("a", "d", 0.95, seed=0, sweep="s3", status="RUNNING")
    asha = model("a", "d", 0.6, seed=0, sweep="s4", status="KILLED")
    asha.tags = {"raybench.status_reason": "scheduler: stopped after 2 of 4 epochs (tune.scheduler)"}
    notes = []
    c = cells([done, cut, running, asha], notes)[("a", "d")]
    assert c.models == [done] and c.candidates == 2  # ASHA's stopped run competes, the cut-short ones do not
    assert len(notes) == 1 and notes[0].startswith("a on d: 2 run(s) of sweeps that did not finish") and \
        "s2, s3" in notes[0]


def test_a_failed_test_and_merged_folds_are_shown_beside_the_test_number():
    from raybench.report import leader_rows

    ms = [model("a", "d", 0.8, seed=0, metric="val/ccc", test__ccc=0.5), model("a", "d", 0.7, seed=1, metric="val/ccc")]
    ms[1].tags = {"raybench.track_failed.test": "UnpicklingError: invalid load key"}
    for m in ms:
        m.merged = {"test_merged/ccc": 0.55}
    c = cells(ms)[("a", "d")]
    assert c.test_failed == 1 and c.test["test/ccc"].n == 1
    rep = Report("sqlite:///x.db", {("a", "d"): c}, ["a"], ["d"], ["s1"], 2)
    (_, (cell,)), = leader_rows(rep)
    assert cell["test"] == "0.500 (n=1); folds merged 0.550; test failed for 1 of 2 models"
