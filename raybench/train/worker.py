"""The function each Ray Train worker runs, in a module that imports nothing heavy.

``TorchTrainer`` pickles its training function by reference, so every process that unpickles it
imports the module it lives in: the trial's own process and Ray Train's controller too, which only
hand it on. ``raybench.train.loop`` imports the clip store, the input pipeline and the metrics
(0.2-0.3 s per process on a 2-core machine after torch and Ray Train since its metrics no longer come
from torchmetrics, 2026-12-03; 3.6-4.2 s before: README, "How a trial runs"), so the loop is imported
here only where it runs, in the workers.
"""

from __future__ import annotations


def train_worker(config: dict) -> None:
    """Ray Train's ``train_loop_per_worker``: :func:`raybench.train.loop.train_loop_per_worker`."""
    from raybench.train.loop import train_loop_per_worker

    train_loop_per_worker(config)
