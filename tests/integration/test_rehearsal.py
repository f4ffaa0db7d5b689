"""The scale rehearsal end to end, small: an Aff-Wild2-shaped set prepared, then one trial of one epoch of
the paper's Aff-Wild2 sweep, with figures for both stages."""

from __future__ import annotations

from raybench.bench import parser
from raybench.rehearsal import rehearse


def test_the_rehearsal_prepares_every_frame_and_trains_one_epoch(ray_session, capsys):
    args = parser().parse_args(["--rehearsal", "8", "--rehearsal-seconds", "3", "--decode-size", "160x120",
                                "window.length=30", "window.hop=30", "train.batch_size=4", "train.num_workers=1"])
    fig = rehearse(args, args.overrides)
    out = capsys.readouterr().out
    pr, tr = fig["prepare"], fig["train"]
    assert pr["stored_frames"] == 8 * 90  # every frame of every video, at the sweep's 30 fps
    # 48 px frames (6912 bytes raw) and 4 x 40 float32 audio features per frame, compressed on disk
    assert 0 < pr["store_bytes"] / pr["stored_frames"] < 6912 + 640 + 1000
    assert pr["source_frames_per_s"] > 0 and 0 < pr["largest_mib"] <= pr["peak_mib"]
    # one epoch on the training videos' 90-frame clips: 2-3 windows of 30 frames each (random phase), at
    # most 6 training videos (the others are the test video and the official Validation_Set's two)
    assert 0 < tr["windows_seen"] <= 6 * 3
    assert 0 < tr["largest_mib"] <= tr["peak_mib"] and tr["worker_peak_mib"] > 0
    assert "prepare" in out and "train (one epoch)" in out
