"""A real two-node Ray cluster on this machine, a real MLflow tracking server on loopback, and the
smoke sweep submitted with ``ray job submit``, the way README "Run on a cluster" says.

The test stops the in-process Ray of the other integration tests first (one Ray per machine: see
README "Known problems") and starts it again at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from local_ray import init_local_ray

pytestmark = pytest.mark.cluster  # leave out with -m "not cloud and not cluster"

REPO = Path(__file__).resolve().parents[2]
TINY = ["data.synth.actors=4", "data.synth.seconds=1.0", "data.fps=8"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        try:
            out = check()
            if out:
                return out
        except Exception:  # noqa: BLE001 - the service is not up yet
            pass
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """mlflow server + ray head + a second ray node, stopped afterwards."""
    import ray

    had_ray = ray.is_initialized()
    if had_ray:
        ray.shutdown()
    tmp = tmp_path_factory.mktemp("cluster")
    ray_dirs = [tempfile.mkdtemp(prefix="rbh", dir="/tmp"), tempfile.mkdtemp(prefix="rbw", dir="/tmp")]
    mlflow_port, gcs_port, dash_port = free_port(), free_port(), free_port()
    uri = f"http://127.0.0.1:{mlflow_port}"
    env = dict(os.environ, RAYBENCH_CACHE=str(tmp / "cache"), RAYBENCH_RESULTS=str(tmp / "results"),
               RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    mlflow_log = open(tmp / "mlflow.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
         "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}", "--artifacts-destination", str(tmp / "artifacts"),
         "--workers", "1"],
        env=env, stdout=mlflow_log, stderr=subprocess.STDOUT, start_new_session=True)
    ray_bin = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    try:
        wait_until(lambda: urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200, 120, "mlflow server")
        # the head, as cluster/*.yaml start it: MLFLOW_TRACKING_URI in the Ray processes' environment
        subprocess.run([ray_bin, "start", "--head", "--port", str(gcs_port), "--num-cpus", "1",
                        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash_port),
                        "--include-dashboard", "true", "--temp-dir", ray_dirs[0]],
                       env=dict(env, MLFLOW_TRACKING_URI=uri), check=True, capture_output=True, timeout=180)
        subprocess.run([ray_bin, "start", "--address", f"127.0.0.1:{gcs_port}", "--num-cpus", "2",
                        "--temp-dir", ray_dirs[1]],
                       env=dict(env, MLFLOW_TRACKING_URI=uri), check=True, capture_output=True, timeout=180)

        def two_nodes():
            out = subprocess.run([ray_bin, "status", "--address", f"127.0.0.1:{gcs_port}"], env=env,
                                 capture_output=True, text=True, timeout=60).stdout
            active = out.split("Active:")[1].split("Pending:")[0]
            return active.count("node_") == 2 and "0.0/3.0 CPU" in out

        wait_until(two_nodes, 120, "two Ray nodes with 3 CPUs")
        yield {"env": env, "uri": uri, "dashboard": f"http://127.0.0.1:{dash_port}", "ray": ray_bin, "tmp": tmp}
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        mlflow_log.close()
        for d in ray_dirs:
            shutil.rmtree(d, ignore_errors=True)
        if had_ray:
            init_local_ray()


def submit(cluster, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    excludes = json.dumps({"excludes": [".git", ".gpu", "mlruns", "*.egg-info"]})
    return subprocess.run(
        [cluster["ray"], "job", "submit", "--address", cluster["dashboard"], "--working-dir", str(REPO),
         "--runtime-env-json", excludes, "--", "python", "-m", "raybench.sweep", *args],
        env=cluster["env"], cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(1200)
def test_smoke_sweep_submitted_as_a_job_logs_to_the_tracking_server(cluster):
    from mlflow.tracking import MlflowClient

    r = submit(cluster, "sweeps/smoke.yaml", *TINY)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-5000:]
    assert "succeeded" in out
    assert f"open them at:  {cluster['uri']}" in out  # the sweep says where its results went
    assert "Tune results and checkpoints:" in out
    # a quiet terminal: raybench's line per trial epoch, not Ray's per-rank reports or Data's per-epoch lines
    assert "[raybench] trial" in out and " epoch 2/2: train/loss " in out
    for noise in ("Reporting training result", "Execution plan of Dataset", "execution finished in",
                  "Checkpoint successfully created"):
        assert noise not in out, noise

    client = MlflowClient(cluster["uri"])
    (exp,) = [e for e in client.search_experiments() if e.name == "raybench-synthetic_ravdess"]
    runs = client.search_runs([exp.experiment_id])
    parents = [x for x in runs if x.data.tags.get("raybench.kind") == "sweep"]
    assert len(parents) == 1
    children = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 2
    for c in children:
        assert [m.step for m in client.get_metric_history(c.info.run_id, "val/uar")] == [0, 1]
        assert "config.yaml" in {a.path for a in client.list_artifacts(c.info.run_id)}
    assert "test/uar" in parents[0].data.metrics
    # artifacts went through the server to its artifact destination, not to the job's disk
    assert list((cluster["tmp"] / "artifacts").rglob("config.yaml"))


@pytest.mark.timeout(300)
def test_a_failing_sweep_fails_its_job(cluster):
    r = submit(cluster, "sweeps/smoke.yaml", "train.epoch=3", timeout=240)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "unknown key 'train.epoch'" in out and "failed" in out
