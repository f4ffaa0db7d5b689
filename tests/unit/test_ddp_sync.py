"""Under DDP every rank evaluates with rank 0's buffers (BatchNorm's running statistics), and the epoch
metrics are those of every rank's clips together: two gloo processes on this CPU, no Ray."""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _rank(rank: int, world: int, init: str, out: dict) -> None:
    from raybench.train.loop import sync_buffers

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))  # a rank that never comes: an error, not a hang
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(rank)
    for _ in range(3):  # each rank's own batches: DDP gives rank 0's statistics at each forward's start only
        loss = ddp(torch.randn(8, 3, generator=gen) + 3 * rank).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    out[f"before{rank}"] = model[1].running_mean.clone()
    sync_buffers(model)
    out[f"after{rank}"] = model[1].running_mean.clone()
    out[f"batches{rank}"] = model[1].num_batches_tracked.clone()
    out[f"metrics{rank}"] = _metrics_of_rank(rank)
    dist.destroy_process_group()


def _clips(seed: int):
    """A rank's own clips: categorical scores and labels (4 classes), valence/arousal frames with NaN
    (unannotated) and per-clip pieces."""
    g = torch.Generator().manual_seed(seed)
    n = 7 + 5 * seed  # the ranks hold different numbers of clips
    scores, labels = torch.rand(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)
    va = torch.randn(3 * n, 2, generator=g)
    pred = va + 0.5 * torch.randn(3 * n, 2, generator=g) + 0.1
    va[::4, 1] = float("nan")
    return scores, labels, pred, va


def _metrics_of(clips_of_ranks) -> dict:
    from raybench.train.metrics import TaskMetrics

    cat, frames, per_clip = (TaskMetrics("categorical", 4), TaskMetrics("continuous", 2),
                             TaskMetrics("continuous", 2, ccc_over="clips"))
    for scores, labels, pred, va in clips_of_ranks:
        cat.update(scores, labels)
        frames.update(pred, va)
        for i in range(0, len(va), 3):
            per_clip.update(pred[i:i + 3], va[i:i + 3])
    return {**cat.compute(), **frames.compute(), **{f"clips_{k}": v for k, v in per_clip.compute().items()}}


def _metrics_of_rank(rank: int) -> dict:
    """This rank's metrics, computed under torch.distributed: every rank's clips count."""
    return _metrics_of([_clips(rank)])


def test_ranks_evaluate_with_rank_0s_batchnorm_statistics(tmp_path):
    with mp.Manager() as m:
        out = m.dict()
        mp.spawn(_rank, args=(2, (tmp_path / "init").as_uri(), out), nprocs=2, join=True)
        out = dict(out)
    assert not torch.allclose(out["before0"], out["before1"])  # the ranks' statistics had drifted apart
    assert torch.equal(out["after0"], out["before0"]) and torch.equal(out["after1"], out["before0"])
    assert int(out["batches1"]) == int(out["batches0"]) == 3
    # each rank's metrics are those of both ranks' clips together (one process, no torch.distributed)
    together = _metrics_of([_clips(0), _clips(1)])
    assert together != _metrics_of([_clips(0)])  # (the second rank's clips change them)
    for rank in (0, 1):
        assert out[f"metrics{rank}"] == pytest.approx(together, abs=1e-6)
