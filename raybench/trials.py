"""Trials: the data configurations a sweep reaches, their clip stores, and one Ray Tune run of
Ray Train trials over them (sizing, search space, scheduler, resume)."""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from typing import Any

from ray.tune import Callback

from raybench.config import (PAIR_KEY, ConfigError, expand_params, pairs_swept, reachable_methods, resolve_trial_config,
                             search_values, space_values, valid_pairs, with_values)
from raybench.schema import DataConfig, SweepConfig, TrainConfig, TrialConfig

PAIR_KEY_DATASET = "data.dataset"


def data_summary(prep, fps: float, by_clip: bool = False) -> dict[str, Any]:
    """What a trial needs to know about a prepared dataset (small, picklable). ``by_clip``: the folds
    by clip, not by subject (``data.split.protocol: chunks``, whose authors' chunks can put one
    subject's clips in two folds)."""
    from raybench.data.manifest import fold_record, subjects_in_two_folds

    train_ids = prep.ids("train")
    store = prep.joined()  # with the encoders' embeddings (data.audio.encoder, data.video.encoder) when set
    mean, std = store.audio_stats(train_ids)
    row = store.read_clips(train_ids[:1], columns=["audio_shape", "num_frames",
                                                   *(f"{m}_shape" for m in prep.embeddings)])[0]
    emb = {}
    if "audio_emb" in prep.embeddings:  # a speech encoder's embeddings: standardised like the features
        emean, estd = store.audio_stats(train_ids, "audio_emb")
        emb = {"audio_emb_mean": emean.tolist(), "audio_emb_std": estd.tolist(),
               "n_audio_emb_features": int(row["audio_emb_shape"][1]),
               "audio_emb_steps_per_frame": int(row["audio_emb_shape"][0] // row["num_frames"])}
    return {
        "dataset": prep.dataset, "task": prep.task, "class_names": prep.class_names,
        "store_path": str(prep.store.path), "root": prep.root,
        "ids": {s: prep.ids(s) for s in ("train", "val", "test")},
        "audio_mean": mean.tolist(), "audio_std": std.tolist(),
        "n_audio_features": int(row["audio_shape"][1]),
        "audio_steps_per_frame": int(row["audio_shape"][0] // row["num_frames"]),
        # the encoders' embedding stores (modality -> path); how many layers each audio_emb step holds
        # side by side (n_audio_emb_features = layers x dim; "all": a method learns their weights); the
        # width of the face embeddings (0: none)
        "embeddings": dict(prep.embeddings), "embedding_info": dict(prep.embedding_info), **emb,
        "audio_layers": int(prep.embedding_info.get("audio_emb", {}).get("layers", 1)),
        "video_emb_dim": int(row["video_emb_shape"][1]) if "video_emb" in prep.embeddings else 0,
        "decoded": prep.decoded, "bad": {k: v["reason"] for k, v in prep.bad.items()}, "fps": float(fps),
        "folds": fold_record(prep.clips, by_clip),
        # data.split.chunks=authors: subjects whose clips validate in two folds (0 with subject folds)
        "subjects_in_two_folds": len(subjects_in_two_folds(prep.clips)),
        # what the trials train and are scored on, for the record: clips and subjects per split, clips
        # skipped, decoding warnings, faces found (data.face detect/dataset), the store's fingerprint
        "counts": {s: {"clips": len(prep.ids(s)), "subjects": len({c.subject for c in prep.clips if c.split == s}),
                       # data.face detect/dataset: the clips of the split with a face found
                       **({"faces": prep.store.faces_found(prep.ids(s))} if prep.face_found is not None else {})}
                   for s in ("train", "val", "test")},
        "skipped": len(prep.bad), "warnings": len(prep.warnings), "warning_list": list(prep.warnings),
        # files the dataset lists that its manifest left out (no video, a flagged file, ...), and why
        "left_out": sum(n["files"] for n in prep.left_out), "left_out_list": list(prep.left_out),
        "face_found": prep.face_found,
        "fingerprint": prep.fingerprint,
        # clip id -> what each listed clip's labels are decoded from (store.label_digests): the MLflow profile's
        # digest of them tells runs on other annotation releases of one store apart; a resume checks them
        "label_digests": dict(prep.label_digests),
        # clip id -> a digest of each listed clip's video and audio files (store.media_digests): likewise
        "media_digests": dict(prep.media_digests),
        # the test clips' source files: the robustness track decodes their audio again to add noise
        "sources": {c.clip_id: [c.video_path, (c.meta or {}).get("audio_path")] for c in prep.clips
                    if c.split == "test"},
    }


def data_key(data_cfg: DataConfig) -> str:
    """Identifies one data configuration (dataset x preprocessing x split) within a sweep."""
    return hashlib.sha1(data_cfg.model_dump_json().encode()).hexdigest()[:12]


def data_variants(cfg: SweepConfig) -> list[DataConfig]:
    """Every data configuration the sweep can reach: the finite values of the swept ``data.*`` keys."""
    space = cfg.tune.search_space
    keys = [k for k in space if k.startswith("data.")]
    values = [search_values(space[k]) for k in keys]
    if PAIR_KEY_DATASET in keys and pairs_swept(cfg):
        i = keys.index(PAIR_KEY_DATASET)
        values[i] = list(dict.fromkeys(d for _, d in valid_pairs(cfg)))
    out = {}
    for combo in itertools.product(*values):
        values_here = {k[len("data."):]: v for k, v in zip(keys, combo)}
        d = store_data_cfg(DataConfig.model_validate(with_values(cfg.data.model_dump(), values_here)), cfg)
        out[data_key(d)] = d
    return list(out.values())


def store_data_cfg(data_cfg: DataConfig, sweep_cfg: SweepConfig) -> DataConfig:
    """The data settings a store is built with in this sweep: ``data.root`` names the copy of the sweep's
    own ``data.dataset`` only (another dataset of a swept ``data.dataset`` uses its default root), and
    the store keeps optical flow when any method the sweep can run needs it."""
    from raybench.registry import METHODS

    d = data_cfg.model_copy(deep=True)
    if d.dataset != sweep_cfg.data.dataset:
        d.root = None
    if any(METHODS.get(m).needs_flow for m in reachable_methods(sweep_cfg)):
        d.flow = True
    return d


def trial_data_cfg(trial_cfg: TrialConfig, sweep_cfg: SweepConfig) -> DataConfig:
    """The data settings of a trial's store (see :func:`store_data_cfg`)."""
    return store_data_cfg(trial_cfg.data, sweep_cfg)


def param_space(cfg: SweepConfig) -> dict[str, Any]:
    from ray import tune

    out = {}
    space = dict(cfg.tune.search_space)
    if pairs_swept(cfg):  # one grid over the (method, dataset) pairs whose tasks fit
        for k in ("method.name", "data.dataset"):
            space.pop(k)
        out[PAIR_KEY] = tune.grid_search([{"method.name": m, "data.dataset": d} for m, d in valid_pairs(cfg)])
    if cfg.tune.repeats > 1:  # repeats: one trial per seed for every configuration
        out["train.seed"] = tune.grid_search([cfg.train.seed + r for r in range(cfg.tune.repeats)])
    for key, spec in space.items():
        kind, arg = next(iter(spec.items()))
        out[key] = {
            "grid": lambda a: tune.grid_search(list(a)),
            "choice": lambda a: tune.choice(list(a)),
            "uniform": lambda a: tune.uniform(*a),
            "loguniform": lambda a: tune.loguniform(*a),
            "randint": lambda a: tune.randint(*a),
        }[kind](arg)
    return out


def grouped_keys(cfg: SweepConfig) -> tuple[str, ...]:
    """The params a configuration's trials differ in: ``data.fold`` when folds are swept, ``train.seed``
    with ``tune.repeats``; the sweep chooses a configuration on its trials' mean."""
    return (("data.fold",) if "data.fold" in cfg.tune.search_space else ()) + \
        (("train.seed",) if cfg.tune.repeats > 1 else ())


def search_alg(cfg: SweepConfig, max_concurrent: int):
    """Tune's variant generator. With folds or repeats (:func:`grouped_keys`) every random value
    (``uniform``, ``loguniform``, ``randint``, ``choice``) is drawn once per sample and kept over the
    grid (``constant_grid_search``), so a configuration's folds and seeds share it: Tune's default
    draws it again for each grid point, which gave every fold and seed a configuration of its own
    (before 2026-12-03), and the "mean over folds" was one trial."""
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(max_concurrent=max_concurrent or 0, constant_grid_search=bool(grouped_keys(cfg)))


def planned_trials(cfg: SweepConfig) -> int:
    """The trials a sweep runs: ``tune.num_samples`` x the length of every grid in its search space (as
    Tune's BasicVariantGenerator makes them: every grid point for each sample)."""
    n = cfg.tune.num_samples
    for v in param_space(cfg).values():
        if isinstance(v, dict) and "grid_search" in v:
            n *= len(v["grid_search"])
    return n


def in_trial_process(train: TrainConfig) -> bool:
    """Whether a trial trains in its Tune trial's own process (one worker, ``train.worker_group:
    auto``) rather than in a Ray Train worker group."""
    return train.num_workers == 1 and train.worker_group == "auto"


def worker_resources(train: TrainConfig, cpw: float, memory: int) -> dict[str, float]:
    """What one training worker asks Ray for: ``cpw`` CPUs, its GPU share, ``memory`` bytes (when any)."""
    return {"CPU": cpw, **({"GPU": train.gpus_per_worker} if train.use_gpu else {}),
            **({"memory": float(memory)} if memory > 0 else {})}


def trial_resources(train: TrainConfig, cpw: float, memory: int = 0) -> dict[str, float]:
    """What one trial asks Ray for: its one process's CPUs, GPU and ``memory`` (bytes: ``worker_memory``),
    or 0.01 CPU for the trial function plus, through Ray Train, ``num_workers`` such bundles."""
    if in_trial_process(train):
        return worker_resources(train, cpw, memory)
    return {"CPU": 0.01}


# (store, embedding stores, training clips, modalities) -> the bytes of those arrays: read once per sweep
_HELD_BYTES: dict[tuple, int] = {}


def worker_memory(cfg: TrialConfig, data: dict) -> int:
    """The bytes each worker of this trial reserves with Ray (``train.memory_gib_per_worker``; null: the
    training clips of the modalities its method reads when they fit ``train.cache_gib``: what the worker
    holds in memory, every rank the whole training set; else 0, the clips stream through a bounded pool)."""
    import hashlib
    import json

    from raybench.registry import METHODS
    from raybench.train.feed import cache_holds, method_inputs

    t = cfg.train
    if t.memory_gib_per_worker is not None:
        return int(t.memory_gib_per_worker * 2**30)
    if not t.cache_gib:
        return 0
    inputs = method_inputs(METHODS.get(cfg.method.name), cfg.method)
    if any(m.endswith("_emb") and m not in (data.get("embeddings") or {}) for m in inputs):
        return 0  # a method reading embeddings this data configuration lacks: its trials fail on their own
    ids = data["ids"]["train"]
    key = (data["store_path"], json.dumps(data.get("embeddings"), sort_keys=True),
           hashlib.sha1("\n".join(sorted(ids)).encode()).hexdigest(), inputs)
    if key not in _HELD_BYTES:
        from raybench.data.store import open_store

        _HELD_BYTES[key] = open_store(data["store_path"], data.get("embeddings")).arrays_nbytes(ids, inputs)
    n = _HELD_BYTES[key]
    return n if cache_holds(n, t.cache_gib) else 0


def check_worker_memory(memory: int, cfg: TrialConfig, where: str, cpw: float) -> None:
    """A worker's memory reservation must fit the memory Ray offers (its ``memory`` resource) on a node
    that could run the worker (``cpw`` CPUs, and its GPU share with ``train.use_gpu``), else its trial
    would wait forever: a ConfigError naming the key that sets it."""
    import ray

    t, gib = cfg.train, 2**30
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    largest = max((r.get("memory", 0.0) for r in nodes if r.get("CPU", 0.0) >= cpw
                   and (not t.use_gpu or r.get("GPU", 0.0) >= t.gpus_per_worker)), default=0.0)
    if memory <= largest:
        return
    if t.memory_gib_per_worker is not None:
        why = f"'train.memory_gib_per_worker' is {t.memory_gib_per_worker:g}"
        fix = "lower it"
    else:
        why = (f"each worker of {where} holds its training clips in memory, {memory / gib:.2f} GiB "
               f"(they fit 'train.cache_gib' = {t.cache_gib:g}), and reserves that with Ray")
        fix = (f"lower 'train.cache_gib' below {memory / gib:.2f} to stream them instead, or set "
               "'train.memory_gib_per_worker' (0: reserve nothing)")
    node = f"{cpw:g} CPU{', a GPU share' if t.use_gpu else ''}"
    raise ConfigError([f"{why}, but the largest node that could run a worker ({node}) offers {largest / gib:.2f} "
                       f"GiB of memory to Ray's tasks (its 'memory' resource): the trial would never start; {fix}"],
                      "config")


_MEMORY_KEYS = ("train.cache_gib", "train.memory_gib_per_worker")


def _memory_params(cfg: SweepConfig) -> list[dict]:
    """Every combination of the values of the swept keys that change what a worker holds (the method's
    options, ``train.cache_gib``, ``train.memory_gib_per_worker``; method.name and data.* are taken from
    the methods and data configurations): a grid's or choice's values; a continuous range's bounds for
    the two memory keys (a worker holds the most at the upper: a larger cache holds the clips, a larger
    reservation is one), its base value for a method option (none of which is a size)."""
    def values(k: str, spec: dict) -> list | None:
        v = search_values(spec)
        if v is None and k in _MEMORY_KEYS:
            low, high = space_values(spec)
            v = [low, high - 1 if "randint" in spec else high]  # (randint never draws its upper bound)
        return v

    keys = []
    for k, spec in cfg.tune.search_space.items():
        parts = k.split("|")
        if (any(p in _MEMORY_KEYS or (p.startswith("method.") and p != "method.name") for p in parts)
                and not any(p == "method.name" or p.startswith("data.") for p in parts)
                and values(k, spec) is not None):
            keys.append(k)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(values(k, cfg.tune.search_space[k]) for k in keys))]


def trial_gpus(t) -> float:
    """The GPUs one trial of ``t`` (train settings) holds: its workers' (0 without ``use_gpu``)."""
    return t.num_workers * t.gpus_per_worker if t.use_gpu else 0.0


def _nodes_short(res: dict, t) -> bool:
    """The cluster (``ray.cluster_resources()``) lacks what one trial of ``t`` (train settings) needs to
    start: any CPU, or the GPUs of its workers (:func:`size_trials` refuses a cluster with too few)."""
    return res.get("CPU", 0) <= 0 or res.get("GPU", 0) < trial_gpus(t)


def _has(res: dict) -> str:
    return f"{res.get('CPU', 0):g} CPU(s), {res.get('GPU', 0):g} GPU(s)"


def read_autoscaler_pending() -> int | None:
    """How many nodes the cluster's Ray autoscaler is launching or starting (0: none; a Ray without an
    autoscaler config, such as one this process started, reports 0), or None when autoscaler v1 has not
    reported yet (its first report comes a few seconds after the head starts; v2 reports nothing
    starting until then). Read where ``ray status`` reads it: autoscaler v2's cluster status, else v1's
    status record in the GCS key-value store (the cluster launcher's). Ray offers no public call for
    this (``ray.autoscaler.sdk`` only requests resources), hence the private modules; raises when they
    cannot be read (:func:`autoscaler_pending` does not)."""
    import json

    import ray
    from ray.autoscaler.v2.utils import is_autoscaler_v2

    if is_autoscaler_v2(fetch_from_server=True):
        from ray.autoscaler.v2.sdk import get_cluster_status

        st = get_cluster_status(ray.get_runtime_context().gcs_address)
        return sum(x.count for x in st.pending_launches) + len(st.pending_nodes)
    from ray._private import ray_constants
    from ray.experimental import internal_kv

    raw = internal_kv._internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    report = json.loads(raw).get("autoscaler_report") if raw else None
    if report is None:
        return None
    return sum(report.get("pending_launches", {}).values()) + len(report.get("pending_nodes", []))


_PENDING_UNREAD: list[str] = []  # the first read error, said once per process


def autoscaler_pending() -> int | None:
    """:func:`read_autoscaler_pending`, or 0 (nothing known to be starting: no wait) when the autoscaler's
    record cannot be read (no Ray here, another Ray's layout, the GCS not answering), said once."""
    try:
        return read_autoscaler_pending()
    except Exception as e:  # noqa: BLE001 - a wait for nodes is a convenience: never a reason to stop
        if not _PENDING_UNREAD:
            _PENDING_UNREAD.append(f"{type(e).__name__}: {e}")
            print(f"[raybench] warning: cannot read what the Ray autoscaler is starting ({_PENDING_UNREAD[0]}); "
                  "the sweep sizes its trials on the nodes present", flush=True)
        return 0


def wait_for_nodes(cfg: SweepConfig, poll_s: float = 2.0, clock=time.monotonic, sleep=time.sleep,
                   pending=autoscaler_pending, first_report_s: float = 60.0) -> None:
    """The sweep sizes its trials on the resources present (:func:`size_trials`), but a cluster answers
    as soon as its head is up: ``ray up`` returns then, while its autoscaler launches the worker nodes,
    which take minutes to boot. So while the autoscaler is launching or starting nodes (or, for at most
    ``first_report_s``, has not reported yet, on a cluster that lacks the CPU or the GPUs one trial
    needs: a Ray this process has just started, whose first report comes within seconds, too), the
    sweep waits, up to ``train.node_wait_s`` seconds, printing what the cluster has every 30 s, and then
    sizes its trials on every node that joined. No wait when nothing is starting (a cluster whose
    nodes are all up or that cannot grow) or with ``train.node_wait_s=0``: a cluster short of GPUs is
    then :func:`size_trials`'s error at once. A cluster without any CPU afterwards is a ConfigError
    here (the prepare stage would wait for one forever)."""
    import ray

    t = cfg.train
    start = clock()

    def waiting(res: dict, p: int | None) -> bool:
        return bool(p) or (p is None and _nodes_short(res, t) and clock() - start < first_report_s)

    def starting(p: int | None) -> str:
        if p is None:
            return "no report from its autoscaler yet"
        return f"its autoscaler is starting {p} node(s)" if p else "its autoscaler is starting no node"

    res, p = ray.cluster_resources(), pending()
    waited = t.node_wait_s > 0 and waiting(res, p)
    if waited:
        need = (f"{trial_gpus(t):g} GPU(s) and a CPU" if t.use_gpu else "a CPU")
        print(f"[raybench] waiting for the cluster's nodes: it has {_has(res)} (a trial needs {need}), "
              f"{starting(p)}; up to train.node_wait_s={t.node_wait_s:g} s (`ray status` shows them; Ctrl-C to "
              "stop)", flush=True)
        said = start
        while clock() - start < t.node_wait_s:
            sleep(poll_s)
            res, p = ray.cluster_resources(), pending()
            if not waiting(res, p):
                break
            if clock() - said >= 30:
                print(f"[raybench] still waiting for nodes ({clock() - start:.0f} s): the cluster has {_has(res)}, "
                      f"{starting(p)}", flush=True)
                said = clock()
        late = (f" (train.node_wait_s reached: the {p} node(s) still starting are not used for the trials' sizing)"
                if p else "")
        print(f"[raybench] the cluster has {_has(res)} after {clock() - start:.0f} s{late}", flush=True)
    if res.get("CPU", 0) <= 0:
        raise ConfigError([f"the cluster has no CPU ({_has(res)}; {starting(p)}; "
                           + (f"waited {clock() - start:.0f} s, " if waited else "")
                           + f"train.node_wait_s={t.node_wait_s:g}): check `ray status`"], "config")


def size_trials(cfg: SweepConfig) -> tuple[float, int]:
    """(CPUs per training worker, max concurrent trials) from the cluster's resources.

    A trial holds ``num_workers`` worker bundles plus 0.01 CPU for the trial function (or, when it
    trains in the trial's own process, just its CPUs). Nothing else runs during the trials (the
    clips were decoded before; the workers read them from the store), so no CPU is held back.
    Trials never ask for more than the cluster has, so they never deadlock.
    """
    import ray

    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 1)), float(res.get("GPU", 0))
    t = cfg.train
    n = t.num_workers
    extra = 0.0 if in_trial_process(t) else 0.01
    cpw = t.cpus_per_worker
    if n * cpw + extra > cpus:
        cpw = max(0.1, (cpus - extra) / n)
    per_trial = n * cpw + extra
    conc = max(1, int(cpus / per_trial + 1e-9))  # not //: in floats 1.0 // 0.1 is 9.0
    if t.use_gpu:
        if gpus < trial_gpus(t):
            raise ConfigError([f"'train.use_gpu' is true with train.num_workers={n} x gpus_per_worker="
                               f"{t.gpus_per_worker:g}, but the cluster has {gpus:g} GPU(s)"], "config")
        conc = min(conc, int(gpus / trial_gpus(t) + 1e-9))  # true division: 1 // 0.2 is 4.0 in floats
    if cfg.tune.max_concurrent_trials:
        conc = min(conc, cfg.tune.max_concurrent_trials)
    return round(cpw, 3), conc


def max_epochs(cfg: SweepConfig) -> int:
    """The longest any trial may train (ASHA's last rung): ``train.epochs``, or more for a method
    that ``per_method`` gives more epochs."""
    return max([cfg.train.epochs] + [int(o["train"]["epochs"]) for o in cfg.per_method.values()
                                     if "epochs" in (o.get("train") or {})])


TRAIN_POLL_S = 0.25  # Ray Train's controller's poll of its workers (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S): run_trial
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"  # Ray Train's switch for it: run_trial


def run_trial(params: dict, base: SweepConfig, data: dict, mlinfo: dict | None, storage: str,
              cpw: float, memory: int = 0, verbose: int = 0) -> None:
    """Tune function trainable: train the sampled ``params`` here (one worker, :func:`in_trial_process`)
    or build and fit one TorchTrainer for them, each worker reserving ``memory`` bytes (``check_resources``)."""
    import ray.train
    from ray import tune
    from ray.train import CheckpointConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from raybench.tracking import TrialLogger
    from raybench.train.worker import train_worker

    quiet_ray(verbose)
    from raybench.storage import join, ray_storage

    cfg = resolve_trial_config(base, params)
    cfg.train.cpus_per_worker = cpw
    # each trial's checkpoints (its Train run's, or raybench's own for a trial in this process) in the
    # sweep's own folder: <storage>/<sweep id>/checkpoints/<trial id>
    sweep_id = mlinfo["sweep_id"] if mlinfo else "sweep"
    checkpoints = join(storage, sweep_id, "checkpoints")
    d = data[data_key(trial_data_cfg(cfg, base))]
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    from raybench.tracking import trial_run_name

    info = None
    if mlinfo:
        info = dict(mlinfo, trial_id=f"{mlinfo['sweep_id']}/{trial_id}",
                    trial_name=trial_run_name(cfg, expand_params(params), trial_id),
                    dataset={k: v for k, v in d.items() if k not in ("ids", "folds", "bad", "warning_list")})
    if info is not None:
        # the trial's run exists before any worker starts: a trial whose workers fail at once (a bad
        # weights file) still has its run, closed FAILED with the cause when the sweep records it
        from raybench.tracking import open_trial_run

        open_trial_run(info, cfg)
    t = cfg.train
    use_gpu = t.use_gpu
    loop_config = {"cfg": cfg, "data": d, "logger": TrialLogger(info) if info else None, "verbose": verbose}
    if in_trial_process(t):  # no worker group: the loop runs here, reporting to Tune
        from raybench.train.checkpoints import TrialCheckpoints
        from raybench.train.loop import TuneSession, train_loop_per_worker

        session = TuneSession(use_gpu, TrialCheckpoints(join(checkpoints, trial_id)))
        train_loop_per_worker({**loop_config, "session": session})
        return
    res = worker_resources(t, cpw, memory)
    storage_path, storage_fs = ray_storage(checkpoints)
    trainer = TorchTrainer(
        train_worker,  # (the loop itself is imported in the workers only: raybench/train/worker.py)
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=use_gpu, resources_per_worker=res),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=trial_id, storage_path=storage_path,
            storage_filesystem=storage_fs,
            checkpoint_config=CheckpointConfig(num_to_keep=1), callbacks=[TuneReportCallback()],
            # Ray Train's own INFO lines (worker group start, checkpoints written) only with -v
            logging_config=ray.train.LoggingConfig(log_level="INFO" if verbose else "WARNING")),
    )
    # Ray Train's controller polls its workers every 2 s by default: the worker group's start and the
    # trial's end are seen on those polls. Every 0.25 s cut a bare 2-worker TorchTrainer.fit() from
    # 14.3-16.4 s to 9.9-12.1 s (this 2-core machine, 2026-12-02: README "Performance"). The controller
    # takes the variable from this process (Ray Train propagates it); a value set already is kept
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(TRAIN_POLL_S))
    # Ray Train 2.60 starts a PreemptionWatcher actor (its own process) beside every worker group; it
    # only logs a node's drain and keeps it for ray.train.get_preemption_info(), which raybench never
    # reads (a worker lost with its node fails the trial, retried by tune.max_failures from its
    # checkpoint, either way). Off unless set: one process less per trial (README "How a trial runs")
    os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")
    trainer.fit()



def quiet_ray(verbose: int = 0) -> None:
    """Ray Data's progress and per-execution lines (start, plan, finish) only with ``-v``: set in this
    process's DataContext, which every dataset created afterwards carries to the processes that run
    it (raybench prints its own progress)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(verbose)
    ctx.print_on_execution_start = bool(verbose)
    if not verbose:
        quiet_ray_worker()


# Ray Data logs "Dataset ... execution finished in ... s" at INFO after every execution (the prepare
# stage's decoding), whatever its DataContext says, and warns once per process that progress bars are
# off (raybench turns them off); only these loggers' levels keep them off the terminal
_QUIET_LOGGERS = {"ray.data._internal.execution.streaming_executor": "WARNING",
                  "ray.data._internal.progress": "ERROR"}


def quiet_ray_worker() -> None:
    """Ray's ``worker_process_setup_hook`` (and the driver): Ray Data's per-execution INFO lines, its
    progress-bars-off notice and one deprecation warning Ray raises against its own code (a Ray Train
    DatasetManager's ``exclude_resources``; trials pass Ray Train no dataset since 2026-11-30) off the console in this process; other warnings
    and errors still show. Never raises (a setup hook that fails would stop the worker)."""
    import logging
    import warnings

    try:
        for name, level in _QUIET_LOGGERS.items():
            logging.getLogger(name).setLevel(level)
        warnings.filterwarnings("ignore", message=".*exclude_resources.*")
    except Exception:  # noqa: BLE001 - a logging tweak must not cost a worker
        pass


def prepare_all(cfg: SweepConfig, verbose: int = 0, labels: dict[str, dict[str, str]] | None = None,
                media: dict[str, dict[str, str]] | None = None) -> dict[str, dict]:
    """PREPARE: every dataset x preprocessing configuration the sweep can reach, once. The file
    listings first (a missing root, a wrong layout, too few subjects fail here, before Ray starts),
    then the decoding, on Ray Data. Returns data key -> summary.

    ``labels``, ``media``: data key -> clip id -> its label digest, its media digest, when the sweep
    started (the summaries' ``label_digests`` and ``media_digests``, kept in the sweep's state): on a
    resume, a configuration whose listed clips or their label, annotation, video or audio files changed
    since is refused before anything is decoded (its trials so far trained on the others). A key the
    state lacks (a state from before 2026-12-04, or from before its media digests were added that day, or a data
    configuration whose settings' JSON a newer raybench writes otherwise) is not checked."""
    import ray

    from raybench.data.store import PrepareError, build, media_files, plan, without_clips

    plans = {data_key(dcfg): plan(dcfg) for dcfg in data_variants(cfg)}

    def some(xs: list[str]) -> str:
        return ", ".join(xs[:5]) + (" ..." if len(xs) > 5 else "")

    for key, p in plans.items():
        by_id = {c.clip_id: c for c in p.clips}
        what, listed = [], None
        for files, then, now, name in (("label or annotation", (labels or {}).get(key), p.labels,
                                        lambda c: c.va_path or f"label {c.label}"),
                                       ("video or audio", (media or {}).get(key), p.media, media_files)):
            if then is None or then == now:
                continue
            changed = [by_id[c] for c in sorted(set(then) & set(by_id)) if then[c] != now[c]]
            if changed:
                what.append(f"{len(changed)} clip(s) whose {files} files changed: "
                            + "; ".join(f"{c.clip_id} ({name(c)})" for c in changed[:5])
                            + (" ..." if len(changed) > 5 else ""))
            listed = listed or (sorted(set(by_id) - set(then)), sorted(set(then) - set(by_id)))
        added, gone = listed or ([], [])
        what += ([f"{len(added)} clip(s) listed now and not then: {some(added)}"] if added else []) \
            + ([f"{len(gone)} clip(s) listed then and not now: {some(gone)}"] if gone else [])
        if not what:
            continue
        raise PrepareError(
            f"{p.name}: the dataset's clips or their files changed since this sweep started ({'; '.join(what)}): "
            "its trials so far trained on what it listed then. Put back the files it started with to resume it, "
            "or start a new sweep")
    if not ray.is_initialized():
        # without -v, every Ray worker process quiets Ray Data's per-execution INFO lines at start (not
        # when a submitted job brings its own hook: Ray refuses two)
        own_hook = "worker_process_setup_hook" in os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "")
        env = {} if verbose or own_hook else {"worker_process_setup_hook": "raybench.trials.quiet_ray_worker"}
        ray.init(ignore_reinit_error=True, runtime_env=env or None)
    quiet_ray(verbose)
    wait_for_nodes(cfg)  # a cluster just launched: the nodes its autoscaler starts join while the sweep waits
    size_trials(cfg)  # trials that need GPUs the cluster lacks: said before the decoding, not after it
    built, seconds = {}, {}
    for key, p in plans.items():
        t0 = time.time()
        built[key] = build(p)
        seconds[key] = time.time() - t0
    # the data configurations on one clip store (encoders swept, or with and without one) leave out every
    # clip one of them could not use, so that their trials are chosen and scored on the same clips
    own = dict(built)  # each configuration's own skipped clips
    for key, prep in own.items():
        others = [o for k, o in own.items() if k != key and str(o.store.path) == str(prep.store.path)]
        dropped = {c: v for o in others for c, v in o.bad.items() if c not in prep.bad}
        if dropped:
            built[key] = without_clips(prep, dropped, plans[key].data_cfg.max_bad_fraction,
                                       "in another data configuration of this sweep on the same clip store: "
                                       "every configuration leaves it out")
    summaries: dict[str, dict] = {}
    for key, p in plans.items():
        dcfg = p.data_cfg
        s = summaries[key] = data_summary(built[key], dcfg.fps, dcfg.split.protocol == "chunks")
        print(f"[raybench] prepared {dcfg.dataset}: {sum(len(v) for v in s['ids'].values())} clips "
              f"(train/val/test {', '.join(str(len(v)) for v in s['ids'].values())}), decoded {s['decoded']}, "
              f"skipped {len(s['bad'])}, {seconds[key]:.0f} s", flush=True)
    return summaries


def cross_data_cfgs(cfg: SweepConfig) -> dict[tuple[str, str], DataConfig]:
    """The cross-corpus track's stores (``eval.cross_corpus``): (the data key of a store the sweep trains
    on, target dataset) -> the target's data settings: the training store's preprocessing (frames, audio
    features, encoders: what the models read must have the same shape), the target's own root."""
    from raybench.registry import DATASETS

    out = {}
    for dcfg in data_variants(cfg):
        if DATASETS.get(dcfg.dataset).task_for(dcfg) != "categorical":
            continue  # a continuous dataset's models are not tested across corpora
        for t in cfg.eval.cross_corpus:
            d = dcfg.model_copy(deep=True)
            d.dataset, d.root = t.dataset, t.root
            out[(data_key(dcfg), t.dataset)] = d
    return out


def prepare_cross(cfg: SweepConfig) -> dict[tuple[str, str], dict]:
    """PREPARE the cross-corpus targets (after :func:`prepare_all`, Ray running): their summaries,
    keyed as :func:`cross_data_cfgs`; a target shared by several training stores is built once."""
    from raybench.data.store import build, plan

    out, built = {}, {}
    for key, dcfg in cross_data_cfgs(cfg).items():
        k = data_key(dcfg)
        if k not in built:
            t0 = time.time()
            built[k] = data_summary(build(plan(dcfg)), dcfg.fps, dcfg.split.protocol == "chunks")
            print(f"[raybench] prepared cross-corpus target {dcfg.dataset}: "
                  f"{sum(len(v) for v in built[k]['ids'].values())} clips, skipped {len(built[k]['bad'])}, "
                  f"{time.time() - t0:.0f} s", flush=True)
        out[key] = built[k]
    return out


def new_sweep_id(cfg: SweepConfig) -> str:
    return f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}-{hashlib.sha1(cfg.model_dump_json().encode()).hexdigest()[:6]}"


class ProgressPrinter(Callback):
    """A Tune callback printing one line per trial start, epoch, end and failure: the terminal output
    of a sweep (Tune's own status tables only with ``-v``). Module-level: Tune pickles it with the
    experiment's state for ``--resume``."""

    # the instance that runs the current experiment: after --resume, Tune's restored copy (its timing
    # of the trials before the interruption set from the experiment's saved state: get_state)
    live: "ProgressPrinter | None" = None

    def __init__(self, cfg: SweepConfig, timing: dict | None = None):
        self.cfg = cfg
        self._epochs: dict[str, int] = {}  # trial id -> its configured epochs (resolved once)
        # trial id -> wall_s (from its start to its end on the driver's clock) and epochs_s (the sum of
        # its epochs' time/epoch_s): what is not in an epoch is the trial's fixed cost
        self.timing = {} if timing is None else timing
        self._failures: dict[str, int] = {}  # trial id -> Tune's failure count when it last started
        self._recovering: set[str] = set()  # trials failed and started again by Tune (tune.max_failures)
        self._ended: set[str] = set()  # trials that ended (completed or failed for good) in this driver
        self._done_before: set[str] | None = None  # trials already ended when the experiment began (a resume)
        self.unfinished = 0  # at the experiment's end: the planned trials that had not ended (Ctrl-C)

    def setup(self, **info):
        ProgressPrinter.live = self
        # Tune gives a resumed sweep the instance it pickled, maybe by a raybench without these
        self._failures, self._recovering, self._ended, self._done_before = {}, set(), set(), None
        self.unfinished = 0

    def on_step_begin(self, iteration, trials, **info):
        if self._done_before is None:  # the first step: what a resumed experiment had already ended
            from ray.tune.experiment import Trial

            self._done_before = {t.trial_id for t in trials if t.status in (Trial.TERMINATED, Trial.ERROR)}

    def get_state(self) -> dict:  # saved by Tune with the experiment's state, given back on --resume
        return {"timing": self.timing}

    def set_state(self, state: dict) -> None:
        self.timing.update(state.get("timing") or {})

    def on_trial_start(self, iteration, trials, trial, **info):
        params = " ".join(f"{k}={v}" for k, v in sorted(expand_params(trial.config).items()))
        now, before = time.time(), self.timing.get(trial.trial_id)
        self._failures.setdefault(trial.trial_id, trial.run_metadata.num_failures)
        if trial.trial_id in self._recovering and before:
            # started again after a failure, the driver running throughout: its time goes on, the lost
            # part of an epoch and the new start included
            self._recovering.discard(trial.trial_id)
        elif before and before["wall_s"] is None and before.get("last"):
            # going on after a resume: its time before the interruption counts, up to its last report
            self.timing[trial.trial_id] = {"start": now - (before["last"] - before["start"]),
                                           "epochs_s": before["epochs_s"], "wall_s": None}
        else:
            self.timing[trial.trial_id] = {"start": now, "epochs_s": 0.0, "wall_s": None}
        print(f"[raybench] trial {trial.trial_id} started: {params or 'the base configuration'}", flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "val/score" not in result:
            return
        if trial.trial_id not in self._epochs:
            self._epochs[trial.trial_id] = resolve_trial_config(self.cfg, trial.config).train.epochs
        epochs = self._epochs[trial.trial_id]
        if trial.trial_id in self.timing:
            self.timing[trial.trial_id]["epochs_s"] += result["time/epoch_s"]
            self.timing[trial.trial_id]["last"] = time.time()
        print(f"[raybench] trial {trial.trial_id} epoch {int(result['epoch']) + 1}/{epochs}: train/loss "
              f"{result['train/loss']:.4f}, val {result['val/score']:.3f} (best {result['best/val/score']:.3f}), "
              f"{result['time/epoch_s']:.1f} s", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended.add(trial.trial_id)
        t = self.timing.get(trial.trial_id)
        if t is None:  # started before a resume
            print(f"[raybench] trial {trial.trial_id} finished", flush=True)
            return
        t["wall_s"] = time.time() - t["start"]
        print(f"[raybench] trial {trial.trial_id} finished in {t['wall_s']:.1f} s, {t['epochs_s']:.1f} s of them "
              f"in its epochs", flush=True)

    def on_trial_recover(self, iteration, trials, trial, **info):  # failed, and tune.max_failures not reached
        n, before = trial.run_metadata.num_failures, self._failures.get(trial.trial_id, 0)
        self._failures[trial.trial_id] = n
        self._recovering.add(trial.trial_id)
        # Tune does not count an actor lost with a node that Ray drained as preempted (Ray 2.60: Trial.
        # _handle_ray_actor_error); the count is the trial's whole life's, a --resume included
        why = (f"failure {n} of tune.max_failures={trial.max_failures}" if n > before else
               "its node was preempted: not counted against tune.max_failures")
        print(f"[raybench] trial {trial.trial_id} failed ({why}): started again from its last checkpoint (from "
              "scratch if it had none)", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended.add(trial.trial_id)
        print(f"[raybench] trial {trial.trial_id} FAILED (the cause is in the table at the end; the other "
              "trials go on)", flush=True)


    def on_experiment_end(self, trials, **info):
        # Tune ends an experiment it was told to stop (Ctrl-C) like a finished one: it stops every trial
        # holding an actor (running, or waiting for its resources), marking it TERMINATED without
        # on_trial_complete, and leaves the others PENDING or unmade. So a trial ended only if Tune said
        # so through the callbacks, or had ended before a resume. (The sweep's own count, not Tune's
        # total_num_samples, which a restored search algorithm need not carry over)
        if self._done_before is None:  # no step at all: a resumed experiment whose trials had all ended
            from ray.tune.experiment import Trial

            self._done_before = {t.trial_id for t in trials if t.status in (Trial.TERMINATED, Trial.ERROR)}
        self.unfinished = max(0, planned_trials(self.cfg) - len(self._ended | self._done_before))


def make_scheduler(cfg: SweepConfig):
    """Tune's trial scheduler (``tune.scheduler``). ASHA counts the trial's own epochs
    (``epochs_done``): Tune's training_iteration starts again at 1 when a trial resumes from its
    checkpoint, which would put it back before the rungs it has passed."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if cfg.tune.scheduler != "asha":
        return FIFOScheduler()
    return ASHAScheduler(time_attr="epochs_done", max_t=max_epochs(cfg),
                         grace_period=min(cfg.tune.grace_period, cfg.train.epochs))


def check_resources(cfg: SweepConfig, summaries: dict[str, dict]) -> tuple[float, int, int]:
    """Before anything is recorded: the trials fit the cluster, else a ConfigError. Returns (CPUs per
    worker, trials at a time: ``size_trials``; bytes every worker reserves).

    Every worker of the sweep reserves the same memory: the most any of its trials' workers holds
    (``worker_memory``, over every method on every data configuration and the swept values of the keys
    that change it: ``_memory_params``), checked against the nodes. One figure for all trials, because Tune hands
    a finished trial's process to the next (``reuse_actors``) only when their resources are equal."""
    from raybench.registry import METHODS

    cpw, conc = size_trials(cfg)
    reserve, worst = 0, None
    for d in summaries.values():
        for m in reachable_methods(cfg):
            if d["task"] not in METHODS.get(m).tasks:
                continue
            for params in _memory_params(cfg):
                tc = resolve_trial_config(cfg, {"method.name": m, **params})
                memory = worker_memory(tc, d)
                if memory > reserve:
                    reserve, worst = memory, (tc, f"{m} on {d['dataset']}")
    if worst is not None:
        check_worker_memory(reserve, *worst, cpw)
    return cpw, conc, reserve


class ResumeError(RuntimeError):
    """A sweep's saved Tune state cannot be resumed from (what, where, and what to do)."""


def mend_tune_state(storage: str, sweep_id: str, temp_dir: str | None) -> None:
    """Tune writes its saved state (``experiment_state-<S>.json`` and, of the same driver session ``<S>``,
    its callbacks', search algorithm's and searcher's files) into the driver's staging folder and then
    copies the files into the sweep's storage, in place: a driver killed during the copy leaves a stored
    file cut short, and Tune's restore then fails deep inside Tune on a JSON or pickle error (the JSON
    seen cut short in tests/integration/test_resume.py, which reads it while Tune writes it). The
    staging folder (``<temp_dir>/session_*/artifacts/*/<sweep_id>/driver_artifacts/``) stays in Ray's
    session folder after the driver dies, holding the same files as new or newer. So when the newest
    stored state does not read, or a stored file of its session is a strict beginning of the staging
    copy's (cut short: a file Tune rewrites whole is never the start of another), every file of that
    session is replaced by the staging folder's (one consistent set), saying so. With no readable copy
    (another machine, a cleaned temp folder, ``temp_dir`` None: no local Ray node, as over Ray Client)
    an unreadable state is a :class:`ResumeError` naming the files. Call it before ``Tuner.restore``,
    which copies the stored files over the staging folder's. An object store (S3, GCS) shows an upload
    only once complete: nothing to mend there."""
    import fnmatch
    import glob
    import json

    from ray.tune.execution.tune_controller import TuneController

    from raybench import storage as st

    fs, root = st.split(storage)
    folder = f"{root.rstrip('/')}/{sweep_id}"
    stored = {p.rsplit("/", 1)[-1]: p for p in st.list_files(fs, folder)}
    states = sorted(n for n in stored if fnmatch.fnmatch(n, TuneController.CKPT_FILE_TMPL.format("*")))
    if not states:
        return
    name = states[-1]  # the one Tune restores from: the latest name (its driver's start time)
    session = name[len("experiment_state-"):-len(".json")]
    of_session = lambda n: n.endswith((f"-{session}.json", f"-{session}.pkl"))  # noqa: E731
    try:
        json.loads(st.read_bytes(fs, stored[name]))
        why = None
    except ValueError as e:  # (JSONDecodeError and UnicodeDecodeError are ValueErrors)
        why = f"{type(e).__name__}: {e}"
    copy = None  # the newest staging folder holding a readable copy of the state
    found = glob.glob(os.path.join(glob.escape(temp_dir), "session_*", "artifacts", "*", glob.escape(sweep_id),
                                   "driver_artifacts", glob.escape(name))) if temp_dir else []
    for f in sorted({os.path.realpath(f) for f in found}, key=os.path.getmtime, reverse=True):
        try:
            with open(f, "rb") as fh:
                json.loads(fh.read())
        except ValueError:
            continue
        copy = os.path.dirname(f)
        break
    if copy is not None:
        src = {n: os.path.join(copy, n) for n in sorted(os.listdir(copy))
               if of_session(n) and os.path.isfile(os.path.join(copy, n))}
        cut = [n for n, p in src.items() if n in stored and _cut_short(st.read_bytes(fs, stored[n]), p)]
        if why is not None or cut:
            for n, p in src.items():
                with open(p, "rb") as fh:
                    st.write_bytes(fs, f"{folder}/{n}", fh.read())
            what = f"{name} does not read ({why})" if why else f"{', '.join(cut)} cut short"
            print(f"[raybench] warning: Tune's saved sweep state in {folder}: {what}, the driver stopped while Tune "
                  f"wrote it; its {len(src)} file(s) of that driver ({', '.join(src)}) replaced by the driver's own "
                  f"copies in {copy}", flush=True)
        return
    if why is None:
        return
    mine = sorted(n for n in stored if of_session(n))
    looked = (f"{temp_dir}/session_*/artifacts/*/{sweep_id}/driver_artifacts/{name}" if temp_dir else
              "no Ray node on this machine to look in")
    raise ResumeError(f"Tune's saved sweep state {stored[name]} does not read ({why}): the driver was stopped while "
                      f"Tune wrote it, and no readable copy of it is left where the driver kept one ({looked}). Tune "
                      "cannot resume from it. An older state of the sweep is there only if it was resumed before "
                      f"(another experiment_state-*.json beside it): to resume from that one, move {', '.join(mine)} "
                      "away (its unfinished trials then go on from the checkpoints it names, which newer ones may "
                      "have replaced since: a trial keeps its newest); else start the sweep again")


def ray_temp_dir() -> str | None:
    """The temp folder of this process's Ray node (``/tmp/ray`` unless ``ray start --temp-dir``), where its
    sessions' folders are; None without a local node (Ray Client)."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    return node.get_temp_dir_path() if node is not None else None


def _cut_short(stored: bytes, copy_path: str) -> bool:
    """Whether ``stored`` is a strict beginning of the file at ``copy_path``."""
    if os.path.getsize(copy_path) <= len(stored):
        return False
    with open(copy_path, "rb") as fh:
        return fh.read(len(stored)) == stored


def tune_trials(cfg: SweepConfig, summaries: dict[str, dict], mlinfo: dict, storage: str,
                metrics: dict[str, str], resume: bool, sizing: tuple[float, int, int], on_start=None,
                verbose: int = 0, timing: dict | None = None):
    """TUNE: one Ray Tune run over the search space, each trial in its Tune trial's own process (one
    worker) or a Ray Train ``TorchTrainer`` (several: :func:`in_trial_process`); a
    resumed sweep restores its Tune state from ``storage``. ``on_start()`` runs once the tuner is
    built, before the first trial. ``timing`` (a dict) receives each trial's wall and epoch seconds
    (a resumed sweep's from Tune's restored callback, which holds the trials' time before the
    interruption too). ``sizing``: :func:`check_resources`'s (CPUs per worker, trials at a time, bytes
    each worker reserves). Returns Tune's ResultGrid and how many planned trials did not end (Tune was
    told to stop: Ctrl-C)."""
    from ray import tune

    from raybench.storage import join, ray_storage

    sweep_id = mlinfo["sweep_id"]
    metric, mode = "val/score", cfg.tune.mode
    cpw, conc, reserve = sizing  # check_resources, called by the sweep before anything is recorded
    mem = (f", each worker reserving {reserve / 2**30:.3g} GiB of memory (fewer trials at a time where that "
           "does not fit)" if reserve else "")
    print(f"[raybench] sweep {sweep_id}: {cfg.train.num_workers} worker(s) x {cpw:g} CPU per trial, "
          f"{conc} trial(s) at a time{mem}; selecting on "
          f"{', '.join(sorted(set(metrics.values())))} ({mode})", flush=True)
    scheduler = make_scheduler(cfg)

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=cfg, data=summaries, mlinfo=mlinfo,
                             storage=storage, cpw=cpw, memory=reserve, verbose=verbose),
        lambda params: trial_resources(resolve_trial_config(cfg, params).train, cpw, reserve))
    exp_dir = join(storage, sweep_id)
    storage_path, storage_fs = ray_storage(storage)
    exp_path = f"{storage_path.rstrip('/')}/{sweep_id}"
    if resume and tune.Tuner.can_restore(exp_path, storage_filesystem=storage_fs):
        # finished trials are kept; unfinished and errored ones go on from their last checkpoint (Tune's
        # resume_errored: the same trial id, so the same checkpoints and MLflow run; a trial that failed
        # before its first checkpoint starts from scratch). Before 2026-12-01 errored trials started again
        # as new trials (restart_errored): their epochs were lost, and their FAILED runs stayed beside the
        # new ones
        print(f"[raybench] resuming sweep {sweep_id} from {exp_dir}", flush=True)
        tuner = tune.Tuner.restore(exp_path, trainable, resume_unfinished=True, resume_errored=True,
                                   param_space=param_space(cfg), storage_filesystem=storage_fs)
    else:
        if resume:  # killed before Tune first saved its state: nothing of Tune's to go on from, said
            print(f"[raybench] no Tune state of sweep {sweep_id} under {exp_dir} (the sweep stopped before Tune "
                  "saved one): its trials start from the beginning", flush=True)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(cfg),
            # reuse_actors: a trial that trains in its own process leaves it, imports done, to the next.
            # Not for Ray Train trials: a second TorchTrainer.fit() in a reused trial process hung after
            # its first trial ended (Ray 2.60; the trial function's report queue is per process)
            tune_config=tune.TuneConfig(metric=metric, mode=mode, scheduler=scheduler,
                                        num_samples=cfg.tune.num_samples, search_alg=search_alg(cfg, conc),
                                        reuse_actors=in_trial_process(cfg.train)),
            # Tune's own tables with -v; by default one raybench line per trial epoch. Tune keeps no
            # checkpoint: a trial in its own process keeps its own (raybench/train/checkpoints.py), a
            # worker-group trial's Ray Train run its own
            # tune.max_failures: a failed trial started again (same trial id) from its last checkpoint
            run_config=tune.RunConfig(name=sweep_id, storage_path=storage_path, storage_filesystem=storage_fs,
                                      verbose=2 if verbose else 0, callbacks=[ProgressPrinter(cfg, timing)],
                                      failure_config=tune.FailureConfig(max_failures=cfg.tune.max_failures)),
        )
    if on_start is not None:
        on_start()
    ProgressPrinter.live = None
    results = tuner.fit()
    live = ProgressPrinter.live
    if timing is not None and live is not None and live.timing is not timing:  # resumed: the restored callback's
        timing.update(live.timing)
    return results, live.unfinished if live else 0

