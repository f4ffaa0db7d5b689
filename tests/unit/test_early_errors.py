"""Errors that need only the file listing come before Ray starts: a missing data.root, a layout that
does not match, fewer subjects than data.split.folds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from raybench.config import SWEEPS_DIR, load
from raybench.data.datasets import LayoutError
from raybench.data.store import PrepareError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if the sweep starts Ray (or reaches the decoding stage)."""
    import ray

    import raybench.data.store as store

    def started(*a, **k):
        raise AssertionError("Ray was started before the error")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", started)
    monkeypatch.setattr(store, "build", started)


def _cfg(tmp_path, *overrides):
    return load(SWEEPS_DIR / "smoke.yaml", [f"data.store_dir={tmp_path / 'stores'}", *overrides])


def test_a_missing_root_fails_before_ray_starts(no_ray, tmp_path):
    from raybench.sweep import run_sweep

    missing = tmp_path / "nowhere"
    with pytest.raises(LayoutError, match="data.root") as e:
        run_sweep(_cfg(tmp_path, "data.dataset=ravdess", f"data.root={missing}"))
    assert str(missing) in str(e.value) and "Actor_" in str(e.value)  # names the root and the expected layout


def test_a_layout_that_does_not_match_fails_before_ray_starts(no_ray, tmp_path):
    from raybench.sweep import run_sweep

    root = tmp_path / "not_ravdess"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "a.mp4").write_bytes(b"")
    with pytest.raises(LayoutError) as e:
        run_sweep(_cfg(tmp_path, "data.dataset=ravdess", f"data.root={root}"))
    assert str(root) in str(e.value) and "videos/a.mp4" in str(e.value) and "Actor_" in str(e.value)


def test_fewer_subjects_than_folds_fails_before_ray_starts_and_names_the_key(no_ray, tiny_ravdess, tmp_path):
    from raybench.sweep import run_sweep

    with pytest.raises(PrepareError) as e:  # tiny_ravdess has 3 actors
        run_sweep(_cfg(tmp_path, "data.dataset=ravdess", f"data.root={tiny_ravdess}", "data.split.folds=5",
                       "data.fold=0"))
    assert "data.split.folds=5" in str(e.value) and "found 3" in str(e.value) and "at most 3" in str(e.value)


def test_the_command_line_reports_a_missing_root_without_starting_ray(tmp_path):
    env = dict(os.environ, RAYBENCH_CACHE=str(tmp_path / "cache"), RAYBENCH_RESULTS=str(tmp_path / "results"))
    r = subprocess.run([sys.executable, "-m", "raybench.sweep", "sweeps/smoke.yaml", "data.dataset=ravdess",
                        f"data.root={tmp_path / 'nowhere'}"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "raybench: data preparation failed" in r.stderr and str(tmp_path / "nowhere") in r.stderr
    assert "Traceback" not in out and "Ray instance" not in out and not (tmp_path / "results").exists()


def test_an_unusable_encoder_folder_fails_before_ray_starts(no_ray, tmp_path, make_encoder):
    from raybench.sweep import run_sweep

    missing = tmp_path / "wavlm-base-plus"
    with pytest.raises(PrepareError, match="data.audio.encoder.path: no folder") as e:
        run_sweep(_cfg(tmp_path, f"data.audio.encoder.path={missing}"))
    assert str(missing) in str(e.value)
    folder = make_encoder(tmp_path / "w", "hubert")
    with pytest.raises(PrepareError, match=r"data.audio.encoder.layer must be 'all' or 0..2 for .*\(hubert, 2 layers\)"):
        run_sweep(_cfg(tmp_path, f"data.audio.encoder.path={folder}", "data.audio.encoder.layer=5"))


def test_a_file_store_mlflow_refuses_fails_before_ray_starts_and_names_its_source(no_ray, tmp_path, monkeypatch):
    from raybench.config import ConfigError
    from raybench.sweep import run_sweep

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    runs = tmp_path / "mlruns"
    with pytest.raises(ConfigError) as e:
        run_sweep(_cfg(tmp_path, f"mlflow.tracking_uri=file://{runs}"))
    assert "mlflow.tracking_uri" in str(e.value) and f"file://{runs}" in str(e.value)
    assert "sqlite:///" in str(e.value) and "MLFLOW_ALLOW_FILE_STORE=true" in str(e.value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(runs))  # a plain path is a file store too
    with pytest.raises(ConfigError, match=r"\$MLFLOW_TRACKING_URI is '" + str(runs)):
        run_sweep(_cfg(tmp_path))
    assert not runs.exists()


def test_a_file_store_is_accepted_where_mlflow_is_told_to_open_it(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from raybench.tracking import store_problem

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    assert store_problem(uri, "mlflow.tracking_uri") is None
    assert MlflowClient(uri).search_experiments()  # and MLflow opens it then (its Default experiment)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "false")
    assert "MLFLOW_ALLOW_FILE_STORE" in store_problem(uri, "mlflow.tracking_uri")
    assert store_problem(f"sqlite:///{tmp_path / 'm.db'}", "mlflow.tracking_uri") is None


def test_a_tracking_server_that_is_not_there_fails_at_once_one_that_answers_passes(no_ray, tmp_path):
    import http.server
    import socket
    import threading
    import time

    from raybench.config import ConfigError
    from raybench.sweep import run_sweep
    from raybench.tracking import store_problem

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.time()
    with pytest.raises(ConfigError) as e:
        run_sweep(_cfg(tmp_path, f"mlflow.tracking_uri=http://127.0.0.1:{port}"))
    assert time.time() - t0 < 30  # not MLflow's minutes of retries
    assert f"http://127.0.0.1:{port}" in str(e.value) and "mlflow server" in str(e.value)
    assert "mlflow.tracking_uri" in str(e.value)

    class NotFound(http.server.BaseHTTPRequestHandler):  # a server that answers, if only with 404
        def do_GET(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert store_problem(f"http://127.0.0.1:{server.server_port}/", "mlflow.tracking_uri") is None
    finally:
        server.shutdown()


def test_the_report_names_a_file_store_it_cannot_open(tmp_path, monkeypatch, capsys):
    from raybench.report import main

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    assert main(["--tracking-uri", str(tmp_path / "mlruns"), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert "--tracking-uri" in err and "file store" in err and "Traceback" not in err


def test_the_report_looks_for_a_local_storage_folders_store_there(tmp_path, capsys):
    from raybench.report import main

    assert main(["--storage", str(tmp_path / "results")]) == 2  # no sweep wrote there: named, nothing made
    err = capsys.readouterr().err
    assert f"no MLflow store at sqlite:///{tmp_path / 'results' / 'mlflow.db'}" in err and "--storage" in err
    assert not (tmp_path / "results").exists()
    assert main(["--storage", "s3://bucket/results"]) == 2  # its store is local: said, not the default read
    assert "--storage s3://bucket/results" in capsys.readouterr().err


def test_trials_that_need_gpus_the_cluster_lacks_fail_before_the_decoding(tmp_path, monkeypatch):
    import ray

    import raybench.data.store as store
    import raybench.trials as trials
    from raybench.config import ConfigError
    from raybench.sweep import run_sweep

    def decoded(*a, **k):
        raise AssertionError("the clips were decoded before the error")

    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # a running Ray of 2 CPUs and no GPU
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    # whose autoscaler starts nothing (read from a real Ray's GCS otherwise: 13 s with none running here,
    # and a test of this process's own checks should ask no Ray at all)
    monkeypatch.setattr(trials, "read_autoscaler_pending", lambda: 0)
    monkeypatch.setattr(store, "build", decoded)
    with pytest.raises(ConfigError, match=r"'train.use_gpu' is true .* the cluster has 0 GPU"):
        run_sweep(_cfg(tmp_path, "train.use_gpu=true"))


def test_the_sweep_waits_for_the_nodes_a_cluster_is_starting_before_it_sizes_its_trials(tmp_path, monkeypatch,
                                                                                          capsys):
    """prepare_all's wiring: a cluster (its Ray running) whose autoscaler starts its GPU node as the
    sweep begins: the sweep waits (one 2 s poll here), then sizes its trials on the node and goes on
    to the decoding; without the wait it stopped with 'the cluster has 0 GPU(s)'."""
    import ray

    import raybench.data.store as store
    import raybench.trials as trials
    from raybench.sweep import run_sweep

    class Decoding(Exception):
        pass

    def decoded(*a, **k):
        raise Decoding

    # the autoscaler reports one node starting, which joins right after; then it reports none
    reports, joined = iter([1, 0]), []

    def pending():
        p = next(reports, 0)
        joined.append(True)
        return p

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0, "GPU": 1.0} if joined else {"memory": 1e9})
    monkeypatch.setattr(trials, "read_autoscaler_pending", pending)
    monkeypatch.setattr(store, "build", decoded)
    with pytest.raises(Decoding):
        run_sweep(_cfg(tmp_path, "train.use_gpu=true", "train.num_workers=1"))
    out = capsys.readouterr().out
    assert "waiting for the cluster's nodes" in out and "the cluster has 2 CPU(s), 1 GPU(s) after" in out, out


def test_buckets_that_do_not_answer_fail_before_ray_starts_naming_each_setting(no_ray, tmp_path, monkeypatch):
    import socket

    from raybench.config import ConfigError
    from raybench.sweep import run_sweep

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")  # pyarrow asks no instance-metadata service then
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    s3 = f"s3://results/x?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    gs = f"gs://stores/y?endpoint_override=127.0.0.1:{port}&scheme=http&anonymous=true&retry_limit_seconds=1"
    with pytest.raises(ConfigError) as e:
        run_sweep(_cfg(tmp_path, f"storage={s3}", f"data.store_dir={gs}"))
    problems = e.value.problems
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"storage={s3}: OSError") and "Could not connect" in problems[0]
    assert problems[1].startswith(f"data.store_dir={gs}: OSError")


def test_a_bucket_probe_gives_up_after_its_timeout_and_a_local_path_is_not_probed(tmp_path):
    import socket
    import time

    from raybench.storage import reach_problem

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.time()  # pyarrow's GCS client retries a closed endpoint for minutes unless told otherwise
    problem = reach_problem(f"gs://b/x?endpoint_override=127.0.0.1:{port}&scheme=http&anonymous=true", "storage",
                            timeout_s=1.0)
    assert time.time() - t0 < 10 and "did not answer within 1 s" in problem
    assert reach_problem(str(tmp_path / "nowhere"), "storage", timeout_s=0.0) is None


def test_a_dry_run_lists_the_data_and_trials_and_starts_nothing(no_ray, tiny_ravdess, tmp_path, capsys,
                                                                monkeypatch):
    from raybench.sweep import main
    from raybench.trials import planned_trials

    monkeypatch.setenv("RAYBENCH_RESULTS", str(tmp_path / "results"))
    args = ["smoke", "data.dataset=ravdess", f"data.root={tiny_ravdess}", f"data.store_dir={tmp_path / 'stores'}",
            "tune.search_space={window.length: {grid: [4, 8]}, train.lr: {grid: [0.01, 0.001, 0.0001]}}"]
    assert main(["--dry-run", *args]) == 0
    out = capsys.readouterr().out
    clips = len(list(tiny_ravdess.rglob("*.mp4")))
    assert clips and f"data ravdess: {clips} clips under {tiny_ravdess}" in out
    assert f"{clips} to decode, 0 decoded, 0 found bad before" in out  # a store not built yet
    n = planned_trials(load(SWEEPS_DIR / "smoke.yaml", args[1:]))
    assert n == 6 and "trials: 6 = 2 window.length x 3 train.lr x 1 tune.num_samples" in out
    assert "selecting on val/uar (max)" in out and "raybench-ravdess" in out
    # nothing written: no clip store, no MLflow store, no Tune results
    assert not (tmp_path / "stores").exists() and not (tmp_path / "results").exists()
    assert main(["--dry-run", *args[:2], "data.root=/nowhere"]) == 1  # the layout checks of a real run
    assert "data.root" in capsys.readouterr().err
