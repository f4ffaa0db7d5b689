import numpy as np
import pytest
import torch

from raybench.nn.losses import ccc, ccc_loss
from raybench.train.metrics import PopulationCCC, TaskMetrics


def ref_ccc(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    sxy = ((x - x.mean()) * (y - y.mean())).mean()
    return 2 * sxy / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


def test_ccc_matches_lin_formula_and_ignores_nan():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(200, 2))
    p = 0.7 * y + rng.normal(0, 0.4, size=y.shape) + 0.2
    y_nan = y.copy()
    y_nan[::7, 0] = np.nan
    m = PopulationCCC(2)
    m.update(torch.tensor(p[:100]), torch.tensor(y_nan[:100]))
    m.update(torch.tensor(p[100:]), torch.tensor(y_nan[100:]))
    got = m.compute().numpy()
    keep = ~np.isnan(y_nan[:, 0])
    assert got[0] == pytest.approx(ref_ccc(p[keep, 0], y[keep, 0]), abs=1e-5)
    assert got[1] == pytest.approx(ref_ccc(p[:, 1], y[:, 1]), abs=1e-5)
    assert ccc(torch.tensor(p), torch.tensor(y)).numpy() == pytest.approx(
        [ref_ccc(p[:, 0], y[:, 0]), ref_ccc(p[:, 1], y[:, 1])], abs=1e-5)


def test_ccc_of_perfect_and_shifted_predictions():
    y = torch.linspace(-1, 1, 50)[:, None].repeat(1, 2)
    assert ccc(y, y).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    assert ccc(y + 0.5, y)[0] < 0.9  # a bias is penalised (unlike Pearson)


def test_ccc_loss_masks_padding_and_unannotated():
    va = torch.tensor([[[0.1, 0.2], [0.3, 0.1], [float("nan"), 0.0], [0.5, 0.6]]])
    pred = va.nan_to_num(0.0).clone()
    pred[0, 3] = 9.0  # padded frame: must not count
    mask = torch.tensor([[True, True, True, False]])
    assert float(ccc_loss(pred, va, mask)) == pytest.approx(0.0, abs=1e-5)


def test_categorical_metrics_against_hand_computation():
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    p = np.array([0, 0, 0, 1, 1, 2, 2, 2, 0, 2])
    m = TaskMetrics("categorical", 3)
    scores = torch.nn.functional.one_hot(torch.tensor(p), 3).float()
    m.update(scores[:5], torch.tensor(y[:5]))
    m.update(scores[5:], torch.tensor(y[5:]))
    out = m.compute()
    recalls = [np.mean(p[y == c] == c) for c in range(3)]
    precisions = [np.mean(y[p == c] == c) for c in range(3)]
    f1 = [2 * a * b / (a + b) for a, b in zip(precisions, recalls)]
    assert out["acc"] == pytest.approx(np.mean(p == y))
    assert out["uar"] == pytest.approx(np.mean(recalls))
    assert out["f1"] == pytest.approx(np.mean(f1))
    assert out["uar"] != pytest.approx(out["acc"])  # imbalanced: UAR differs from WA


@pytest.mark.parametrize("seed", range(6))
def test_uar_is_scikit_learns_balanced_accuracy_even_with_absent_classes(seed):
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(seed)
    n_classes = 5
    present = rng.choice(n_classes, size=3, replace=False)  # two classes never in the targets ...
    y = rng.choice(present, size=40)
    p = rng.integers(0, n_classes, size=40)  # ... but predicted
    m = TaskMetrics("categorical", n_classes)
    m.update(torch.nn.functional.one_hot(torch.tensor(p), n_classes).float(), torch.tensor(y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns that y_pred has classes not in y_true
        expected = balanced_accuracy_score(y, p)
    assert m.compute()["uar"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("seed", range(8))
def test_accuracy_and_macro_f1_are_scikit_learns_with_absent_classes(seed):
    """acc is scikit-learn's accuracy_score and f1 its f1_score(average="macro") without labels (the
    classes in the targets or the predictions; a class in neither is left out, not scored 0), over
    several updates of different sizes, ties in the scores broken to the lowest class as argmax does."""
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(seed)
    n_classes = 6
    used = rng.choice(n_classes, size=4, replace=False)  # two classes neither gold nor predicted
    y = rng.choice(used[:3], size=57)  # one more only ever predicted
    scores = rng.random((57, n_classes)).round(1)  # ties happen
    scores[:, [c for c in range(n_classes) if c not in used]] = -1.0
    p = scores.argmax(1)
    m = TaskMetrics("categorical", n_classes)
    for lo, hi in ((0, 1), (1, 20), (20, 57)):
        m.update(torch.tensor(scores[lo:hi]), torch.tensor(y[lo:hi]))
    out = m.compute()
    assert out["acc"] == pytest.approx(accuracy_score(y, p), abs=1e-9)
    assert out["f1"] == pytest.approx(f1_score(y, p, average="macro", zero_division=0), abs=1e-9)
    m.reset()
    assert m.compute() == {"acc": 0.0, "uar": 0.0, "f1": 0.0}


def test_a_label_outside_the_classes_is_an_error():
    m = TaskMetrics("categorical", 3)
    with pytest.raises(ValueError, match="outside 0..2"):
        m.update(torch.ones(2, 3), torch.tensor([0, 3]))


def test_uar_of_a_prediction_of_an_absent_class():
    m = TaskMetrics("categorical", 3)
    m.update(torch.nn.functional.one_hot(torch.tensor([0, 2, 1, 1]), 3).float(), torch.tensor([0, 0, 1, 1]))
    assert m.compute()["uar"] == pytest.approx(0.75)  # (1/2 + 2/2) / 2: class 2 is not in the targets


def test_clip_mean_ccc_is_the_mean_of_per_clip_cccs():
    rng = np.random.default_rng(5)
    clips = []
    for n in (50, 13, 31):
        t = rng.normal(0, 1, (n, 2))
        clips.append((t + rng.normal(0, 0.7, (n, 2)) + 0.2, t))
    clips[1][1][:, 1] = np.nan  # a clip with no arousal annotation does not count for arousal

    def ccc(x, y):  # population moments, from the definition
        c = np.cov(x, y, bias=True)
        return 2 * c[0, 1] / (c[0, 0] + c[1, 1] + (x.mean() - y.mean()) ** 2)

    m = TaskMetrics("continuous", 2, ccc_over="clips")
    for p, t in clips:
        m.update(torch.from_numpy(p), torch.from_numpy(t))
    got = m.compute()
    assert got["ccc_valence"] == pytest.approx(np.mean([ccc(p[:, 0], t[:, 0]) for p, t in clips]), abs=1e-5)
    assert got["ccc_arousal"] == pytest.approx(np.mean([ccc(p[:, 1], t[:, 1]) for i, (p, t) in enumerate(clips)
                                                        if i != 1]), abs=1e-5)
    pooled = TaskMetrics("continuous", 2)
    for p, t in clips:
        pooled.update(torch.from_numpy(p), torch.from_numpy(t))
    allp, allt = np.concatenate([p for p, _ in clips]), np.concatenate([t for _, t in clips])
    assert pooled.compute()["ccc_valence"] == pytest.approx(ccc(allp[:, 0], allt[:, 0]), abs=1e-5)
    with pytest.raises(ValueError, match="eval.ccc_over"):
        TaskMetrics("continuous", 2, ccc_over="videos")
