"""AFEW (EmotiW): ``<Train>/<Emotion>/<id>.avi`` and ``<Val>/<Emotion>/<id>.avi`` (see DATASETS.md).

The train and validation folder names vary by year (``Train_AFEW``, ``Train``, ``train``,
``Val_AFEW``, ``Val``, ``Validation``...): any folder whose name starts with "train" or "val"
(any case) is taken; the emotion folders (Angry Disgust Fear Happy Neutral Sad Surprise) are
matched without case. The test labels are withheld, so the official validation set is the
reported (test) split, and validation clips for model selection are drawn from the training set
(``data.split.val_fraction``, seeded; AFEW has no subject ids, so each clip is its own subject).
"""

from __future__ import annotations

from pathlib import Path

from raybench.data.datasets.base import DATASETS, Dataset, is_video
from raybench.data.manifest import Clip, split_clips
from raybench.schema import DataConfig

EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


class Afew(Dataset):
    name = "afew"
    task = "categorical"
    class_names = EMOTIONS
    layout = ("a train folder (Train_AFEW, Train, ...) and a validation folder (Val_AFEW, Val, ...), each with "
              "emotion folders Angry Disgust Fear Happy Neutral Sad Surprise of <id>.avi clips")

    def manifest(self, root: Path, data_cfg: DataConfig) -> list[Clip]:
        root = Path(root)
        split_dirs: dict[str, list[Path]] = {"train": [], "test": []}
        for d in sorted(p for p in root.rglob("*") if p.is_dir()):
            name = d.name.lower()
            if not any((d / e).is_dir() or (d / e.capitalize()).is_dir() or
                       any(c.is_dir() and c.name.lower() == e for c in d.iterdir()) for e in EMOTIONS):
                continue
            if name.startswith("train"):
                split_dirs["train"].append(d)
            elif name.startswith("val"):
                split_dirs["test"].append(d)
        if not split_dirs["train"]:
            raise self.layout_error(root, "no train folder with emotion folders")
        if not split_dirs["test"]:  # said before decoding, not after every trial has trained
            raise self.layout_error(root, "no validation folder (Val_AFEW, Val, ...) with emotion folders: it is "
                                          "the test split")
        clips, others = [], []
        for split, dirs in split_dirs.items():
            for d in dirs:
                others += [(f"{o.relative_to(root)} ({n} videos)", n) for o in sorted(d.iterdir())
                           if o.is_dir() and o.name.lower() not in EMOTIONS
                           and (n := sum(1 for f in o.iterdir() if is_video(f)))]
                for emo_dir in sorted(c for c in d.iterdir() if c.is_dir() and c.name.lower() in EMOTIONS):
                    label = EMOTIONS.index(emo_dir.name.lower())
                    for f in sorted(emo_dir.iterdir()):
                        if not is_video(f):
                            continue
                        cid = f"{d.name}-{emo_dir.name.lower()}-{f.stem}"
                        clips.append(Clip(clip_id=cid, video_path=str(f), subject=cid, label=label,
                                          split="test" if split == "test" else None,
                                          meta={"official_split": d.name}))
        if not clips:
            raise self.layout_error(root, "no video clips in the emotion folders")
        if others:
            self.left_out(sum(n for _, n in others),
                          f"{len(others)} folder(s) of videos not named after one of the 7 emotions "
                          f"({', '.join(e.capitalize() for e in EMOTIONS)}) left out: "
                          f"{', '.join(o for o, _ in others[:5])}")
        return split_clips(clips, data_cfg, test_fraction=0.0)


DATASETS.register("afew", Afew())
