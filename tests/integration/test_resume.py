"""A sweep whose driver is killed mid-way resumes: finished trials are kept, MLflow runs not duplicated."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raybench.config import SWEEPS_DIR
from raybench.tracking import TRIAL_TAG

ROOT = Path(__file__).resolve().parents[2]


def _terminated(sweep_dir: Path) -> set[str]:
    """Trial ids that Tune's newest experiment state in ``sweep_dir`` records as TERMINATED."""
    import json

    states = sorted(sweep_dir.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    if not states:
        return set()
    try:
        state = json.loads(states[-1].read_text())
    except json.JSONDecodeError:  # Tune writes the file in place: read while it is being written (empty in CI
        return set()  # at ee43427); the caller polls again
    trials = [json.loads(t[0]) for t in state["trial_data"]]
    return {t["trial_id"] for t in trials if t.get("status") == "TERMINATED"}


def _callback_state_saved(sweep_dir: Path) -> bool:
    """Whether Tune's saved callback state is at least as new as its newest experiment state."""
    states = [p.stat().st_mtime for p in sweep_dir.glob("experiment_state-*.json")]
    callbacks = [p.stat().st_mtime for p in sweep_dir.glob("callback-states-*.pkl")]
    return bool(states and callbacks) and max(callbacks) >= max(states)


def _wait_for(log: Path, pattern: str, proc: subprocess.Popen, timeout: float) -> re.Match:
    end = time.time() + timeout
    while time.time() < end:
        m = re.search(pattern, log.read_text() if log.exists() else "")
        if m:
            return m
        if proc.poll() is not None:
            raise AssertionError(f"the sweep exited ({proc.returncode}) before {pattern!r}:\n{log.read_text()[-3000:]}")
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {pattern!r}:\n{log.read_text()[-3000:]}")


def _start_sweep(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """``python -m raybench.sweep args`` in its own process group, its output in ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "raybench.sweep", *args], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _resume(sweep_id: str, storage: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raybench.sweep", "--resume", sweep_id, f"storage={storage}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def _checkpoints(sweep_dir: Path) -> set[Path]:
    """Every trial checkpoint folder in ``sweep_dir``: Tune's (checkpoint_*), Ray Train's (checkpoint_*)
    or raybench's (epoch_*)."""
    # os.walk, not rglob: a folder deleted during the walk is skipped, not an error
    return {Path(root, d) for root, dirs, _ in os.walk(sweep_dir) for d in dirs
            if d.startswith(("checkpoint_", "epoch_"))}


def _wait_for_deletion(sweep_dir: Path, proc: subprocess.Popen, timeout: float) -> None:
    """Until a checkpoint folder seen before is gone (polled every 5 ms)."""
    seen: set[Path] = set()
    end = time.time() + timeout
    while time.time() < end:
        now = _checkpoints(sweep_dir)
        if seen - now:
            return
        seen |= now
        if proc.poll() is not None:
            raise AssertionError(f"the sweep exited ({proc.returncode}) before a checkpoint was deleted")
        time.sleep(0.005)  # (an epoch here takes 0.1 s or more; the trial keeps most of the CPU)
    raise AssertionError(f"timed out waiting for a checkpoint to be deleted in {sweep_dir}")


@pytest.mark.parametrize("workers", [pytest.param(1, id="in-trial-process"), pytest.param(2, id="worker-group")])
def test_killed_sweep_resumes_without_repeating_trials(ray_session, tmp_path, workers):
    """Both ways a trial trains: in its Tune trial's own process (one worker: raybench's checkpoints)
    and in a Ray Train worker group (two: Ray Train's). The driver is killed when the second trial's
    older checkpoint is deleted, and that trial goes on from its newest checkpoint."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # two trials, one after the other: 3 epochs, then more, still training when the driver is killed (a
    # 2-worker trial spends its first 30 s or so starting its worker group: 10 epochs are enough there; a
    # one-worker epoch here can take 0.1 s, and the wait for Tune's saved state below up to 20 s: 60 epochs
    # were once over before the kill, in CI at b281ff2)
    longer = 300 if workers == 1 else 10
    args = [str(SWEEPS_DIR / "smoke.yaml"), "data.synth.actors=4", "data.synth.seconds=1.0", "data.fps=8",
            f"tune.search_space={{window.length: {{grid: [8]}}, train.epochs: {{grid: [3, {longer}]}}}}",
            f"train.num_workers={workers}", "tune.max_concurrent_trials=1",
            f"storage={tmp_path / 'results'}",
            f"mlflow.tracking_uri={uri}"]
    # the driver joins the running Ray cluster, as `ray job submit` would. Tune saves its experiment state
    # every second (its default: every 10 s or more), so that it records the first trial as finished
    # while the second still trains
    env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address, TUNE_GLOBAL_CHECKPOINT_S="1")
    log = tmp_path / "first.log"
    proc = _start_sweep(args, env, log)
    try:
        sweep_id = _wait_for(log, r"--resume (\S+)", proc, 300).group(1)
        first = _wait_for(log, r"\[raybench\] trial (\S+_00000) finished", proc, 300).group(1)
        end = time.time() + 20  # until Tune's experiment state records it (written soon after), with the
        # sweep's callback state saved beside it (the trials' wall times)
        while (first not in _terminated(tmp_path / "results" / sweep_id)
               or not _callback_state_saved(tmp_path / "results" / sweep_id)) and time.time() < end:
            time.sleep(0.2)
        # the kill lands when a checkpoint of the second trial is deleted, its newer one just reported: where
        # Tune's own checkpoints (num_to_keep=1) left a resumed trial naming a deleted one
        _wait_for_deletion(tmp_path / "results" / sweep_id, proc, 300)
    finally:
        if proc.poll() is None:  # (an exited driver: the assertion above says why, not killpg)
            os.killpg(proc.pid, signal.SIGKILL)  # the driver dies mid-sweep
        proc.wait()
    client = MlflowClient(uri)
    (exp,) = [e for e in client.search_experiments() if e.name.startswith("raybench-")]
    before = {r.data.tags[TRIAL_TAG]: r for r in client.search_runs([exp.experiment_id])
              if r.data.tags.get("raybench.kind") == "trial"}
    # the trials Tune had recorded as finished when the driver died (its experiment state): those are
    # kept. A trial that logged its last epoch just before the kill, but was not recorded yet, goes on
    # from its last recorded checkpoint and may train its last epochs again
    done = _terminated(tmp_path / "results" / sweep_id)
    finished = [t for t in before if t.rsplit("/", 1)[-1] in done]
    assert finished, ("the first trial finished before the kill", done, list(before))
    assert "sweep finished" not in log.read_text(), "the sweep ended before the kill: nothing was resumed"
    (going,) = [r for t, r in before.items() if t not in finished]
    steps_before = [m.step for m in client.get_metric_history(going.info.run_id, "val/uar")]
    assert 1 in steps_before, steps_before  # epoch 0's checkpoint was written before epoch 1 started
    # as if the driver had been killed while Tune copied its state into storage (in place): the stored state
    # is cut short; the resume takes the driver's own copy of it (in Ray's session folder) and says so
    newest = max((tmp_path / "results" / sweep_id).glob("experiment_state-*.json"), key=lambda p: p.name)
    whole = newest.read_bytes()
    newest.write_bytes(whole[: len(whole) // 2])

    r = _resume(sweep_id, tmp_path / "results", env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"resuming sweep {sweep_id}" in r.stdout
    assert re.search(rf"Tune's saved sweep state in \S*/{sweep_id}: {newest.name} does not read .* replaced by the "
                     rf"driver's own copies in \S*/{sweep_id}/driver_artifacts\n", r.stdout), r.stdout[-3000:]
    runs = client.search_runs([exp.experiment_id])
    parents = [x for x in runs if x.data.tags.get("raybench.kind") == "sweep"]
    trials = [x for x in runs if x.data.tags.get("raybench.kind") == "trial"]
    assert len(parents) == 1 and len(trials) == 2  # continued, not duplicated
    for t in trials:
        epochs = list(range(int(t.data.params["train.epochs"])))
        steps = [m.step for m in client.get_metric_history(t.info.run_id, "val/uar")]
        assert sorted(set(steps)) == epochs, steps  # every epoch is there
        if t.data.tags[TRIAL_TAG] in finished:
            assert sorted(steps) == epochs, steps  # the finished trial was not trained again
        assert t.info.status == "FINISHED", t.info  # reopened and closed again, all its epochs run
    # the unfinished trial went on from its checkpoint: its first epoch was not trained again
    steps = [m.step for m in client.get_metric_history(going.info.run_id, "val/uar")]
    assert steps.count(0) == 1, (steps_before, steps)
    # each trial's wall time is recorded after the resume too: a trial finished before the kill keeps the
    # time the first driver measured (Tune gives the callback's saved state back), the other counts its
    # time before the kill and after the resume
    first_times = dict(re.findall(r"\[raybench\] trial (\S+) finished in ([\d.]+) s", log.read_text()))
    for t in trials:
        m = client.get_run(t.info.run_id).data.metrics
        assert m.get("time/trial_wall_s", 0) > 0 and "time/trial_fixed_s" in m, (t.data.tags[TRIAL_TAG], m)
        tid = t.data.tags[TRIAL_TAG].rsplit("/", 1)[-1]
        if t.data.tags[TRIAL_TAG] in finished and tid in first_times:
            assert abs(m["time/trial_wall_s"] - float(first_times[tid])) < 0.1, (m["time/trial_wall_s"], first_times)
    # the table counts the trials' own epochs (Tune's training_iteration restarts after a resume)
    table = [len(re.findall(rf"(?<!epoch )(?<!\d){n}/{n}(?!\d)", r.stdout)) for n in (3, longer)]
    assert table == [1, 1], r.stdout[-3000:]  # the table's rows, not the epoch lines
    assert "test/uar" in client.get_run(parents[0].info.run_id).data.metrics
    # resumed once more (a retry loop, the shell's history): nothing to do, and its record is left alone
    # (before, Tune restored the finished experiment, the sweep counted it as interrupted and closed its
    # parent run KILLED)
    parent = parents[0].info.run_id
    history = len(client.get_metric_history(parent, "test/uar"))
    again = _resume(sweep_id, tmp_path / "results", env)
    assert again.returncode == 0 and f"sweep {sweep_id} had finished" in again.stdout, again.stdout + again.stderr
    assert "nothing to resume" in again.stdout and "interrupted" not in again.stdout + again.stderr
    run = client.get_run(parent)
    assert run.info.status == "FINISHED" and "raybench.status_reason" not in run.data.tags
    assert len(client.get_metric_history(parent, "test/uar")) == history


def _actor_pid(kinds: tuple[str, ...], timeout: float) -> int:
    """The process of a live actor whose class name starts with one of ``kinds``."""
    from ray.util.state import list_actors

    end = time.time() + timeout
    while time.time() < end:
        alive = [a for a in list_actors(filters=[("state", "=", "ALIVE")], detail=True)
                 if a.class_name.startswith(kinds)]
        if alive:
            return alive[0].pid
        time.sleep(0.5)
    raise AssertionError(f"no {kinds} actor started")


@pytest.mark.parametrize("workers,max_failures", [pytest.param(1, 1, id="retried"), pytest.param(1, 0, id="resumed"),
                                                  pytest.param(2, 1, id="worker-group-retried")])
def test_a_trial_whose_process_dies_goes_on_from_its_checkpoint(ray_session, tmp_path, workers, max_failures):
    """A trial's process killed mid-training (a lost node) after its epoch-1 checkpoint (a one-worker
    trial's own process; a worker of a worker group): with tune.max_failures=1 Tune starts it again at
    once, and without, the sweep ends with it failed and ``--resume`` continues it; either way from its
    checkpoint (epoch 0 is not trained again), in the same MLflow run, which ends FINISHED without the
    failure's reason."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # the kill lands long before the last epoch: a one-worker epoch here takes 0.1 s or more, a 2-worker
    # one about a second
    epochs = 60 if workers == 1 else 10
    args = [str(SWEEPS_DIR / "smoke.yaml"), "data.synth.actors=4", "data.synth.seconds=1.0", "data.fps=8",
            f"tune.search_space={{window.length: {{grid: [8]}}}}", f"train.epochs={epochs}", f"train.num_workers={workers}",
            f"tune.max_failures={max_failures}", f"storage={tmp_path / 'results'}", f"mlflow.tracking_uri={uri}"]
    env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address)
    log = tmp_path / "first.log"
    proc = _start_sweep(args, env, log)
    try:
        sweep_id = _wait_for(log, r"--resume (\S+)", proc, 300).group(1)
        _wait_for(log, r"\[raybench\] trial \S+ started", proc, 300)
        # Tune's function trainable actor; a Ray Train worker of a worker group
        pid = _actor_pid(("ImplicitFunc", "run_trial") if workers == 1 else ("RayTrainWorker",), 120)
        end = time.time() + 120  # epoch 1 reported, with its checkpoint
        while f"epoch 2/{epochs}:" not in log.read_text() and time.time() < end:
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.005)
        os.kill(pid, signal.SIGKILL)  # the trial's process dies; the driver lives on
        rc = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    first = log.read_text()
    client = MlflowClient(uri)
    (exp,) = [e for e in client.search_experiments() if e.name.startswith("raybench-")]

    def trial_runs():
        return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("raybench.kind") == "trial"]

    if max_failures == 0:  # failed, recorded as such; then continued by --resume
        assert rc == 1 and "1 of 1 trial(s) failed" in first, first[-3000:]
        (run,) = trial_runs()
        assert run.info.status == "FAILED" and run.data.tags["raybench.status_reason"], run
        steps_before = [m.step for m in client.get_metric_history(run.info.run_id, "val/uar")]
        assert 1 in steps_before and len(steps_before) < epochs, steps_before
        r = _resume(sweep_id, tmp_path / "results", env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    else:  # started again by Tune within the sweep, and said so
        assert rc == 0, first[-3000:]
        assert re.search(r"trial \S+ failed \(failure 1 of tune.max_failures=1\): started again from its last "
                         "checkpoint", first), first[-3000:]
    (run,) = trial_runs()  # the same run, continued
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/uar")]
    assert sorted(set(steps)) == list(range(epochs)), steps
    assert steps.count(0) == 1, steps  # went on from its checkpoint
    assert run.info.status == "FINISHED" and "raybench.status_reason" not in run.data.tags, run
    assert len(list((tmp_path / "results" / sweep_id / "checkpoints").iterdir())) == 1  # one trial's folder


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, id="ctrl-c"), pytest.param(signal.SIGTERM, id="sigterm")])
def test_an_interrupted_sweep_says_how_to_resume_and_leaves_no_run_running(ray_session, tmp_path, sig):
    """Ctrl-C: Tune stops the trials and returns what it has. The sweep neither tests nor records a
    result from it (it once tested a checkpoint the stopped trial was replacing, and failed with a
    traceback, or recorded the stopped trial FAILED), says how to resume, exits 130, and closes every
    MLflow run it leaves (KILLED, with the reason); the resumed sweep finishes them all. SIGTERM (``ray
    job stop``) does the same (the resume is checked once, after Ctrl-C)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [str(SWEEPS_DIR / "smoke.yaml"), "data.synth.actors=4", "data.synth.seconds=1.0", "data.fps=8",
            "tune.search_space={window.length: {grid: [8]}, train.epochs: {grid: [2, 100]}}",
            "train.num_workers=1", f"storage={tmp_path / 'results'}", f"mlflow.tracking_uri={uri}"]
    env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address)
    log = tmp_path / "first.log"
    proc = _start_sweep(args, env, log)
    try:
        sweep_id = _wait_for(log, r"--resume (\S+)", proc, 300).group(1)
        _wait_for(log, r"\[raybench\] trial \S+_00000 finished", proc, 300)
        _wait_for(log, r"\[raybench\] trial \S+_00001 epoch 2/100", proc, 300)
        t0 = time.time()
        os.killpg(proc.pid, sig)  # Ctrl-C in the terminal that runs it, or `ray job stop`
        assert proc.wait(timeout=120) == 130, log.read_text()[-3000:]
        print(f"{sig.name}: the sweep exited {time.time() - t0:.2f} s after the signal")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = log.read_text()
    assert "interrupted: 1 of 2 trial(s) ended" in out and f"python -m raybench.sweep --resume {sweep_id}" in out
    # no traceback of the driver's (a trial process's exit noise, Ray's, has its prefix)
    assert not re.search(r"^Traceback", out, re.M) and "sweep finished" not in out
    client = MlflowClient(uri)
    (exp,) = [e for e in client.search_experiments() if e.name.startswith("raybench-")]
    def named(r) -> str:  # the sweep's run, or a trial's by its epochs
        kind = r.data.tags.get("raybench.kind")
        return kind + (r.data.params["train.epochs"] if kind == "trial" else "")

    runs = {named(r): r for r in client.search_runs([exp.experiment_id])}
    assert sorted(runs) == ["sweep", "trial100", "trial2"], sorted(runs)
    assert runs["trial2"].info.status == "FINISHED" and "raybench.status_reason" not in runs["trial2"].data.tags
    for k in ("sweep", "trial100"):
        assert runs[k].info.status == "KILLED", (k, runs[k].info)
        assert f"--resume {sweep_id}" in runs[k].data.tags["raybench.status_reason"]
    assert not [m for m in runs["sweep"].data.metrics if m.startswith("test/")]  # nothing tested
    if sig != signal.SIGINT:
        return
    r = _resume(sweep_id, tmp_path / "results", env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    after = {named(r): r for r in client.search_runs([exp.experiment_id])}
    assert sorted(after) == sorted(runs)  # the same runs, continued
    for k, run in after.items():
        assert run.info.run_id == runs[k].info.run_id
        assert run.info.status == "FINISHED" and "raybench.status_reason" not in run.data.tags, (k, run.data.tags)
    steps = [m.step for m in client.get_metric_history(after["trial100"].info.run_id, "val/uar")]
    assert sorted(set(steps)) == list(range(100)), steps
    assert "test/uar" in after["sweep"].data.metrics
