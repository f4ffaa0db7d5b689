import numpy as np

from raybench.data.windows import overlap_average, random_start, window_starts


def test_window_starts_cover_and_end_aligned():
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(11, 4, 3) == [0, 3, 6, 7]  # last window aligned to the end
    assert window_starts(3, 8, 4) == [0]  # shorter than a window: one, padded
    for n, L, h in [(300, 300, 200), (1000, 300, 200), (57, 16, 8)]:
        s = window_starts(n, L, h)
        covered = np.zeros(n, bool)
        for x in s:
            covered[x : x + L] = True
        assert covered.all() and s[-1] + L == max(n, L)


def test_a_window_pads_and_aligns_audio():
    """One window of a clip, as the input pipeline cuts it (raybench/train/feed.py: host_batch)."""
    from raybench.data.store import store_row
    from raybench.train.feed import Clip, host_batch

    T, k = 5, 4
    video = np.arange(T, dtype=np.uint8)[:, None, None, None] * np.ones((T, 2, 2, 3), np.uint8)
    audio = np.repeat(np.arange(T, dtype=np.float32), k)[:, None] * np.ones((1, 3), np.float32)
    va = np.stack([np.arange(T), -np.arange(T)], 1).astype(np.float32)
    clip = Clip.from_row(store_row("c", -1, video, audio, va, va, 10.0, np.zeros((0, 0, 0, 2), np.float16), 10.0, T))
    w = {key: v[0] for key, v in host_batch([(clip, 3)], 4, "continuous").items()}
    assert w["video"].shape == (4, 2, 2, 3) and w["audio"].shape == (16, 3)
    assert w["mask"].tolist() == [True, True, False, False]
    assert w["video"][:2, 0, 0, 0].tolist() == [3, 4] and (w["video"][2:] == 0).all()
    # audio steps follow their frames: frame 3 -> steps 0..3 of the window
    assert w["audio"][:4, 0].tolist() == [3.0] * 4 and w["audio"][4:8, 0].tolist() == [4.0] * 4
    assert np.isnan(w["va"][2:]).all() and w["va"][0].tolist() == [3.0, -3.0]


def test_random_start_in_range():
    rng = np.random.default_rng(0)
    starts = {random_start(20, 8, rng) for _ in range(200)}
    assert min(starts) == 0 and max(starts) == 12


def test_overlap_average():
    preds = [np.full((4, 1), 1.0), np.full((4, 1), 3.0)]
    out = overlap_average(6, [0, 2], preds)
    assert out[:, 0].tolist() == [1, 1, 2, 2, 3, 3]
