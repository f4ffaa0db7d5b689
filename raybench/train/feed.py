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
        v = self.arrays.get("video")
        if v is None:
            v = self.arrays.get("video_emb")
        return int(v.shape[0]) if v is not None else int(self.row["num_frames"])


# the store's columns that training and evaluation read besides the modalities' (see ``store_columns``)
_BASE_COLUMNS = ("clip_id", "label", "num_frames", "va")
_EVAL_COLUMNS = ("source_va", "source_va_rate", "source_fps", "source_frames")
_MODALITY_COLUMNS = {"video": ("video", "video_shape"), "audio": ("audio", "audio_shape"), "flow": ("flow", "flow_shape"),
                     "video_emb": ("video_emb", "video_emb_shape"), "audio_emb": ("audio_emb", "audio_emb_shape")}
_STEPPED = ("audio", "audio_emb")  # k steps per video frame, k their own


def store_columns(inputs: Iterable[str], evaluation: bool = False) -> list[str]:
    """The store columns the input pipeline reads for a method whose forward uses ``inputs``
    (``Method.inputs``, plus ``"flow"`` for a method that needs flow): an audio-only method reads no
    frames. Evaluation also reads each clip's source annotation (its metrics are at the source rate)."""
    cols = list(_BASE_COLUMNS) + (list(_EVAL_COLUMNS) if evaluation else [])
    for m in inputs:
        cols += _MODALITY_COLUMNS[m]
    return cols


def method_inputs(method, opts=None) -> tuple[str, ...]:
    """The batch keys a method (class or instance) reads: its ``inputs`` (a class's with these ``opts``,
    its typed options: ``Method.inputs_for``), and flow when it needs it."""
    inputs = method.inputs_for(opts) if opts is not None else getattr(method, "inputs", ("video", "audio"))
    return tuple(inputs) + (("flow",) if getattr(method, "needs_flow", False) else ())


def cache_holds(nbytes: int, cache_gib: float) -> bool:
    """Whether a worker holds its training clips (``nbytes`` of arrays) in memory after reading them
    once: they fit ``train.cache_gib`` (0: never)."""
    return 0 < cache_gib and nbytes <= cache_gib * 2**30


def clip_windows(clip: Clip, task: str, length: int, hop: int, rng: np.random.Generator,
                 phase: str = "random") -> list[int]:
    """Training window starts of a clip. Categorical: one random window. Continuous
    (``window.phase``): ``fixed``, every sliding window from frame 0 (the last ending at the clip's end,
    as sucv/ABAW2's window arranger); ``random``, every sliding window from a random phase, and one at
    frame 0 when the phase is not 0 (before 2026-12-04 none: frame f < hop was trained in an epoch only
    with probability (f + 1) / hop); less, either way, the windows with no annotated frame."""
    n = clip.n
    if task == "categorical":
        return [random_start(n, length, rng)]
    offset = int(rng.integers(0, hop)) if phase == "random" and n > length + hop else 0
    va = clip.arrays["va"]
    out = []
    for s in ([0] if offset else []) + [s + offset for s in window_starts(n - offset, length, hop)]:
        if len(va) and not np.isnan(va[s : s + length]).all():
            out.append(s)
    return out


def window_clip(clip: Clip, start: int, length: int) -> Clip:
    """A copy of frames [start, start + length) of a clip (its audio steps, labels and flow too), as a
    clip of its own: what the categorical task keeps of a clip for its one window."""
    a = clip.arrays
    T = clip.n
    e = min(T, start + length)
    arrays = {"va": a["va"][start:e].copy() if len(a["va"]) else a["va"]}
    for key in ("video", "flow", "video_emb"):
        if key in a:
            arrays[key] = a[key][start:e].copy()
    for key in _STEPPED:
        if key in a:
            k = a[key].shape[0] // max(T, 1)
            arrays[key] = a[key][start * k : e * k].copy()
    return Clip({**_scalars(clip.row), "num_frames": e - start}, arrays)


def _scalars(row: dict[str, Any]) -> dict[str, Any]:
    """A store row without its binary values (views of the row group's Arrow buffers, which would keep
    the whole clip alive): what a copied window or clip keeps of its row."""
    return {k: v for k, v in row.items() if not isinstance(v, memoryview)}


def host_batch(windows: list[tuple[Clip, int]], length: int, task: str, pin: bool = False
               ) -> dict[str, np.ndarray | torch.Tensor]:
    """Windows (clip, start) -> a batch of host arrays, each window zero-padded to ``length``
    frames: video (B, L, H, W, 3) uint8, audio (B, L*k, F) float32 (not standardised), each when the
    clips have it, mask (B, L) bool, label (B,) int64 (categorical) or va (B, L, 2) float32 (NaN
    where padded or unannotated), flow (B, L, H, W, 2) float16 when the store has it. One copy per
    window, into arrays allocated once per batch; with ``pin``, page-locked ``torch`` tensors (for
    an asynchronous copy to a GPU) written in place, not pinned by a second copy."""
    a0 = windows[0][0].arrays
    B = len(windows)
    out: dict[str, np.ndarray] = {}
    pinned: dict[str, torch.Tensor] = {}

    def alloc(key: str, shape: tuple, dtype) -> np.ndarray:
        if pin:
            pinned[key] = torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype)).dtype, pin_memory=True)
            out[key] = pinned[key].numpy()
        else:
            out[key] = np.empty(shape, dtype)
        return out[key]

    steps: dict[str, int] = {}  # audio, audio_emb: steps per video frame
    if "video" in a0:
        alloc("video", (B, length) + a0["video"].shape[1:], np.uint8)
    for key in _STEPPED:
        if key in a0:
            k = steps[key] = a0[key].shape[0] // max(windows[0][0].n, 1)
            alloc(key, (B, length * k, a0[key].shape[1]), np.float32)
    if "flow" in a0:
        alloc("flow", (B, length) + a0["flow"].shape[1:], np.float16)
    if "video_emb" in a0:
        alloc("video_emb", (B, length) + a0["video_emb"].shape[1:], np.float32)
    mask = alloc("mask", (B, length), np.bool_)
    if task == "continuous":
        alloc("va", (B, length, 2), np.float32)
    else:
        alloc("label", (B,), np.int64)[:] = [int(c.row["label"]) for c, _ in windows]
    for i, (clip, s) in enumerate(windows):
        a = clip.arrays
        e = min(clip.n, s + length)
        m = e - s
        for key in ("video", "flow", "video_emb"):
            if key in out:
                out[key][i, :m] = a[key][s:e]
                out[key][i, m:] = 0
        for key, k in steps.items():
            out[key][i, : m * k] = a[key][s * k : e * k]
            out[key][i, m * k :] = 0
        mask[i, :m] = True
        mask[i, m:] = False
        if task == "continuous":
            va = out["va"]
            va[i] = np.nan
            if len(a["va"]):
                va[i, :m] = a["va"][s:e]
    return pinned if pin else out  # (the pinned tensors are the buffers just written)


def to_device(batch: dict[str, np.ndarray | torch.Tensor], audio_mean: torch.Tensor, audio_std: torch.Tensor,
              device: torch.device, emb_stats: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
              ) -> dict[str, torch.Tensor]:
    """Host batch -> the model's batch on ``device``: video (B, T, 3, H, W) float in [-1, 1], audio
    standardised with the training set's statistics (each when the batch has it), flow (B, T, 2, H, W) float32 pixels; mask,
    label, va as they are. The conversions run on the device, after the (uint8, float16) copies."""
    def dev(x):
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(x)
        return t.to(device, non_blocking=True)

    out = {"mask": dev(batch["mask"])}
    if "video" in batch:
        out["video"] = dev(batch["video"]).permute(0, 1, 4, 2, 3).float().div_(127.5).sub_(1.0)
    if "audio" in batch:
        out["audio"] = (dev(batch["audio"]) - audio_mean) / audio_std
    if "label" in batch:
        out["label"] = dev(batch["label"])
    if "va" in batch:
        out["va"] = dev(batch["va"])
    if "flow" in batch:
        out["flow"] = dev(batch["flow"]).permute(0, 1, 4, 2, 3).float()
    if "video_emb" in batch:  # an image encoder's embeddings, as stored (the methods normalise them)
        out["video_emb"] = dev(batch["video_emb"])
    if "audio_emb" in batch:  # a speech encoder's embeddings, standardised like the audio features
        m, s = (emb_stats or {})["audio_emb"]
        out["audio_emb"] = (dev(batch["audio_emb"]) - m) / s
    return out


def emb_stats_on(data: dict, device: torch.device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The training set's statistics of the speech embeddings (``audio_emb``), when the data has them."""
    if "audio_emb_mean" not in data:
        return {}
    return {"audio_emb": (torch.as_tensor(np.asarray(data["audio_emb_mean"], np.float32), device=device),
                          torch.as_tensor(np.asarray(data["audio_emb_std"], np.float32), device=device))}


def audio_stats_on(data: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.as_tensor(np.asarray(data["audio_mean"], np.float32), device=device),
            torch.as_tensor(np.asarray(data["audio_std"], np.float32), device=device))


def pooled_batches(clips: Iterable[Clip], task: str, length: int, hop: int, batch_size: int,
                   rng: np.random.Generator, shuffle_clips: int = 8, shuffle_batches: int = 4,
                   copy_windows: bool = True, phase: str = "random") -> Iterator[list[tuple[Clip, int]]]:
    """Training batches of windows drawn at random from a pool: clips are added to the pool until it
    holds windows of ``shuffle_clips`` clips and at least ``shuffle_batches`` batches' worth (or the
    clips run out), then each batch takes ``batch_size`` windows from it at random. A clip's arrays are
    dropped once its last window is taken, so memory holds ``shuffle_clips`` clips of many windows
    (one more while those run low). The categorical task keeps only the frames of each clip's one
    window (``batch_size x shuffle_batches`` windows), a copy, unless ``copy_windows`` is False (the
    clips are held in memory anyway: ``train.cache_gib``)."""
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
            starts = clip_windows(clip, task, length, hop, rng, phase)
            if task == "categorical" and starts and copy_windows:
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


def read_clips(store, groups: list, keep: set[str] | None, threads: int = 1, columns: Iterable[str] | None = None,
               pool=None, cache: dict | None = None) -> Iterator[Clip]:
    """The clips of ``groups`` in order (only their ``columns``: all when None); with ``threads`` > 1,
    that many row groups are read at once, ahead of the consumer (pyarrow's reads release the GIL),
    in ``pool`` (a ``ThreadPoolExecutor``; None: one of its own). With ``cache`` (a dict kept across
    epochs), a row group read once is kept there and never read again."""
    if cache is not None and all(g in cache for g in groups):
        for g in groups:
            yield from cache[g]
        return

    def read(g):
        if cache is not None and g in cache:
            return cache[g]
        clips = [Clip.from_row(r) for r in store.iter_groups([g], keep, columns)]
        if cache is not None:
            if len(clips) < store.group_rows(g):
                # a row group of an older store holds other clips too: hold copies of the kept clips'
                # arrays, not views that would keep the whole group's buffers alive
                clips = [Clip(_scalars(c.row), {k: v.copy() for k, v in c.arrays.items()}) for c in clips]
            cache[g] = clips
        return clips

    if threads <= 1:
        for g in groups:
            yield from read(g)
        return
    import contextlib
    import itertools
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    own = ThreadPoolExecutor(threads, thread_name_prefix="raybench-read") if pool is None else contextlib.nullcontext(pool)
    with own as ex:
        it = iter(groups)
        ahead = deque(ex.submit(read, g) for g in itertools.islice(it, 2 * threads))
        try:
            while ahead:
                clips = ahead.popleft().result()
                g = next(it, None)
                if g is not None:
                    ahead.append(ex.submit(read, g))
                yield from clips
        finally:
            for f in ahead:  # stopped early (the epoch's consumer closed): nothing more is read
                f.cancel()


def train_feed(store, groups: list, keep: set[str] | None, task: str, length: int, hop: int, batch_size: int,
               rng: np.random.Generator, shuffle_clips: int = 8, shuffle_batches: int = 4,
               pin: bool = False, read_threads: int = 1, columns: Iterable[str] | None = None,
               cache: dict | None = None, phase: str = "random") -> Iterator[dict[str, np.ndarray | torch.Tensor]]:
    """One epoch of host batches from ``groups`` (row groups of ``store``, in the order given) of the
    clips in ``keep`` (None: all), reading only ``columns`` (``store_columns``; None: all). With
    ``cache`` (a dict the caller keeps across epochs: ``train.cache_gib``), each row group is read
    from the store once and held in memory after.

    With ``read_threads`` > 1, one pool of that many threads reads the row groups ahead and also
    collates the batches (``host_batch``), up to ``read_threads`` (at most 4) batches ahead of the
    consumer, in order:
    the draw of windows (``pooled_batches``, one ``rng``) stays in this generator's thread, so the
    batches are the same for any number of threads."""
    if read_threads <= 1:
        clips = read_clips(store, groups, keep, 1, columns, cache=cache)
        for windows in pooled_batches(clips, task, length, hop, batch_size, rng, shuffle_clips, shuffle_batches,
                                      copy_windows=cache is None, phase=phase):
            yield host_batch(windows, length, task, pin)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(read_threads, thread_name_prefix="raybench-feed") as pool:
        clips = read_clips(store, groups, keep, read_threads, columns, pool, cache)
        picks = pooled_batches(clips, task, length, hop, batch_size, rng, shuffle_clips, shuffle_batches,
                               copy_windows=cache is None, phase=phase)
        ahead: deque = deque()
        try:
            for windows in picks:
                ahead.append(pool.submit(host_batch, windows, length, task, pin))
                if len(ahead) > min(read_threads, 4):  # at most 4 batches collated ahead (memory, pinned)
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        finally:
            for f in ahead:
                f.cancel()
            clips.close()  # its read-ahead futures cancelled before the pool shuts down


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
