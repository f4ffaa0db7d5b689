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


def test_the_recall_figure_shows_each_classes_recall_and_uar_as_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, recall_score

    from raybench.plots import recall_figure

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 40)  # class 3 never occurs in the gold labels ...
    preds = np.where(rng.random(40) < 0.6, labels, rng.integers(0, 4, 40))  # ... but may be predicted
    names = ["neutral", "happy", "sad", "angry"]
    fig = recall_figure([{"label": int(a), "pred": int(b)} for a, b in zip(labels, preds)], names)
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    want = recall_score(labels, preds, labels=[0, 1, 2], average=None, zero_division=0)
    np.testing.assert_allclose(heights[:3], want)
    assert [t.get_text() for t in ax.texts][3] == "absent" and heights[3] == 0
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == [f"{n}\n({int((labels == i).sum())})" for i, n in enumerate(names)]
    assert f"UAR {balanced_accuracy_score(labels, preds):.3f}" in ax.get_title()


def test_the_scatter_figure_plots_every_annotated_frame_with_its_ccc():
    from raybench.plots import scatter_figure

    rng = np.random.default_rng(3)
    rows = [{"clip_id": "c", "frame": i, "valence": float(v), "arousal": float(-v), "valence_true": float(g),
             "arousal_true": float("nan") if i % 5 == 0 else float(g)}
            for i, (v, g) in enumerate(zip(rng.uniform(-1, 1, 50), rng.uniform(-1, 1, 50)))]
    fig = scatter_figure(rows, ccc={"valence": 0.123, "arousal": -0.5})
    va, ar = fig.axes
    assert va.get_title() == "valence: CCC 0.123" and ar.get_title() == "arousal: CCC -0.500"
    x, y = va.collections[0].get_offsets().T
    assert len(x) == 50 and np.allclose(sorted(y), sorted(r["valence"] for r in rows))
    assert len(ar.collections[0].get_offsets()) == 40  # unannotated frames are not drawn
    assert va.get_xlabel() == "gold valence" and va.get_ylabel() == "predicted valence"
    # the title counts annotated frames: not the rows of frames with no gold at all (Aff-Wild2's -5)
    rows += [{**rows[0], "frame": 50 + i, "valence_true": float("nan"), "arousal_true": float("nan")} for i in range(7)]
    assert "50 annotated frames" in scatter_figure(rows)._suptitle.get_text()
    # a linear head's predictions outside [-1, 1] are on the figure; an infinite one does not break it
    rows[1]["valence"], rows[2]["valence"] = 2.5, float("inf")
    va = scatter_figure(rows).axes[0]
    assert va.get_ylim()[1] >= 2.5 and np.isfinite(va.get_ylim()).all()
