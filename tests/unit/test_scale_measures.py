"""Measuring at scale: the rehearsal's generated set, its memory sampler, its one-trial sweep, and the loop's per-trial peak."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np

from raybench.config import SWEEPS_DIR, validate
from raybench.data.annotations import read_va
from raybench.data.datasets import get_dataset
from raybench.rehearsal import TreeMemory, sweep_for
from raybench.schema import DataConfig


def test_the_long_set_has_aff_wild2s_layout_with_a_label_per_frame(tmp_path):
    from raybench.data.synth import generate_affwild2_long

    root = generate_affwild2_long(tmp_path / "aw", videos=4, seconds=2.0, fps=30.0, width=64, height=48)
    clips = get_dataset("affwild2").manifest(root, DataConfig(dataset="affwild2", root=str(root)))
    assert len(clips) == 4
    assert sum(c.split == "test" for c in clips) == 1  # one Validation_Set video of four: the test split
    labels = [read_va(c.va_path) for c in clips]
    for va in labels:
        assert va.shape == (60, 2)
        assert np.isnan(va[:, 0]).sum() == 3  # one unannotated stretch of n // 20 frames (-5 in the file)
        assert np.nanmax(np.abs(va)) <= 0.85
    assert not np.allclose(np.nan_to_num(labels[0]), np.nan_to_num(labels[1]))  # each video its own labels
    import decord

    vr = decord.VideoReader(clips[0].video_path)
    assert len(vr) == 60 and vr[0].shape == (48, 64, 3)


def test_tree_memory_sees_a_child_process_allocate(tmp_path):
    child = "import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(3)"
    base = TreeMemory()
    base.sample()
    with TreeMemory(every=0.1) as mem:
        p = subprocess.Popen([sys.executable, "-c", child])
        time.sleep(2.0)
        p.wait()
    assert mem.largest_mib >= 300  # the child alone
    assert mem.peak_mib - base.peak_mib >= 250  # this process and the child together, measured before it


def test_the_rehearsal_runs_the_first_trial_of_the_sweep_for_one_epoch(tmp_path):
    raw = sweep_for(SWEEPS_DIR / "zhang2021_affwild2.yaml", tmp_path / "aw", tmp_path, ["train.batch_size=4"])
    cfg = validate(raw, "rehearsal")
    assert cfg.data.fold == 0 and cfg.tune.search_space == {}  # its six folds swept: the first
    assert cfg.train.epochs == 1 and cfg.train.batch_size == 4 and cfg.window.length == 300
    assert cfg.data.root == str(tmp_path / "aw") and cfg.storage == str(tmp_path / "results")
    assert cfg.mlflow.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = validate(sweep_for(SWEEPS_DIR / "affwild2.yaml", tmp_path / "aw", tmp_path, []), "rehearsal")
    assert cfg.method["name"] == "audio_only" and cfg.window.length == 32  # the first of each grid


def test_a_reused_trial_process_reports_its_own_peak_memory():
    """Tune hands a one-worker trial's process to the next trial: the loop starts each trial's peak afresh."""
    child = ("from raybench.train.loop import _peak_rss_gib, _reset_peak_rss\n"
             "b = bytearray(400 * 2**20); b[::4096] = b'x' * len(b[::4096])\n"
             "before = _peak_rss_gib(); del b\n"
             "_reset_peak_rss()\n"
             "print(before - _peak_rss_gib())\n")
    r = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.strip().splitlines()[-1]) * 1024 > 300  # the first "trial's" 400 MiB no longer count
