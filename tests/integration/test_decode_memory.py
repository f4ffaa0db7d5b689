"""A long high-resolution video decodes in bounded memory (frames decoded one by one, each cropped and
resized as it comes) and prepares into a correct store."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np

from raybench.config import SWEEPS_DIR, load
from raybench.data.store import prepare
from raybench.data.synth import write_long_video, write_mp4

CHILD = """
import json, os, sys
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
import cv2, decord, numpy
from raybench.data.decode import decode_clip
r0 = rss()
d = decode_clip(sys.argv[1], 10.0, 48)
# VmHWM: this program's own peak (ru_maxrss would carry over across exec the forking parent's peak)
hwm = next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM:')) / 1024
print(json.dumps({'growth_mib': hwm - r0,
                  'frames': list(d.frames.shape)}))
"""


def test_a_long_720p_video_decodes_in_bounded_memory_and_prepares(ray_session, tmp_path):
    import cv2
    import decord

    root = tmp_path / "data"
    long = write_long_video(root / "clips" / "long.mp4", 60.0)  # 1800 frames of 1280x720
    # decoding alone, in a fresh process: its peak memory less its size before decoding
    r = subprocess.run([sys.executable, "-c", CHILD, str(long)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout.strip().splitlines()[-1])
    assert m["frames"] == [600, 48, 48, 3]
    full_mib = 600 * 1280 * 720 * 3 / 2**20  # the 600 decoded frames at full resolution: 1582 MiB
    # decoding every frame at once held them twice (3.2 GiB); one by one the growth is a fraction of once
    assert m["growth_mib"] < 0.6 * full_mib, m

    # prepared into a store, with two short clips beside it
    audio = (0.3 * np.sin(np.arange(40000) / 9)).astype(np.float32)
    for i in (1, 2):
        write_mp4(root / "clips" / f"short{i}.mp4", np.full((20, 64, 64, 3), 40 * i, np.uint8), 10, audio, 16000)
    (root / "manifest.csv").write_text("video,subject,label,split\nclips/long.mp4,s0,a,train\n"
                                       "clips/short1.mp4,s1,b,val\nclips/short2.mp4,s2,a,test\n")
    data = dict(load(SWEEPS_DIR / "smoke.yaml").data.model_dump(), dataset="csv", root=str(root), fps=10, image_size=48,
                store_dir=str(tmp_path / "stores"))
    prep = prepare(data)
    assert prep.ids("train") == ["long"] and not prep.bad
    # three clips on two CPUs: one clip per task (and part file), so the short clips did not wait for the long one
    assert len(prep.store.part_files()) == 3
    index = prep.store.index(prep.store.part_files())  # written by prepare: trials find their row groups in it
    assert index is not None and sorted(c for groups in index.values() for g in groups for c in g) == \
        ["long", "short1", "short2"]
    row = prep.store.read_clips(["long"], columns=["num_frames", "video_shape", "source_frames", "video"])[0]
    assert row["num_frames"] == 600 and row["video_shape"] == [600, 48, 48, 3] and row["source_frames"] == 1800
    video = np.frombuffer(row["video"], np.uint8).reshape(600, 48, 48, 3)
    vr = decord.VideoReader(str(long), ctx=decord.cpu(0))  # a few frames, decoded and resized here
    for t in (0, 299, 599):
        want = cv2.resize(vr[3 * t].asnumpy(), (48, 48), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(video[t], want)
    shutil.rmtree(root)
