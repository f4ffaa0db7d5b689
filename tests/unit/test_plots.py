"""The MLflow record's figures show the numbers they are drawn from (checked against scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix

from raybench.plots import confusion_figure, trace_figure


def test_the_confusion_figure_counts_gold_rows_against_predicted_columns():
    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    preds[:20] = labels[:20]
    fig = confusion_figure([{"label": int(a), "pred": int(b)} for a, b in zip(labels, preds)],
                           ["neutral", "happy", "sad", "angry"])
    ax = fig.axes[0]
    shown = np.array([int(t.get_text()) for t in ax.texts]).reshape(4, 4)  # row by row, as drawn
    assert (shown == confusion_matrix(labels, preds, labels=range(4))).all()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["neutral", "happy", "sad", "angry"]


def test_the_trace_figure_draws_the_longest_clips_predictions_and_gold():
    rows = []
    for c, n in (("short", 5), ("long", 30), ("mid", 12)):
        for t in range(n):
            rows.append({"clip_id": c, "frame": t, "valence": t / n, "arousal": -t / n,
                         "valence_true": 0.5, "arousal_true": -0.5})
    rng = np.random.default_rng(1)
    rows = [rows[i] for i in rng.permutation(len(rows))]  # any order
    fig = trace_figure(rows, max_clips=2)
    axes = [a for a in fig.axes]
    assert [a.get_title() for a in axes] == ["long", "mid"]
    v_pred, v_gold, a_pred, a_gold = axes[0].get_lines()
    assert np.allclose(v_pred.get_ydata(), np.arange(30) / 30) and np.allclose(v_gold.get_ydata(), 0.5)
    assert np.allclose(a_pred.get_ydata(), -np.arange(30) / 30) and np.allclose(a_gold.get_ydata(), -0.5)
