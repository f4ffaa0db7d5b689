"""A one-worker trial's checkpoints (raybench/train/checkpoints.py): a complete checkpoint exists at
every moment after the first epoch, whatever the point where the process is killed, and a trial that
starts again goes on from the newest complete one (through the training loop:
tests/unit/test_resumed_training.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raybench.train import checkpoints as ck
from raybench.train.checkpoints import MARKER, TrialCheckpoints


class Killed(Exception):
    """The process dying at this point."""


def _local(tmp_path: Path, epoch: int, files=("last.pt", "best.pt")) -> str:
    d = tmp_path / f"local{epoch}"
    d.mkdir()
    for name in files:
        (d / name).write_text(f"{name} of epoch {epoch}")
    return str(d)


def _folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def test_each_save_keeps_the_new_checkpoint_and_deletes_the_older(tmp_path):
    root = tmp_path / "trial"
    store = TrialCheckpoints(str(root))
    assert store.latest() is None  # a trial that never reported starts afresh
    for epoch in range(3):
        path = store.save(_local(tmp_path, epoch), epoch)
        assert Path(path) == root / f"epoch_{epoch:06d}"
        assert _folders(root) == [f"epoch_{epoch:06d}"]
    latest = store.latest()
    assert Path(latest.path) == root / "epoch_000002"
    with latest.as_directory() as d:
        assert (Path(d) / "best.pt").read_text() == "best.pt of epoch 2"
        assert json.loads((Path(d) / MARKER).read_text()) == {"epoch": 2}


@pytest.mark.parametrize("where", ["mid-copy", "before-marker", "before-deleting"])
def test_a_save_killed_at_any_point_leaves_a_complete_checkpoint(tmp_path, monkeypatch, where):
    root = tmp_path / "trial"
    store = TrialCheckpoints(str(root))
    store.save(_local(tmp_path, 0), 0)
    store.save(_local(tmp_path, 1), 1)

    if where == "mid-copy":  # one file of the new checkpoint written, then the kill
        def copy(src, dst, **kw):
            name = sorted(Path(src).iterdir())[0]
            Path(dst, name.name).write_bytes(name.read_bytes())
            raise Killed
        monkeypatch.setattr("pyarrow.fs.copy_files", copy)
    elif where == "before-marker":
        def marker(*a, **kw):
            raise Killed
        monkeypatch.setattr(ck, "write_bytes", marker)
    else:  # the new one complete, the older not deleted yet (save lists the folders only to delete them)
        def folders(self):
            raise Killed
        monkeypatch.setattr(ck.TrialCheckpoints, "_folders", folders)
    with pytest.raises(Killed):
        store.save(_local(tmp_path, 2), 2)
    monkeypatch.undo()

    expected = 2 if where == "before-deleting" else 1
    latest = TrialCheckpoints(str(root)).latest()
    assert Path(latest.path) == root / f"epoch_{expected:06d}"
    assert (Path(latest.path) / "last.pt").read_text() == f"last.pt of epoch {expected}"
    # the trial, started again from there, saves its next epochs over what the kill left
    again = TrialCheckpoints(str(root)).save(_local(tmp_path, 3), 2 if where != "before-deleting" else 3)
    assert _folders(root) == [Path(again).name]
    assert (Path(again) / "best.pt").read_text() == "best.pt of epoch 3"


def test_an_epoch_saved_again_is_not_rewritten(tmp_path):
    """A trial resumed after its last epoch reports that epoch's checkpoint again: the complete one stays."""
    root = tmp_path / "trial"
    store = TrialCheckpoints(str(root))
    store.save(_local(tmp_path, 0), 4)
    path = store.save(_local(tmp_path, 1), 4)
    assert _folders(root) == ["epoch_000004"]
    assert (Path(path) / "last.pt").read_text() == "last.pt of epoch 0"
