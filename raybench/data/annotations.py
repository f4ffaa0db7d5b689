"""Per-frame valence/arousal annotation files -> float32 [N, 2] (NaN where unannotated).

Formats (``Clip.meta["va_format"]``):

- ``affwild2`` (default): first line ``valence,arousal``, one line per video frame, -5 = none.
- ``csv`` (bring your own): a header with ``valence`` and ``arousal`` columns (any order, other
  columns ignored), one row per video frame; empty, NaN or -5 cells = none.
- ``constant``: one (valence, arousal) pair for the whole clip (``meta["va_value"]``), given to every
  video frame (MSP-IMPROV's clip-level ratings).
- ``recola``: AVEC 2016 ARFF gold standard, one file per dimension
  (``meta["valence_path"]``, ``meta["arousal_path"]``), data rows ``instance,frameTime,value``
  at 40 ms steps.

``Clip.meta["va_rate"]``: the annotation's rate in Hz, or absent when there is one value per
source video frame.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np


def read_va(path: str | Path) -> np.ndarray:
    """Read an Aff-Wild2 VA file -> float32 [N, 2], NaN where not annotated (-5)."""
    with open(path) as f:
        header = f.readline().strip().lower().replace(" ", "")
        if header != "valence,arousal":
            raise ValueError(f"{path}: first line must be 'valence,arousal', got {header!r}")
        rows = [(n, line.strip()) for n, line in enumerate(f, start=2) if line.strip()]
    values = []
    for n, r in rows:  # line by line: a reshape of all the numbers would pair values of different lines
        fields = r.split(",")
        try:
            if len(fields) != 2:
                raise ValueError(f"{len(fields)} value(s)")
            values.append([float(x) for x in fields])
        except ValueError as e:
            raise ValueError(f"{path} line {n}: expected 'valence,arousal' (two numbers), got {r[:40]!r} ({e})") from None
    va = np.array(values, np.float32).reshape(-1, 2)
    va[(va <= -5).any(1)] = np.nan
    return va


def read_csv_va(path: str | Path) -> np.ndarray:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = {c.strip().lower(): c for c in reader.fieldnames or []}
        if "valence" not in cols or "arousal" not in cols:
            raise ValueError(f"{path}: expected a header with 'valence' and 'arousal' columns, got {reader.fieldnames}")

        def num(x: str | None) -> float:
            try:
                v = float(x) if x not in (None, "") else np.nan
            except ValueError:
                raise ValueError(f"{path}: not a number: {x!r}") from None
            return np.nan if v <= -5 else v

        rows = []
        for r in reader:
            v, a = r[cols["valence"]], r[cols["arousal"]]
            if v is None or a is None:  # a short row: DictReader fills the missing cells with None
                raise ValueError(f"{path} line {reader.line_num}: {len(r) - sum(x is None for x in r.values())} "
                                 f"cell(s), the header has {len(reader.fieldnames)}: no valence or arousal cell")
            rows.append((num(v), num(a)))
    return np.array(rows, np.float32).reshape(-1, 2)


def read_arff_values(path: str | Path) -> np.ndarray:
    """The last numeric column of an ARFF file's @data rows (AVEC gold standard: instance, frameTime, value)."""
    values, in_data = [], False
    with open(path) as f:
        for line in f:
            s = line.strip()
            if not s or s.startswith("%"):
                continue
            if s.lower().startswith("@data"):
                in_data = True
                continue
            if in_data:
                try:
                    values.append(float(s.split(",")[-1]))
                except ValueError:
                    raise ValueError(f"{path}: bad @data row {s!r}") from None
    if not in_data:
        raise ValueError(f"{path}: no @data section")
    return np.array(values, np.float32)


def read_annotation(row: dict[str, Any], path: str | None = None, n_frames: int | None = None) -> np.ndarray:
    """The clip's annotation as [N, 2] (valence, arousal); ``path`` overrides ``row['va_path']``
    (a fetched copy of a remote file); ``n_frames`` (the video's) sizes a ``constant`` annotation."""
    meta = row.get("meta") or {}
    fmt = meta.get("va_format", "affwild2")
    path = path or row["va_path"]
    if fmt == "affwild2":
        return read_va(path)
    if fmt == "csv":
        return read_csv_va(path)
    if fmt == "constant":
        return np.tile(np.asarray(meta["va_value"], np.float32), (int(n_frames or 1), 1))
    if fmt == "recola":
        v, a = read_arff_values(meta["valence_path"]), read_arff_values(meta["arousal_path"])
        n = min(len(v), len(a))
        if len(v) != len(a):
            raise ValueError(f"{meta['valence_path']} has {len(v)} values, {meta['arousal_path']} has {len(a)}")
        return np.stack([v[:n], a[:n]], 1)
    raise ValueError(f"unknown annotation format {fmt!r}")
