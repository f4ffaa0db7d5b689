"""A trial resumed from its last checkpoint trains each later epoch as it would have without the
interruption: the same windows, dropout masks and modality dropout (each epoch's draws are seeded
from train.seed, the epoch and the rank, not carried over from earlier epochs), so on a CPU its
weights and metrics are the uninterrupted trial's, bit for bit. No Ray: a stand-in for Tune's session."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest
import torch

from raybench.config import load, resolve_trial_config
from raybench.data.store import random_store
from raybench.train.loop import train_loop_per_worker


class Killed(Exception):
    """The process dying after an epoch's report."""


class Checkpoint:
    def __init__(self, path: Path):
        self.path = path

    @contextlib.contextmanager
    def as_directory(self):
        yield str(self.path)


class Session:
    """What the loop asks of Tune (``TuneSession``), kept in a folder: every report's checkpoint is
    copied there; ``die_after`` reports, the loop is stopped as a killed process would be."""

    rank, world = 0, 1
    device = torch.device("cpu")

    def __init__(self, folder: Path, checkpoint: Checkpoint | None = None, die_after: int | None = None):
        self.folder, self.checkpoint, self.die_after = folder, checkpoint, die_after
        self.reports: list[dict] = []

    def prepare_model(self, model):
        return model

    def get_checkpoint(self):
        return self.checkpoint

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        kept = self.folder / f"epoch{metrics['epoch']}"
        shutil.copytree(checkpoint_dir, kept)
        self.checkpoint = Checkpoint(kept)
        self.reports.append(metrics)
        if self.die_after is not None and len(self.reports) == self.die_after:
            raise Killed


@pytest.mark.parametrize("method,task", [("schoneveld2021", "categorical"), ("av_fusion", "continuous")])
def test_a_resumed_trial_trains_as_it_would_have_uninterrupted(tmp_path, method, task):
    # clips of different lengths, several windows each (categorical: one random window per clip and epoch)
    data = random_store(tmp_path / "store", [9, 14, 20, 11, 26, 17, 12, 30], task=task, image_size=16, n_mels=8,
                        n_classes=3, steps_per_frame=2)
    cfg = resolve_trial_config(
        load(None, ["train.epochs=4", "train.batch_size=4", "train.lr=3e-3", "window.length=6", "window.hop=3",
                    "train.modality_dropout=0.5", "train.shuffle_clips=3", "train.shuffle_batches=1",
                    "train.read_threads=1", "tune.metric=null",
                    f"data.dataset=synthetic_{'ravdess' if task == 'categorical' else 'affwild2'}"]),
        {"method.name": method})
    loop = {"cfg": cfg, "data": data, "logger": None}

    whole = Session(tmp_path / "whole")
    train_loop_per_worker({**loop, "session": whole})
    first = Session(tmp_path / "first", die_after=2)
    with pytest.raises(Killed):
        train_loop_per_worker({**loop, "session": first})
    resumed = Session(tmp_path / "resumed", checkpoint=first.checkpoint)
    train_loop_per_worker({**loop, "session": resumed})

    assert [r["epoch"] for r in resumed.reports] == [2, 3]  # it went on from its checkpoint
    for a, b in zip(whole.reports[2:], resumed.reports):
        assert a["train/loss"] == b["train/loss"], (a["epoch"], a["train/loss"], b["train/loss"])
        assert a["val/score"] == b["val/score"]
        # modality dropout drew the same windows (it draws about half of them: the counts are not zero)
        assert a["train/windows_without_audio"] == b["train/windows_without_audio"] > 0
        assert a["train/windows_without_video"] == b["train/windows_without_video"] > 0
    w = torch.load(whole.checkpoint.path / "last.pt", weights_only=False)["model"]
    r = torch.load(resumed.checkpoint.path / "last.pt", weights_only=False)["model"]
    assert w.keys() == r.keys()
    assert all(torch.equal(w[k], r[k]) for k in w), [k for k in w if not torch.equal(w[k], r[k])]
    # and each epoch draws its own windows to drop, not one epoch's draws again
    assert len({(x["train/windows_without_audio"], x["train/windows_without_video"]) for x in whole.reports}) > 1


def test_a_trial_resumed_after_stopping_early_trains_no_further_epoch(tmp_path):
    """train.early_stop ended the trial, but the sweep was killed before Tune recorded it as finished: the
    trial started again from its last checkpoint reports that epoch again and trains none after it."""
    data = random_store(tmp_path / "store", [9, 14, 20, 11, 26, 17], task="categorical", image_size=16, n_mels=8,
                        n_classes=3, steps_per_frame=2)
    # a learning rate too small to change a prediction: no better score after epoch 0, stopped after epoch 1
    cfg = resolve_trial_config(
        load(None, ["train.epochs=6", "train.early_stop=1", "train.lr=1e-12", "train.batch_size=4",
                    "window.length=6", "window.hop=3", "train.read_threads=1", "tune.metric=null",
                    "data.dataset=synthetic_ravdess"]), {"method.name": "av_fusion"})
    loop = {"cfg": cfg, "data": data, "logger": None}
    whole = Session(tmp_path / "whole")
    train_loop_per_worker({**loop, "session": whole})
    assert [r["epoch"] for r in whole.reports] == [0, 1]  # (the premise: stopped early)
    resumed = Session(tmp_path / "resumed", checkpoint=whole.checkpoint)
    train_loop_per_worker({**loop, "session": resumed})
    assert [r["epoch"] for r in resumed.reports] == [1]
    assert resumed.reports[0]["val/score"] == whole.reports[-1]["val/score"]
