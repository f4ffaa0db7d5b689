"""report.collect asks the MLflow store for the named sweeps' runs only, and follows MLflow's pages
(search_runs answers 50,000 runs at most at a time, search_experiments 1,000: a store holding more
lost the rest before 2026-12-04). A real (SQLite) MLflow store; the page sizes lowered to 2 and 1."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from raybench import tracking
from raybench.report import ReportError, collect


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    for sweep, n in (("s1", 3), ("s2", 2)):  # each in an experiment of its own
        exp = client.create_experiment(f"e-{sweep}", artifact_location=(tmp_path / sweep).as_uri())
        parent = client.create_run(exp, tags={"raybench.kind": "sweep", "raybench.sweep_id.parent": sweep}).info.run_id
        client.log_metric(parent, "test_merged/ccc", 0.5 if sweep == "s1" else 0.25)
        for i in range(n):
            client.create_run(exp, tags={"raybench.kind": "trial", "raybench.sweep_id": sweep, "raybench.trial_id":
                                         f"{sweep}-t{i}", "method": "m", "dataset": "d", "raybench.best": "true"})
    return uri


def test_every_page_is_read_and_only_the_named_sweeps_runs_are_asked_for(store, monkeypatch):
    monkeypatch.setattr(tracking, "SEARCH_PAGE", 2)
    monkeypatch.setattr(tracking, "EXPERIMENTS_PAGE", 1)  # (the Default experiment and the two sweeps')
    asked = []
    search_runs = MlflowClient.search_runs

    def spy(self, experiment_ids, filter_string="", *a, **k):
        page = search_runs(self, experiment_ids, filter_string, *a, **k)
        asked.append((filter_string, [r.data.tags.get("raybench.sweep_id") for r in page]))
        return page

    monkeypatch.setattr(MlflowClient, "search_runs", spy)
    every = collect(store)
    assert sorted(m.trial_id for m in every) == ["s1-t0", "s1-t1", "s1-t2", "s2-t0", "s2-t1"]  # 3 pages of 2
    assert {m.sweep_id: m.merged for m in every} == {"s1": {"test_merged/ccc": 0.5}, "s2": {"test_merged/ccc": 0.25}}
    asked.clear()
    two = collect(store, sweeps=["s2"])
    assert sorted(m.trial_id for m in two) == ["s2-t0", "s2-t1"]
    assert all(m.merged == {"test_merged/ccc": 0.25} for m in two)
    fetched = [s for _, page in asked for s in page]
    assert "s1" not in fetched and fetched.count("s2") == 2  # s1's trial runs never read
    with pytest.raises(ReportError, match=r"--sweep nope: no trial runs of that sweep in .* \(sweeps there: s1, s2\)"):
        collect(store, sweeps=["nope"])
    with pytest.raises(ReportError, match="a sweep id has no quote"):
        collect(store, sweeps=["x' or '1'='1"])
