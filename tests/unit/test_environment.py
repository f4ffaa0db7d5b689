"""The installed environment: every native extension raybench uses loads and works, and a broken one
is reported before any work, in one message with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from raybench import envcheck

REPO = Path(__file__).resolve().parents[2]


def test_every_native_extension_loads_and_runs(tmp_path):
    """A torch/torchaudio pair that does not load together (or a broken decord, cv2, av) fails here."""
    import av
    import cv2
    import decord
    import torch
    import torchaudio

    from raybench.data.synth import write_video

    assert envcheck.check() == []
    # torchaudio's transform on a tensor: a 440 Hz tone peaks in the mel band that holds 440 Hz
    sr = 16000
    tone = torch.sin(2 * torch.pi * 440 * torch.arange(sr) / sr)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=sr, n_fft=400, n_mels=40)(tone)  # (40, T)
    fb = torchaudio.functional.melscale_fbanks(201, 0.0, sr / 2, 40, sr)  # (freq bins, mels)
    assert int(mel.mean(1).argmax()) == int(fb[round(440 / (sr / 2) * 200)].argmax())
    # av writes H.264 + AAC, decord reads the frames and the audio track back, cv2 processes a frame
    frames = np.zeros((10, 32, 32, 3), np.uint8)
    frames[:, 8:24, 8:24] = 200
    path = tmp_path / "clip.mp4"
    write_video(path, frames, 10, (0.3 * np.sin(np.arange(sr) / sr * 2 * np.pi * 300)).astype(np.float32), sr)
    with av.open(str(path)) as f:
        assert {s.type for s in f.streams} == {"video", "audio"}
    vr = decord.VideoReader(str(path))
    assert len(vr) == 10
    frame = vr[5].asnumpy()
    assert frame.shape == (32, 32, 3) and frame[16, 16].mean() > 150 > frame[2, 2].mean()
    ar = decord.AudioReader(str(path), sample_rate=sr, mono=True)
    assert ar.shape[1] > sr * 0.9
    small = cv2.resize(frame, (16, 16), interpolation=cv2.INTER_AREA)
    assert small.shape == (16, 16, 3) and small[8, 8].mean() > 150


def test_torch_and_torchaudio_are_the_pinned_pair():
    reqs = {r.split(";")[0].replace(" ", "") for r in metadata.requires("raybench") or []}
    for dist in ("torch", "torchaudio"):
        pin = next(r for r in reqs if r.startswith(f"{dist}=="))
        assert metadata.version(dist).split("+")[0] == pin.split("==")[1], (dist, pin)


def test_environment_errors_are_told_apart_from_file_errors():
    assert envcheck.is_environment_error(ImportError("no module named decord"))
    assert envcheck.is_environment_error(OSError("libtorchaudio.so: undefined symbol: torch_exception_get_what"))
    assert not envcheck.is_environment_error(OSError("moov atom not found"))
    assert not envcheck.is_environment_error(ValueError("cannot open video"))


BROKEN = {
    # what a torchaudio built for another torch raises on load
    "torchaudio": ("torchaudio", "raise OSError('/x/torchaudio/lib/libtorchaudio.so: undefined symbol: "
                                 "torch_exception_get_what_without_backtrace')"),
    "decord": ("decord", "raise OSError('libavcodec.so.58: cannot open shared object file: No such file')"),
    "cv2": ("opencv-python-headless", "raise ImportError('libGL.so.1: cannot open shared object file')"),
}


@pytest.mark.parametrize("entry,module", [("raybench.sweep", m) for m in sorted(BROKEN)]
                         # the benchmark neither decodes video nor starts Ray: it checks what it uses
                         + [("raybench.bench", "torchaudio")])
def test_a_broken_extension_stops_the_entry_point_with_one_message(tmp_path, module, entry):
    dist, body = BROKEN[module]
    fake = tmp_path / "fake" / module
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(body + "\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "fake"), RAYBENCH_CACHE=str(tmp_path / "cache"),
               RAYBENCH_RESULTS=str(tmp_path / "results"))
    args = [sys.executable, "-m", entry] + (["sweeps/smoke.yaml"] if entry == "raybench.sweep" else ["--steps", "1"])
    r = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert "Traceback" not in out and "Ray" not in out  # no traceback, Ray never started
    (first, *rest) = [line for line in r.stderr.splitlines() if line.strip()]
    assert first.startswith(f"raybench: broken environment: {module} does not load")
    assert f"{dist} {metadata.version(dist)}" in first  # the version found
    if module == "torchaudio":
        assert f"torch {metadata.version('torch')}" in first and "raybench requires torchaudio==" in first
    assert "undefined symbol" in out or "cannot open shared object" in out
    assert any(line.strip().startswith("fix: ") and 'pip install -e ".[dev]"' in line for line in rest)
