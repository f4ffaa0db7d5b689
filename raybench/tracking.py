"""MLflow: where runs go, how they are named, what they carry.

A parent run per sweep (created by the driver) and a child run per trial
(created by the trial's rank-0 worker, tagged ``mlflow.parentRunId``). Nothing
is logged from other ranks. The child run is found again by its trial id, so a
restarted trial continues its run instead of adding a second one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from raybench.schema import SweepConfig, TrialConfig

if TYPE_CHECKING:
    from mlflow.entities import Run


TRIAL_TAG = "raybench.trial_id"
EXPERIMENT_KIND = "mlflow.experimentKind"
# the packages whose versions change results; recorded with every run
VERSIONED = ("torch", "torchaudio", "ray", "mlflow", "numpy", "timm", "decord", "opencv-python-headless",
             "pydantic", "scikit-learn")
SWEEP_TAG = "raybench.sweep_id"


def results_dir(storage: str | None) -> Path:
    """Local folder for results when ``storage`` is not set (or is a local path)."""
    st = storage
    if st and "://" not in str(st):
        return Path(st).expanduser().resolve()
    return Path(os.environ.get("RAYBENCH_RESULTS", "~/raybench_results")).expanduser().resolve()


def tracking_uri(cfg: SweepConfig, create: bool = True) -> str:
    """``mlflow.tracking_uri``, else $MLFLOW_TRACKING_URI, else a SQLite store in the results folder (its
    folder made unless ``create`` is false)."""
    return cfg.mlflow.tracking_uri or default_tracking_uri(cfg.storage, create=create)


def default_tracking_uri(storage: str | None = None, create: bool = True) -> str:
    """$MLFLOW_TRACKING_URI, else the SQLite store in the results folder (its folder made unless
    ``create`` is false: a reader must not make an empty store)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    d = results_dir(storage)
    if create:
        d.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{d / 'mlflow.db'}"


def tracking_uri_source(cfg: SweepConfig) -> str:
    """Where a sweep's tracking URI came from, as a user would name it in a fix."""
    if cfg.mlflow.tracking_uri:
        return "mlflow.tracking_uri"
    return "$MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "the default store"


def store_problem(uri: str, where: str, timeout_s: float = 10.0) -> str | None:
    """What keeps the MLflow store at ``uri`` from taking runs, said before any long work (a prepare
    of hours), or None. MLflow itself says so only when a run is first created: a file store (a folder
    such as ./mlruns) is refused by MLflow 3 unless $MLFLOW_ALLOW_FILE_STORE is true, and a tracking
    server that does not answer is retried for about four minutes (measured: 247 s, MLflow 3.17).
    A server that answers at all (any HTTP status) counts as there: some need credentials for every
    path, which its requests carry and this one does not."""
    from urllib.parse import urlparse

    scheme = urlparse(uri).scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and uri[1:3] in (":\\", ":/")):  # a path (C:\ too)
        from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE

        if not MLFLOW_ALLOW_FILE_STORE.get():
            return (f"{where} is {uri!r}, an MLflow file store (a folder of runs such as ./mlruns), which "
                    "MLflow 3 opens only when MLFLOW_ALLOW_FILE_STORE=true is set. Use a SQLite store "
                    "instead (sqlite:///PATH/mlflow.db; `mlflow migrate-filestore` converts a folder of "
                    "runs), or set MLFLOW_ALLOW_FILE_STORE=true")
    elif scheme in ("http", "https"):
        import requests

        try:  # any answer will do: only a server that is not there at all fails here
            requests.get(uri.rstrip("/") + "/health", timeout=timeout_s)
        except requests.exceptions.SSLError:  # a server answered: MLflow's own TLS settings decide
            pass                               # (MLFLOW_TRACKING_INSECURE_TLS, ..._SERVER_CERT_PATH)
        except requests.RequestException as e:
            return (f"{where} is {uri!r}, and no MLflow tracking server answers there ({type(e).__name__}: "
                    f"{str(e)[:200]}). Start it first (mlflow server --backend-store-uri sqlite:///PATH/mlflow.db "
                    "--host HOST --port PORT), or point {where} at one that runs")
    return None


def artifact_root(uri: str) -> str | None:
    """Artifacts of a local SQLite store live beside the database (MLflow's default is ./mlruns
    in whatever the current directory is); a tracking server decides for itself."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    return None


def experiment_name(cfg: SweepConfig) -> str:
    if cfg.mlflow.experiment:
        return cfg.mlflow.experiment
    if "data.dataset" in cfg.tune.search_space:
        return f"raybench-{cfg.name}"
    return f"raybench-{cfg.data.dataset}"


def trial_tags(trial_cfg: TrialConfig, trial_id: str, sweep_id: str) -> dict[str, str]:
    """A trial run's tags; ``fusion`` and ``fold`` only where the trial has one."""
    tags = {
        TRIAL_TAG: trial_id,
        SWEEP_TAG: sweep_id,
        "method": trial_cfg.method.name,
        "dataset": trial_cfg.data.dataset,
        "window": str(trial_cfg.window.length),
        "hop": str(trial_cfg.window.hop),
        "seed": str(trial_cfg.train.seed),
    }
    if getattr(trial_cfg.method, "fusion", None) is not None:
        tags["fusion"] = str(trial_cfg.method.fusion)
    if trial_cfg.data.fold is not None:
        tags["fold"] = str(trial_cfg.data.fold)
    return tags


def trial_run_name(trial_cfg: TrialConfig, swept: dict, trial_id: str) -> str:
    """A trial run's name in the MLflow UI: method, fusion (where the method has one), dataset,
    window, the other values this trial's search space sampled (fold, seed, ...) and Tune's trial
    id, e.g. ``av_fusion fusion=concat synthetic_ravdess window=4 (1a2b3_00001)``."""
    fusion = getattr(trial_cfg.method, "fusion", None)
    head = [trial_cfg.method.name, *([f"fusion={fusion}"] if fusion else []), trial_cfg.data.dataset,
            f"window={trial_cfg.window.length}"]
    skip = ("method.name", "data.dataset", "method.fusion", "window.length")
    values = [f"{k}={str(v)[-40:]}" for k, v in sorted(swept.items()) if k not in skip]
    return " ".join([*head, *values, f"({trial_id})"])


def provenance_tags() -> dict[str, str]:
    """What produced a run: raybench's version and git commit (MLflow's own ``mlflow.source.git.commit``
    tag; ``raybench.git_dirty`` when the checkout has uncommitted changes), Python, the platform and
    the versions of the packages that change results."""
    import platform
    import subprocess

    tags = {"raybench.version": _version("raybench"), "raybench.python": platform.python_version(),
            "raybench.platform": platform.platform()}
    tags.update({f"raybench.versions.{p}": _version(p) for p in VERSIONED})
    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists():
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                                  timeout=10).stdout.strip()

        try:
            commit = git("rev-parse", "HEAD")
            if commit:
                tags["mlflow.source.git.commit"] = commit
                tags["raybench.git_dirty"] = str(bool(git("status", "--porcelain", "--untracked-files=no")))
        except (OSError, subprocess.SubprocessError):
            pass  # no git executable: the version tags still say what ran
    return tags


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def device_tags() -> dict[str, str]:
    """The hardware a trial's rank 0 runs on: its device (the GPU's name, or cpu), the CPU model and
    count, the GPUs it sees (model and count), and the CUDA and cuDNN versions torch runs with when
    it has a GPU."""
    import os

    tags = {"raybench.cpus": str(os.cpu_count()), "raybench.cpu_model": cpu_model()}
    try:
        import torch

        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            tags["raybench.device"] = torch.cuda.get_device_name()
            tags["raybench.gpus"] = str(n)
            tags["raybench.gpu_models"] = ", ".join(sorted({torch.cuda.get_device_name(i) for i in range(n)}))
            tags["raybench.versions.cuda"] = str(torch.version.cuda)
            tags["raybench.versions.cudnn"] = str(torch.backends.cudnn.version())
        else:
            tags["raybench.device"] = "cpu"
            tags["raybench.gpus"] = "0"
    except Exception as e:  # a driver problem must not stop the record
        tags["raybench.device"] = f"unknown ({type(e).__name__})"
    return tags


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo; elsewhere what the platform module says)."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _as_dict(cfg: BaseModel | dict) -> dict:
    """A config as plain data, with the names users write (``method.lambda``, not ``lambda_``)."""
    return cfg.model_dump(by_alias=True, mode="json") if isinstance(cfg, BaseModel) else cfg


def params_of(cfg: BaseModel | dict) -> dict[str, str]:
    """Flattened config as MLflow params (values as strings, lists as JSON)."""
    from ray.tune.utils import flatten_dict

    out = {}
    for k, v in flatten_dict(_as_dict(cfg), delimiter=".").items():
        s = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
        out[k] = s[:6000]
    return out


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


SEARCH_PAGE = 50000  # MLflow's most runs in one page of search_runs
EXPERIMENTS_PAGE = 1000  # ... and its default page of search_experiments


def _every_page(search, **kw) -> list:
    """Every result of an MlflowClient search: it answers one page and a token for the next, followed
    here (before 2026-12-04 what came after the first page was left out without a word)."""
    out, token = [], None
    while True:
        page = search(page_token=token, **kw)
        out += page
        token = page.token
        if not token:
            return out


def search_all(client, experiment_ids: list[str], filter_string: str) -> list:
    """Every run of ``experiment_ids`` that ``filter_string`` matches (pages of 50,000 runs at most)."""
    return _every_page(client.search_runs, experiment_ids=experiment_ids, filter_string=filter_string,
                       max_results=SEARCH_PAGE)


def all_experiments(client) -> list:
    """Every (active) experiment of the store (pages of 1,000)."""
    return _every_page(client.search_experiments, max_results=EXPERIMENTS_PAGE)


def find_run(uri: str, experiment_id: str, tag: str, value: str) -> str | None:
    runs = _client(uri).search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{value}'", max_results=1)
    return runs[0].info.run_id if runs else None


def start_parent(cfg: SweepConfig, sweep_id: str, provenance: dict[str, str] | None = None) -> tuple[str, str, str]:
    """Create (or find, when resuming) the sweep's parent run. Returns (uri, experiment_id, run_id)."""
    from mlflow.entities import Param

    uri = tracking_uri(cfg)
    client = _client(uri)
    name = experiment_name(cfg)
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name, artifact_location=artifact_root(uri))
    if exp is None or EXPERIMENT_KIND not in exp.tags:
        # MLflow's UI opens an experiment on the view its kind names: training runs, not GenAI traces
        client.set_experiment_tag(exp_id, EXPERIMENT_KIND, "custom_model_development")
    run_id = find_run(uri, exp_id, SWEEP_TAG + ".parent", sweep_id)
    if run_id is None:
        run = client.create_run(exp_id, run_name=cfg.name, tags={
            SWEEP_TAG + ".parent": sweep_id, SWEEP_TAG: sweep_id, "dataset": cfg.data.dataset,
            "raybench.kind": "sweep", **(provenance or provenance_tags())})
        run_id = run.info.run_id
        client.log_batch(run_id, params=[Param(k, v) for k, v in params_of(cfg).items()])  # chunks by itself
    else:
        reopen(client, run_id)  # resumed after its record stage (or an interruption) closed it
    return uri, exp_id, run_id


def finished_sweep(cfg: SweepConfig, sweep_id: str) -> Run | None:
    """The parent run of a sweep with nothing left to resume: its record stage ended it (FINISHED, or FAILED
    when every trial failed; not an interruption or a crash: no ``raybench.status_reason``) with no trial
    that Tune holds as errored
    (``raybench.trial_errors`` 0: a resume starts those again; a trial that ended without a score is
    failed for good) and no chosen model's test evaluation failed (``raybench.tests_failed`` 0: a resume
    tests again, once: ``raybench.tests_retested`` when that failed too). None otherwise, for a sweep recorded before that tag (2026-12-02: a resume records
    it again), and when the store cannot say (a missing SQLite file, a store that does not answer: the
    sweep's own checks name those)."""
    uri = tracking_uri(cfg, create=False)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        return None
    if store_problem(uri, tracking_uri_source(cfg)):  # a server that is not there: MLflow retries for minutes
        return None
    try:
        client = _client(uri)
        exp = client.get_experiment_by_name(experiment_name(cfg))
        if exp is None:
            return None
        runs = search_all(client, [exp.experiment_id], f"tags.`{SWEEP_TAG}` = '{sweep_id}'")
    except Exception:
        return None
    parents = [r for r in runs if r.data.tags.get(SWEEP_TAG + ".parent") == sweep_id]
    if len(parents) != 1 or parents[0].info.status not in ("FINISHED", "FAILED") or \
            "raybench.status_reason" in parents[0].data.tags:
        return None
    tags = parents[0].data.tags
    # a chosen model whose test evaluation failed (a file that did not come, a GPU out of memory) is tested
    # again by a resume's record stage
    tested = tags.get("raybench.tests_failed", "0") == "0" or tags.get("raybench.tests_retested") == "true"
    return parents[0] if tags.get("raybench.trial_errors") == "0" and tested else None


def close_open_runs(uri: str, exp_id: str, sweep_id: str, status: str, why: str) -> None:
    """Close every run of a sweep still RUNNING (its parent's, its trials') with ``status``, ``why`` in its
    ``raybench.status_reason`` tag. Called on the way out of a failing sweep: a problem reaching the store
    is printed, not raised over the error that brought it here."""
    try:
        client = _client(uri)
        for run in search_all(client, [exp_id], f"tags.`{SWEEP_TAG}` = '{sweep_id}' and "
                              "attributes.status = 'RUNNING'"):  # the parent's too
            client.set_tag(run.info.run_id, "raybench.status_reason", why[:5000])
            client.set_terminated(run.info.run_id, status=status)
    except Exception as e:
        print(f"[raybench] could not close the sweep's MLflow runs ({type(e).__name__}: {e})", flush=True)


CHOICE_TAGS = ("raybench.best", "raybench.best_of_method")


def clear_choice_tags(uri: str, exp_id: str, sweep_id: str, keep: dict[str, set[str]]) -> list[str]:
    """Take the tags of an earlier record stage's choice (``raybench.best``, ``raybench.best_of_method``)
    off the sweep's trial runs not chosen for that tag now (``keep``: tag -> trial ids), and tag them
    ``raybench.superseded``: their test metrics stay, as what that choice measured; a run chosen again
    loses that tag. Returns the trial ids cleared. (Before 2026-12-03 a resumed sweep that chose
    another trial left two runs tagged best.)"""
    client = _client(uri)
    chosen = set().union(*keep.values())
    for run in search_all(client, [exp_id], f"tags.`{SWEEP_TAG}` = '{sweep_id}' and tags.`raybench.superseded` != ''"):
        if run.data.tags.get(TRIAL_TAG) in chosen:
            client.delete_tag(run.info.run_id, "raybench.superseded")
    cleared = []
    for tag in CHOICE_TAGS:
        for run in search_all(client, [exp_id], f"tags.`{SWEEP_TAG}` = '{sweep_id}' and tags.`{tag}` = 'true'"):
            trial = run.data.tags.get(TRIAL_TAG)
            if trial in keep.get(tag, set()):
                continue
            client.delete_tag(run.info.run_id, tag)
            client.set_tag(run.info.run_id, "raybench.superseded",
                           f"chosen ({tag}) by an earlier record of this sweep, not by the latest: its test "
                           "metrics are that choice's")
            cleared.append(trial)
    return cleared


def reopen(client, run_id: str) -> None:
    """A closed run RUNNING again (a resumed sweep, a trial going on), without the reason it was closed."""
    run = client.get_run(run_id)
    if run.info.status != "RUNNING":
        client.update_run(run_id, status="RUNNING")
    if "raybench.status_reason" in run.data.tags:
        client.delete_tag(run_id, "raybench.status_reason")


def open_trial_run(info: dict, trial_cfg: TrialConfig) -> str:
    """Create or find the child run of one trial. ``info`` carries the sweep's provenance tags (worked
    out once, on the driver, where the sweep's code was submitted from). Returns its run id."""
    uri, exp_id = info["tracking_uri"], info["experiment_id"]
    client = _client(uri)
    run_id = find_run(uri, exp_id, TRIAL_TAG, info["trial_id"])
    if run_id is not None:
        return run_id
    import yaml
    from mlflow.entities import Param

    tags = trial_tags(trial_cfg, info["trial_id"], info["sweep_id"])
    tags["mlflow.parentRunId"] = info["parent_run_id"]
    tags["raybench.kind"] = "trial"
    tags.update(info.get("provenance") or provenance_tags())
    run = client.create_run(exp_id, run_name=info.get("trial_name") or info["trial_id"], tags=tags)
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params_of(trial_cfg).items()])  # chunks
    client.log_text(run.info.run_id, yaml.safe_dump(_as_dict(trial_cfg), sort_keys=False), "config.yaml")
    if info.get("dataset"):
        log_datasets(uri, run.info.run_id, [info["dataset"]])
    return run.info.run_id


class TrialLogger:
    """The training loop's :class:`raybench.train.loop.EpochLogger` for one trial's MLflow child run
    (picklable: it travels to the Ray Train worker of rank 0)."""

    def __init__(self, info: dict):
        self.info = info
        self.run_id: str | None = None
        self.logged_up_to = -1  # the last epoch the run holds from before a resume
        self.again: list[int] = []

    def start(self, cfg: TrialConfig) -> None:
        self.run_id = open_trial_run(self.info, cfg)  # opened by the trial before its workers started
        client = _client(self.info["tracking_uri"])
        reopen(client, self.run_id)  # a failed or interrupted trial continued by --resume
        for k, v in device_tags().items():  # the hardware rank 0 trains on
            client.set_tag(self.run_id, k, v)
        # a trial stopped after logging an epoch but before its checkpoint was complete trains that epoch
        # again when resumed: both values stay in the run's history (MLflow keeps every point; the
        # newer is the run's value, as Tune's), and a tag names those epochs
        history = client.get_metric_history(self.run_id, "val/score")
        self.logged_up_to = max((m.step for m in history), default=-1)
        # the epochs an earlier attempt logged twice stay named (a trial can be resumed more than once)
        earlier = client.get_run(self.run_id).data.tags.get("raybench.epochs_logged_twice", "")
        self.again = [int(e) for e in earlier.split(",") if e.strip().isdigit()]

    def log(self, metrics: dict[str, float], epoch: int) -> None:
        if self.run_id is not None:
            log_metrics(self.info["tracking_uri"], self.run_id, metrics, step=epoch)
            if epoch <= self.logged_up_to:
                self.again = sorted({*self.again, epoch})
                _client(self.info["tracking_uri"]).set_tag(self.run_id, "raybench.epochs_logged_twice",
                                                           ",".join(map(str, self.again)))


def dataset_input(summary: dict, context: str):
    """A prepared dataset as an MLflow dataset input (the UI's Dataset column): its name, a digest
    (:func:`dataset_digest`), the store as source, and a profile with the clips and subjects per
    split, skipped clips, decoding warnings, faces found and digests of the labels' and media's sources."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from raybench.data.store import labels_digest

    store = str(summary["store_path"])
    profile = {"task": summary["task"], "classes": len(summary["class_names"]), **{
        f"{s}_{k}": v for s, c in summary["counts"].items() for k, v in c.items()},
        "skipped": summary["skipped"], "warnings": summary["warnings"], "face_found": summary["face_found"],
        "left_out": summary.get("left_out", 0), "fps": summary["fps"],
        "labels": labels_digest(summary["label_digests"]) if "label_digests" in summary else None,
        "media": labels_digest(summary["media_digests"]) if "media_digests" in summary else None,
        **({"subjects_in_two_folds": summary.get("subjects_in_two_folds", 0)} if summary.get("folds") else {})}
    emb = summary.get("embedding_info") or {}
    for m, e in sorted(emb.items()):  # data.audio.encoder: the embeddings trained on are part of the data
        profile[f"{m}_encoder"] = e["encoder"]
        profile[f"{m}_fingerprint"] = e["fingerprint"]
        if e.get("padded"):  # VideoMAE: clips shorter than its window, padded with their last frame
            profile[f"{m}_padded_clips"] = e["padded"]
        if e.get("libraries"):  # the torch / transformers versions that encoded its clips (more than one: mixed)
            profile[f"{m}_libraries"] = "; ".join(" ".join(f"{k} {v}" for k, v in sorted(d.items()))
                                                  for d in e["libraries"])
    digest = dataset_digest(summary, profile)
    ds = Dataset(name=summary["dataset"], digest=digest,
                 source_type=store.split("://", 1)[0] if "://" in store else "local",
                 source=json.dumps({"uri": store, "root": summary["root"], **(
                     {"embeddings": summary["embeddings"]} if emb else {})}), profile=json.dumps(profile))
    return DatasetInput(ds, tags=[InputTag("mlflow.data.context", context)])


def dataset_digest(summary: dict, profile: dict) -> str:
    """The clip store's fingerprint, ``-``, and 8 hex digits of a hash of the clip ids of each split
    and the ``profile`` (embedding stores' fingerprints included).

    MLflow keeps one dataset per name and digest in an experiment, and a run that logs a pair it
    already has gets the first run's profile: folds (and ``data.split`` settings) share a clip store,
    so a digest of the store alone showed every fold the first fold's counts (before 2026-12-03)."""
    what = json.dumps({"ids": summary.get("ids"), "profile": profile}, sort_keys=True, default=str)
    return f"{summary['fingerprint']}-{hashlib.sha1(what.encode()).hexdigest()[:8]}"


def face_warning(summary: dict) -> str | None:
    """The warning for a dataset where too few clips had a face found, or None."""
    from raybench.data.faces import FACE_MIN_SHARE  # the threshold the prepare stage warns at

    found, total = summary.get("face_found"), sum(c["clips"] for c in summary["counts"].values())
    if found is None or not total or found >= FACE_MIN_SHARE * total:
        return None
    return (f"{summary['dataset']}: a face was found in {found} of {total} clips (under {FACE_MIN_SHARE:.0%}); "
            "the others use the centre crop of the frame")


def log_datasets(uri: str, run_id: str, summaries: list[dict], context: str = "train", details: bool = False) -> None:
    """Record the datasets a run used: dataset inputs, the same counts as metrics under
    ``data/<dataset>/`` (so they can be columns and charts), a ``raybench.face_warning.<dataset>``
    tag when few clips had a face; with ``details`` (the parent run) the skipped clips with their
    reasons, the decoding warnings and the listed files the manifest left out as
    ``data/<dataset>_skipped.json`` / ``_warnings.json`` / ``_left_out.json``."""
    client = _client(uri)
    for s in summaries:
        if (w := face_warning(s)) is not None:
            client.set_tag(run_id, f"raybench.face_warning.{s['dataset']}", w)
        if details and s.get("bad"):
            client.log_dict(run_id, s["bad"], f"data/{s['dataset']}_skipped.json")
        if details and s.get("warning_list"):
            client.log_dict(run_id, s["warning_list"], f"data/{s['dataset']}_warnings.json")
        if details and s.get("left_out_list"):
            client.log_dict(run_id, s["left_out_list"], f"data/{s['dataset']}_left_out.json")
    client.log_inputs(run_id, datasets=[dataset_input(s, context) for s in summaries])
    counts = {}
    for s in summaries:
        pre = f"data/{s['dataset']}/"
        counts.update({f"{pre}{sp}_{k}": v for sp, c in s["counts"].items() for k, v in c.items()})
        counts.update({f"{pre}skipped": s["skipped"], f"{pre}warnings": s["warnings"],
                       f"{pre}left_out": s.get("left_out", 0)})
        for m, e in (s.get("embedding_info") or {}).items():
            if e.get("padded"):
                counts[f"{pre}{m}_padded_clips"] = e["padded"]
        if s.get("folds"):  # folds: how many subjects validate in two of them (the authors' chunks)
            counts[f"{pre}subjects_in_two_folds"] = s.get("subjects_in_two_folds", 0)
        if s["face_found"] is not None:
            counts[f"{pre}face_found"] = s["face_found"]
            counts.update({f"{pre}{sp}_face_share": c["faces"] / c["clips"] for sp, c in s["counts"].items()
                           if "faces" in c and c["clips"]})
    log_metrics(uri, run_id, counts, step=0)


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int) -> None:
    import time

    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    ms = [Metric(k, float(v), ts, step) for k, v in metrics.items() if isinstance(v, (int, float))]
    _client(uri).log_batch(run_id, metrics=ms)
