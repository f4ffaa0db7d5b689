"""RECOLA, AVEC 2016 release (see DATASETS.md).

``ratings_gold_standard/{arousal,valence}/{train,dev,test}_<n>.arff`` (rows ``instance,frameTime,
GoldStandard`` at 40 ms steps), video ``recordings_video/<name>.mp4`` (any video extension), audio
``recordings_audio/<name>.wav`` (used when present, else the video's own track). Protocol: the 9
train recordings are split into train and val (``data.split.val_fraction``, seeded; one subject per
recording); the 9 dev recordings are the reported (test) split; test recordings have no gold
standard and are left out.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from raybench.data.datasets.base import DATASETS, Dataset, is_video
from raybench.data.manifest import Clip, split_clips
from raybench.schema import DataConfig

NAME_RE = re.compile(r"^(train|dev)_(\d+)$")
RATE_HZ = 25.0  # 40 ms


class Recola(Dataset):
    name = "recola"
    task = "continuous"
    class_names = ("valence", "arousal")
    layout = ("ratings_gold_standard/{arousal,valence}/{train,dev}_N.arff, recordings_video/{train,dev}_N.mp4 and "
              "(optional) recordings_audio/{train,dev}_N.wav")

    def manifest(self, root: Path, data_cfg: DataConfig) -> list[Clip]:
        root = Path(root)
        gold = {d.name.lower(): d for d in root.rglob("*") if d.is_dir() and d.name.lower() in ("arousal", "valence")
                and d.parent.name.lower().startswith("ratings_gold_standard")}
        if set(gold) != {"arousal", "valence"}:
            raise self.layout_error(root, "no ratings_gold_standard/arousal and /valence folders")
        videos = {p.stem: p for p in root.rglob("*") if is_video(p)
                  and p.parent.name.lower().startswith("recordings_video")}
        wavs = {p.stem: p for p in root.rglob("*.wav") if p.parent.name.lower().startswith("recordings_audio")}
        clips, missing = [], []
        for arousal in sorted(gold["arousal"].glob("*.arff")):
            m = NAME_RE.match(arousal.stem)
            if not m:
                continue  # test_N (no gold standard released) and unrelated files
            valence = gold["valence"] / arousal.name
            video = videos.get(arousal.stem)
            if video is None or not valence.is_file():
                missing.append(arousal.stem if video is None else str(valence))
                continue
            meta: dict[str, Any] = {"va_format": "recola", "va_rate": RATE_HZ, "valence_path": str(valence),
                                    "arousal_path": str(arousal), "official_split": m.group(1)}
            if arousal.stem in wavs:
                meta["audio_path"] = str(wavs[arousal.stem])
            clips.append(Clip(clip_id=arousal.stem, video_path=str(video), subject=arousal.stem,
                              split="test" if m.group(1) == "dev" else None, va_path=str(arousal), meta=meta))
        if missing:
            raise self.layout_error(root, f"gold standard without a recording or a valence file: {', '.join(missing[:5])}")
        for split in ("train", "dev"):  # said before decoding, not after every trial has trained
            if not any(c.meta["official_split"] == split for c in clips):
                raise self.layout_error(root, f"no {split}_N gold-standard .arff files ({split}: "
                                              f"{'training' if split == 'train' else 'the test split'})")
        return split_clips(clips, data_cfg, test_fraction=0.0)


DATASETS.register("recola", Recola())
