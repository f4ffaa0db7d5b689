"""Training streams its clips from the clip store: a store larger than Ray's object store trains,
with the worker's memory bounded by the shuffle pool, not the dataset."""

from __future__ import annotations

from local_ray import OBJECT_STORE_BYTES


def _store_bytes(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*.parquet"))


def test_a_store_larger_than_the_object_store_trains_in_bounded_memory(ray_session, tmp_path):
    import ray
    import ray.train
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    from raybench.data.store import random_store
    from raybench.registry import METHODS
    from raybench.schema import TrialConfig
    from raybench.train.loop import train_loop_per_worker

    # 160 clips of 1600 frames at 32 px: about 4.8x the session's object store (random pixels do not
    # compress); small frames, so that the video model's own training state stays small beside the data
    data = random_store(tmp_path / "store", [1600] * 160, task="categorical", image_size=32, n_mels=16, n_classes=4,
                        clips_per_part=8)
    size = _store_bytes(tmp_path / "store")
    capacity = ray.cluster_resources().get("object_store_memory", OBJECT_STORE_BYTES)
    assert size > 2.5 * capacity, (size, capacity)
    data["ids"]["val"] = data["ids"]["val"][:8]
    # video_only: a method that reads the frames; cache_gib 0: read the store every epoch, as a set
    # larger than the memory budget is
    cfg = TrialConfig(method=METHODS.get("video_only").options({"name": "video_only"}), data={"image_size": 32},
                      window={"length": 16, "hop": 16},
                      train={"epochs": 2, "batch_size": 8, "num_workers": 2, "cpus_per_worker": 0.5,
                             "shuffle_clips": 2, "shuffle_batches": 1, "amp": False, "cache_gib": 0})
    trainer = TorchTrainer(train_loop_per_worker, train_loop_config={"cfg": cfg, "data": data, "logger": None},
                           scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
                           run_config=ray.train.RunConfig(storage_path=str(tmp_path / "ckpt")))
    result = trainer.fit()
    m = result.metrics
    print(f"[streaming] store {size / 2**20:.0f} MiB, object store {capacity / 2**20:.0f} MiB; rank 0: peak RSS "
          f"{m['memory/peak_rss_gib']:.2f} GiB, growth {m['memory/growth_gib'] * 1024:.0f} MiB, "
          f"{m['time/train_samples_per_s']:.0f} windows/s, waited {m['time/data_wait_s']:.2f} s for data")
    assert m["epochs_done"] == 2
    assert m["data/cached"] == 0.0 and 0.4 * size < m["data/train_gib"] * 2**30 < 1.1 * size
    assert m["time/train_samples_per_s"] > 0
    # every training clip seen once per epoch across the two workers (categorical: one window per clip)
    assert m["train/windows_seen"] == 160
    # each worker read half the store every epoch; its memory grew by less than that (the model's
    # training state, gloo's buffers, a few windows in the shuffle pool, prefetched batches), and would not
    # have held its half (the shares are new each epoch)
    assert m["memory/growth_gib"] * 2**30 < 0.4 * size, (m["memory/growth_gib"], size / 2**30)
    assert 0.0 <= m["val/uar"] <= 1.0
