"""``python -m raybench.sweep [SWEEP.yaml] [key=value ...]``: prepare, tune, record.

1. PREPARE every dataset the sweep can reach (Ray Data -> Parquet clip store): ``raybench.trials``.
2. TUNE with Ray Tune: each trial is a Ray Train ``TorchTrainer`` (DDP): ``raybench.trials``.
3. RECORD in MLflow: a parent run for the sweep, a child run per trial; the best configuration (on
   the validation metric) is evaluated on the test split, and only that one: ``raybench.results``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import time
from pathlib import Path

from raybench.config import ConfigError, builtin_sweeps, load, sweep_path
from raybench.results import SweepResult, format_table, record, record_interrupted
from raybench.schema import SweepConfig
from raybench.storage import join
from raybench.trials import (check_resources, mend_tune_state, new_sweep_id, planned_trials, prepare_all, prepare_cross,
                             ray_temp_dir, tune_trials)

STATE_FILE = "raybench_sweep.json"


# what --resume accepts besides the sweep id: neither changes a result (where the sweep keeps its results;
# how long it waits for the nodes a cluster's autoscaler is starting, which a restarted cluster may need)
RESUME_KEYS = ("storage", "train.node_wait_s")


def save_sweep_state(storage: str, sweep_id: str, cfg: SweepConfig, tracking_uri: str | None = None,
                     labels: dict[str, dict[str, str]] | None = None,
                     media: dict[str, dict[str, str]] | None = None) -> None:
    """The resolved config of a sweep, kept beside its Tune results so ``--resume`` can rebuild it, and
    the MLflow store it records in (``tracking_uri``) and where that came from: a resume records in the
    same store, whatever $MLFLOW_TRACKING_URI says then. ``labels``, ``media``: data key -> clip id
    -> the digest of what its labels, its video and audio, are decoded from (a resume on other clips or
    files is refused: trials.prepare_all)."""
    from raybench import storage as st
    from raybench.tracking import tracking_uri_source

    state = {"sweep_id": sweep_id, "cfg": cfg.model_dump(mode="json")}
    if tracking_uri:
        state.update(tracking_uri=tracking_uri, tracking_uri_from=tracking_uri_source(cfg))
    if labels:
        state["labels"] = labels
    if media:
        state["media"] = media
    text = json.dumps(state, indent=1)
    fs, root = st.split(storage)
    st.write_bytes(fs, f"{root}/{sweep_id}/{STATE_FILE}", text.encode())


def load_sweep_state(storage: str, sweep_id: str, whole: bool = False) -> dict:
    """The saved config of a sweep (``whole``: the state file's every entry, the config under ``cfg``)."""
    from raybench import storage as st

    fs, root = st.split(storage)
    path = f"{root}/{sweep_id}/{STATE_FILE}"
    try:
        state = json.loads(st.read_bytes(fs, path).decode())
    except (FileNotFoundError, OSError):
        raise ConfigError([f"no sweep {sweep_id!r} to resume: {path} does not exist (is storage= the one the "
                           "sweep used?)"], "--resume") from None
    state["cfg"] = {k: v for k, v in state["cfg"].items() if not k.startswith("_")}  # older files kept hidden keys
    return state if whole else state["cfg"]


def _same_place(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return a.rstrip("/") == b.rstrip("/")
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def resumed_config(raw: dict, state: dict, given_storage: str | None) -> dict:
    """The saved config ``raw`` of a sweep to resume, where its results are now: ``storage=`` given
    with --resume (results moved) replaces the saved one, and the MLflow store is the sweep's own (the
    saved URI when it came from $MLFLOW_TRACKING_URI, else the default store beside the results), not
    whatever $MLFLOW_TRACKING_URI says in this shell. Before 2026-12-03 a resume with a new storage= ran
    the whole sweep again in the old place, and one in another shell recorded in another store."""
    from raybench import tracking

    raw = _pin_old_defaults(copy.deepcopy(raw))
    saved = str(raw.get("storage") or tracking.results_dir(None) / "tune")  # where the sweep kept its Tune results
    if given_storage and not _same_place(given_storage, saved):
        raw["storage"] = given_storage
    mlflow = raw.setdefault("mlflow", {})
    if mlflow.get("tracking_uri") or not state.get("tracking_uri"):
        return raw  # set in the sweep file (kept as it was), or a state file from before 2026-12-03
    if state.get("tracking_uri_from") == "$MLFLOW_TRACKING_URI":
        uri = state["tracking_uri"]
    else:  # the default store: in the results folder, wherever it is now
        uri = f"sqlite:///{tracking.results_dir(raw.get('storage')) / 'mlflow.db'}"
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and env != uri:
        print(f"[raybench] resuming in the sweep's own MLflow store {uri} ($MLFLOW_TRACKING_URI, {env}, is not "
              "used: the sweep's runs are in its own store)", flush=True)
    mlflow["tracking_uri"] = uri
    return raw


def _pin_old_defaults(raw: dict) -> dict:
    """A sweep saved before 2026-12-04 (its state has no ``data.audio.align``) resumes with that day's
    defaults, not today's: ``data.audio.align: stretch`` (its clip store, not a new one), ``window.phase:
    random``, and zhou2019's ``deltas: true`` (its checkpoints' audio CNN), so that its remaining trials
    train as its first ones did and its chosen models load. (The random phase's window at frame 0 is
    new either way.)"""
    data = raw.get("data") if isinstance(raw.get("data"), dict) else None
    audio = data.get("audio") if data and isinstance(data.get("audio"), dict) else None
    if audio is None or "align" in audio:
        return raw
    from raybench.config import reachable_methods

    pinned = ["data.audio.align=stretch"]
    audio["align"] = "stretch"
    if isinstance(raw.get("window"), dict) and "phase" not in raw["window"]:
        raw["window"]["phase"] = "random"
        pinned.append("window.phase=random")
    method = raw.get("method") if isinstance(raw.get("method"), dict) else {}
    space = (raw.get("tune") or {}).get("search_space") or {}
    if "zhou2019" in reachable_methods(raw) and "deltas" not in method and "method.deltas" not in space:
        pm = raw["per_method"] = raw.get("per_method") or {}
        keys = pm.setdefault("zhou2019", {}).setdefault("method", {})
        if "deltas" not in keys:
            keys["deltas"] = True
            pinned.append("zhou2019's method.deltas=true")
    print(f"[raybench] resuming a sweep started before 2026-12-04 with its own defaults: {', '.join(pinned)}",
          flush=True)
    return raw


class SweepInterrupted(Exception):
    """Tune ended the sweep before every trial did (Ctrl-C): nothing tested, the sweep resumable."""


@contextlib.contextmanager
def sigterm_as_sigint():
    """Once the sweep has its MLflow run, SIGTERM (``ray job stop``, ``kill``, a batch scheduler's notice)
    stops the sweep as Ctrl-C does: during the trials Tune stops them and saves its state, and the sweep
    closes its MLflow runs (``record_interrupted``; after the trials, ``runs_closed_on_failure``) instead of
    dying with them left RUNNING. ``ray job stop`` sends SIGKILL 3 s
    later (``RAY_JOB_STOP_WAIT_TIME_S``): in tests/integration/test_resume.py's sweep (2026-12-02, a
    2-core machine) the runs were closed 0.4 s after SIGTERM, the process exited after 4.1 s (Ray's and
    the interpreter's shutdown, which a SIGKILL only cuts short). Only from the main thread (Python's
    rule for signal handlers); elsewhere nothing changes."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(os.getpid(), signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


@contextlib.contextmanager
def runs_closed_on_failure(uri: str, exp_id: str, sweep_id: str, cfg: SweepConfig, resumable=lambda: True):
    """An exception (a crash, a Ctrl-C outside Tune's trials) closes every run of the sweep still RUNNING:
    FAILED with the error, or KILLED for an interruption, the reason in ``raybench.status_reason``: the
    resume command once ``resumable()`` (the sweep's state is saved), else that the sweep is to be started
    again (``--resume`` would find no sweep); then it goes on. (Tune's own stop is ``SweepInterrupted``,
    closed already.)"""
    from raybench import tracking

    try:
        yield
    except SweepInterrupted:
        raise
    except BaseException as e:
        stopped = isinstance(e, KeyboardInterrupt)
        why = ("the sweep was interrupted" if stopped else f"the sweep failed: {type(e).__name__}: {e}")
        then = (f"resume it with: {resume_command(sweep_id, cfg)}" if resumable() else
                "no trial had started and nothing of it was saved to resume: start it again with the same "
                "command (its clip stores are kept)")
        tracking.close_open_runs(uri, exp_id, sweep_id, "KILLED" if stopped else "FAILED", f"{why}; {then}")
        raise


def resume_command(sweep_id: str, cfg: SweepConfig) -> str:
    return f"python -m raybench.sweep --resume {sweep_id}" + ("" if cfg.storage is None else f" storage={cfg.storage}")


def check_outside(cfg: SweepConfig) -> None:
    """The places outside this process a sweep writes to or reads from answer, else one ConfigError
    naming each setting that fails (before the prepare, which takes hours on a real dataset): its MLflow
    store (``tracking.store_problem``) and every remote URI among ``storage``, ``data.root`` and
    ``data.store_dir`` of every data configuration it reaches (``storage.reach_problem``)."""
    from raybench import storage as st
    from raybench import tracking
    from raybench.trials import data_variants

    where = tracking.tracking_uri_source(cfg)
    problems = [tracking.store_problem(tracking.tracking_uri(cfg, create=False), where)]
    named = [(cfg.storage, "storage")]
    for d in data_variants(cfg):
        named += [(d.root, "data.root"), (d.store_dir, "data.store_dir")]
    named += [(c.root, f"eval.cross_corpus[{i}].root") for i, c in enumerate(cfg.eval.cross_corpus)]
    places: dict[str, str] = {}  # each URI probed once, under the first setting that names it
    for place, key in named:
        if place:
            places.setdefault(str(place), key)
    problems += [st.reach_problem(place, key) for place, key in places.items()]
    if any(problems):
        raise ConfigError([p for p in problems if p], "config")


def run_sweep(cfg: SweepConfig, sweep_id: str | None = None, resume: bool = False, verbose: int = 0) -> SweepResult:
    """PREPARE -> TUNE -> RECORD (the steps in ``trials`` and ``results``). ``verbose``: 0 prints one
    raybench line per trial epoch; more adds Ray Tune's status tables."""
    from raybench import tracking
    from raybench.train.loop import default_metric

    t_start = time.time()
    check_outside(cfg)  # an MLflow store or a bucket that would fail: said before the decoding

    # 1. PREPARE every data configuration the sweep reaches (file listings before Ray starts); a resume on the
    # labels and media the sweep started with (a state from before 2026-12-04 has none recorded)
    storage = str(cfg.storage or tracking.results_dir(cfg.storage) / "tune")
    started_on: dict = {}
    if resume and sweep_id:
        try:
            started_on = load_sweep_state(storage, sweep_id, whole=True)
        except ConfigError:  # no state to read: the resume itself says so, after the prepare stage
            pass
    summaries = prepare_all(cfg, verbose, labels=started_on.get("labels"), media=started_on.get("media"))
    cross = prepare_cross(cfg) if cfg.eval.cross_corpus else {}  # the cross-corpus track's target corpora
    # each dataset is judged on its own task's metric; Tune sees it as val/score
    metrics = {s["dataset"]: cfg.tune.metric or default_metric(s["task"]) for s in summaries.values()}
    sizing = check_resources(cfg, summaries)  # trials the cluster could never run: said before anything is recorded
    if resume:  # Tune's saved state cut short by a driver killed mid-copy: mended, or said, before anything is recorded
        mend_tune_state(storage, sweep_id, ray_temp_dir())

    # 2. TUNE: a parent MLflow run, then the trials (each logs its own child run)
    sweep_id = sweep_id or new_sweep_id(cfg)
    provenance = tracking.provenance_tags()  # once, here: every trial run carries the same
    uri, exp_id, parent = tracking.start_parent(cfg, sweep_id, provenance)
    # from here on SIGTERM stops the sweep as Ctrl-C does, and a crash or an interruption closes its MLflow
    # runs instead of leaving them RUNNING
    saved = [resume]  # the sweep's state is in storage (a resumed sweep's already): --resume can go on
    with sigterm_as_sigint(), runs_closed_on_failure(uri, exp_id, sweep_id, cfg, resumable=lambda: saved[0]):
        if not resume:
            tracking.log_datasets(uri, parent, list(summaries.values()), details=True)
        mlinfo = {"tracking_uri": uri, "experiment_id": exp_id, "parent_run_id": parent, "sweep_id": sweep_id,
                  "provenance": provenance}
        if "://" not in storage:
            Path(storage).mkdir(parents=True, exist_ok=True)

        def started() -> None:
            save_sweep_state(storage, sweep_id, cfg, uri, {k: s["label_digests"] for k, s in summaries.items()},
                             {k: s["media_digests"] for k, s in summaries.items()})
            saved[0] = True
            print(f"[raybench] to resume this sweep if it is interrupted:  {resume_command(sweep_id, cfg)}", flush=True)

        timing: dict = {}
        grid, unfinished = tune_trials(cfg, summaries, mlinfo, storage, metrics, resume, sizing, on_start=started,
                                       verbose=verbose, timing=timing)
        if unfinished:  # Tune returns what it has when told to stop (Ctrl-C)
            why = f"the sweep was interrupted before it ended; resume it with: {resume_command(sweep_id, cfg)}"
            record_interrupted(cfg, grid, mlinfo, timing, why)
            planned = planned_trials(cfg)
            raise SweepInterrupted(f"sweep {sweep_id} interrupted: {planned - unfinished} of {planned} trial(s) ended, "
                                   "nothing was tested or recorded as its result (its MLflow runs that had not ended "
                                   f"are KILLED). Resume it with:  {resume_command(sweep_id, cfg)}")

        # 3. RECORD: choose on validation, test the chosen, summarise folds, log, print
        result = record(cfg, grid, summaries, mlinfo, storage, metrics, timing, cross)
        print(format_table(result, metrics), flush=True)
        print(f"[raybench] Tune results and checkpoints: {join(storage, sweep_id)}", flush=True)
        print(f"[raybench] sweep finished in {time.time() - t_start:.0f} s. Results: MLflow experiment "
              f"{tracking.experiment_name(cfg)!r}, parent run {parent}", flush=True)
        # MLflow 3's UI opens an experiment on its GenAI pages unless the URL asks for model training
        page = f"#/experiments/{exp_id}/runs?workflowType=machine_learning"
        if uri.startswith(("sqlite:", "file:", "/")):
            print(f"[raybench] open them with:  mlflow ui --backend-store-uri {uri}\n"
                  f"[raybench] then browse to:  http://127.0.0.1:5000/{page}", flush=True)
        else:
            print(f"[raybench] open them at:  {uri.rstrip('/')}/{page}", flush=True)
        print(f"[raybench] its report (leaderboard, figures, LaTeX tables):  {report_command(cfg, sweep_id, uri)}",
              flush=True)
    return result


def report_command(cfg: SweepConfig, sweep_id: str, uri: str) -> str:
    """The ``python -m raybench.report`` command that reads this sweep's runs from ``uri``, its store:
    ``--storage`` for a local storage folder's own store (the report is written there too),
    ``--tracking-uri`` for any store the report would not find by itself."""
    import shlex

    from raybench import tracking

    cmd = "python -m raybench.report"
    if tracking.tracking_uri_source(cfg) != "the default store":  # named (key or env): for any shell
        cmd += f" --tracking-uri {shlex.quote(uri)}"
    elif cfg.storage and "://" not in str(cfg.storage):
        cmd += f" --storage {shlex.quote(str(tracking.results_dir(cfg.storage)))}"
    return f"{cmd} --sweep {shlex.quote(sweep_id)}"


def dry_run(cfg: SweepConfig, source: str) -> None:
    """``--dry-run``: what the sweep would do, up to the decoding: each data configuration's file listing
    (the layout checks of a real run; a synthetic set is generated, a remote root mirrored, as the prepare
    does), its clip store and the clips it still has to decode, the trials and what each asks for, and
    where the results would go. Starts no Ray, decodes, trains and records nothing."""
    from collections import Counter

    from raybench import tracking
    from raybench.config import PAIR_KEY
    from raybench.data.store import plan, stale_clips
    from raybench.registry import DATASETS
    from raybench.train.loop import default_metric
    from raybench.trials import (cross_data_cfgs, data_variants, in_trial_process, max_epochs, param_space,
                                 planned_trials)

    check_outside(cfg)
    print(f"[raybench] dry run of sweep {cfg.name!r} ({source}): nothing is decoded, trained or recorded")
    plans = [("", d) for d in data_variants(cfg)] + [(" (a cross-corpus target, eval.cross_corpus)", d)
                                                    for d in cross_data_cfgs(cfg).values()]
    metrics = {}
    for why, dcfg in plans:
        p = plan(dcfg)
        if not why:
            metrics[dcfg.dataset] = cfg.tune.metric or default_metric(DATASETS.get(dcfg.dataset).task_for(dcfg))
        done, bad = p.store.done_ids(), p.store.bad()
        relabel, retry = stale_clips(p)  # decoded again: their label, annotation, video or audio files changed since
        again = {c.clip_id for c in relabel + retry}
        state = Counter("pending" if c.clip_id in again else "decoded" if c.clip_id in done else
                        "bad" if c.clip_id in bad else "pending" for c in p.clips)
        splits = Counter(c.split or "none" for c in p.clips)
        print(f"[raybench] data {dcfg.dataset}{why}: {len(p.clips)} clips under {p.root_uri or p.root} ("
              + ", ".join(f"{k} {splits[k]}" for k in ("train", "val", "test", "none") if splits[k])
              + f"); clip store {p.store.path}: {state['pending']} to decode"
              + (f" ({len(again)} of them again: their label, annotation, video or audio files changed since)"
                 if again else "")
              + f", {state['decoded']} decoded, {state['bad']} found bad before")
    space = param_space(cfg)
    grids = {k: v["grid_search"] for k, v in space.items() if isinstance(v, dict) and "grid_search" in v}
    sampled = [k for k in space if k not in grids]
    t = cfg.train
    how = ("in its Tune trial's own process" if in_trial_process(t) else "in a Ray Train worker group (DDP)")
    gpus = f", {t.gpus_per_worker} GPU" if t.use_gpu else ""
    print(f"[raybench] trials: {planned_trials(cfg)} = "
          + " x ".join([*(f"{len(v)} {'(method, dataset) pairs' if k == PAIR_KEY else k}" for k, v in grids.items()),
                        f"{cfg.tune.num_samples} tune.num_samples"])
          + (f" (sampled: {', '.join(sampled)})" if sampled else "")
          + f"; each {t.num_workers} worker(s) of {t.cpus_per_worker:g} CPU{gpus} (fewer where the nodes have fewer; "
          f"how many trials at a time is sized from the cluster when the sweep runs), {how}, up to {max_epochs(cfg)} "
          f"epochs (tune.scheduler: {cfg.tune.scheduler}); selecting on "
          + ", ".join(sorted({f"{m} ({cfg.tune.mode})" for m in metrics.values()})))
    storage = str(cfg.storage or tracking.results_dir(cfg.storage) / "tune")
    print(f"[raybench] results: MLflow experiment {tracking.experiment_name(cfg)!r} in "
          f"{tracking.tracking_uri(cfg, create=False)}; Tune results and checkpoints under {storage}")


def parse_args(argv: list[str]) -> tuple[str | None, list[str], argparse.Namespace]:
    p = argparse.ArgumentParser(
        prog="python -m raybench.sweep",
        description="Run a raybench sweep: prepare data (Ray Data), train every trial (Ray Train, "
        "DDP), sweep (Ray Tune), record in MLflow. With no file, runs sweeps/default.yaml; raybench's own "
        f"sweep files can be named from any folder: {', '.join(builtin_sweeps())}.",
    )
    p.add_argument("args", nargs="*", help="[SWEEP.yaml | NAME] [key=value ...] (OmegaConf dotlist overrides)")
    p.add_argument("--resume", metavar="SWEEP_ID", default=None,
                   help="go on with an interrupted sweep (the id it printed): finished trials are kept, the "
                   "others continue from their last checkpoint, MLflow runs are continued, not duplicated. "
                   "Pass storage=... if the sweep used one; train.node_wait_s=... may be given too (nothing "
                   "else: the sweep keeps its configuration).")
    p.add_argument("--dry-run", action="store_true",
                   help="check the configuration and the datasets' file listings, then print the data (clips, "
                   "clip stores, what is left to decode), the trials and where results would go; starts no Ray, "
                   "decodes, trains and records nothing")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="also print Ray Tune's trial status tables (by default: one line per trial epoch)")
    a = p.parse_args(argv)
    path, overrides = None, []
    for x in a.args:
        if "=" not in x and path is None and (x.endswith((".yaml", ".yml")) or Path(x).is_file()
                                               or x in builtin_sweeps()):
            path = x
        else:
            overrides.append(x)
    return path, overrides, a


def main(argv: list[str] | None = None) -> int:
    path, overrides, args = parse_args(sys.argv[1:] if argv is None else argv)
    from raybench.envcheck import require

    require()  # a broken torch/torchaudio/decord/... install: one message and exit 2, before Ray starts
    if args.dry_run and args.resume:
        print("raybench: --dry-run describes a new sweep; it does not go with --resume", file=sys.stderr)
        return 2
    try:
        if args.resume:
            from raybench import tracking
            from raybench.config import validate

            # a resumed sweep goes on with the configuration it started with (Tune restores its trials
            # and search space from storage): anything that would change it is refused, not ignored. The
            # keys of RESUME_KEYS change no result (where the results are, how long to wait for nodes)
            refused = ([path] if path else []) + [o for o in overrides if o.split("=", 1)[0] not in RESUME_KEYS]
            if refused:
                raise ConfigError([f"--resume {args.resume} goes on with the configuration the sweep started "
                                   f"with; these would change it and are not applied: {', '.join(refused)}. "
                                   f"With --resume give only {' or '.join(k + '=' for k in RESUME_KEYS)}; to "
                                   "change settings, start a new sweep"], "--resume")
            given = next((o.split("=", 1)[1] for o in overrides if o.startswith("storage=")), None)
            storage = given or str(tracking.results_dir(None) / "tune")
            state = load_sweep_state(storage, args.resume, whole=True)
            raw = resumed_config(state["cfg"], state, given)
            operational = [o for o in overrides if not o.startswith("storage=")]
            if operational:
                from omegaconf import OmegaConf

                try:
                    raw = OmegaConf.to_container(OmegaConf.merge(raw, OmegaConf.from_dotlist(operational)))
                except Exception as e:  # (OmegaConf's grammar errors): named as load() names them
                    raise ConfigError([f"cannot apply overrides {operational}: {e}"], "command line") from None
            cfg = validate(raw, source=f"sweep {args.resume}" + (f" with {', '.join(operational)}" if operational else ""))
            done = tracking.finished_sweep(cfg, args.resume)
            if done:  # resumed again (a retry loop, the shell's history): its record is left as it is
                failed = done.data.tags.get("raybench.trials_failed", "0")
                tests_failed = done.data.tags.get("raybench.tests_failed", "0")
                print(f"[raybench] sweep {args.resume} had finished: every trial ended"
                      + ("" if failed == "0" else f" ({failed} of them failed without an error Tune would "
                         "retry: a resume would not change them)") + " and its results are recorded (MLflow "
                      f"experiment {tracking.experiment_name(cfg)!r}, parent run {done.info.run_id}); nothing to "
                      "resume. To run it again, start a new sweep"
                      + ("" if tests_failed == "0" else f" (the test evaluation of {tests_failed} chosen model(s) "
                         "failed, and again when resumed: tag raybench.track_failed.test on their runs)"), flush=True)
                return 0 if failed == tests_failed == "0" else 1  # as the sweep itself ended
        else:
            cfg = load(path, overrides)
    except ConfigError as e:
        print(f"raybench: invalid configuration\n{e}", file=sys.stderr)
        return 2
    from raybench.data.datasets import LayoutError
    from raybench.data.store import PrepareError
    from raybench.trials import ResumeError

    try:
        if args.dry_run:
            dry_run(cfg, str(sweep_path(path)))
            return 0
        result = run_sweep(cfg, sweep_id=args.resume, resume=bool(args.resume), verbose=args.verbose)
    except ConfigError as e:
        print(f"raybench: invalid configuration\n{e}", file=sys.stderr)
        return 2
    except (PrepareError, LayoutError) as e:
        print(f"raybench: data preparation failed\n{e}", file=sys.stderr)
        return 1
    except ResumeError as e:
        print(f"raybench: the sweep cannot resume\n{e}", file=sys.stderr)
        return 1
    except SweepInterrupted as e:
        print(f"raybench: {e}", file=sys.stderr)
        return 130  # as a shell reports a command ended by Ctrl-C (128 + SIGINT)
    except KeyboardInterrupt:  # a second Ctrl-C (Tune takes only the first), or one outside the trials
        print("raybench: interrupted (the sweep's MLflow runs, if it had any, are closed KILLED). If its trials "
              "had begun, the command to resume it is printed above (--resume)", file=sys.stderr)
        return 130
    if result.failed:
        print(f"raybench: {result.failed} of {len(result.trials)} trial(s) failed (see the table above)",
              file=sys.stderr)
        return 1
    if result.tests_failed:
        print(f"raybench: the test evaluation of {result.tests_failed} chosen model(s) failed: their test numbers "
              "are missing (see the warnings above; tag raybench.track_failed.test on their MLflow runs)"
              + ("; they had failed before this resume too, and a further --resume leaves them" if result.tests_retested
                 else f"; --resume {result.sweep_id} tests them again, once"), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
