"""The per-worker training loop (runs inside Ray Train workers, or in the Tune trial's own process
for a one-worker trial) and evaluation.

Each worker streams its share of the training clips from the clip store (a new
random share every epoch: raybench/train/feed.py), cuts windows, and trains the
method under DDP (gloo on CPU, NCCL on GPU). Uneven shares are handled by DDP's
``join()``. Validation clips are split by rank (``ids[rank::world]``) and
streamed from the store too, so every clip is evaluated exactly once;
the metric sums are added up across ranks (raybench/train/metrics.py).

Every epoch: metrics reported to Ray Train (and on to Tune), a checkpoint with
the latest state (``last.pt``) and the best-so-far weights (``best.pt``), and
rank 0 logs the epoch's metrics through the logger it is given (the sweep's records
the trial's MLflow run).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Protocol

import numpy as np
import torch

from raybench.data.store import open_store
from raybench.data.windows import overlap_average, window_starts
from raybench.schema import TrialConfig
from raybench.train.feed import (Clip, Prefetcher, audio_stats_on, cache_holds, emb_stats_on, epoch_groups, eval_windows,
                                 host_batch, method_inputs, store_columns, to_device, train_feed)
from raybench.train.metrics import TaskMetrics
from raybench.train.perturb import can_drop, drop_modalities


class EpochLogger(Protocol):
    """What the loop records a trial with (rank 0 only); the sweep gives an MLflow one
    (:class:`raybench.tracking.TrialLogger`). The loop knows no tracking backend."""

    def start(self, cfg: TrialConfig) -> None:
        """Before the first epoch (again after a resume): open or find the trial's record."""

    def log(self, metrics: dict[str, float], epoch: int) -> None:
        """After each epoch."""


def default_metric(task: str) -> str:
    return "val/uar" if task == "categorical" else "val/ccc"


def build_model(cfg: TrialConfig, data: dict) -> torch.nn.Module:
    from raybench.methods import create_method

    return create_method(cfg.method.name, data["task"],
                         len(data["class_names"]) if data["task"] == "categorical" else 2, cfg.method,
                         n_audio_features=data["n_audio_features"],
                         audio_steps_per_frame=data["audio_steps_per_frame"], fps=float(data["fps"]),
                         audio_layers=int(data.get("audio_layers", 1)), video_emb_dim=int(data.get("video_emb_dim", 0)),
                         n_audio_emb_features=int(data.get("n_audio_emb_features", 0)),
                         audio_emb_steps_per_frame=int(data.get("audio_emb_steps_per_frame", 1)),
                         audio_features=cfg.data.audio.features)


@torch.no_grad()
def evaluate(model: torch.nn.Module, rows: Iterable[dict[str, Any]], data: dict, cfg: TrialConfig, device: torch.device,
             return_predictions: bool = False, perturb=None) -> tuple[dict[str, float], list[dict]]:
    """Metrics over whole clips: categorical scores averaged over a clip's windows; continuous
    predictions averaged per frame over overlapping windows, then mapped back by time to every
    annotated source frame (:func:`source_frame_predictions`), where the CCC is computed
    (``eval.ccc_over``: over all of them pooled, or the mean of per-clip CCCs). Continuous
    prediction rows are one per annotated source frame (``frame``: its index at the annotation's rate).

    ``rows``: store rows, consumed as a stream (:meth:`ClipStore.iter_clips`); a clip is held only
    until its last window is scored. Windows are batched across clips, ``train.eval_batch_size``
    (null: ``train.batch_size``) at a time.

    Evaluation windows step by ``min(window.hop, window.length)``, so they cover every frame even
    when training skips frames (hop > length): no scored frame is left without a prediction.
    Under torch.distributed, every rank must call this (metric states are synced).
    ``perturb``: a transform of the model's batch (``raybench.train.perturb.condition``) applied
    before the forward pass: the robustness track.
    """
    task, length = data["task"], cfg.window.length
    hop = min(cfg.window.hop, length)
    bs = cfg.train.eval_batch_size or cfg.train.batch_size
    mean, std = audio_stats_on(data, device)
    emb_stats = emb_stats_on(data, device)
    metrics = TaskMetrics(task, len(data["class_names"]), device, ccc_over=cfg.eval.ccc_over)
    model.eval()
    preds_out: list[dict] = []
    outs: dict[int, list[torch.Tensor]] = {}  # id(clip) -> its windows' outputs, in window order
    clips = (Clip.from_row(r) for r in rows)
    for windows, done in eval_windows(clips, length, hop, bs):
        if windows:
            batch = to_device(host_batch(windows, length, task), mean, std, device, emb_stats)
            if perturb is not None:
                batch = perturb(batch)
            with _autocast(device, cfg):
                out = model(batch)
            res = (torch.softmax(out["logits"].float(), -1) if task == "categorical" else out["va"].float())
            for (clip, _), r in zip(windows, res):
                outs.setdefault(id(clip), []).append(r)
        for clip in done:
            _score_clip(clip, torch.stack(outs.pop(id(clip))), task, length, hop, data, metrics,
                        preds_out if return_predictions else None)
    return metrics.compute(), preds_out


def _score_clip(clip: Clip, out: torch.Tensor, task: str, length: int, hop: int, data: dict,
                metrics: TaskMetrics, preds_out: list[dict] | None) -> None:
    """One clip's window outputs (categorical: (n, C) probabilities; continuous: (n, L, 2)) -> its
    metric update and prediction rows."""
    row, device = clip.row, out.device
    if task == "categorical":
        score = out.mean(0, keepdim=True)  # (1, C)
        metrics.update(score, torch.tensor([int(row["label"])], device=device))
        if preds_out is not None:
            preds_out.append({"clip_id": row["clip_id"], "label": int(row["label"]),
                              "pred": int(score.argmax()), **{f"p_{c}": float(p) for c, p in
                                                              zip(data["class_names"], score[0].tolist())}})
        return
    n = clip.n
    frame_pred = overlap_average(n, window_starts(n, length, hop), list(out.cpu().numpy()))  # (n, 2) at data.fps
    if "source_va" not in clip.arrays:
        raise ValueError(f"clip {row['clip_id']}: its store row has no source annotation (source_va); "
                         "the clip store was made by an older raybench: delete it to rebuild it")
    truth = clip.arrays["source_va"]  # (N, 2) at the annotation's own rate
    pred = source_frame_predictions(frame_pred, len(truth), float(row["source_va_rate"]),
                                    float(row["source_fps"]), int(row["source_frames"]), float(data["fps"]))
    metrics.update(torch.from_numpy(pred).to(device), torch.from_numpy(truth.copy()).to(device))
    if preds_out is not None:
        for t in range(len(truth)):
            preds_out.append({"clip_id": row["clip_id"], "frame": t, "valence": float(pred[t, 0]),
                              "arousal": float(pred[t, 1]), "valence_true": float(truth[t, 0]),
                              "arousal_true": float(truth[t, 1])})


def source_frame_predictions(frame_pred: np.ndarray, n_labels: int, label_rate: float, source_fps: float,
                             source_frames: int, fps: float) -> np.ndarray:
    """Predictions at ``fps`` (T, D) -> one per annotated step (n_labels, D) of an annotation at
    ``label_rate`` Hz (the video's ``source_fps`` for per-frame labels). Step j is at time
    j / label_rate, shown by source frame s = floor(time x source_fps); it takes the prediction of the
    output frame decoded from s, or else from the latest source frame before s that was decoded
    (frames were chosen by :func:`raybench.data.decode.resample_indices`, which this inverts)."""
    from raybench.data.decode import resample_indices

    decoded = resample_indices(source_frames, source_fps, fps)[: len(frame_pred)]  # source frame of each output
    shown = np.floor(np.arange(n_labels) / label_rate * source_fps + 1e-6).astype(np.int64)
    idx = np.searchsorted(decoded, shown, side="right") - 1
    return frame_pred[np.clip(idx, 0, len(frame_pred) - 1)]


def train_step(method: torch.nn.Module, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
    """Backward and update. Parameters the method has frozen for now (``frozen_parameters()``,
    e.g. a pretrained backbone before gradual unfreezing) get no update: their gradients are
    dropped after backward (under DDP they were still reduced, so every rank stays in step)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if hasattr(method, "frozen_parameters"):
        for p in method.frozen_parameters():
            p.grad = None  # Adam and AdamW skip a parameter without a gradient (no weight decay either)
    opt.step()


def trainable_parameters(method: torch.nn.Module) -> int:
    """Parameters that train now: all, less those the method holds frozen (``frozen_parameters``)."""
    frozen = {id(p) for p in getattr(method, "frozen_parameters", list)()}
    return sum(p.numel() for p in method.parameters() if p.requires_grad and id(p) not in frozen)


def window_cost(method: torch.nn.Module, cfg: TrialConfig, data: dict) -> dict[str, float]:
    """The model's size and compute: ``model/parameters`` and ``model/gflops_per_window`` (one
    window of ``window.length`` frames in evaluation, counted by torch's FlopCounterMode: matrix
    multiplications and convolutions, 2 FLOPs per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    L, H = cfg.window.length, cfg.data.image_size
    k, F = int(data["audio_steps_per_frame"]), int(data["n_audio_features"])
    dev = next(method.parameters()).device
    batch = {"video": torch.zeros(1, L, 3, H, H, device=dev), "audio": torch.zeros(1, L * k, F, device=dev),
             "mask": torch.ones(1, L, dtype=torch.bool, device=dev)}
    if getattr(method, "needs_flow", False):
        batch["flow"] = torch.zeros(1, L, 2, H, H, device=dev)
    if data.get("video_emb_dim"):
        batch["video_emb"] = torch.zeros(1, L, int(data["video_emb_dim"]), device=dev)
    if data.get("n_audio_emb_features"):
        batch["audio_emb"] = torch.zeros(1, L * int(data["audio_emb_steps_per_frame"]), int(data["n_audio_emb_features"]),
                                         device=dev)
    out = {"model/parameters": float(sum(p.numel() for p in method.parameters()))}
    was_training = method.training
    method.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            method(batch)
        out["model/gflops_per_window"] = counter.get_total_flops() / 1e9
    except Exception as e:  # a cost figure must never cost the trial: say so, train on
        print(f"[raybench] warning: FLOPs per window not counted ({type(e).__name__}: {e})", flush=True)
    finally:
        method.train(was_training)
    return out


def make_optimizer(model: torch.nn.Module, method: torch.nn.Module, cfg: TrialConfig):
    """The optimizer (``train.optimizer``, or the method's own when null: Adam with L2 weight decay or
    AdamW) and the learning-rate schedule (``train.lr_schedule``), both fresh at ``train.lr``."""
    tcfg = cfg.train
    kind = tcfg.optimizer or getattr(method, "optimizer", "adamw")
    cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
    opt = cls(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    sched = None
    if tcfg.lr_schedule == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode=cfg.tune.mode, factor=tcfg.plateau_factor, patience=tcfg.plateau_patience,
            eps=0.0)  # torch's default eps (1e-8) would silently ignore drops below 1e-8
    return opt, sched


def quiet_train_worker(verbose: int = 0) -> None:
    """In a Ray Train worker, the per-report line ("Reporting training result ...") only with ``-v``.
    Ray Train logs it through a logger named by its source file, which its own
    ``LoggingConfig(log_level=...)`` does not reach, so it is set here by that name."""
    import logging

    if verbose:
        return
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: nothing to quiet
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def _rss_gib() -> float:
    """This process's resident set now (Linux: /proc/self/statm; elsewhere its peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
    except OSError:
        return _peak_rss_gib()


def _reset_peak_rss() -> None:
    """Start this process's peak resident set afresh (Linux: writing 5 to /proc/self/clear_refs resets
    VmHWM to the current size): a Tune trial process reused for the next trial would otherwise report
    the previous trial's peak. Elsewhere nothing happens (the peak is the process's so far)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_gib() -> float:
    """This process's peak resident set. Linux: VmHWM of /proc/self/status, this program's own (the
    rusage figure, ru_maxrss, carries over across exec the peak of the process that forked it)."""
    import resource
    import sys

    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def _autocast(device: torch.device, cfg: TrialConfig):
    if device.type == "cuda" and cfg.train.amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class TrainSession:
    """What the loop asks of Ray in a Ray Train worker (a ``TorchTrainer``'s worker group: DDP)."""

    def __init__(self, verbose: int = 0):
        import ray.train
        import ray.train.torch

        quiet_train_worker(verbose)
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)  # DDP when world > 1, moved to device

    def get_checkpoint(self):
        import ray.train

        return ray.train.get_checkpoint()

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=ckpt)


class TuneSession:
    """The same in a Tune trial's own process: one worker, no worker group (``train.num_workers=1``
    with ``train.worker_group: auto``). Tune gives the trial its CPUs and GPU and ASHA stops it like
    any trial; its checkpoints are kept in ``checkpoints`` (a :class:`TrialCheckpoints`, not Tune's:
    see raybench/train/checkpoints.py), each one's path reported to Tune as ``checkpoint_path``."""

    rank, world = 0, 1

    def __init__(self, use_gpu: bool, checkpoints):
        # Tune sets CUDA_VISIBLE_DEVICES to the trial's GPU: it is cuda:0 here
        self.device = torch.device("cuda", 0) if use_gpu and torch.cuda.is_available() else torch.device("cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.checkpoints = checkpoints

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def get_checkpoint(self):
        from ray import tune

        # Tune's own: a trial of a sweep started before raybench kept these checkpoints itself
        return self.checkpoints.latest() or tune.get_checkpoint()

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        from ray import tune

        if checkpoint_dir:
            metrics = {**metrics, "checkpoint_path": self.checkpoints.save(checkpoint_dir, int(metrics["epoch"]))}
        tune.report(metrics)


def sync_buffers(module: torch.nn.Module) -> None:
    """Every rank's buffers (BatchNorm's running statistics) as rank 0's, before evaluation under DDP.

    DDP broadcasts rank 0's buffers at the start of each forward pass, and that pass then updates
    each rank's copy with its own batch: after an epoch the ranks' statistics differ, and each rank
    would score its share of the validation clips with other statistics than the checkpoint saves
    (rank 0's). Before 2026-12-03 they did."""
    for b in module.buffers():
        torch.distributed.broadcast(b, 0)


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point, and the trial itself for a trial without a worker group. ``config``: cfg
    (the trial's :class:`TrialConfig`), data (prepared summary), logger (an :class:`EpochLogger` rank 0
    records the trial with, or None), session (a :class:`TuneSession`; default: a Ray Train worker's)."""
    cfg, data, logger = config["cfg"], config["data"], config.get("logger")
    session = config.get("session") or TrainSession(config.get("verbose", 0))
    _reset_peak_rss()  # this trial's peak, not an earlier trial's in the same process
    rank, world = session.rank, session.world
    tcfg = cfg.train
    torch.set_num_threads(max(1, int(tcfg.cpus_per_worker)))
    seed = tcfg.seed
    torch.manual_seed(seed)  # the model's initial weights (the same on every rank)
    device = session.device
    if device.type == "cuda":  # gpu/peak_mem_gib: this trial's peak, not an earlier trial's in the same process
        torch.cuda.reset_peak_memory_stats(device)
    task = data["task"]
    metric_name = cfg.tune.metric or default_metric(task)
    mode = cfg.tune.mode

    logger = logger if rank == 0 else None
    if logger is not None:
        logger.start(cfg)  # finds the run the trial opened before its workers started; adds the device

    model = build_model(cfg, data)
    method = model
    cost = window_cost(method, cfg, data) if rank == 0 else {}  # before DDP wraps it (a forward pass on rank 0)
    model = session.prepare_model(model)
    opt, sched = make_optimizer(model, method, cfg)
    early_stop = tcfg.early_stop
    start_epoch, best, best_epoch, best_state, last_metrics = 0, None, -1, None, None
    ckpt = session.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            st = torch.load(Path(d) / "last.pt", map_location=device, weights_only=False)
            method.load_state_dict(st["model"])
            opt.load_state_dict(st["optimizer"])
            if sched is not None and st.get("scheduler"):
                sched.load_state_dict(st["scheduler"])
            start_epoch, best, best_epoch = st["epoch"] + 1, st["best"], st["best_epoch"]
            last_metrics = st.get("metrics")
            best_state = torch.load(Path(d) / "best.pt", map_location="cpu", weights_only=False)

    rss_start = _rss_gib()  # before any clip is read: the input pipeline's memory is the growth from here
    store = open_store(data["store_path"], data.get("embeddings"))
    val_ids = set(data["ids"]["val"][rank::world])
    train_ids = set(data["ids"]["train"])
    # the row groups of this worker's clips, listed once; their clips are read from the store every epoch
    groups = store.row_groups(train_ids)
    val_groups = store.row_groups(val_ids)
    length, hop, bs = cfg.window.length, cfg.window.hop, tcfg.batch_size
    # per-worker batch: the configured batch size is global
    local_bs = max(1, bs // world)
    pin = device.type == "cuda"
    mean, std = audio_stats_on(data, device)
    emb_stats = emb_stats_on(data, device)

    inputs = method_inputs(method)  # only the modalities the method reads are read from the store and sent
    drop_gen = torch.Generator(device=device) if tcfg.modality_dropout else None  # its draws, on the device
    columns = store_columns(inputs)
    # the training clips held in memory after their first read when they fit train.cache_gib (every
    # rank reads every clip over the epochs: the shares are new each epoch)
    cache_bytes = store.arrays_nbytes(train_ids, inputs)
    cache: dict | None = {} if cache_holds(cache_bytes, tcfg.cache_gib) else None

    def epoch_batches(epoch: int, rng: np.random.Generator):
        return train_feed(store, epoch_groups(groups, seed, epoch, rank, world), train_ids, task, length, hop,
                          local_bs, rng, tcfg.shuffle_clips, tcfg.shuffle_batches, pin=pin,
                          read_threads=tcfg.read_threads or max(1, int(tcfg.cpus_per_worker)),
                          columns=columns, cache=cache, phase=cfg.window.phase_for(cfg.method.name))

    restore = getattr(method, "restore_weights", method.load_state_dict)
    # resumed after the epoch that ended it early (train.early_stop; the sweep interrupted before it recorded
    # the trial as finished): no further epoch
    stopped = ckpt and early_stop is not None and start_epoch - 1 - best_epoch >= early_stop
    nothing_trained = start_epoch >= tcfg.epochs or bool(stopped)
    for epoch in range(start_epoch, start_epoch if stopped else tcfg.epochs):
        t0 = time.time()
        if hasattr(method, "epoch_start"):  # e.g. zhang2021's authors' gradual unfreezing
            action = method.epoch_start(epoch, opt.param_groups[0]["lr"])
            if action == "stop":  # (normally seen at the end of the previous epoch; here after a resume)
                nothing_trained = epoch == start_epoch
                break  # the method's schedule has nothing left to do: the trial ends here
            if action == "release":
                if best_state is not None:
                    restore(best_state)
                method.release_next()
                opt, sched = make_optimizer(model, method, cfg)  # from train.lr again, fresh state
        # every random draw of the epoch (its windows, the model's dropout, train.modality_dropout) is
        # seeded from (train.seed, epoch, rank), not carried over from the epoch before: a trial resumed
        # from its checkpoint trains each epoch as it would have uninterrupted
        rng = np.random.default_rng([seed, rank, epoch])
        torch.manual_seed(int(np.random.default_rng([seed, rank, epoch, 1]).integers(2**62)))
        if drop_gen is not None:
            drop_gen.manual_seed(int(np.random.default_rng([seed, rank, epoch, 2]).integers(2**62)))
        model.train()
        tot, n_batches, n_samples = torch.zeros((), device=device), 0, 0
        dropped = torch.zeros(2, dtype=torch.long, device=device)  # windows without audio, without video
        join = model.join() if hasattr(model, "join") else contextlib.nullcontext()
        with join, Prefetcher(epoch_batches(epoch, rng), tcfg.prefetch) as feed:
            for hb in feed:
                batch = to_device(hb, mean, std, device, emb_stats)
                if tcfg.modality_dropout:
                    batch, n = drop_modalities(batch, tcfg.modality_dropout, inputs, drop_gen)
                    if n is not None:
                        dropped += n  # on the device: no host sync per step
                with _autocast(device, cfg):
                    out = model(batch)
                    loss = method.loss(out, batch)
                train_step(method, loss, opt)
                tot += loss.detach().float()  # summed on the device: no host sync per step
                n_batches += 1
                n_samples += int(hb["mask"].shape[0])
        train_s = time.time() - t0
        if world > 1 and torch.distributed.is_initialized():  # every rank's windows (shares are uneven)
            # one all-reduce: the windows, those without a modality, and the loss over every rank's batches
            # (before 2026-12-03 the loss was rank 0's only); float64 holds the counts exactly
            seen = torch.cat([torch.tensor([n_samples, n_batches], dtype=torch.float64, device=device),
                              tot.double().view(1), dropped.double()])
            torch.distributed.all_reduce(seen)
            n_samples, n_batches, tot, dropped = int(seen[0]), int(seen[1]), seen[2], seen[3:].long()
            sync_buffers(method)
        val, _ = evaluate(method, store.iter_groups(val_groups, val_ids, store_columns(inputs, True)), data, cfg, device)
        metrics = {f"val/{k}": v for k, v in val.items()}
        # epochs_done: the trial's own count (ASHA's clock; Tune's training_iteration restarts after a resume)
        metrics.update({"epoch": epoch, "epochs_done": epoch + 1, "train/loss": float(tot) / max(1, n_batches),
                        "time/epoch_s": time.time() - t0, "time/train_samples_per_s": n_samples / max(train_s, 1e-9),
                        "train/windows_seen": n_samples,
                        # time this worker's training steps waited for the input pipeline
                        "time/data_wait_s": feed.wait_s,
                        # 1: the training clips are held in memory after the first epoch (train.cache_gib)
                        "data/cached": float(cache is not None), "data/train_gib": cache_bytes / 2**30})
        if tcfg.modality_dropout and can_drop(inputs):  # train.modality_dropout: windows trained without each
            metrics["train/windows_without_audio"], metrics["train/windows_without_video"] = map(int, dropped.tolist())
        metrics.update(cost)
        # this worker's memory: the process's peak resident set, and its growth since before the data was
        # read (streamed clips, shuffle pool, prefetched batches, the model's training state)
        metrics["memory/peak_rss_gib"] = _peak_rss_gib()
        metrics["memory/growth_gib"] = metrics["memory/peak_rss_gib"] - rss_start
        metrics["model/trainable_parameters"] = trainable_parameters(method)  # changes with gradual unfreezing
        if device.type == "cuda":
            metrics["gpu/peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        cur = metrics[metric_name]
        # a diverged epoch's NaN score never counts as best: any finite score beats it (before 2026-12-03 a
        # NaN at the first epoch stayed best, as nothing compares greater than NaN)
        if best is None or (np.isfinite(cur) and (not np.isfinite(best) or (cur > best if mode == "max" else cur < best))):
            best, best_epoch = cur, epoch
            # kept here, not by a score-ordered ray.train.CheckpointConfig: the trial is a Tune function
            # around a TorchTrainer, and Tune's result holds the Train run's latest checkpoint only;
            # that checkpoint must carry the last state (resume) and the best weights (test) together
            best_state = {k: v.detach().cpu().clone() for k, v in method.state_dict().items()}
        if sched is not None:
            lr_before = opt.param_groups[0]["lr"]
            sched.step(cur)
            if opt.param_groups[0]["lr"] < lr_before and hasattr(method, "on_lr_drop"):
                method.on_lr_drop()  # e.g. unfreeze the next backbone stage
        if getattr(method, "reload_best_each_epoch", False) and best_state is not None:
            restore(best_state)  # the next epoch starts from the best weights (zhang2021's authors)
        # the method's schedule ends the trial before the next epoch (known now: this report is the last)
        method_ends = (epoch + 1 < tcfg.epochs and hasattr(method, "epoch_start")
                       and method.epoch_start(epoch + 1, opt.param_groups[0]["lr"]) == "stop")
        if method_ends:
            metrics["trial/method_ended"] = 1.0
        metrics["train/lr"] = opt.param_groups[0]["lr"]
        if hasattr(method, "released_groups"):
            metrics["train/released_groups"] = int(method.released_groups)
        metrics[f"best/{metric_name}"] = best
        metrics["val/score"], metrics["best/val/score"] = cur, best  # the selection metric, under one name
        metrics["best_epoch"] = best_epoch
        if logger is not None:
            logger.log(metrics, epoch)
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:
                torch.save({"model": method.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                            "best": best, "best_epoch": best_epoch, "metrics": metrics,
                            "scheduler": sched.state_dict() if sched is not None else None},
                           os.path.join(tmp, "last.pt"))
                torch.save(best_state, os.path.join(tmp, "best.pt"))
            session.report(metrics, tmp if rank == 0 else None)
        if early_stop is not None and epoch - best_epoch >= early_stop:
            break  # no better validation score for `early_stop` epochs: the trial ends here
        if method_ends:
            break

    if nothing_trained and last_metrics is not None:
        # resumed after the last epoch, or after the one that stopped it early (the sweep was interrupted
        # before it recorded this trial as finished): nothing to train; report the final metrics and
        # checkpoint again
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:
                with ckpt.as_directory() as d:
                    for name in ("last.pt", "best.pt"):
                        shutil.copy(Path(d) / name, Path(tmp) / name)
            session.report(last_metrics, tmp if rank == 0 else None)
