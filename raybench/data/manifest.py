"""The Clip record every dataset adapter produces, and split assignment.

Adapters only parse file names and annotation files; they never decode.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raybench.schema import DataConfig

SPLITS = ("train", "val", "test")


@dataclass
class Clip:
    clip_id: str
    video_path: str
    subject: str
    split: str | None = None  # train | val | test; None until assigned
    fold: int | None = None
    label: int | None = None  # categorical
    va_path: str | None = None  # continuous: per-frame valence/arousal annotation file
    meta: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["meta"] = dict(self.meta)
        return row


def assign_splits(clips: list[Clip], val_fraction: float, test_fraction: float, seed: int) -> list[Clip]:
    """Speaker-independent split: every subject's clips land in one split.

    Clips whose split is already set (an official split) keep it; the others'
    subjects are shuffled with ``seed`` and cut into test, val and train.
    Deterministic for a given seed and set of subjects.
    """
    free = sorted({c.subject for c in clips if c.split is None})
    if not free:
        return clips
    rng = np.random.default_rng(seed)
    order = [free[i] for i in rng.permutation(len(free))]
    n = len(order)
    n_test = int(round(test_fraction * n))
    n_val = max(1, int(round(val_fraction * n))) if n > 1 else 0
    if n_test + n_val >= n:  # keep at least one training subject
        n_test = max(0, min(n_test, n - 1 - n_val))
        n_val = max(0, min(n_val, n - 1 - n_test))
    where = {}
    for i, s in enumerate(order):
        where[s] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    for c in clips:
        if c.split is None:
            c.split = where[c.subject]
    return clips


def assign_folds(clips: list[Clip], k: int, seed: int) -> dict[str, int]:
    """k-fold by subject: the subjects of clips with no official split, shuffled with ``seed``, are
    dealt round-robin into folds 0..k-1 (sizes differ by at most one). Returns subject -> fold."""
    given = {c.subject: c.fold for c in clips if c.split is None and c.fold is not None}
    if given:  # folds fixed by the dataset (a csv manifest's fold column)
        bad = sorted({f for f in given.values() if not 0 <= f < k})
        if bad:
            raise ValueError(f"fold numbers {bad} are outside 0..{k - 1} (data.split.folds={k})")
        for c in clips:
            if c.split is None and c.fold is None:
                c.fold = given.get(c.subject)
        if any(c.split is None and c.fold is None for c in clips):
            raise ValueError("some clips have a fold and others none: give every clip a fold, or none")
        return given
    free = sorted({c.subject for c in clips if c.split is None})
    if len(free) < k:
        raise ValueError(f"data.split.folds={k} needs at least {k} subjects, found {len(free)}: set data.split.folds "
                         f"to at most {len(free)}" if len(free) >= 2 else
                         f"data.split.folds={k} needs at least {k} subjects, found {len(free)}: k-fold needs 2 or "
                         "more subjects (set data.split.folds=null)")
    rng = np.random.default_rng(seed)
    order = [free[i] for i in rng.permutation(len(free))]
    folds = {s: i % k for i, s in enumerate(order)}
    for c in clips:
        if c.split is None:
            c.fold = folds[c.subject]
    return folds


def _official_val(c: Clip) -> bool:
    """A clip of the dataset's official validation set (Aff-Wild2's Validation_Set, a csv split column)."""
    return c.meta.get("official") == "val" or (c.split == "val" and c.meta.get("official") is None)


def assign_chunks(clips: list[Clip], k: int, f: int, test_fraction: float, seed: int,
                  chunks: str = "authors") -> list[Clip]:
    """Zhang et al. 2021's folds (``data.split.protocol: chunks``), as their code makes them (github
    sucv/ABAW2, ``base/dataset.py``, ``generate_partition_dict_for_cross_validation``).

    The training part is cut into k - 1 chunks and the official validation set is the k-th part (with no
    official validation set the training part makes all k chunks). ``chunks``: ``authors`` cuts the
    training clips (Aff-Wild2's annotation files) in file-name order into contiguous chunks of
    floor(n / (k - 1)) clips, the last taking the rest (their slices 70, 70, 70, 70, 71 of 351 files;
    their list is ``os.walk``'s order on the authors' Windows file system, upper-cased names with
    ``.txt``); a video's ``_left`` and ``_right`` files can fall in two chunks, as in their code, which
    is counted and said. ``subjects`` (raybench's deviation) cuts the training subjects, shuffled with
    ``seed``, with ``numpy.array_split``, so no subject is in two chunks. Fold f lists the parts rotated as
    ``numpy.roll(range(k), f)`` does and validates on the last one, training on the others: fold 0 is
    the official split, fold 1 validates the last training chunk, fold k - 1 the first. The test split
    is the same in every fold (the dataset's official test clips, or else ``test_fraction`` of the
    subjects, shuffled with ``seed``, held out first), so the folds' test predictions can be merged.
    ``Clip.fold`` is the fold in which the clip validates.
    """
    official_val = [c for c in clips if _official_val(c)]
    for c in clips:
        if _official_val(c):
            c.split = None
        elif c.split not in (None, "test"):
            c.split = None  # an official train split joins the chunks
    test_given = any(c.split == "test" for c in clips)
    free = [c for c in clips if c.split is None and not _official_val(c)]
    subjects = sorted({c.subject for c in free})
    rng = np.random.default_rng(seed)
    order = [subjects[i] for i in rng.permutation(len(subjects))]
    if not test_given and test_fraction > 0:
        n_test = int(round(test_fraction * len(order)))
        test_subjects, order = set(order[:n_test]), order[n_test:]
        for c in free:
            if c.subject in test_subjects:
                c.split = "test"
    n_chunks = k - 1 if official_val else k
    if chunks == "authors":
        # their os.walk lists file names (".txt" included: "106-30-720x1280.txt" before "106.txt") in the
        # order of their Windows file system, which compares names upper-cased; this order reproduces the
        # Train_Set list of their length.csv
        file_of = {c.clip_id: (Path(c.va_path).name if c.va_path else c.clip_id + ".txt").upper() for c in free}
        names = sorted((c.clip_id for c in free if c.split != "test"), key=lambda i: (file_of[i], i))
        if len(names) < n_chunks:
            raise ValueError(f"data.split.protocol=chunks with {k} folds needs at least {n_chunks} training clips "
                             f"besides the test split, found {len(names)}: lower data.split.folds (or "
                             "data.split.test_fraction)")
        size = len(names) // n_chunks
        part_of = {name: min(i // size, n_chunks - 1) for i, name in enumerate(names)}
    else:
        if len(order) < n_chunks:
            raise ValueError(f"data.split.protocol=chunks with {k} folds needs at least {n_chunks} training "
                             f"subjects besides the test split, found {len(order)}: lower data.split.folds (or "
                             "data.split.test_fraction)")
        by_subject = {s: j for j, ch in enumerate(np.array_split(np.array(order, dtype=object), n_chunks))
                      for s in ch}
        part_of = {c.clip_id: by_subject[c.subject] for c in free if c.split != "test"}
    n = n_chunks + (1 if official_val else 0)
    val_part = (n - 1 - f) % n  # numpy.roll(range(n), f) ends with part n - 1 - f
    for c in clips:
        if c.split == "test":
            continue
        j = n - 1 if _official_val(c) else part_of[c.clip_id]
        c.fold = (n - 1 - j) % n
        c.split = "val" if j == val_part else "train"
    split = subjects_in_two_folds(clips)
    if split:  # said here and recorded in MLflow (data/<dataset>/subjects_in_two_folds): validation shares
        # people with training in some folds
        print(f"[raybench] data.split.chunks={chunks}: {len(split)} subject(s) have clips in two chunks "
              f"(first: {', '.join(split[:3])})" + (", as in zhang2021's authors' code; data.split.chunks=subjects "
                                                    "keeps each subject in one" if chunks == "authors" else ""),
              flush=True)
    return clips


def subjects_in_two_folds(clips: list[Clip]) -> list[str]:
    """The subjects whose clips validate in more than one fold (``data.split.protocol: chunks`` with the
    authors' chunks: a video's ``_left`` and ``_right`` files can fall in two), sorted."""
    folds_of: dict[str, set[int]] = {}
    for c in clips:
        if c.fold is not None:
            folds_of.setdefault(c.subject, set()).add(c.fold)
    return sorted(s for s, fs in folds_of.items() if len(fs) > 1)


def fold_record(clips: list[Clip], by_clip: bool = False) -> dict[str, int]:
    """The fold of every subject, or of every clip (``by_clip``: ``data.split.protocol: chunks``, whose
    authors' chunks can put one subject's clips in two folds)."""
    return {c.clip_id if by_clip else c.subject: c.fold for c in clips if c.fold is not None}


def split_clips(clips: list[Clip], data_cfg: DataConfig, test_fraction: float | None = None) -> list[Clip]:
    """Assign splits as ``data.split`` and ``data.fold`` say.

    Without folds: speaker-independent fractions (:func:`assign_splits`). With
    ``data.split.folds = k``: subjects are dealt into k folds (:func:`assign_folds`); for
    ``data.fold = f`` (default 0), fold f is the test split, and the other folds' subjects are
    split into val (``val_fraction`` of them, at least one) and train. When the dataset has an
    official test split (Aff-Wild2's validation set), fold f validates and the rest train. Clips
    with an official split keep it either way. ``data.split.protocol: chunks`` is Zhang et al.
    2021's rotating scheme instead (:func:`assign_chunks`).
    """
    sp = data_cfg.split
    k = sp.folds
    if not k:
        tf = sp.test_fraction if test_fraction is None else test_fraction
        return assign_splits(clips, sp.val_fraction, tf, sp.seed)
    f = data_cfg.fold or 0
    if sp.protocol == "chunks":
        return assign_chunks(clips, k, f, sp.test_fraction, sp.seed, sp.chunks)
    official_test = any(c.split == "test" for c in clips)
    assign_folds(clips, k, sp.seed)
    if official_test:
        for c in clips:
            if c.split is None:
                c.split = "val" if c.fold == f else "train"
        return clips
    for c in clips:
        if c.split is None and c.fold == f:
            c.split = "test"
    return assign_splits(clips, sp.val_fraction, 0.0, sp.seed)
