"""A clip store joined with an embedding store (data.audio.encoder): training reads the embeddings as
their own input beside the audio features and frames of the clip store, with the statistics and sizes
of the embeddings; a clip the embedding store lacks is named."""

from __future__ import annotations

import numpy as np
import pytest


def _stores(tmp_path, frames=(5, 7, 4), width=6):
    from raybench.data.embed import embedding_row
    from raybench.data.store import ClipStore, random_store, write_part

    data = random_store(tmp_path / "clips", list(frames), image_size=8, n_mels=3, clips_per_part=2)
    rng = np.random.default_rng(3)
    emb = {cid: rng.standard_normal((2 * n, width)).astype(np.float32) for cid, n in zip(data["ids"]["train"], frames)}
    store = ClipStore(tmp_path / "emb")
    ids = list(emb)
    write_part(store, [embedding_row(c, n, emb[c]) for c, n in zip(ids[:2], frames[:2])])
    write_part(store, [embedding_row(ids[2], frames[2], emb[ids[2]])])
    store.write_index()
    return data, emb


def test_training_reads_the_embeddings_in_place_of_the_audio(tmp_path):
    from raybench.data.store import ClipStore, open_store
    from raybench.train.feed import Clip, host_batch, store_columns

    data, emb = _stores(tmp_path)
    joined = open_store(data["store_path"], {"audio_emb": str(tmp_path / "emb")})
    base = ClipStore(data["store_path"])
    ids = data["ids"]["train"]
    rows = list(joined.iter_clips(ids, store_columns(("video", "audio", "audio_emb"))))
    assert [r["clip_id"] for r in rows] == [r["clip_id"] for r in base.iter_clips(ids, ["clip_id"])]
    for r in rows:
        clip = Clip.from_row(r)
        np.testing.assert_array_equal(clip.arrays["audio_emb"], emb[r["clip_id"]])
        (f,) = base.iter_clips([r["clip_id"]], ["audio", "audio_shape"])  # the features stay, beside them
        np.testing.assert_array_equal(clip.arrays["audio"], np.frombuffer(f["audio"], np.float32).reshape(f["audio_shape"]))
        (b,) = base.iter_clips([r["clip_id"]], ["video", "video_shape"])
        np.testing.assert_array_equal(clip.arrays["video"], Clip.from_row({**b, "va": r["va"]}).arrays["video"])
    # a batch of windows takes 2 embedding steps per frame, and the store's 4 feature steps
    clips = [Clip.from_row(r) for r in rows]
    batch = host_batch([(clips[1], 2)], 3, "categorical")
    np.testing.assert_array_equal(batch["audio_emb"][0], emb[clips[1].row["clip_id"]][4:10])
    np.testing.assert_array_equal(batch["audio"][0], clips[1].arrays["audio"][8:20])
    # the audio statistics and the size in memory are the embeddings'
    mean, std = joined.audio_stats(ids, "audio_emb")
    allemb = np.concatenate(list(emb.values())).astype(np.float64)
    np.testing.assert_allclose(mean, allemb.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, allemb.std(0), rtol=1e-4)
    n_frames = 5 + 7 + 4
    assert joined.arrays_nbytes(ids, ["video", "audio_emb"]) == n_frames * (8 * 8 * 3 + 2 * 4) + allemb.size * 4
    assert joined.arrays_nbytes(ids, ["audio_emb"]) == n_frames * 2 * 4 + allemb.size * 4
    got = {r["clip_id"]: r["audio_emb_shape"] for r in joined.read_clips(ids, ["audio_emb_shape", "num_frames"])}
    assert got == {c: list(e.shape) for c, e in emb.items()}


def test_a_clip_missing_from_the_embeddings_is_named(tmp_path):
    from raybench.data.embed import embedding_row
    from raybench.data.store import ClipStore, PrepareError, open_store, write_part

    data, emb = _stores(tmp_path)
    ids = data["ids"]["train"]
    partial = ClipStore(tmp_path / "partial")
    write_part(partial, [embedding_row(ids[0], 5, emb[ids[0]])])
    joined = open_store(data["store_path"], {"audio_emb": str(tmp_path / "partial")})
    assert len(list(joined.iter_clips(ids[:1], ["audio_emb", "audio_emb_shape"]))) == 1
    with pytest.raises(PrepareError, match=rf"clip {ids[1]} is not in the embedding store .*partial"):
        list(joined.iter_clips(ids, ["audio_emb", "audio_emb_shape"]))
    with pytest.raises(PrepareError, match=rf"clip {ids[1]} is not in the embedding store"):
        joined.read_clips(ids, ["audio_emb_shape"])
    with pytest.raises(PrepareError, match=rf"2 clip\(s\) are not in .*partial \(audio_emb\), e.g. {ids[1]}"):
        joined.audio_stats(ids, "audio_emb")


def test_layer_weights_sum_the_layers_then_average_each_frames_steps():
    import torch

    from raybench.methods.embeddings import LayerWeightedAudio

    torch.manual_seed(0)
    m = LayerWeightedAudio(n_features=3 * 4, layers=3, k=2, dim=5, dropout=0.0).eval()
    x = torch.randn(2, 6, 12)  # 3 frames of 2 steps, 3 layers of width 4
    with torch.no_grad():
        m.layer_weights.copy_(torch.tensor([0.0, 1.0, 2.0]))
        w = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0)
        layers = x.reshape(2, 6, 3, 4)
        summed = sum(w[i] * layers[:, :, i] for i in range(3))  # (2, 6, 4)
        per_frame = (summed[:, 0::2] + summed[:, 1::2]) / 2
        torch.testing.assert_close(m(x), torch.relu(m.proj[0](per_frame)))
        assert float(m.weights().sum()) == pytest.approx(1.0)
    one = LayerWeightedAudio(n_features=4, layers=1, k=2, dim=5, dropout=0.0).eval()
    assert one.layer_weights is None
    with pytest.raises(ValueError, match="not 3 layers"):
        LayerWeightedAudio(n_features=10, layers=3, k=1, dim=5, dropout=0.0)
