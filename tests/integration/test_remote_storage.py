"""``data.root``, ``data.store_dir`` and ``storage`` on S3: a real S3 API (moto's server on loopback),
reached through pyarrow's S3 filesystem exactly as a bucket would be."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from local_ray import init_local_ray

pytestmark = pytest.mark.cloud  # leave out with -m "not cloud and not cluster"


@contextlib.contextmanager
def _local_server(cmd: list[str], log_path, url: str, what: str):
    """Start ``cmd`` (a storage server on loopback, in its own process group), wait until ``url``
    answers, and stop it afterwards."""
    log = open(log_path, "w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        end = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except Exception:  # noqa: BLE001 - not up yet
                assert time.time() < end, f"{what} did not start (see {log_path})"
                time.sleep(0.5)
        yield
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """An S3 endpoint with bucket ``raybench``; AWS credentials in the environment of this process
    and of the Ray workers (Ray is restarted so that its workers inherit them)."""
    import pyarrow.fs as pafs
    import ray

    port = _free_port()
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
             "AWS_EC2_METADATA_DISABLED": "true"}
    old = {k: os.environ.get(k) for k in creds}
    os.environ.update(creds)
    had_ray = ray.is_initialized()
    ray.shutdown()
    try:
        with _local_server([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                           tmp_path_factory.mktemp("s3") / "moto.log", f"http://127.0.0.1:{port}/", "moto server"):
            fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                                   access_key="testing", secret_key="testing", allow_bucket_creation=True)
            fs.create_dir("raybench")
            init_local_ray()
            try:
                yield {"fs": fs, "q": f"?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"}
            finally:
                ray.shutdown()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if had_ray:
            init_local_ray()


def _sweep_in_bucket(fs, scheme: str, q: str, tiny_ravdess, tmp_path, workers: int):
    """A smoke sweep whose dataset root, clip store and Tune storage are all in bucket ``raybench``
    (``scheme``: s3 or gs); checks what lands in the bucket and returns the result and config.
    ``workers``: 2 writes the checkpoints from a Ray Train worker group, 1 from the trial's own
    process (raybench's own checkpoints)."""
    import pyarrow.fs as pafs

    from raybench.config import SWEEPS_DIR, load
    from raybench.sweep import run_sweep

    pafs.copy_files(str(tiny_ravdess), "raybench/data/ravdess", source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)
    cfg = load(SWEEPS_DIR / "smoke.yaml", [
        "data.dataset=ravdess", f"data.root={scheme}://raybench/data/ravdess{q}",
        f"data.store_dir={scheme}://raybench/stores{q}", f"storage={scheme}://raybench/tune{q}",
        f"train.epochs={3 - workers}", f"train.num_workers={workers}", "tune.search_space={window.length: {grid: [4]}}"])
    cfg.mlflow.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = run_sweep(cfg)
    assert res.failed == 0 and len(res.trials) == 1
    prep = res.prepared["ravdess"]
    assert prep["decoded"] == 45 and not prep["bad"]
    assert prep["store_path"].startswith(f"{scheme}://raybench/stores/ravdess-")
    # the store's fingerprint (the MLflow dataset digest), not the URI's query string after it
    assert prep["store_path"].startswith(f"{scheme}://raybench/stores/ravdess-{prep['fingerprint']}")
    assert len(prep["fingerprint"]) == 16 and "?" not in prep["fingerprint"]

    def files(prefix):
        sel = pafs.FileSelector(prefix, recursive=True, allow_not_found=True)
        return [i.path for i in fs.get_file_info(sel) if i.type == pafs.FileType.File]

    store_files = files("raybench/stores")
    assert any(p.endswith(".parquet") and "/parts/part-" in p for p in store_files)
    assert any(p.endswith("/_COMPLETE.json") for p in store_files)
    assert any(p.endswith("raybench_sweep.json") for p in files(f"raybench/tune/{res.sweep_id}"))
    assert any(p.endswith("/best.pt") for p in files("raybench/tune"))
    if workers == 1:
        _own_checkpoints_in_bucket(fs, scheme, q, res)
    # the best trial was tested from its checkpoint in the bucket
    assert set(res.best["ravdess"]["test"]) == {"test/acc", "test/uar", "test/f1"}
    return res, cfg


def _own_checkpoints_in_bucket(fs, scheme: str, q: str, res) -> None:
    """A one-worker trial of 2 epochs kept its checkpoints in the bucket itself: the second complete, the
    first deleted."""
    import pyarrow.fs as pafs

    from raybench.train.checkpoints import TrialCheckpoints

    (t,) = res.trials
    folder = f"raybench/tune/{res.sweep_id}/checkpoints/{t['trial_id'].rsplit('/', 1)[-1]}"
    sel = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
    files = [i.path for i in fs.get_file_info(sel) if i.type == pafs.FileType.File]
    assert sorted(files) == [f"{folder}/epoch_000001/{n}" for n in ("best.pt", "complete.json", "last.pt")], files
    assert TrialCheckpoints(f"{scheme}://{folder}{q}").latest().path == f"{folder}/epoch_000001"


@pytest.mark.timeout(900)
def test_sweep_reads_data_and_writes_store_and_checkpoints_on_s3(s3, tiny_ravdess, tmp_path):
    from raybench.sweep import run_sweep

    res, cfg = _sweep_in_bucket(s3["fs"], "s3", s3["q"], tiny_ravdess, tmp_path, workers=2)
    # a second sweep over the same bucket reuses the store: nothing is decoded again
    cfg.train.num_workers, cfg.train.epochs = 1, 2  # (not part of the store's fingerprint)
    res2 = run_sweep(cfg)
    assert res2.prepared["ravdess"]["decoded"] == 0
    _own_checkpoints_in_bucket(s3["fs"], "s3", s3["q"], res2)
    assert res2.prepared["ravdess"]["store_path"] == res.prepared["ravdess"]["store_path"]


@pytest.mark.timeout(600)
def test_a_synthetic_set_with_a_bucket_root_is_generated_once_and_uploaded(s3):
    import pyarrow.fs as pafs

    from raybench.config import SWEEPS_DIR, load
    from raybench.data.store import PrepareError, prepare

    fs, q = s3["fs"], s3["q"]
    data = load(SWEEPS_DIR / "smoke.yaml", ["data.synth.actors=3", "data.synth.seconds=1.0",
                                             f"data.root=s3://raybench/synth{q}",
                                             f"data.store_dir=s3://raybench/stores{q}"]).data
    prep = prepare(data)
    sel = pafs.FileSelector("raybench/synth", recursive=True)
    uploaded = [i.path for i in fs.get_file_info(sel) if i.type == pafs.FileType.File]
    assert sum(p.endswith(".mp4") for p in uploaded) == len(prep.clips) == 45
    assert prep.decoded == 45 and prep.root.startswith("s3://raybench/synth")
    assert "raybench/synth/.raybench-synthetic.json" in uploaded  # written last, naming the settings
    # an upload cut short (files there, no marker) is made again, not taken for the set
    fs.delete_file("raybench/synth/.raybench-synthetic.json")
    for p in [p for p in uploaded if p.endswith(".mp4")][:10]:
        fs.delete_file(p)
    again = prepare(data)
    assert len(again.clips) == 45 and again.decoded == 0
    assert sum(i.path.endswith(".mp4") for i in fs.get_file_info(sel) if i.type == pafs.FileType.File) == 45
    # a set of other generator settings in that folder is refused, naming both
    other = load(SWEEPS_DIR / "smoke.yaml", ["data.synth.actors=4", "data.synth.seconds=1.0",
                                              f"data.root=s3://raybench/synth{q}",
                                              f"data.store_dir=s3://raybench/stores{q}"]).data
    with pytest.raises(PrepareError, match="holds a synthetic synthetic_ravdess generated with other data.synth"):
        prepare(other)
    # with no marker (uploaded before the marker existed): a folder whose files all belong to the set is
    # uploaded over (every file rewritten: that set, whole), one holding files the set has not is refused
    fs.delete_file("raybench/synth/.raybench-synthetic.json")
    assert len(prepare(other).clips) == 60  # the 3 actors' files are among the 4 actors' set
    fs.delete_file("raybench/synth/.raybench-synthetic.json")
    with pytest.raises(PrepareError, match="holds files that are not the synthetic synthetic_ravdess"):
        prepare(data)  # Actor_04's files are not the 3-actor set's


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """A Google Cloud Storage endpoint (gcp-storage-emulator, a JSON-API server) with bucket
    ``raybench``; raybench reaches it with ``anonymous=true`` in its gs:// URIs."""
    import shutil

    import pyarrow.fs as pafs

    port = _free_port()
    exe = shutil.which("gcp-storage-emulator") or pytest.fail("gcp-storage-emulator is not installed (dev extra)")
    with _local_server([exe, "start", "--host=127.0.0.1", f"--port={port}", "--in-memory", "--default-bucket=raybench"],
                       tmp_path_factory.mktemp("gcs") / "gcs.log", f"http://127.0.0.1:{port}/storage/v1/b",
                       "GCS emulator"):
        fs = pafs.GcsFileSystem(anonymous=True, endpoint_override=f"127.0.0.1:{port}", scheme="http")
        yield {"fs": fs, "q": f"?anonymous=true&endpoint_override=127.0.0.1:{port}&scheme=http"}


@pytest.mark.timeout(900)
def test_sweep_reads_data_and_writes_store_and_checkpoints_on_gcs(gcs, ray_session, tiny_ravdess, tmp_path):
    _sweep_in_bucket(gcs["fs"], "gs", gcs["q"], tiny_ravdess, tmp_path, workers=1)


@pytest.mark.parametrize("kind", ["s3", "gs"])
def test_a_bucket_that_is_not_there_is_named_before_the_prepare(kind, request):
    """pyarrow reports a missing bucket as a path not found, not an error: the probe asks for the bucket."""
    from raybench.storage import reach_problem

    server = request.getfixturevalue("s3" if kind == "s3" else "gcs")
    q = server["q"]
    assert reach_problem(f"{kind}://raybench/not/yet/written{q}", "storage") is None  # a new folder is fine
    problem = reach_problem(f"{kind}://no-such-bucket/results{q}", "storage")
    assert problem is not None and problem.startswith(f"storage={kind}://no-such-bucket/results")
    assert "no bucket 'no-such-bucket'" in problem
