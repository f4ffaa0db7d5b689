"""Aff-Wild2, valence-arousal track (see DATASETS.md).

Annotations: ``<...>/VA_Set/{Train_Set,Validation_Set}/<video>[_left|_right].txt``
(the edition's folder name varies, e.g. ``VA_Estimation_Challenge``), first line
``valence,arousal``, one line per video frame, -5 where not annotated. Videos
``<video>.mp4`` or ``.avi`` anywhere under the root.

Splits: the official Train_Set is divided by subject into train and val
(``data.split.val_fraction``, seeded); the official Validation_Set is the test
split, since the challenge's test labels are withheld.
"""

from __future__ import annotations

import re
from pathlib import Path


from raybench.data.datasets.base import DATASETS, Dataset, is_video
from raybench.data.manifest import Clip, split_clips
from raybench.schema import DataConfig

SIDE_RE = re.compile(r"^(.*?)(_left|_right)?$")


class AffWild2(Dataset):
    name = "affwild2"
    task = "continuous"
    class_names = ("valence", "arousal")
    layout = (".../VA_Set/Train_Set/<video>.txt and .../VA_Set/Validation_Set/<video>.txt annotation files "
              "with <video>.mp4|.avi videos anywhere under the root")

    def manifest(self, root: Path, data_cfg: DataConfig) -> list[Clip]:
        root = Path(root)
        ann_dirs = {p.name: p for p in root.rglob("*_Set") if p.is_dir() and p.name in ("Train_Set", "Validation_Set")}
        if "Train_Set" not in ann_dirs:
            raise self.layout_error(root, "no VA annotation folder Train_Set")
        videos: dict[str, Path] = {}
        for p in root.rglob("*"):
            if is_video(p):
                videos.setdefault(p.stem, p)
        clips, missing = [], []
        crops = next((p for p in root.rglob("cropped_aligned") if p.is_dir()), None)  # organisers' face crops
        for split_dir, split in (("Train_Set", None), ("Validation_Set", "test")):
            if split_dir not in ann_dirs:
                continue
            for ann in sorted(ann_dirs[split_dir].glob("*.txt")):
                video_name = SIDE_RE.match(ann.stem).group(1)
                video = videos.get(ann.stem) or videos.get(video_name)
                if video is None:
                    missing.append(ann.name)
                    continue
                meta = {"official_split": split_dir, "official": "train" if split is None else "val"}
                if crops is not None:
                    d = next((crops / n for n in (ann.stem, video_name) if (crops / n).is_dir()), None)
                    if d is not None:
                        meta["crops_dir"] = str(d)
                # the subject is the video: its _left and _right annotations (two people in one video)
                # share frames and audio, so they must never be split between train and validation
                clips.append(Clip(clip_id=ann.stem, video_path=str(video), subject=video_name, split=split,
                                  va_path=str(ann), meta=meta))
        if missing:
            raise self.layout_error(
                root, f"{len(missing)} annotation file(s) without a video ({', '.join(missing[:5])})")
        if not clips:
            raise self.layout_error(root, "no annotation .txt files in Train_Set/Validation_Set")
        # Train_Set -> train/val by subject; Validation_Set is already "test"
        return split_clips(clips, data_cfg, test_fraction=0.0)


DATASETS.register("affwild2", AffWild2())
