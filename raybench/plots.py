"""Figures for the MLflow record, drawn with matplotlib (headless: the Agg backend).

``confusion_figure``: the confusion matrix of a categorical model (counts in the cells);
``recall_figure``: its recall per class (what UAR averages), with each class's clip count;
``trace_figure``: predicted and gold valence/arousal over the annotated frames of a few clips;
``scatter_figure``: predicted against gold valence and arousal over all frames, CCC in the titles.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on a cluster node
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(rows: list[dict[str, Any]], class_names: list[str], title: str = "", split: str = "test"):
    """Rows as ``evaluate(..., return_predictions=True)`` returns them (label, pred per clip) ->
    a figure of the confusion matrix (rows: gold, columns: predicted; counts in the cells).

    Drawn with matplotlib itself (torchmetrics' ``plot`` drew it until 2026-12-03; importing
    torchmetrics costs about 4 s per process, and nothing else of raybench uses it)."""
    plt = _pyplot()
    n = len(class_names)
    counts = confusion_counts(rows, n)
    fig, ax = plt.subplots(figsize=(max(4.5, 0.8 * n + 1.5), max(4.0, 0.7 * n + 1.5)), constrained_layout=True)
    im = ax.imshow(counts, cmap="Blues")
    for i in range(n):  # row by row
        for j in range(n):
            dark = im.norm(counts[i, j]) > 0.5  # white text on the darker cells
            ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", color="white" if dark else "black")
    ax.set_xticks(range(n), list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(n), list(class_names))
    ax.set_title(title or f"{split} confusion matrix ({len(rows)} clips)")
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    return fig


def confusion_counts(rows: list[dict[str, Any]], n_classes: int) -> np.ndarray:
    """The (gold, predicted) clip counts of prediction rows (label, pred per clip), n_classes x n_classes.
    (Training's epoch metrics count theirs in torch, summed across DDP ranks: raybench/train/metrics.py.)"""
    gold = np.array([int(r["label"]) for r in rows], dtype=np.int64)
    pred = np.array([int(r["pred"]) for r in rows], dtype=np.int64)
    return np.bincount(gold * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def class_recall(rows: list[dict[str, Any]], n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(recall per class, NaN for a class absent from the gold labels; clips per gold class): the
    figure shows an absent class as absent, not as 0 (UAR, like scikit-learn, leaves it out)."""
    counts = confusion_counts(rows, n_classes)
    support, hits = counts.sum(1), np.diag(counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, hits / np.maximum(support, 1), np.nan)
    return recall, support


def recall_figure(rows: list[dict[str, Any]], class_names: list[str], title: str = "", split: str = "test"):
    """Recall per class (bars; classes without a gold clip are marked "absent"), the clip count of
    each class under its name, and UAR (their mean over the classes present) in the title."""
    plt = _pyplot()
    recall, support = class_recall(rows, len(class_names))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(class_names)), 3.6))
    x = np.arange(len(class_names))
    ax.bar(x, np.nan_to_num(recall), color="tab:blue")
    for i, r in enumerate(recall):
        ax.text(i, (0.0 if np.isnan(r) else r) + 0.02, "absent" if np.isnan(r) else f"{r:.2f}", ha="center",
                fontsize=8)
    ax.set_xticks(x, [f"{c}\n({n})" for c, n in zip(class_names, support)], fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("recall")
    uar = float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan")
    ax.set_title(title or f"{split} recall per class (clips per class below), UAR {uar:.3f}")
    fig.tight_layout()
    return fig


def trace_figure(rows: list[dict[str, Any]], max_clips: int = 4, title: str = "", split: str = "test"):
    """Per-frame continuous rows (clip_id, frame, valence, arousal, *_true) -> predicted (solid)
    and gold (dashed) valence and arousal over the annotated frames of the ``max_clips`` longest clips."""
    plt = _pyplot()
    by_clip: dict[str, list[dict]] = {}
    for r in rows:
        by_clip.setdefault(r["clip_id"], []).append(r)
    clips = sorted(by_clip, key=lambda c: -len(by_clip[c]))[:max_clips]
    fig, axes = plt.subplots(len(clips), 1, figsize=(9, 2.2 * len(clips)), squeeze=False, sharey=True)
    for ax, clip in zip(axes[:, 0], clips):
        rs = sorted(by_clip[clip], key=lambda r: r["frame"])
        t = np.array([r["frame"] for r in rs])
        for dim, color in (("valence", "tab:blue"), ("arousal", "tab:orange")):
            ax.plot(t, [r[dim] for r in rs], color=color, label=f"{dim} predicted")
            ax.plot(t, [r[f"{dim}_true"] for r in rs], color=color, linestyle="--", label=f"{dim} gold")
        ax.set_title(clip, fontsize=9)
        ax.set_ylim(-1.05, 1.05)
    axes[0, 0].legend(fontsize=7, ncol=4, loc="upper right")
    axes[-1, 0].set_xlabel("annotated frame (at the annotation's own rate)")
    fig.suptitle(title or f"{split} predictions vs gold")
    fig.tight_layout()
    return fig


def annotated_frames(rows: list[dict[str, Any]]) -> int:
    """The prediction rows with a gold valence or arousal (rows of unannotated frames carry NaN gold)."""
    return sum(1 for r in rows if not (np.isnan(float(r["valence_true"])) and np.isnan(float(r["arousal_true"]))))


def scatter_figure(rows: list[dict[str, Any]], title: str = "", split: str = "test", ccc: dict | None = None,
                   max_points: int = 20000):
    """Predicted against gold valence and arousal over every annotated frame (a random subset of
    ``max_points`` when there are more), the diagonal for reference, and each dimension's CCC in its
    panel's title (``ccc``: {"valence": .., "arousal": ..}, the metric as raybench computed it)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, dim in zip(axes[0], ("valence", "arousal")):
        g = np.array([r[f"{dim}_true"] for r in rows], float)
        p = np.array([r[dim] for r in rows], float)
        ok = np.flatnonzero(~np.isnan(g))
        if len(ok) > max_points:
            ok = rng.choice(ok, max_points, replace=False)
        ax.scatter(g[ok], p[ok], s=4, alpha=0.3)
        ax.plot([-1, 1], [-1, 1], color="grey", linewidth=0.8)
        # [-1, 1], widened to show predictions outside it (a linear head, zhang2021's, is not bounded)
        fin = np.abs(p[ok])[np.isfinite(p[ok])]  # (an infinite prediction is off any axis: the finite ones)
        lim = max(1.05, float(fin.max()) * 1.05) if len(fin) else 1.05
        ax.set_xlim(-1.05, 1.05)
        ax.set_ylim(-lim, lim)
        ax.set_xlabel(f"gold {dim}")
        ax.set_ylabel(f"predicted {dim}")
        c = (ccc or {}).get(dim)
        ax.set_title(f"{dim}: CCC {c:.3f}" if c is not None else dim, fontsize=10)
    fig.suptitle(title or f"{split}: predicted vs gold, {annotated_frames(rows)} annotated frames")
    fig.tight_layout()
    return fig
