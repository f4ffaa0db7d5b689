"""The input pipeline without Ray (raybench/train/feed.py) and the store's row-group reads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from raybench.data.store import ClipStore, random_store, store_row, write_part
from raybench.data.windows import window_starts
from raybench.train.feed import (Clip, Prefetcher, clip_windows, epoch_groups, eval_windows, host_batch,
                                 pooled_batches, to_device, train_feed)


def make_clip(cid: str, T: int, task: str = "continuous", size: int = 6, k: int = 4, F: int = 5, flow: bool = False,
              seed: int = 0) -> Clip:
    rng = np.random.default_rng(seed)
    va = rng.uniform(-1, 1, (T, 2)).astype(np.float32) if task == "continuous" else np.zeros((0, 2), np.float32)
    fl = (rng.standard_normal((T, size, size, 2)).astype(np.float16) if flow else np.zeros((0, 0, 0, 2), np.float16))
    row = store_row(cid, 3 if task == "categorical" else -1,
                    rng.integers(0, 256, (T, size, size, 3), dtype=np.uint8),
                    rng.standard_normal((T * k, F)).astype(np.float32), va, va, 10.0, fl, 10.0, T)
    return Clip.from_row(row)


def cut(video, audio, va, start, length, flow):
    """A window written out directly: frames [start, start+length) zero-padded, audio steps k per frame,
    labels NaN where padded, a mask of the real frames."""
    T, k = len(video), len(audio) // len(video)
    n = min(T, start + length) - start
    pad = length - n
    out = {"video": np.concatenate([video[start:start + n], np.zeros((pad,) + video.shape[1:], video.dtype)]),
           "audio": np.concatenate([audio[start * k:(start + n) * k], np.zeros((pad * k, audio.shape[1]), np.float32)]),
           "mask": np.arange(length) < n,
           "flow": np.concatenate([flow[start:start + n], np.zeros((pad,) + flow.shape[1:], flow.dtype)]).astype(np.float32)}
    if va is not None:
        out["va"] = np.concatenate([va[start:start + n], np.full((pad, 2), np.nan, np.float32)])
    return out


@pytest.mark.parametrize("task", ["categorical", "continuous"])
def test_host_batch_matches_cut_window_by_window(task):
    clips = [make_clip("a", 11, task, flow=True, seed=1), make_clip("b", 5, task, flow=True, seed=2)]
    wins = [(clips[0], 0), (clips[1], 0), (clips[0], 3)]  # the second is 5 frames padded to 8
    b = host_batch(wins, 8, task)
    assert b["video"].dtype == np.uint8 and b["flow"].dtype == np.float16
    for i, (c, s) in enumerate(wins):
        a = c.arrays
        ref = cut(a["video"], a["audio"], a["va"] if task == "continuous" else None, s, 8, a["flow"])
        np.testing.assert_array_equal(b["video"][i], ref["video"])
        np.testing.assert_array_equal(b["audio"][i], ref["audio"])
        np.testing.assert_array_equal(b["mask"][i], ref["mask"])
        np.testing.assert_allclose(b["flow"][i].astype(np.float32), ref["flow"])
        if task == "continuous":
            np.testing.assert_array_equal(b["va"][i], ref["va"])  # NaN where padded, in the same places
        else:
            assert b["label"][i] == 3
    assert b["mask"][1].sum() == 5


def test_to_device_normalises_as_the_model_expects():
    clip = make_clip("a", 4, flow=True)
    b = host_batch([(clip, 0)], 4, "continuous")
    mean, std = torch.full((5,), 0.5), torch.full((5,), 2.0)
    out = to_device(b, mean, std, torch.device("cpu"))
    v = torch.from_numpy(clip.arrays["video"].copy()).permute(0, 3, 1, 2).double() / 127.5 - 1
    torch.testing.assert_close(out["video"][0].double(), v, atol=1e-6, rtol=0)
    assert out["video"].min() >= -1 and out["video"].max() <= 1
    torch.testing.assert_close(out["audio"][0], (torch.from_numpy(clip.arrays["audio"]) - 0.5) / 2.0)
    assert out["flow"].shape == (1, 4, 2, 6, 6) and out["flow"].dtype == torch.float32
    assert out["mask"].dtype == torch.bool and out["va"].shape == (1, 4, 2)


def test_pooled_batches_take_every_window_once_and_mix_clips():
    clips = [make_clip(f"c{i}", n, seed=i) for i, n in enumerate([40, 9, 33, 60, 12, 25, 48, 3])]
    rng = np.random.default_rng(0)
    seen = []
    mixed = 0
    for batch in pooled_batches(iter(clips), "continuous", 8, 4, 5, rng, shuffle_clips=3, shuffle_batches=2):
        assert 1 <= len(batch) <= 5
        seen += [(c.row["clip_id"], s) for c, s in batch]
        mixed += len({c.row["clip_id"] for c, _ in batch}) > 1
    assert len(seen) == len(set(seen))  # no window twice
    per_clip = {}
    for cid, s in seen:
        per_clip.setdefault(cid, []).append(s)
    assert set(per_clip) == {c.row["clip_id"] for c in clips}
    for c in clips:  # every sliding window of the clip's phase: starts step by the hop, the last ends the clip
        st = sorted(per_clip[c.row["clip_id"]])
        assert np.all(np.diff(st) <= 4) and (st[-1] + 8 >= c.n)
    assert mixed > len(seen) // 5 // 2  # most batches hold windows of several clips


def test_pooled_batches_hold_a_bounded_number_of_clips():
    """Long clips (many windows each): no more than shuffle_clips clips are held at once, and one more
    when those run low on windows (fewer than shuffle_batches batches left)."""
    clips = [make_clip(f"c{i}", 200, seed=i) for i in range(12)]
    pulled = []

    def source():
        for c in clips:
            pulled.append(c.row["clip_id"])
            yield c

    log = []  # per batch: clips pulled so far, the batch's clip ids
    for batch in pooled_batches(source(), "continuous", 8, 8, 4, np.random.default_rng(1), shuffle_clips=3,
                                shuffle_batches=2):
        log.append((len(pulled), [c.row["clip_id"] for c, _ in batch]))
    total = {}
    for _, ids in log:
        for cid in ids:
            total[cid] = total.get(cid, 0) + 1
    assert len(total) == 12 and min(total.values()) >= 23  # every clip, all of its ~24 windows
    taken, most_open = {}, 0
    for n_pulled, ids in log:
        for cid in ids:
            taken[cid] = taken.get(cid, 0) + 1
        finished = sum(taken.get(c, 0) == total[c] for c in total)
        most_open = max(most_open, n_pulled - finished)
    assert most_open <= 3 + 1
    assert log[0][0] == 3  # the pool was filled from 3 clips before the first batch


def test_categorical_draws_one_window_per_clip_within_the_clip():
    rng = np.random.default_rng(3)
    for T in (3, 8, 20):
        c = make_clip("x", T, "categorical")
        (s,) = clip_windows(c, "categorical", 8, 4, rng)
        assert 0 <= s <= max(0, T - 8)


def test_continuous_windows_train_every_frame_each_epoch_from_a_fixed_or_random_phase():
    """fixed (zhang2021's authors' grid): the sliding windows from frame 0, the last ending at the clip's end;
    random: a random phase each epoch, and a window at frame 0 besides, so the first frames are trained every
    epoch (from a random phase alone, frame 0 was trained once in ``hop`` epochs). Zhang et al.'s setting:
    windows of 300 frames every 200."""
    from raybench.schema import WindowConfig

    rng = np.random.default_rng(0)
    c = make_clip("x", 1000)
    assert clip_windows(c, "continuous", 300, 200, rng, "fixed") == window_starts(1000, 300, 200) == [0, 200, 400,
                                                                                                     600, 700]
    phases = set()
    for _ in range(200):
        starts = clip_windows(c, "continuous", 300, 200, rng, "random")
        covered = np.zeros(1000, int)
        for st in starts:
            covered[st:st + 300] += 1
        assert covered.min() >= 1 and starts[0] == 0 and starts[-1] == 700
        phases.add(starts[1] if len(starts) > 1 else 0)
    assert len(phases) > 50  # the phase does change
    assert WindowConfig().phase_for("zhang2021") == "fixed" and WindowConfig().phase_for("de3") == "random"
    assert WindowConfig(phase="random").phase_for("zhang2021") == "random"


def test_epoch_groups_partition_the_groups_and_change_each_epoch():
    groups = [("f", g) for g in range(23)]
    for epoch in (0, 1):
        shares = [epoch_groups(groups, 5, epoch, r, 3) for r in range(3)]
        assert sorted(sum(shares, [])) == groups
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert epoch_groups(groups, 5, 0, 0, 1) != epoch_groups(groups, 5, 1, 0, 1)
    assert epoch_groups(groups, 5, 0, 0, 1) == epoch_groups(groups, 5, 0, 0, 1)


def test_eval_windows_cover_every_window_and_complete_each_clip_once():
    clips = [make_clip(f"c{i}", n, seed=i) for i, n in enumerate([3, 17, 8, 30])]
    got, done = [], []
    for wins, finished in eval_windows(iter(clips), 8, 4, 5):
        assert len(wins) <= 5
        got += [(c.row["clip_id"], s) for c, s in wins]
        for c in finished:  # a clip is complete only once its last window was in a batch
            assert (c.row["clip_id"], window_starts(c.n, 8, 4)[-1]) in got
        done += [c.row["clip_id"] for c in finished]
    assert got == [(c.row["clip_id"], s) for c in clips for s in window_starts(c.n, 8, 4)]
    assert done == [c.row["clip_id"] for c in clips]


def test_prefetcher_raises_the_producers_error_and_stops_when_closed():
    def bad():
        yield 1
        raise ValueError("clip x: broken")

    with pytest.raises(ValueError, match="clip x"):
        list(Prefetcher(bad(), 2))

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    with Prefetcher(endless(), 2) as p:
        it = iter(p)
        assert [next(it) for _ in range(3)] == [0, 1, 2]
    n = len(produced)
    assert not any(t.name == "raybench-feed" and t.is_alive() for t in threading.enumerate())
    assert len(produced) == n  # nothing more made after close


def test_row_groups_come_from_the_stores_index_while_it_covers_every_part(tmp_path, monkeypatch):
    data = random_store(tmp_path / "s", [4, 6, 5, 7, 3], task="continuous", image_size=8, n_mels=5,
                        clips_per_part=2)
    store = ClipStore(data["store_path"])
    scanned = store._scan_groups(sorted(store.part_files()))
    want = {"clip00001", "clip00004"}
    expect_all, expect_some = store.row_groups(), store.row_groups(want)
    calls = []
    real_scan = store._scan_groups
    monkeypatch.setattr(store, "_scan_groups", lambda parts: calls.append(parts) or real_scan(parts))
    # the index (written with the store) answers: no part file is read
    assert store.index(store.part_files()) == scanned
    assert store.row_groups() == expect_all and store.row_groups(want) == expect_some and not calls
    assert len(expect_all) == 5 and len(expect_some) == 2
    # a part added after the index (an interrupted prepare that went on): the index is ignored, the parts read
    extra = random_store(tmp_path / "x", [5], task="continuous", image_size=8, n_mels=5)
    rows = list(ClipStore(extra["store_path"]).iter_clips(extra["ids"]["train"]))
    rows[0]["clip_id"] = "late"
    write_part(store, rows)
    assert store.index(store.part_files()) is None
    late = store.row_groups({"late"})
    assert len(late) == 1 and calls and [r["clip_id"] for r in store.iter_groups(late)] == ["late"]
    store.write_index()
    calls.clear()
    assert store.row_groups({"late"}) == late and not calls


def test_store_row_groups_one_clip_each_and_filtered_reads(tmp_path):
    data = random_store(tmp_path / "s", [4, 6, 5, 7, 3], task="continuous", image_size=8, n_mels=5,
                        clips_per_part=2)
    store = ClipStore(data["store_path"])
    groups = store.row_groups()
    assert len(groups) == 5  # one clip per row group, over 3 part files
    assert len({p for p, _ in groups}) == 3
    want = {"clip00001", "clip00003"}
    sub = store.row_groups(want)
    assert len(sub) == 2
    rows = list(store.iter_groups(sub, want))
    assert sorted(r["clip_id"] for r in rows) == sorted(want)
    assert sorted(r["clip_id"] for r in store.iter_clips(["clip00004", "clip00000"])) == ["clip00000", "clip00004"]
    # a store written before one clip per row group (several clips in one group): filtered on read
    old = ClipStore(tmp_path / "old")
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = list(store.iter_clips(data["ids"]["train"]))
    buf = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    old.write_bytes("parts/part-old.parquet", buf.getvalue().to_pybytes())
    assert old.row_groups(want) == [(old.row_groups()[0][0], 0)]
    assert sorted(r["clip_id"] for r in old.iter_clips(want)) == sorted(want)


def test_train_feed_reads_only_the_kept_clips_of_its_groups(tmp_path):
    data = random_store(tmp_path / "s", [9, 12, 10, 8, 11, 9], task="categorical", image_size=8, n_mels=5,
                        clips_per_part=3)
    store = ClipStore(data["store_path"])
    keep = {"clip00000", "clip00002", "clip00005"}
    batches = list(train_feed(store, store.row_groups(keep), keep, "categorical", 8, 4, 2,
                              np.random.default_rng(0)))
    assert sum(len(b["label"]) for b in batches) == 3  # one window per kept clip
    labels = sorted(int(r["label"]) for r in store.iter_clips(keep))
    assert sorted(int(x) for b in batches for x in b["label"]) == labels


def test_reading_ahead_in_threads_keeps_the_order(tmp_path):
    from raybench.train.feed import read_clips

    data = random_store(tmp_path / "s", [3 + i % 4 for i in range(13)], image_size=4, n_mels=3, clips_per_part=4)
    store = ClipStore(data["store_path"])
    groups = epoch_groups(store.row_groups(), 1, 0, 0, 1)
    keep = set(data["ids"]["train"][2:])
    one = [(c.row["clip_id"], c.arrays["video"].tobytes()) for c in read_clips(store, groups, keep, 1)]
    three = [(c.row["clip_id"], c.arrays["video"].tobytes()) for c in read_clips(store, groups, keep, 3)]
    assert one == three and len(one) == 11


def _epoch(store, groups, task, threads, columns=None, cache=None, seed=0):
    return list(train_feed(store, groups, None, task, 4, 4, 3, np.random.default_rng(seed), shuffle_clips=2,
                           shuffle_batches=1, read_threads=threads, columns=columns, cache=cache))


@pytest.mark.parametrize("task", ["categorical", "continuous"])
def test_collating_in_threads_gives_the_same_batches_in_the_same_order(tmp_path, task):
    data = random_store(tmp_path / "s", [5 + i % 7 for i in range(14)], task=task, image_size=4, n_mels=3,
                        clips_per_part=4)
    store = ClipStore(data["store_path"])
    groups = epoch_groups(store.row_groups(), 3, 1, 0, 1)
    one, three = _epoch(store, groups, task, 1), _epoch(store, groups, task, 3)
    assert len(one) == len(three) > 3
    for a, b in zip(one, three):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("threads", [1, 2])
def test_a_method_of_one_modality_reads_and_gets_only_that_modality(tmp_path, threads):
    from raybench.methods import METHODS
    from raybench.train.feed import method_inputs, store_columns

    assert method_inputs(METHODS.get("audio_only")) == ("audio",)
    assert method_inputs(METHODS.get("de3")) == ("video", "audio", "flow")
    data = random_store(tmp_path / "s", [6, 9, 7, 12], task="continuous", image_size=4, n_mels=3, clips_per_part=2)
    store = ClipStore(data["store_path"])
    groups = store.row_groups()
    full = _epoch(store, groups, "continuous", threads)
    for inputs, absent in ((("audio",), "video"), (("video",), "audio")):
        cols = store_columns(inputs)
        assert absent not in cols and f"{absent}_shape" not in cols
        part = _epoch(store, groups, "continuous", threads, cols)
        assert len(part) == len(full)
        for a, b in zip(full, part):
            assert set(b) == set(a) - {absent}
            for k in b:  # the same windows: frames, labels and padding as the full read's
                np.testing.assert_array_equal(a[k], b[k])
    # evaluation also reads each clip's annotation at its own rate
    assert {"source_va", "source_va_rate"} <= set(store_columns(("audio",), evaluation=True))


def test_cached_clips_are_read_once_and_give_what_the_store_gives(tmp_path, monkeypatch):
    data = random_store(tmp_path / "s", [5 + i % 7 for i in range(10)], task="categorical", image_size=4,
                        n_mels=3, clips_per_part=4)
    store = ClipStore(data["store_path"])
    groups = store.row_groups()
    cache: dict = {}
    first = _epoch(store, epoch_groups(groups, 0, 0, 0, 1), "categorical", 2, cache=cache)
    assert len(cache) == len(groups)
    reads = []
    real = ClipStore.iter_groups

    def counted(self, *a, **kw):
        reads.append(a[0])
        return real(self, *a, **kw)

    monkeypatch.setattr(ClipStore, "iter_groups", counted)
    for threads in (1, 2):
        for e in (0, 1):  # epoch 0 again: the cached clips give the same batches as the first read
            cached = _epoch(store, epoch_groups(groups, 0, e, 0, 1), "categorical", threads, cache=cache)
            fresh = _epoch(ClipStore(data["store_path"]), epoch_groups(groups, 0, e, 0, 1), "categorical", threads)
            assert len(cached) == len(fresh)
            for a, b in zip(cached, fresh):
                for k in a:
                    np.testing.assert_array_equal(a[k], b[k])
    assert all(len(r) == 1 for r in reads) and len(reads) == 2 * 2 * len(groups)  # only the uncached epochs read
    assert len(first) == len(cached)


def test_arrays_nbytes_counts_the_clips_arrays_of_the_modalities(tmp_path):
    frames = [8, 20, 13]
    data = random_store(tmp_path / "s", frames, task="continuous", image_size=10, n_mels=6, steps_per_frame=4,
                        flow=True)
    store = ClipStore(data["store_path"])
    video, audio, flow, va = (sum(T * n for T in frames) for n in (10 * 10 * 3, 4 * 6 * 4, 10 * 10 * 2 * 2, 2 * 4))
    assert store.arrays_nbytes(None, ("video",)) == video + va
    assert store.arrays_nbytes(None, ("audio",)) == audio + va
    assert store.arrays_nbytes(None, ("video", "audio", "flow")) == video + audio + flow + va
    assert store.arrays_nbytes(["clip00001"], ("audio",)) == 20 * (4 * 6 * 4 + 8)


def test_held_clips_and_copied_windows_keep_no_view_of_a_whole_row_group(tmp_path):
    """A categorical window's copy keeps no view of its clip's Arrow buffers; clips held from a row group
    of an older store (several clips a group, some filtered out) are copies, not views of the group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raybench.train.feed import read_clips, window_clip

    data = random_store(tmp_path / "s", [6, 9, 7, 8], task="categorical", image_size=4, n_mels=3, clips_per_part=4)
    store = ClipStore(data["store_path"])
    (clip, *_) = read_clips(store, store.row_groups(), None)
    assert any(isinstance(v, memoryview) for v in clip.row.values())
    w = window_clip(clip, 1, 4)
    assert not any(isinstance(v, memoryview) for v in w.row.values()) and w.n == 4
    assert all(a.flags.owndata for a in w.arrays.values() if len(a))

    old = ClipStore(tmp_path / "old")  # one row group of 4 clips, as stores before 2026-11-30
    buf = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(list(store.iter_clips(data["ids"]["train"]))), buf)
    old.write_bytes("parts/part-old.parquet", buf.getvalue().to_pybytes())
    keep = {"clip00001", "clip00003"}
    cache: dict = {}
    held = list(read_clips(old, old.row_groups(keep), keep, cache=cache))
    assert sorted(c.row["clip_id"] for c in held) == sorted(keep)
    for c in held:
        assert not any(isinstance(v, memoryview) for v in c.row.values())
        assert all(a.flags.owndata for a in c.arrays.values())
    fresh = {c.row["clip_id"]: c for c in read_clips(old, old.row_groups(keep), keep)}
    for c in held:
        np.testing.assert_array_equal(c.arrays["video"], fresh[c.row["clip_id"]].arrays["video"])
