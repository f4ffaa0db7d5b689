"""The cross-corpus label map, and the config errors a wrong one gets before any work."""

from __future__ import annotations

import pytest

from raybench.data.datasets.crema_d import EMOTIONS as CREMA_D
from raybench.data.datasets.msp_improv import EMOTIONS as MSP_IMPROV
from raybench.data.datasets.ravdess import EMOTIONS as RAVDESS
from raybench.labels import label_map


def test_ravdess_and_crema_d_share_six_classes_by_name():
    pairs = label_map(RAVDESS, CREMA_D)
    assert [(RAVDESS[s], CREMA_D[t]) for s, t, _ in pairs] == [
        ("neutral", "neutral"), ("happy", "happy"), ("sad", "sad"), ("angry", "anger"), ("fearful", "fear"),
        ("disgust", "disgust")]
    back = label_map(CREMA_D, RAVDESS)
    assert sorted((CREMA_D[s], RAVDESS[t]) for s, t, _ in back) == sorted((b, a) for (a, b) in
                                                                          [(RAVDESS[s], CREMA_D[t]) for s, t, _ in pairs])


def test_msp_improv_shares_its_four():
    assert sorted(n for _, _, n in label_map(RAVDESS, MSP_IMPROV)) == ["angry", "happy", "neutral", "sad"]
    assert len(label_map(MSP_IMPROV, CREMA_D)) == 4


def test_an_explicit_map_replaces_the_names_and_is_checked():
    pairs = label_map(RAVDESS, CREMA_D, {"calm": "neutral", "angry": "anger"})
    assert [(RAVDESS[s], CREMA_D[t], n) for s, t, n in pairs] == [("calm", "neutral", "calm_as_neutral"),
                                                                   ("angry", "anger", "angry")]
    with pytest.raises(ValueError, match="unknown class.*'joy'"):
        label_map(RAVDESS, CREMA_D, {"joy": "happy"})
    with pytest.raises(ValueError, match="mapped from two"):
        label_map(RAVDESS, CREMA_D, {"calm": "neutral", "neutral": "neutral"})
    with pytest.raises(ValueError, match="no class shared"):
        label_map(("a", "b"), ("c",))


def test_cross_corpus_targets_are_checked_with_the_config():
    from raybench.config import ConfigError, SWEEPS_DIR, load

    cfg = load(SWEEPS_DIR / "default.yaml", ["eval.cross_corpus=[{dataset: synthetic_crema_d}]"])
    assert cfg.eval.cross_corpus[0].split == "all" and cfg.eval.cross_corpus[0].labels is None
    with pytest.raises(ConfigError) as e:
        load(SWEEPS_DIR / "default.yaml", ["eval.cross_corpus=[{dataset: crema_dd}, {dataset: synthetic_affwild2},"
                                           " {dataset: crema_d, labels: {joy: happy}}]"])
    msg = str(e.value)
    assert "'eval.cross_corpus[0].dataset': unknown dataset 'crema_dd'" in msg and 'did you mean "crema_d"' in msg
    assert "'eval.cross_corpus[1].dataset': 'synthetic_affwild2' is continuous" in msg
    assert "'eval.cross_corpus[2]' (synthetic_ravdess -> crema_d): label map: unknown class(es) 'joy'" in msg
    with pytest.raises(ConfigError, match=r"'eval.cross_corpus\[1\].dataset': 'crema_d' is already "
                                          r"eval.cross_corpus\[0\]; name each target corpus once"):
        load(SWEEPS_DIR / "default.yaml", ["eval.cross_corpus=[{dataset: crema_d}, {dataset: crema_d, split: test}]"])
    with pytest.raises(ConfigError, match="trains on 'synthetic_affwild2', not a categorical dataset"):
        load(SWEEPS_DIR / "default.yaml", ["data.dataset=synthetic_affwild2", "method.name=av_fusion",
                                           "tune.search_space={}", "tune.metric=null",
                                           "eval.cross_corpus=[{dataset: synthetic_crema_d}]"])
