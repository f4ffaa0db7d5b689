"""A real two-node Ray cluster on this machine, a real MLflow tracking server on loopback, and the
smoke sweep submitted with ``ray job submit``, the way README "Run on a cluster" says; and an
autoscaling cluster (Ray's fake node provider) whose GPU nodes join after the sweep's driver starts.

The test stops the in-process Ray of the other integration tests first (one Ray per machine: see
README "Known problems") and starts it again at the end.
"""

from __future__ import annotations

import json
import os
import re
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
def local_ray_stopped():
    """The in-process Ray of the other integration tests stopped while this module's clusters run,
    started again afterwards."""
    import ray

    had_ray = ray.is_initialized()
    if had_ray:
        ray.shutdown()
    yield
    if had_ray:
        init_local_ray()


def _autoscaling_config(tmp: Path, gcs_port: int) -> Path:
    """A Ray autoscaler config for Ray's fake node provider (``RAY_FAKE_CLUSTER=1``: its "instances" are
    Ray nodes started on this machine with the resources the node type declares): a head without CPUs,
    as in cluster/*.yaml, and three 1-GPU nodes the autoscaler launches after the head is up (min_workers),
    as ``ray up`` does (the fake provider starts them one after the other, about 5 s apart here)."""
    path = tmp / "autoscaling.yaml"
    path.write_text(json.dumps({
        "cluster_name": "fake", "max_workers": 3, "upscaling_speed": 1.0, "idle_timeout_minutes": 5,
        "provider": {"type": "fake_multinode", "gcs_address": f"127.0.0.1:{gcs_port}", "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "ray.worker.gpu": {"resources": {"CPU": 1, "GPU": 1}, "node_config": {}, "min_workers": 3,
                               "max_workers": 3}},
        "head_node_type": "ray.head.default", "auth": {"ssh_user": "ray"}, "docker": {},
        **{k: [] for k in ("initialization_commands", "setup_commands", "head_setup_commands",
                           "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands",
                           "cluster_synced_files", "rsync_exclude", "rsync_filter")},
        "file_mounts": {}, "file_mounts_sync_continuously": False}))
    return path


@pytest.mark.timeout(300)
def test_a_sweep_on_a_cluster_just_launched_waits_for_its_gpu_nodes(local_ray_stopped, tmp_path):
    """A cluster that answers before its GPU nodes have joined (``ray up`` returns when the head is up;
    the autoscaler launches the workers after, one at a time here): the sweep's driver, started at once,
    waits while the autoscaler reports nodes starting and sizes its trials on all three nodes (before
    2026-12-02 it stopped: 'the cluster has 0 GPU(s)'). The autoscaler's status record is Ray's own,
    read as ``ray status`` reads it."""
    gcs_port = free_port()
    ray_dir = tempfile.mkdtemp(prefix="rbf", dir="/tmp")
    env = dict(os.environ, RAY_FAKE_CLUSTER="1", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               RAY_USAGE_STATS_ENABLED="0", RAY_ADDRESS=f"127.0.0.1:{gcs_port}")
    ray_bin = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    head = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
    try:
        subprocess.run([ray_bin, "start", "--head", "--port", str(gcs_port), "--num-cpus", "0",
                        "--autoscaling-config", str(_autoscaling_config(tmp_path, gcs_port)),
                        "--include-dashboard", "false", "--temp-dir", ray_dir],
                       env=head, check=True, capture_output=True, timeout=180)
        # the driver as a job's (RAY_ADDRESS set), doing what the sweep's prepare_all does once Ray is up
        driver = ("import ray\n"
                  "from raybench.config import SWEEPS_DIR, load\n"
                  "from raybench.trials import size_trials, wait_for_nodes\n"
                  "cfg = load(SWEEPS_DIR / 'smoke.yaml', ['train.use_gpu=true', 'train.num_workers=1'])\n"
                  "ray.init()\n"
                  "print('at start', ray.cluster_resources().get('GPU', 0), flush=True)\n"
                  "wait_for_nodes(cfg, poll_s=0.5)\n"
                  "print('sized', size_trials(cfg), flush=True)\n")
        r = subprocess.run([sys.executable, "-c", driver], env=env, capture_output=True, text=True, timeout=240)
    finally:  # (every Ray process on the machine: this test runs before the module's other cluster starts)
        subprocess.run([ray_bin, "stop", "--force"], env=head, capture_output=True, timeout=120)
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # not every node had joined when the driver started (the first may have: the driver takes a few
    # seconds to start), and it waited for the others
    assert re.search(r"at start [012]\.?0?\n", r.stdout), r.stdout
    assert "waiting for the cluster's nodes: it has " in r.stdout and "its autoscaler " in r.stdout, r.stdout
    assert "the cluster has 3 CPU(s), 3 GPU(s) after" in r.stdout, r.stdout
    assert "sized (1.0, 3)" in r.stdout, r.stdout  # one trial on each GPU node: all three were waited for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, local_ray_stopped):
    """mlflow server + ray head + a second ray node, stopped afterwards."""
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
