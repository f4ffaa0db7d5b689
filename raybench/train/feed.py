"""The input pipeline of training and evaluation: clips streamed from the clip store, cut into
windows, batched on the host, normalised on the device. No Ray.

Each training worker reads its own clips straight from the store's Parquet row groups
(:meth:`raybench.data.store.ClipStore.row_groups`): every epoch the training row groups are put in
one random order (the same on every rank) and rank ``r`` of ``w`` takes every ``w``-th. Nothing is
materialised in Ray's object store, so a dataset of any size trains in bounded memory: a worker
holds at most the clips whose windows are in its shuffle pool (``train.shuffle_clips`` clips, at
least ``train.shuffle_batches`` batches of windows) and ``train.prefetch`` ready batches.

Windows are drawn at random from the pool (the categorical task: one random window per clip and
epoch; continuous: every sliding window from a random phase), so a batch mixes clips. A background
thread reads, cuts and collates the next batches while the model computes (pyarrow and numpy's
copies release the GIL); batches stay uint8 (video) and raw float32 (audio) on the host, are
pinned when the device is a GPU, and are converted and standardised on the device
(:func:`to_device`). Python's own ``threading``/``queue`` are used, not a ``torch`` DataLoader:
the clips are a stream of variable-length records whose windows are pooled across clips, which a
``Dataset``/``Sampler`` pair does not express without a copy per worker process.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from raybench.data.store import decode_arrays
from raybench.data.windows import random_start, window_starts


@dataclass
class Clip:
    """One decoded clip: its store row's scalars and its arrays (``decode_arrays``)."""

    row: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Clip:
        return cls(row, decode_arrays(row))

    @property
    def n(self) -> int:
        return int(self.arrays["video"].shape[0])


def clip_windows(clip: Clip, task: str, length: int, hop: int, rng: np.random.Generator) -> list[int]:
    """Training window starts of a clip. Categorical: one random window. Continuous: every sliding
    window from a random phase, less those with no annotated frame."""
    n = clip.n
    if task == "categorical":
        return [random_start(n, length, rng)]
    offset = int(rng.integers(0, hop)) if n > length + hop else 0
    va = clip.arrays["va"]
    out = []
    for s in window_starts(n - offset, length, hop):
        s += offset
        if len(va) and not np.isnan(va[s : s + length]).all():
            out.append(s)
    return out


def window_clip(clip: Clip, start: int, length: int) -> Clip:
    """A copy of frames [start, start + length) of a clip (its audio steps, labels and flow too), as a
    clip of its own: what the categorical task keeps of a clip for its one window."""
    a = clip.arrays
    T = clip.n
    k = a["audio"].shape[0] // max(T, 1)
    e = min(T, start + length)
    arrays = {"video": a["video"][start:e].copy(), "audio": a["audio"][start * k : e * k].copy(),
              "va": a["va"][start:e].copy() if len(a["va"]) else a["va"]}
    if "flow" in a:
        arrays["flow"] = a["flow"][start:e].copy()
    return Clip(clip.row, arrays)


def host_batch(windows: list[tuple[Clip, int]], length: int, task: str) -> dict[str, np.ndarray]:
    """Windows (clip, start) -> a batch of host arrays, each window zero-padded to ``length``
    frames: video (B, L, H, W, 3) uint8, audio (B, L*k, F) float32 (not standardised), mask (B, L)
    bool, label (B,) int64 (categorical) or va (B, L, 2) float32 (NaN where padded or unannotated),
    flow (B, L, H, W, 2) float16 when the store has it. One copy per window, into preallocated arrays."""
    a0 = windows[0][0].arrays
    B = len(windows)
    v0, au0 = a0["video"], a0["audio"]
    k = au0.shape[0] // max(v0.shape[0], 1)
    video = np.zeros((B, length) + v0.shape[1:], np.uint8)
    audio = np.zeros((B, length * k, au0.shape[1]), np.float32)
    mask = np.zeros((B, length), bool)
    out: dict[str, np.ndarray] = {"video": video, "audio": audio, "mask": mask}
    if task == "continuous":
        out["va"] = np.full((B, length, 2), np.nan, np.float32)
    else:
        out["label"] = np.array([int(c.row["label"]) for c, _ in windows], np.int64)
    has_flow = "flow" in a0
    if has_flow:
        out["flow"] = np.zeros((B, length) + a0["flow"].shape[1:], np.float16)
    for i, (clip, s) in enumerate(windows):
        a = clip.arrays
        e = min(clip.n, s + length)
        m = e - s
        video[i, :m] = a["video"][s:e]
        audio[i, : m * k] = a["audio"][s * k : e * k]
        mask[i, :m] = True
        if task == "continuous" and len(a["va"]):
            out["va"][i, :m] = a["va"][s:e]
        if has_flow:
            out["flow"][i, :m] = a["flow"][s:e]
    return out


def to_device(batch: dict[str, np.ndarray | torch.Tensor], audio_mean: torch.Tensor, audio_std: torch.Tensor,
              device: torch.device) -> dict[str, torch.Tensor]:
    """Host batch -> the model's batch on ``device``: video (B, T, 3, H, W) float in [-1, 1], audio
    standardised with the training set's statistics, flow (B, T, 2, H, W) float32 pixels; mask,
    label, va as they are. The conversions run on the device, after the (uint8, float16) copies."""
    def dev(x):
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(x)
        return t.to(device, non_blocking=True)

    video = dev(batch["video"]).permute(0, 1, 4, 2, 3).float().div_(127.5).sub_(1.0)
    out = {"video": video, "audio": (dev(batch["audio"]) - audio_mean) / audio_std, "mask": dev(batch["mask"])}
    if "label" in batch:
        out["label"] = dev(batch["label"])
    if "va" in batch:
        out["va"] = dev(batch["va"])
    if "flow" in batch:
        out["flow"] = dev(batch["flow"]).permute(0, 1, 4, 2, 3).float()
    return out


def audio_stats_on(data: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.as_tensor(np.asarray(data["audio_mean"], np.float32), device=device),
            torch.as_tensor(np.asarray(data["audio_std"], np.float32), device=device))


def pooled_batches(clips: Iterable[Clip], task: str, length: int, hop: int, batch_size: int,
                   rng: np.random.Generator, shuffle_clips: int = 8, shuffle_batches: int = 4
                   ) -> Iterator[list[tuple[Clip, int]]]:
    """Training batches of windows drawn at random from a pool: clips are added to the pool until it
    holds windows of ``shuffle_clips`` clips and at least ``shuffle_batches`` batches' worth (or the
    clips run out), then each batch takes ``batch_size`` windows from it at random. A clip's arrays are
    dropped once its last window is taken, so memory holds ``shuffle_clips`` clips of many windows
    (one more while those run low). The categorical task keeps only the frames of each clip's one
    window (``batch_size x shuffle_batches`` windows)."""
    it = iter(clips)
    pool: list[tuple[Clip, int]] = []
    open_clips: dict[int, int] = {}  # id(clip) -> windows of it still in the pool
    exhausted = False
    want = batch_size * max(1, shuffle_batches)
    while True:
        while not exhausted and (len(pool) < want or len(open_clips) < shuffle_clips):
            clip = next(it, None)
            if clip is None:
                exhausted = True
                break
            starts = clip_windows(clip, task, length, hop, rng)
            if task == "categorical" and starts:
                # one window of the clip is used: keep a copy of its frames, not the whole clip
                clip, starts = window_clip(clip, starts[0], length), [0]
            if starts:
                pool.extend((clip, s) for s in starts)
                open_clips[id(clip)] = len(starts)
        if not pool:
            return
        take = min(batch_size, len(pool))
        picked = []
        for _ in range(take):  # uniform without replacement: swap the pick with the last, pop
            j = int(rng.integers(0, len(pool)))
            pool[j], pool[-1] = pool[-1], pool[j]
            picked.append(pool.pop())
        for clip, _ in picked:
            open_clips[id(clip)] -= 1
            if not open_clips[id(clip)]:
                del open_clips[id(clip)]
        yield picked


def epoch_groups(groups: list, seed: int, epoch: int, rank: int, world: int) -> list:
    """This rank's share of the row groups for one epoch: one random order per (seed, epoch), the
    same on every rank, then every ``world``-th from ``rank``."""
    perm = np.random.default_rng([seed, epoch, 7919]).permutation(len(groups))
    return [groups[i] for i in perm[rank::world]]


class Prefetcher:
    """Runs an iterator in a background thread, ``depth`` items ahead. An exception in the thread
    is raised in the consumer; closing (or leaving a ``with`` block) stops the thread."""

    _END = object()

    def __init__(self, source: Iterator, depth: int = 2):
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self.wait_s = 0.0  # time the consumer waited for an item: the data path holding compute up
        self._t = threading.Thread(target=self._run, args=(source,), daemon=True, name="raybench-feed")
        self._t.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, source: Iterator) -> None:
        try:
            for item in source:
                if not self._put(item):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(e)
            return
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # a generator's own clean-up (its read-ahead threads) now, in this thread
        self._put(self._END)

    def __iter__(self):
        import time

        while True:
            t0 = time.perf_counter()
            item = self._q.get()
            self.wait_s += time.perf_counter() - t0
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._t.join(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _pin(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).pin_memory() for k, v in batch.items()}


def read_clips(store, groups: list, keep: set[str] | None, threads: int = 1) -> Iterator[Clip]:
    """The clips of ``groups`` in order; with ``threads`` > 1, that many row groups are read at once,
    ahead of the consumer (pyarrow's reads release the GIL)."""
    if threads <= 1:
        yield from (Clip.from_row(r) for r in store.iter_groups(groups, keep))
        return
    import itertools
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    def read(g):
        return [Clip.from_row(r) for r in store.iter_groups([g], keep)]

    with ThreadPoolExecutor(threads, thread_name_prefix="raybench-read") as ex:
        it = iter(groups)
        ahead = deque(ex.submit(read, g) for g in itertools.islice(it, 2 * threads))
        while ahead:
            clips = ahead.popleft().result()
            g = next(it, None)
            if g is not None:
                ahead.append(ex.submit(read, g))
            yield from clips


def train_feed(store, groups: list, keep: set[str] | None, task: str, length: int, hop: int, batch_size: int,
               rng: np.random.Generator, shuffle_clips: int = 8, shuffle_batches: int = 4,
               pin: bool = False, read_threads: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of host batches from ``groups`` (row groups of ``store``, in the order given) of the
    clips in ``keep`` (None: all)."""
    clips = read_clips(store, groups, keep, read_threads)
    for windows in pooled_batches(clips, task, length, hop, batch_size, rng, shuffle_clips, shuffle_batches):
        b = host_batch(windows, length, task)
        yield _pin(b) if pin else b


def eval_windows(clips: Iterable[Clip], length: int, hop: int, batch_size: int
                 ) -> Iterator[tuple[list[tuple[Clip, int]], list[Clip]]]:
    """Evaluation batches across clips: every clip's sliding windows (step ``hop``), in clip order,
    ``batch_size`` at a time. Each item is (the batch's windows, the clips completed by it)."""
    pending: list[tuple[Clip, int]] = []
    done: list[Clip] = []
    for clip in clips:
        starts = window_starts(clip.n, length, hop)
        for j, s in enumerate(starts):
            pending.append((clip, s))
            if j == len(starts) - 1:
                done.append(clip)
            if len(pending) == batch_size:
                yield pending, done
                pending, done = [], []
    if pending or done:
        yield pending, done
