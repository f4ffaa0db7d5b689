"""RAVDESS: ``Actor_XX/MM-VV-EE-II-SS-RR-AA.mp4`` (see DATASETS.md).

MM modality (01 audio-video, 02 video-only, 03 audio-only), VV channel (01 speech,
02 song), EE emotion 01-08, II intensity, SS statement, RR repetition, AA actor.
Audio-visual benchmarks use the audio-video files (MM=01); speech by default.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from raybench.data.datasets.base import DATASETS, Dataset
from raybench.data.manifest import Clip, split_clips

EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
NAME_RE = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)\.mp4$", re.IGNORECASE)
CHANNELS = {"speech": 1, "song": 2}


def parse_name(name: str) -> dict[str, int] | None:
    m = NAME_RE.match(name)
    if not m:
        return None
    keys = ("modality", "channel", "emotion", "intensity", "statement", "repetition", "actor")
    return dict(zip(keys, (int(g) for g in m.groups())))


class Ravdess(Dataset):
    name = "ravdess"
    task = "categorical"
    class_names = EMOTIONS
    layout = "Actor_01 .. Actor_24 folders of MM-VV-EE-II-SS-RR-AA.mp4 files (RAVDESS Video_Speech/Song archives)"

    def manifest(self, root: Path, data_cfg: dict[str, Any]) -> list[Clip]:
        root = Path(root)
        opts = data_cfg.get("ravdess") or {}
        channels = {CHANNELS[c] for c in opts.get("channels", ["speech"]) if c in CHANNELS}
        actor_dirs = sorted(p for p in root.glob("**/Actor_*") if p.is_dir())
        if not actor_dirs:
            raise self.layout_error(root, "no Actor_XX folders")
        clips = []
        for d in actor_dirs:
            for f in sorted(d.iterdir()):
                info = parse_name(f.name)
                if info is None or info["modality"] != 1 or info["channel"] not in channels:
                    continue  # video-only / audio-only files, song when not asked, unrelated files
                if not 1 <= info["emotion"] <= 8:
                    continue
                clips.append(Clip(
                    clip_id=f.stem, video_path=str(f), subject=f"actor{info['actor']:02d}",
                    label=info["emotion"] - 1, meta=info,
                ))
        if not clips:
            raise self.layout_error(root, "no audio-video (01-..) files for the chosen channels")
        return split_clips(clips, data_cfg)


DATASETS.register("ravdess", Ravdess())
