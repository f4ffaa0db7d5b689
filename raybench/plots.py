"""Figures for the MLflow record, drawn with matplotlib (headless: the Agg backend).

``confusion_figure``: the test confusion matrix of a categorical model (torchmetrics' own plot);
``trace_figure``: predicted and gold valence/arousal over the frames of a few test clips.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on a cluster node
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(rows: list[dict[str, Any]], class_names: list[str], title: str = ""):
    """Rows as ``evaluate(..., return_predictions=True)`` returns them (label, pred per clip) ->
    a figure of the confusion matrix (rows: gold, columns: predicted; counts)."""
    import torch
    from torchmetrics.classification import MulticlassConfusionMatrix

    _pyplot()
    m = MulticlassConfusionMatrix(num_classes=len(class_names))
    m.update(torch.tensor([r["pred"] for r in rows]), torch.tensor([r["label"] for r in rows]))
    fig, ax = m.plot(labels=list(class_names))
    ax.set_title(title or f"test confusion matrix ({len(rows)} clips)")
    return fig


def trace_figure(rows: list[dict[str, Any]], max_clips: int = 4, title: str = ""):
    """Per-frame continuous rows (clip_id, frame, valence, arousal, *_true) -> predicted (solid)
    and gold (dashed) valence and arousal over time for the ``max_clips`` longest test clips."""
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
    axes[-1, 0].set_xlabel("frame")
    fig.suptitle(title or "test predictions vs gold")
    fig.tight_layout()
    return fig
