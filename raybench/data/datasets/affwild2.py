"""Aff-Wild2, valence-arousal track (see DATASETS.md).

Annotations: ``<...>/VA_Set/{Train_Set,Validation_Set}/<video>[_left|_right].txt``
(the edition's folder name varies, e.g. ``VA_Estimation_Challenge``), first line
``valence,arousal``, one line per video frame, -5 where not annotated. Videos
``<video>.mp4`` or ``.avi`` anywhere under the root.

The release ships every track's annotations side by side (``AU_Detection_Challenge/Train_Set``,
``EXPR_Classification_Challenge/Train_Set``, ``VA_Estimation_Challenge/Train_Set``): a ``*_Set`` folder
inside a ``VA_*`` folder wins, and two candidates for one split are an error naming both, never a
silent pick. The ABAW 2020 edition's ``Training_Set`` is read as ``Train_Set``. The organisers' face
crops (``data.face: dataset``) are looked up in every folder whose name starts with ``cropped_aligned``
(later editions add ``cropped_aligned_new_50_vids``; an archive may unpack to
``cropped_aligned/cropped_aligned``), by the annotation's own name: a ``_left``/``_right`` annotation
uses only its own crops, never the other person's.

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
# one recording released in parts, each its own video: 122-60-1920x1080-1 .. -5, video45_1 .. _7
PART_RE = re.compile(r"^(\d+-\d+-\d+x\d+)-\d+$|^(video\d+)_\d+$")


class AffWild2(Dataset):
    name = "affwild2"
    task = "continuous"
    class_names = ("valence", "arousal")
    layout = (".../VA_Set/Train_Set/<video>.txt and .../VA_Set/Validation_Set/<video>.txt annotation files "
              "with <video>.mp4|.avi videos anywhere under the root")

    def manifest(self, root: Path, data_cfg: DataConfig) -> list[Clip]:
        root = Path(root)
        ann_dirs = self._annotation_dirs(root)
        for name, role in (("Train_Set", "training"), ("Validation_Set", "the test split")):
            if name not in ann_dirs:  # said before decoding, not after every trial has trained
                raise self.layout_error(root, f"no VA annotation folder {name} ({role})")
        videos: dict[str, Path] = {}
        for p in root.rglob("*"):
            if is_video(p):
                videos.setdefault(p.stem, p)
        clips, missing = [], []
        crops = sorted(p for p in root.rglob("cropped_aligned*") if p.is_dir())  # the organisers' face crops
        for split_dir, split in (("Train_Set", None), ("Validation_Set", "test")):
            for ann in sorted(ann_dirs[split_dir].glob("*.txt")):
                video_name = SIDE_RE.match(ann.stem).group(1)
                video = videos.get(ann.stem) or videos.get(video_name)
                if video is None:
                    missing.append(ann.name)
                    continue
                meta = {"official_split": split_dir, "official": "train" if split is None else "val"}
                d = next((c / ann.stem for c in crops if (c / ann.stem).is_dir()), None)
                if d is not None:
                    meta["crops_dir"] = str(d)
                # the subject is the recording: its _left and _right annotations (two people in one video)
                # share frames and audio, and its parts (video45_1 .. video45_7) show the same people, so
                # they must never be split between train and validation
                part = PART_RE.match(video_name)
                subject = (part.group(1) or part.group(2)) if part else video_name
                clips.append(Clip(clip_id=ann.stem, video_path=str(video), subject=subject, split=split,
                                  va_path=str(ann), meta=meta))
        if missing:
            raise self.layout_error(
                root, f"{len(missing)} annotation file(s) without a video ({', '.join(missing[:5])})")
        if not clips:
            raise self.layout_error(root, "no annotation .txt files in Train_Set/Validation_Set")
        # Train_Set -> train/val by subject; Validation_Set is already "test"
        return split_clips(clips, data_cfg, test_fraction=0.0)

    def _annotation_dirs(self, root: Path) -> dict[str, Path]:
        """``Train_Set`` and ``Validation_Set`` (``Training_Set``: the 2020 edition's name) of the VA track."""
        found: dict[str, list[Path]] = {}
        for p in sorted(root.rglob("*_Set")):
            name = {"Training_Set": "Train_Set"}.get(p.name, p.name)
            if p.is_dir() and name in ("Train_Set", "Validation_Set"):
                found.setdefault(name, []).append(p)
        dirs = {}
        for name, paths in found.items():
            va = [p for p in paths if p.parent.name.upper().startswith("VA_")]  # VA_Set, VA_Estimation_Challenge
            paths = va or paths
            if len(paths) > 1:
                raise self.layout_error(root, f"more than one VA annotation folder {name}: "
                                              f"{', '.join(str(p.relative_to(root)) for p in paths)}; "
                                              f"leave one of them under data.root")
            dirs[name] = paths[0]
        return dirs


DATASETS.register("affwild2", AffWild2())
