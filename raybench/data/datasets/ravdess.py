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
from raybench.schema import DataConfig

EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
NAME_RE = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)\.(mp4|wav)$", re.IGNORECASE)
CHANNELS = {"speech": 1, "song": 2}


def parse_name(name: str) -> dict[str, int] | None:
    m = NAME_RE.match(name)
    if not m:
        return None
    keys = ("modality", "channel", "emotion", "intensity", "statement", "repetition", "actor")
    return dict(zip(keys, (int(g) for g in m.groups()[:7])))


class Ravdess(Dataset):
    name = "ravdess"
    task = "categorical"
    class_names = EMOTIONS
    layout = "Actor_01 .. Actor_24 folders of MM-VV-EE-II-SS-RR-AA.mp4 files (RAVDESS Video_Speech/Song archives)"

    def manifest(self, root: Path, data_cfg: DataConfig) -> list[Clip]:
        """``data.ravdess``: ``channels`` (speech, song), ``video`` (``av``: the audio-video 01 files;
        ``video_only``: the 02 files) and ``audio`` (``video``: the video file's own track; ``wav``:
        the audio-only 03 .wav of the same recording, from the Audio_*_Actors archives, found anywhere
        under the root). ``video_only`` needs ``audio: wav``."""
        root = Path(root)
        opts = data_cfg.ravdess
        channels = {CHANNELS[c] for c in opts.channels if c in CHANNELS}
        modality = 2 if opts.video == "video_only" else 1
        use_wav = opts.audio == "wav"
        actor_dirs = sorted(p for p in root.glob("**/Actor_*") if p.is_dir())
        if not actor_dirs:
            raise self.layout_error(root, "no Actor_XX folders")
        wavs = {}
        if use_wav:
            for w in root.rglob("03-*.wav"):
                wavs.setdefault(w.stem[3:], w)  # keyed by the name without the modality
        clips, no_wav = [], []
        for d in actor_dirs:
            for f in sorted(d.iterdir()):
                info = parse_name(f.name)
                if info is None or info["modality"] != modality or info["channel"] not in channels:
                    continue  # other modalities, song when not asked, unrelated files
                if not 1 <= info["emotion"] <= 8:
                    continue
                meta: dict[str, Any] = dict(info)
                if use_wav:
                    wav = wavs.get(f.stem[3:])
                    if wav is None:
                        no_wav.append(f.name)
                        continue
                    meta["audio_path"] = str(wav)
                clips.append(Clip(
                    clip_id=f.stem, video_path=str(f), subject=f"actor{info['actor']:02d}",
                    label=info["emotion"] - 1, meta=meta,
                ))
        if no_wav:
            self.left_out(len(no_wav), f"{len(no_wav)} video(s) have no 03-...wav audio file (first: "
                                       f"{', '.join(no_wav[:3])}); left out")
        if not clips:
            kind = "video-only (02-..)" if modality == 2 else "audio-video (01-..)"
            raise self.layout_error(root, f"no {kind} files for the chosen channels"
                                    + (" with a matching 03-..wav" if use_wav else ""))
        return split_clips(clips, data_cfg)


DATASETS.register("ravdess", Ravdess())
