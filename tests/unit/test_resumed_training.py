"""A trial resumed from its last checkpoint trains each later epoch as it would have without the
interruption: the same windows, dropout masks and modality dropout (each epoch's draws are seeded
from train.seed, the epoch and the rank, not carried over from earlier epochs), so on a CPU its
weights and metrics are the uninterrupted trial's, bit for bit. No Ray session: the trial's own session
and checkpoints, with Tune's report patched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from raybench.config import load, resolve_trial_config
from raybench.data.store import random_store
from raybench.train.checkpoints import TrialCheckpoints
from raybench.train.loop import TuneSession, train_loop_per_worker


class Killed(Exception):
    """The process dying after an epoch's report."""


class Tune:
    """Tune's report and checkpoint calls, patched: every report kept; ``die_after`` reports, the loop is
    stopped as a killed process would be."""

    def __init__(self, monkeypatch):
        import ray.tune

        self.reports: list[dict] = []
        self.die_after: int | None = None
        monkeypatch.setattr(ray.tune, "report", self.report)
        monkeypatch.setattr(ray.tune, "get_checkpoint", lambda: None)

    def report(self, metrics: dict, checkpoint=None) -> None:
        self.reports.append(metrics)
        if self.die_after is not None and len(self.reports) == self.die_after:
            raise Killed

    def run(self, loop: dict, folder: Path, die_after: int | None = None) -> list[dict]:
        """The trial in its own process (the real session), its checkpoints in ``folder``: its reports."""
        self.reports, self.die_after = [], die_after
        train_loop_per_worker({**loop, "session": TuneSession(False, TrialCheckpoints(str(folder)))})
        return self.reports


@pytest.mark.parametrize("method,task", [("schoneveld2021", "categorical"), ("av_fusion", "continuous")])
def test_a_resumed_trial_trains_as_it_would_have_uninterrupted(tmp_path, monkeypatch, method, task):
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

    tune = Tune(monkeypatch)
    whole = tune.run(loop, tmp_path / "whole")
    with pytest.raises(Killed):
        tune.run(loop, tmp_path / "trial", die_after=2)
    resumed = tune.run(loop, tmp_path / "trial")  # started again: from its checkpoint in the same folder

    assert [r["epoch"] for r in resumed] == [2, 3]  # it went on from its checkpoint
    for a, b in zip(whole[2:], resumed):
        assert a["train/loss"] == b["train/loss"], (a["epoch"], a["train/loss"], b["train/loss"])
        assert a["val/score"] == b["val/score"]
        # modality dropout drew the same windows (it draws about half of them: the counts are not zero)
        assert a["train/windows_without_audio"] == b["train/windows_without_audio"] > 0
        assert a["train/windows_without_video"] == b["train/windows_without_video"] > 0
    w = torch.load(tmp_path / "whole" / "epoch_000003" / "last.pt", weights_only=False)["model"]
    r = torch.load(tmp_path / "trial" / "epoch_000003" / "last.pt", weights_only=False)["model"]
    assert w.keys() == r.keys()
    assert all(torch.equal(w[k], r[k]) for k in w), [k for k in w if not torch.equal(w[k], r[k])]
    # and each epoch draws its own windows to drop, not one epoch's draws again
    assert len({(x["train/windows_without_audio"], x["train/windows_without_video"]) for x in whole}) > 1


def test_a_trial_killed_while_saving_goes_on_from_its_newest_complete_checkpoint(tmp_path, monkeypatch):
    """Killed while epoch 2's checkpoint was being written (its files, not its marker), the trial started
    again trains epochs 2 and 3 from epoch 1's checkpoint, reports each checkpoint's path to Tune, and
    ends with the uninterrupted trial's weights."""
    from raybench.train import checkpoints as ck

    data = random_store(tmp_path / "store", [9, 14, 20, 11, 26, 17], task="categorical", image_size=16, n_mels=8,
                        n_classes=3, steps_per_frame=2)
    cfg = resolve_trial_config(
        load(None, ["train.epochs=4", "train.batch_size=4", "window.length=6", "window.hop=3",
                    "train.shuffle_clips=3", "train.read_threads=1", "data.dataset=synthetic_ravdess"]),
        {"method.name": "av_fusion"})
    loop = {"cfg": cfg, "data": data, "logger": None}
    tune = Tune(monkeypatch)
    whole = tune.run(loop, tmp_path / "whole")
    real_marker = ck.write_bytes

    def marker(fs, path, data):  # the kill: epoch 2's files written, not its marker
        if "epoch_000002" in path:
            raise Killed
        real_marker(fs, path, data)

    monkeypatch.setattr(ck, "write_bytes", marker)
    with pytest.raises(Killed):
        tune.run(loop, tmp_path / "trial")
    monkeypatch.setattr(ck, "write_bytes", real_marker)
    assert [r["epoch"] for r in tune.reports] == [0, 1]
    resumed = tune.run(loop, tmp_path / "trial")

    assert [r["epoch"] for r in resumed] == [2, 3]  # from epoch 1's checkpoint, not from the start
    for r in resumed:
        assert r["checkpoint_path"] == str(tmp_path / "trial" / f"epoch_{r['epoch']:06d}")
    assert sorted(p.name for p in (tmp_path / "trial").iterdir()) == ["epoch_000003"]
    assert [r["val/score"] for r in resumed] == [r["val/score"] for r in whole[2:]]
    w = torch.load(tmp_path / "whole" / "epoch_000003" / "last.pt", weights_only=False)["model"]
    r = torch.load(tmp_path / "trial" / "epoch_000003" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(w[k], r[k]) for k in w)


def test_a_trial_resumed_after_stopping_early_trains_no_further_epoch(tmp_path, monkeypatch):
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
    tune = Tune(monkeypatch)
    whole = tune.run(loop, tmp_path / "trial")
    assert [r["epoch"] for r in whole] == [0, 1]  # (the premise: stopped early)
    resumed = tune.run(loop, tmp_path / "trial")  # started again from its last checkpoint
    assert [r["epoch"] for r in resumed] == [1]
    assert resumed[0]["val/score"] == whole[-1]["val/score"]


def test_a_diverged_first_epoch_is_never_the_best(tmp_path, monkeypatch):
    """A NaN validation score (a diverged model) at the first epoch must not stay best: nothing compares
    greater than NaN, so it used to keep best.pt at that epoch for the whole trial."""
    import math

    import raybench.train.loop as loop_mod

    data = random_store(tmp_path / "store", [9, 14, 20, 11, 26, 17], task="categorical", image_size=16, n_mels=8,
                        n_classes=3, steps_per_frame=2)
    cfg = resolve_trial_config(
        load(None, ["train.epochs=3", "train.batch_size=4", "window.length=6", "window.hop=3", "tune.metric=null",
                    "train.read_threads=1", "data.dataset=synthetic_ravdess"]), {"method.name": "av_fusion"})
    real, calls = loop_mod.evaluate, []

    def evaluate(*a, **kw):
        val, preds = real(*a, **kw)
        calls.append(1)
        return ({k: float("nan") for k in val} if len(calls) == 1 else val), preds

    monkeypatch.setattr(loop_mod, "evaluate", evaluate)
    reports = Tune(monkeypatch).run({"cfg": cfg, "data": data, "logger": None}, tmp_path / "t")
    assert [r["epoch"] for r in reports] == [0, 1, 2] and math.isnan(reports[0]["val/score"])
    assert math.isnan(reports[0]["best/val/score"])  # nothing better yet
    scores = [r["val/score"] for r in reports[1:]]
    assert reports[-1]["best/val/score"] == max(scores) and reports[-1]["best_epoch"] == 1 + scores.index(max(scores))
