"""The scale rehearsal (``python -m raybench.bench --rehearsal N``): an Aff-Wild2-shaped set at a
reduced count, through the real stages, with throughput and peak memory per stage.

1. generate: N long videos (``--rehearsal-seconds``, 1280x720 by default, 30 fps) in Aff-Wild2's
   layout, each with per-frame valence-arousal labels (``synth.generate_affwild2_long``);
2. prepare: the sweep file's data settings (``--sweep``)
   decode the set into a clip store on a local Ray with every CPU (``store.plan`` + ``store.build``);
   the default sweep is the paper's protocol for Aff-Wild2, ``sweeps/zhang2021_affwild2.yaml``
   (30 fps, 48 px, zhang2021, windows of 300 frames);
3. train: one trial of that sweep (its first method, window and fold; one epoch) through
   ``sweep.run_sweep``: Ray Tune, a Ray Train worker group, the streamed input pipeline, validation,
   test and the MLflow record, as a user runs it.

Memory is sampled every 0.25 s over this process and every process below it (the local Ray:
GCS, raylet, the decoding and training workers): the peak of their summed proportional set sizes
(a shared page, e.g. of torch's libraries or Ray's object store, split between the processes that
map it, so the sum counts it once) and the largest single process's peak between samples. The trial's own figures come from its MLflow run (``memory/*``,
``time/*``, ``train/windows_seen``). The figures feed the README's "Aff-Wild2 at full size".
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

from raybench.config import SWEEPS_DIR, load_raw, validate

MIB = 2**20


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:  # the process ended
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name (in parentheses) may hold spaces
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _pss_kib(pid: int) -> int:
    """The process's proportional set size: its private pages plus its share of pages it shares
    (torch's libraries, Ray's object store), so a sum over processes counts each page once."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("Pss:")), 0)
    except OSError:  # the process ended
        return 0


class TreeMemory:
    """Samples the memory of this process and its descendants in a thread: each one's proportional
    set size (Linux /proc/<pid>/smaps_rollup; psutil is not a raybench dependency). ``peak_mib``: the
    largest sum seen, the memory the machine gave them; ``largest_mib``: the largest one process."""

    def __init__(self, every: float = 0.25):
        self.every, self.peak_mib, self.largest_mib = every, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        kids, todo, total, largest = _children(), [os.getpid()], 0, 0
        while todo:
            pid = todo.pop()
            r = _pss_kib(pid)
            total, largest = total + r, max(largest, r)
            todo += kids.get(pid, [])
        self.peak_mib = max(self.peak_mib, total / 1024)
        self.largest_mib = max(self.largest_mib, largest / 1024)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def sweep_for(sweep: str | Path, root: Path, folder: Path, overrides: list[str]) -> dict:
    """The rehearsal's one-trial, one-epoch version of ``sweep`` on the generated set."""
    raw = load_raw(sweep, overrides)
    raw["data"] = {**raw.get("data", {}), "root": str(root), "store_dir": str(folder / "stores")}
    space = raw.get("tune", {}).get("search_space") or {}
    first = {}
    for key, spec in space.items():  # the first value of every swept key: one trial
        values = spec.get("grid") or spec.get("choice") if isinstance(spec, dict) else None
        if values:
            first[key] = values[0]
    raw["tune"] = {**raw.get("tune", {}), "search_space": {}, "repeats": 1}
    raw["train"] = {**raw.get("train", {}), "epochs": 1}
    raw["eval"] = {**raw.get("eval", {}), "val_plots": False}
    raw["storage"] = str(folder / "results")
    raw["mlflow"] = {"tracking_uri": f"sqlite:///{folder / 'mlflow.db'}"}
    for key, value in first.items():  # e.g. method.name, window.length, data.fold
        section, _, rest = key.partition(".")
        node = raw.setdefault(section, {})
        *parents, leaf = rest.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return raw


def rehearse(args, overrides: list[str]) -> dict:
    """Run the rehearsal (``args``: the benchmark's options); print and return its figures. Uses
    the running Ray when there is one (a test's), else starts a local one with every CPU."""
    import ray

    from raybench.data.store import build, decode_row, plan
    from raybench.data.synth import generate_affwild2_long
    from raybench.sweep import run_sweep
    from raybench.sweepbench import one_trial_run
    from raybench.trials import quiet_ray

    w, h = (int(x) for x in args.decode_size.lower().split("x"))
    n, seconds, fps = args.rehearsal, args.rehearsal_seconds, 30.0
    sweep = Path(args.sweep or SWEEPS_DIR / "zhang2021_affwild2.yaml")
    out: dict = {"videos": n, "seconds": seconds, "size": [w, h], "sweep": sweep.name}
    with tempfile.TemporaryDirectory(prefix="raybench-rehearsal-") as d:
        folder = Path(d)
        cfg = validate(sweep_for(sweep, folder / "affwild2", folder, overrides), str(sweep))
        t0 = time.perf_counter()
        root = generate_affwild2_long(folder / "affwild2", n, seconds, fps, w, h)
        print(f"[bench] rehearsal: generated {n} videos of {seconds:g} s {w}x{h} {fps:g} fps "
              f"({_du(root / 'videos') / MIB:.0f} MiB) in {time.perf_counter() - t0:.0f} s; sweep {sweep.name}: "
              f"data.fps={cfg.data.fps:g}, data.image_size={cfg.data.image_size}, method {cfg.method['name']}, "
              f"window {cfg.window.length}/{cfg.window.hop}, batch {cfg.train.batch_size}, "
              f"{cfg.train.num_workers} worker(s)", flush=True)
        per_video = int(round(seconds * fps))
        source_frames = n * per_video
        p = plan(cfg.data)
        one_clip = p.clips[0].to_row()
        decode_row(one_clip, cfg.data)  # warm-up (imports, caches)
        t0 = time.perf_counter()
        decode_row(one_clip, cfg.data)
        one = out["one_process_frames_per_s"] = per_video / (time.perf_counter() - t0)
        print(f"[bench] one process decodes {one:.0f} source frames/s (one clip, timed here after a warm-up)",
              flush=True)
        started = ray.is_initialized()
        if not started:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        quiet_ray(0)
        try:
            with TreeMemory() as mem:
                t0 = time.perf_counter()
                prep = build(p, progress=False)
                wall = time.perf_counter() - t0
            store_bytes = _du(Path(str(prep.store.path)))
            stored = sum(r["num_frames"] for r in prep.store.read_clips(None, columns=["num_frames"]))
            rate = source_frames / wall
            out["prepare"] = {"seconds": wall, "source_frames_per_s": rate, "ratio": rate / (cpus * one),
                              "store_bytes": store_bytes, "stored_frames": stored,
                              "peak_mib": mem.peak_mib, "largest_mib": mem.largest_mib}
            print(f"[bench] prepare: {n} clips in {wall:.1f} s: {rate:.0f} source frames/s ({rate / cpus:.0f} per "
                  f"CPU, {rate / (cpus * one):.2f} of {cpus} x one process, Ray Data's start-up included); "
                  f"store {store_bytes / MIB:.0f} MiB for {stored} frames "
                  f"({store_bytes / max(1, stored):.0f} bytes/frame on disk)", flush=True)
            print(f"prepare peak memory: Ray and this process (PSS) {mem.peak_mib:.0f} MiB, largest process "
                  f"{mem.largest_mib:.0f} MiB", flush=True)

            with TreeMemory() as mem:
                t0 = time.perf_counter()
                result = run_sweep(cfg)
                wall = time.perf_counter() - t0
        finally:
            if not started:
                ray.shutdown()
        # the last value of each of the trial's metrics, read while the sweep's MLflow store (in the temporary
        # folder) is still there
        m = dict(one_trial_run(result).data.metrics)
    seen, epoch_s = m["train/windows_seen"], m["time/epoch_s"]
    out["train"] = {"sweep_seconds": wall, "epoch_seconds": epoch_s, "windows_seen": seen,
                    "windows_per_s": m["time/train_samples_per_s"], "data_wait_s": m["time/data_wait_s"],
                    "worker_peak_mib": 1024 * m["memory/peak_rss_gib"], "worker_growth_mib": 1024 * m["memory/growth_gib"],
                    "peak_mib": mem.peak_mib, "largest_mib": mem.largest_mib}
    print(f"[bench] train: one trial of one epoch, the sweep {wall:.0f} s in all; the epoch {epoch_s:.1f} s: "
          f"{seen:.0f} windows of {cfg.window.length} frames, {m['time/train_samples_per_s']:.1f} windows/s "
          f"(every rank's windows over rank 0's training time), {seen * cfg.window.length / max(epoch_s, 1e-9):.0f} "
          f"frames/s over the epoch; input pipeline wait "
          f"{m['time/data_wait_s']:.2f} s", flush=True)
    print(f"train peak memory: Ray and this process (PSS) {mem.peak_mib:.0f} MiB, largest process "
          f"{mem.largest_mib:.0f} MiB; the worker's own peak {1024 * m['memory/peak_rss_gib']:.0f} MiB, "
          f"growth {1024 * m['memory/growth_gib']:.0f} MiB", flush=True)
    pr, tr = out["prepare"], out["train"]
    print(f"\n{'stage':<20}{'throughput':<30}peak MiB (all processes / largest)")
    for stage, rate, fig in (("prepare", f"{pr['source_frames_per_s']:.0f} source frames/s", pr),
                             ("train (one epoch)", f"{tr['windows_per_s']:.1f} windows/s", tr)):
        print(f"{stage:<20}{rate:<30}{fig['peak_mib']:.0f} / {fig['largest_mib']:.0f}")
    return out
