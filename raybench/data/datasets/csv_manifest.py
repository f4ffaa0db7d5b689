"""Bring your own dataset: a CSV manifest (``data.dataset: csv``).

``data.root`` is the folder holding the manifest (``data.csv.manifest``, default
``manifest.csv``; an absolute path also works). One row per clip:

========  ============================================================================
column    meaning
========  ============================================================================
video     the video file (with its audio track), relative to the manifest's folder or absolute
subject   speaker / actor / subject id: splits and folds never share a subject
label     categorical task: a class name (or its index in ``data.csv.classes``, unless a class name is a number)
va        continuous task: a per-frame CSV (columns ``valence``, ``arousal``, one row per video frame)
split     optional: train / val / test for an official split; empty = assigned by ``data.split``
fold      optional: a fixed fold number per row (with ``data.split.folds``); empty = dealt by subject
clip_id   optional: a unique id (default: the video's file name without extension)
========  ============================================================================

``data.csv.task`` says which task (``categorical`` or ``continuous``); ``data.csv.classes``
fixes the class names and their order (default: the sorted distinct labels).
"""

from __future__ import annotations

import csv
from pathlib import Path

from raybench.data.datasets.base import DATASETS, Dataset, LayoutError
from raybench.data.manifest import SPLITS, Clip, split_clips
from raybench.schema import DataConfig

COLUMNS = ("video", "subject", "label", "va", "split", "fold", "clip_id")


class CsvDataset(Dataset):
    name = "csv"
    task = "categorical"
    layout = ("a manifest.csv (data.csv.manifest) with columns video, subject and label (categorical) or va "
              "(continuous), optional split, fold, clip_id")

    def task_for(self, data_cfg: DataConfig) -> str:
        task = data_cfg.csv.task
        return task if task in ("categorical", "continuous") else "categorical"  # a typo is a config error

    def _path(self, root: Path, data_cfg: DataConfig) -> Path:
        m = Path(data_cfg.csv.manifest).expanduser()
        return m if m.is_absolute() else Path(root) / m

    def _rows(self, root: Path, data_cfg: DataConfig) -> tuple[Path, list[dict[str, str]]]:
        path = self._path(root, data_cfg)
        if not path.is_file():
            raise self.layout_error(Path(root), f"no manifest {path.name}")
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
        need = ["video", "subject", "label" if self.task_for(data_cfg) == "categorical" else "va"]
        missing = [c for c in need if c not in header]
        if missing:
            raise LayoutError(f"csv: {path} lacks column(s) {', '.join(missing)}; it has {', '.join(header) or 'none'}; "
                              f"expected {self.layout}")
        return path, rows

    def class_names_for(self, data_cfg: DataConfig, clips: list[Clip]) -> tuple[str, ...]:
        if self.task_for(data_cfg) == "continuous":
            return ("valence", "arousal")
        classes = data_cfg.csv.classes
        if classes:
            return tuple(str(c) for c in classes)
        return tuple(sorted({c.meta["label_name"] for c in clips}))

    def manifest(self, root: Path, data_cfg: DataConfig) -> list[Clip]:
        path, rows = self._rows(root, data_cfg)
        base = path.parent
        task = self.task_for(data_cfg)
        configured = [str(c) for c in data_cfg.csv.classes or []]
        # an index stands for a class only when no class name is a number: with classes "1", "2", "3",
        # label 1 is the class named "1" (before 2026-12-03 it was read as index 1, the class "2")
        by_index = configured and not any(c.lstrip("-").isdigit() for c in configured)
        problems, clips = [], []
        rows_of: dict[str, list[tuple[int, str, str]]] = {}  # subject -> (line, split, fold) of its rows
        for i, r in enumerate(rows, start=2):  # line numbers as a spreadsheet shows them
            video = Path(r["video"]).expanduser()
            video = video if video.is_absolute() else base / video
            where = f"{path.name} line {i}"
            if not r.get("video") or not r.get("subject"):
                problems.append(f"{where}: empty video or subject")
                continue
            if not video.is_file():
                problems.append(f"{where}: video {video} does not exist")
                continue
            split = r.get("split") or None
            if split is not None and split not in SPLITS:
                problems.append(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
                continue
            fold = r.get("fold") or None
            clip = Clip(clip_id=r.get("clip_id") or video.stem, video_path=str(video), subject=r["subject"],
                        split=split, fold=int(fold) if fold is not None and fold.lstrip("-").isdigit() else None)
            if fold is not None and clip.fold is None:
                problems.append(f"{where}: fold {fold!r} is not an integer")
                continue
            if task == "categorical":
                label = r.get("label", "")
                if by_index and label.isdigit() and int(label) < len(configured):
                    label = configured[int(label)]
                if not label or (configured and label not in configured):
                    problems.append(f"{where}: label {r.get('label')!r} is not one of the classes {configured}"
                                    + (f" (nor an index 0-{len(configured) - 1})" if by_index else ""))
                    continue
                clip.meta["label_name"] = label
            else:
                va = Path(r.get("va", "")).expanduser()
                va = va if va.is_absolute() else base / va
                if not r.get("va") or not va.is_file():
                    problems.append(f"{where}: annotation {va} does not exist")
                    continue
                clip.va_path, clip.meta["va_format"] = str(va), "csv"
            clips.append(clip)
            rows_of.setdefault(clip.subject, []).append((i, r.get("split") or "", r.get("fold") or ""))
        for subject, rs in sorted(rows_of.items()):  # a subject in two splits or folds leaks between them
            for col, j in (("split", 1), ("fold", 2)):
                values = sorted({x[j] for x in rs})
                if len(values) > 1:
                    lines = ", ".join(f"{x[0]} ({x[j] or 'empty'})" for x in rs if x[j] != rs[0][j])
                    problems.append(f"{path.name}: subject {subject!r} has rows with {col} "
                                    f"{' and '.join(repr(v) if v else 'empty' for v in values)} (line {rs[0][0]}: "
                                    f"{rs[0][j] or 'empty'}; lines {lines}): a subject's rows need one {col}, "
                                    "as splits and folds never share a subject (give clips of another person "
                                    "another subject id)")
        if problems:
            more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
            raise LayoutError(f"csv: {len(problems)} problem(s) in {path}{more}:\n  - " + "\n  - ".join(problems[:10]))
        if not clips:
            raise LayoutError(f"csv: {path} has no rows; expected {self.layout}")
        if task == "categorical":
            names = self.class_names_for(data_cfg, clips)
            for c in clips:
                c.label = names.index(c.meta["label_name"])
        return split_clips(clips, data_cfg)


DATASETS.register("csv", CsvDataset())
