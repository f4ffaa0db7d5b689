"""The throughput benchmark builds every method and times real training steps."""

from __future__ import annotations

import math

from raybench.bench import main


def test_bench_times_each_method_and_task(capsys):
    assert main(["--methods", "av_fusion", "zhang2021", "--device", "cpu", "--batch-size", "2", "--window", "4",
                 "--image-size", "32", "--steps", "1", "--warmup", "0"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()
            if line.startswith(("av_fusion", "zhang2021"))]
    assert [(r[0], r[1]) for r in rows] == [("av_fusion", "categorical"), ("av_fusion", "continuous"),
                                            ("zhang2021", "continuous")]
    for r in rows:
        params, ms, sps = float(r[2]), float(r[3]), float(r[4])
        assert params > 0 and ms > 0 and math.isclose(sps, 2 / (ms / 1e3), rel_tol=0.02)


def test_bench_defaults_are_the_stores_audio_shape():
    from raybench.bench import parser
    from raybench.schema import AudioConfig

    args = parser().parse_args([])
    assert args.steps_per_frame == AudioConfig().frames_per_video_frame == 4
    assert args.n_mels == AudioConfig().n_mels
