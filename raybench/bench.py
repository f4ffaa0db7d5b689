"""Training-step throughput and memory of every method, without Ray or data: a benchmark.

    python -m raybench.bench                        # every method, its tasks, on cuda if present
    python -m raybench.bench --methods zhang2021 --batch-size 64 --window 300 --image-size 112
    python -m raybench.bench --ddp                  # wrap in DDP (NCCL on GPU, gloo on CPU), world size 1

Each method is built with its paper defaults (``key=value`` arguments override method keys), fed
random batches of the shapes the training loop produces, and timed over ``--steps`` training steps
(forward, loss, backward, AdamW step; bf16 autocast on GPU unless ``--no-amp``) after warm-up
steps. It prints samples per second, milliseconds per step and peak GPU memory per method and task.
This measures the model alone; `time/train_samples_per_s` in a trial's metrics measures the whole
loop (decoding Parquet rows, windows, DDP).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from typing import TYPE_CHECKING

from raybench.schema import AudioConfig

if TYPE_CHECKING:
    import torch


def random_batch(task: str, batch: int, window: int, size: int, n_mels: int, steps_per_frame: int,
                 flow: bool, n_classes: int, device: torch.device) -> dict[str, torch.Tensor]:
    import torch

    b = {
        "video": torch.rand(batch, window, 3, size, size, device=device) * 2 - 1,
        "audio": torch.randn(batch, window * steps_per_frame, n_mels, device=device),
        "mask": torch.ones(batch, window, dtype=torch.bool, device=device),
    }
    if task == "categorical":
        b["label"] = torch.randint(0, n_classes, (batch,), device=device)
    else:
        b["va"] = torch.rand(batch, window, 2, device=device) * 2 - 1
    if flow:
        b["flow"] = torch.randn(batch, window, 2, size, size, device=device)
    return b


def bench_one(name: str, task: str, args, overrides: dict, device: torch.device) -> dict:
    import torch

    from raybench.methods import METHODS, create_method

    cls = METHODS.get(name)
    keys = {k: v for k, v in overrides.items() if k in cls.defaults}
    n_out = 8 if task == "categorical" else 2
    model = create_method(name, task, n_out, n_audio_features=args.n_mels,
                          audio_steps_per_frame=args.steps_per_frame, fps=args.fps, **keys).to(device)
    method = model
    if args.ddp:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = random_batch(task, args.batch_size, args.window, args.image_size, args.n_mels, args.steps_per_frame,
                         cls.needs_flow, n_out, device)
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and args.amp
           else contextlib.nullcontext())
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
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    from raybench.envcheck import require

    require()  # a broken torch/torchaudio/... install: one message and exit 2, before any work
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
    print(head)
    print("-" * len(head))
    for name in names:
        for task in METHODS.get(name).tasks:
            r = bench_one(name, task, args, overrides, device)
            print(f"{r['method']:<16}{r['task']:<13}{r['params_M']:>11.2f}{r['step_ms']:>10.1f}"
                  f"{r['samples_per_s']:>11.1f}{r['peak_mem_GiB']:>10.2f}".replace("nan", "  -"), flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if args.ddp:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
