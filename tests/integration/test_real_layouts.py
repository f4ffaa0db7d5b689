"""The prepare stage (Ray Data decoding) on the real-layout trees: .flv with AudioWAV, .avi, and a
bring-your-own CSV with per-frame annotations, one of the wrong length."""

from __future__ import annotations

import pytest

from raybench.config import SWEEPS_DIR, load
from raybench.data.store import PrepareError, prepare


def _data(tmp_path, **kw):
    return dict(load(SWEEPS_DIR / "smoke.yaml").data.model_dump(), store_dir=str(tmp_path / "stores"), **kw)


def test_crema_d_clip_without_audio_is_skipped_and_named(ray_session, real_layouts, tmp_path):
    root = real_layouts["crema_d"]
    prep = prepare(_data(tmp_path, dataset="crema_d", root=str(root), max_bad_fraction=0.1))
    assert set(prep.bad) == {"1004_IEO_NEU_XX"}
    assert "audio" in prep.bad["1004_IEO_NEU_XX"]["reason"]
    assert prep.bad["1004_IEO_NEU_XX"]["video_path"] == str(root / "VideoFlash" / "1004_IEO_NEU_XX.flv")
    assert len(prep.clips) == 16 and prep.class_names[0] == "anger"
    # the clean WAV audio instead of the .flv track: another store (the audio source is fingerprinted)
    wav = prepare(_data(tmp_path, dataset="crema_d", root=str(root), max_bad_fraction=0.1, crema_d={"audio": "wav"}))
    assert wav.store.path != prep.store.path and wav.decoded == 16
    assert "AudioWAV/1004_IEO_NEU_XX.wav" in wav.bad["1004_IEO_NEU_XX"]["reason"]


def test_afew_avi_clips_decode(ray_session, real_layouts, tmp_path):
    prep = prepare(_data(tmp_path, dataset="afew", root=str(real_layouts["afew"])))
    assert prep.decoded == 15 and not prep.bad
    assert len(prep.ids("test")) == 6  # the official validation set
    row = prep.store.read_clips(prep.ids("test")[:1], columns=["num_frames", "source_fps"])[0]
    assert row["num_frames"] == 8 and row["source_fps"] == pytest.approx(10.0)  # 1 s at 10 fps -> smoke's 8 fps


def test_annotation_length_mismatch_is_truncated_or_skipped_as_configured(ray_session, real_layouts, tmp_path):
    root = real_layouts["byo"]
    data = _data(tmp_path, dataset="csv", root=str(root), csv={"manifest": "manifest.csv", "task": "continuous",
                                                             "classes": None}, max_bad_fraction=0.2)
    prep = prepare(data)
    assert prep.task == "continuous" and len(prep.clips) == 6 and not prep.bad
    (w,) = prep.warnings
    assert "clip5.csv has 15 frames" in w and "needs 20" in w and "truncate" in w
    row = prep.store.read_clips(["clip5"], columns=["va"])[0]
    import numpy as np

    va = np.frombuffer(row["va"], np.float32).reshape(-1, 2)
    assert np.isnan(va).any() and not np.isnan(va[:10]).any()  # frames past the annotation are masked
    # the metrics' frames: the annotation as written, one row per annotated source frame (15 of 20)
    row = prep.store.read_clips(["clip5"], columns=["source_va", "source_va_rate", "source_fps"])[0]
    src = np.frombuffer(row["source_va"], np.float32).reshape(-1, 2)
    written = np.loadtxt(root / "va" / "clip5.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(src, written, atol=1e-6)
    assert row["source_va_rate"] == pytest.approx(row["source_fps"]) == pytest.approx(10.0)

    again = prepare(data)  # the store is reused: its warning is still reported
    assert again.decoded == 0 and again.warnings == prep.warnings
    skip = prepare(dict(data, annotation_mismatch="skip"))
    assert set(skip.bad) == {"clip5"} and len(skip.clips) == 5
    assert "has 15 frames" in skip.bad["clip5"]["reason"] and "needs 20" in skip.bad["clip5"]["reason"]
    with pytest.raises(PrepareError, match="clip5"):
        prepare(dict(data, annotation_mismatch="skip", max_bad_fraction=0.0))


def test_a_csv_dataset_trains_in_a_sweep(ray_session, real_layouts, tmp_path):
    from raybench.sweep import run_sweep

    cfg = load(SWEEPS_DIR / "smoke.yaml", [
        "data.dataset=csv", f"data.root={real_layouts['byo']}", "data.csv.task=continuous",
        f"data.store_dir={tmp_path / 'stores'}", "train.epochs=1", "train.num_workers=1", "data.split.val_fraction=0.34",
        "data.split.test_fraction=0.0", "tune.search_space={window.length: {grid: [8]}}", "window.hop=4"])
    cfg.mlflow.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg.storage = str(tmp_path / "results")
    res = run_sweep(cfg)
    assert res.failed == 0
    assert {"val/ccc", "val/ccc_valence", "val/ccc_arousal"} <= set(res.trials[0]["val"])


def test_recola_labels_at_40_ms_follow_the_chosen_frames(ray_session, real_layouts, tmp_path):
    import numpy as np

    prep = prepare(_data(tmp_path, dataset="recola", root=str(real_layouts["recola"]), fps=5))
    assert prep.decoded == 5 and not prep.bad
    (w,) = prep.warnings  # dev_1's gold standard stops 5 steps early
    assert "dev_1.arff has 45 values at 25 Hz" in w and "needs 50" in w
    row = prep.store.read_clips(["train_1"], columns=["va", "num_frames"])[0]
    va = np.frombuffer(row["va"], np.float32).reshape(-1, 2)
    assert row["num_frames"] == 10  # 2 s at 5 fps
    k = np.arange(10) * 5  # frame t at 5 fps is label step 5t at 25 Hz
    np.testing.assert_allclose(va[:, 1], np.sin(k / 8), atol=1e-4)  # arousal
    np.testing.assert_allclose(va[:, 0], -np.sin(k / 8), atol=1e-4)  # valence
    # the metrics' frames: every 40 ms gold-standard value inside the video, at 25 Hz
    for clip, n in (("train_1", 50), ("dev_1", 45)):
        row = prep.store.read_clips([clip], columns=["source_va", "source_va_rate"])[0]
        src = np.frombuffer(row["source_va"], np.float32).reshape(-1, 2)
        assert row["source_va_rate"] == 25.0 and len(src) == n
        np.testing.assert_allclose(src[:, 1], np.sin(np.arange(n) / 8), atol=1e-4)


def test_msp_improv_avi_clips_decode(ray_session, real_layouts, tmp_path):
    prep = prepare(_data(tmp_path, dataset="msp_improv", root=str(real_layouts["msp_improv"])))
    assert prep.decoded == 6 and not prep.bad and prep.class_names == ["angry", "happy", "sad", "neutral"]
    # the listed clip without a video and the O- and X-coded clips: said, and in what a trial records in
    # MLflow (data/msp_improv/left_out)
    from raybench.trials import data_summary

    summary = data_summary(prep, 10.0)
    assert summary["left_out"] == 3 and len(summary["left_out_list"]) == 2
    whys = " | ".join(x["why"] for x in summary["left_out_list"])
    assert "have no video file (first: UTD-IMPROV-S04A-F04-P-FM09.avi); left out" in whys
    assert "have the category O (other) or X (no agreement)" in whys


def test_face_mode_is_part_of_the_store_and_recorded_per_clip(ray_session, real_layouts, tmp_path, capsys):
    plain = prepare(_data(tmp_path, dataset="afew", root=str(real_layouts["afew"])))
    assert plain.face_found is None  # data.face: none
    det = prepare(_data(tmp_path, dataset="afew", root=str(real_layouts["afew"]), face="detect"))
    assert det.store.path != plain.store.path and det.decoded == 15
    # the fallback is counted and said, not silent
    assert det.face_found == 0
    assert ("data.face=detect (detector haar): a face was found in 0 of 15 clips; the others use the centre crop"
            in capsys.readouterr().out)
    rows = det.store.read_clips(columns=["face_found", "video_shape"])
    assert all(r["face_found"] is False for r in rows)  # noise clips: no face, centre crops
    assert all(r["video_shape"][1:] == [32, 32, 3] for r in rows)


def test_msp_improv_continuous_ratings_become_frame_labels(ray_session, real_layouts, tmp_path):
    import numpy as np

    prep = prepare(_data(tmp_path, dataset="msp_improv", root=str(real_layouts["msp_improv"]),
                         msp_improv={"task": "continuous"}))
    assert prep.task == "continuous" and prep.decoded == 7 and not prep.warnings
    row = prep.store.read_clips(["S03S-F02-P-FM03"], columns=["va", "num_frames"])[0]
    va = np.frombuffer(row["va"], np.float32).reshape(-1, 2)
    assert len(va) == row["num_frames"] and np.allclose(va, [0.5, 0.0])
