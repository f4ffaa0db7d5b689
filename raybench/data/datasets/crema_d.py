"""CREMA-D: ``VideoFlash/<ActorID>_<Sentence>_<Emotion>_<Level>.flv`` (see DATASETS.md).

91 actors (1001-1091), 12 sentences, 6 emotions (ANG DIS FEA HAP NEU SAD), levels LO MD HI XX.
The .flv files carry their audio track; ``data.crema_d.audio: wav`` takes the clean audio of
``AudioWAV/<same name>.wav`` instead. Splits: actor-disjoint (``data.split`` fractions or folds).

The owners' README (github CheyneyComputerScience/CREMA-D) lists four files that do not show what their
names say (``FLAGGED``); they are left out, counted and said, unless ``data.crema_d.keep_flagged``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from raybench.data.datasets.base import DATASETS, Dataset
from raybench.data.manifest import Clip, split_clips
from raybench.schema import DataConfig

CODES = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
EMOTIONS = ("anger", "disgust", "fear", "happy", "neutral", "sad")
NAME_RE = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
# the owners' README: "do not display correctly based on their filename" (their words, shortened here)
FLAGGED = {
    "1076_MTI_NEU_XX": "very short, no audio",
    "1076_MTI_SAD_XX": "very short, an error picture, no audio",
    "1064_TIE_SAD_XX": "no duration",
    "1064_IEO_DIS_MD": "a minute long, every emotion of its sentence",
}


def _find_dir(root: Path, name: str) -> Path | None:
    found = sorted(p for p in root.rglob("*") if p.is_dir() and p.name.lower() == name.lower())
    return found[0] if found else None


class CremaD(Dataset):
    name = "crema_d"
    task = "categorical"
    class_names = EMOTIONS
    layout = ("VideoFlash/<ActorID>_<Sentence>_<Emotion>_<Level>.flv (e.g. 1001_DFA_ANG_XX.flv), and "
              "AudioWAV/<same>.wav for data.crema_d.audio=wav")

    def manifest(self, root: Path, data_cfg: DataConfig) -> list[Clip]:
        root = Path(root)
        video_dir = _find_dir(root, "VideoFlash")
        if video_dir is None:
            raise self.layout_error(root, "no VideoFlash folder")
        use_wav = data_cfg.crema_d.audio == "wav"
        wav_dir = _find_dir(root, "AudioWAV") if use_wav else None
        if use_wav and wav_dir is None:
            raise self.layout_error(root, "data.crema_d.audio=wav but no AudioWAV folder")
        clips, flagged = [], []
        for f in sorted(video_dir.iterdir()):
            m = NAME_RE.match(f.stem)
            if f.suffix.lower() != ".flv" or not m or m.group(3) not in CODES:
                continue  # unrelated files
            if f.stem in FLAGGED and not data_cfg.crema_d.keep_flagged:
                flagged.append(f"{f.stem} ({FLAGGED[f.stem]})")
                continue
            actor, sentence, emo, level = m.groups()
            meta: dict[str, Any] = {"sentence": sentence, "level": level}
            if wav_dir is not None:
                meta["audio_path"] = str(wav_dir / f"{f.stem}.wav")  # a missing WAV is reported when decoded
            clips.append(Clip(clip_id=f.stem, video_path=str(f), subject=f"actor{actor}", label=CODES.index(emo),
                              meta=meta))
        if flagged:
            self.left_out(len(flagged), f"{len(flagged)} clip(s) the dataset's README says do not show what their "
                                        f"names say, left out (data.crema_d.keep_flagged=true keeps them): "
                                        f"{', '.join(flagged)}")
        if not clips:
            raise self.layout_error(root, f"no <ActorID>_<Sentence>_<Emotion>_<Level>.flv files in {video_dir}")
        first = Path(clips[0].video_path)
        if first.stat().st_size < 1024 and first.read_bytes().startswith(b"version https://git-lfs"):
            # the GitHub repository keeps the media in Git LFS: a zip download or a clone without git-lfs
            # gives 130-byte pointer files, which would all fail to decode one by one
            raise self.layout_error(root, f"{first} is a Git LFS pointer file, not a video: fetch the media "
                                          "with `git lfs pull` in the CREMA-D clone (git-lfs installed)")
        return split_clips(clips, data_cfg)


DATASETS.register("crema_d", CremaD())
