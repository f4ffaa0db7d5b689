"""Under DDP every rank evaluates with rank 0's buffers (BatchNorm's running statistics): two gloo
processes on this CPU, no Ray."""

from __future__ import annotations

from datetime import timedelta

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
    dist.destroy_process_group()


def test_ranks_evaluate_with_rank_0s_batchnorm_statistics(tmp_path):
    with mp.Manager() as m:
        out = m.dict()
        mp.spawn(_rank, args=(2, (tmp_path / "init").as_uri(), out), nprocs=2, join=True)
        out = dict(out)
    assert not torch.allclose(out["before0"], out["before1"])  # the ranks' statistics had drifted apart
    assert torch.equal(out["after0"], out["before0"]) and torch.equal(out["after1"], out["before0"])
    assert int(out["batches1"]) == int(out["batches0"]) == 3
