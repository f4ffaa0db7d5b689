"""CREMA-D and AFEW adapters on small trees in their real layouts (names and folders only)."""

from __future__ import annotations

import pytest

from raybench.data.datasets import LayoutError, get_dataset
from raybench.schema import data_config

CFG = {"split": {"seed": 0, "val_fraction": 0.25, "test_fraction": 0.25, "folds": None}, "fold": None,
       "crema_d": {"audio": "video"}}


def test_crema_d_manifest(real_layouts):
    ds = get_dataset("crema_d")
    clips = ds.manifest(real_layouts["crema_d"], data_config(CFG))
    assert len(clips) == 17  # 16 + the clip without audio (found here, skipped when decoded); notes.txt ignored
    assert {c.subject for c in clips} == {"actor1001", "actor1002", "actor1003", "actor1004"}
    c = next(c for c in clips if c.clip_id == "1002_DFA_HAP_XX")
    assert ds.class_names[c.label] == "happy" and c.meta == {"sentence": "DFA", "level": "XX"}
    by_subject = {}
    for c in clips:
        by_subject.setdefault(c.subject, set()).add(c.split)
    assert all(len(s) == 1 for s in by_subject.values())
    wav = ds.manifest(real_layouts["crema_d"], data_config({**CFG, "crema_d": {"audio": "wav"}}))
    c = next(c for c in wav if c.clip_id == "1002_DFA_HAP_XX")
    assert c.meta["audio_path"].endswith("AudioWAV/1002_DFA_HAP_XX.wav")


def test_crema_d_leaves_out_the_clips_its_readme_flags(real_layouts, tmp_path, capsys):
    import shutil

    root = tmp_path / "crema"
    shutil.copytree(real_layouts["crema_d"], root)
    for name in ("1076_MTI_SAD_XX", "1064_IEO_DIS_MD"):  # two of the four the owners' README lists
        shutil.copy(root / "VideoFlash/1001_DFA_ANG_XX.flv", root / f"VideoFlash/{name}.flv")
    ds = get_dataset("crema_d")
    ids = {c.clip_id for c in ds.manifest(root, data_config(CFG))}
    assert len(ids) == 17 and not {"1076_MTI_SAD_XX", "1064_IEO_DIS_MD"} & ids
    out = capsys.readouterr().out
    assert "crema_d: 2 clip(s) the dataset's README says do not show what their names say, left out" in out
    assert "1064_IEO_DIS_MD (a minute long, every emotion of its sentence)" in out
    kept = ds.manifest(root, data_config({**CFG, "crema_d": {"audio": "video", "keep_flagged": True}}))
    assert {"1076_MTI_SAD_XX", "1064_IEO_DIS_MD"} <= {c.clip_id for c in kept} and len(kept) == 19


def test_crema_d_git_lfs_pointers_are_named_before_decoding(tmp_path):
    (tmp_path / "VideoFlash").mkdir()
    (tmp_path / "VideoFlash/1001_DFA_ANG_XX.flv").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 312345\n")
    with pytest.raises(LayoutError, match=r"1001_DFA_ANG_XX.flv is a Git LFS pointer file, not a video: "
                                          r"fetch the media with `git lfs pull`"):
        get_dataset("crema_d").manifest(tmp_path, data_config(CFG))


def test_crema_d_layout_error(tmp_path):
    (tmp_path / "AudioWAV").mkdir()
    (tmp_path / "AudioWAV" / "1001_DFA_ANG_XX.wav").write_bytes(b"")
    with pytest.raises(LayoutError) as e:
        get_dataset("crema_d").manifest(tmp_path, data_config(CFG))
    assert "VideoFlash" in str(e.value) and "AudioWAV/1001_DFA_ANG_XX.wav" in str(e.value)


def test_afew_manifest_official_val_is_test(real_layouts):
    ds = get_dataset("afew")
    clips = ds.manifest(real_layouts["afew"], data_config(CFG))
    assert len(clips) == 15  # Thumbs.db ignored
    val = [c for c in clips if c.meta["official_split"] == "Val_AFEW"]
    assert len(val) == 6 and all(c.split == "test" for c in val)
    train = [c for c in clips if c.meta["official_split"] == "Train_AFEW"]
    assert {c.split for c in train} == {"train", "val"}
    assert {ds.class_names[c.label] for c in clips} == {"angry", "happy", "sad"}
    assert len({c.clip_id for c in clips}) == 15


def test_afew_says_which_video_folders_it_leaves_out(real_layouts, tmp_path, capsys):
    import shutil

    root = tmp_path / "afew"
    shutil.copytree(real_layouts["afew"], root)
    angry = next((root / "Train_AFEW").glob("[Aa]ngry"))
    shutil.copytree(angry, root / "Train_AFEW" / "Anger")  # not one of the 7 names: left out, and said
    (root / "Train_AFEW" / "notes").mkdir()  # no videos: nothing to say
    clips, left_out = get_dataset("afew").listed(root, data_config(CFG))
    assert len(clips) == 15
    out = capsys.readouterr().out
    n = sum(1 for _ in angry.glob("*.avi"))
    assert "afew: 1 folder(s) of videos not named after one of the 7 emotions" in out
    assert f"left out: Train_AFEW/Anger ({n} videos)" in out and "notes" not in out
    # the prepare stage records it: how many files, and why (the message said)
    assert len(left_out) == 1 and left_out[0]["files"] == n and left_out[0]["why"] in out
    assert get_dataset("afew").listed(real_layouts["afew"], data_config(CFG))[1] == []  # nothing left from before


def test_afew_accepts_other_years_folder_names(real_layouts, tmp_path):
    import shutil

    root = tmp_path / "AFEW_2017"
    shutil.copytree(real_layouts["afew"] / "Train_AFEW", root / "Train")
    shutil.copytree(real_layouts["afew"] / "Val_AFEW", root / "Validation")
    for d in (root / "Train").iterdir():
        d.rename(d.with_name(d.name.lower()))
    clips = get_dataset("afew").manifest(root, data_config(CFG))
    assert len(clips) == 15 and sum(c.split == "test" for c in clips) == 6


def test_recola_manifest(real_layouts):
    ds = get_dataset("recola")
    clips = ds.manifest(real_layouts["recola"], data_config(CFG))
    assert sorted(c.clip_id for c in clips) == ["dev_1", "dev_2", "train_1", "train_2", "train_3"]  # test_1 left out
    assert {c.split for c in clips if c.clip_id.startswith("dev")} == {"test"}
    assert {c.split for c in clips if c.clip_id.startswith("train")} == {"train", "val"}
    c = next(c for c in clips if c.clip_id == "train_2")
    assert c.meta["va_rate"] == 25.0 and c.meta["audio_path"].endswith("recordings_audio/train_2.wav")
    assert c.meta["valence_path"].endswith("valence/train_2.arff")


def test_msp_improv_manifest_sessions_are_subjects(real_layouts, capsys):
    ds = get_dataset("msp_improv")
    clips = ds.manifest(real_layouts["msp_improv"], data_config({**CFG, "split": {**CFG["split"], "folds": 3}, "fold": 2}))
    assert len(clips) == 6  # the X- and O-coded clips and the clip without a video are left out
    out = capsys.readouterr().out
    assert "S04A-F04-P-FM09" in out
    assert ("2 clip(s) of " in out and "have the category O (other) or X (no agreement) (first: S07S-F03-P-FM07, "
            "S08N-M03-P-FM08); left out of the 4-class task") in out
    _, left_out = ds.listed(real_layouts["msp_improv"], data_config(CFG))  # counted for MLflow too
    assert sorted(x["files"] for x in left_out) == [1, 2]
    # the session is the speaker's number (F01/M01: session 1), not the sentence's (S01..S06 here)
    assert {c.subject for c in clips} == {"session1", "session2", "session3"}
    assert {c.clip_id: c.subject for c in clips}["S04N-M02-P-FM04"] == "session2"
    assert [ds.class_names[c.label] for c in sorted(clips, key=lambda c: c.clip_id)][:2] == ["angry", "happy"]
    # 3 folds over 3 sessions: leave-one-session-out
    tested = {c.subject for c in clips if c.split == "test"}
    assert len(tested) == 1
    assert clips[0].meta["ratings"]["A"] == 3.0


def test_msp_improv_refuses_a_line_that_is_neither_a_clip_nor_a_rater(real_layouts, tmp_path):
    import shutil

    root = tmp_path / "msp"
    shutil.copytree(real_layouts["msp_improv"], root)
    text = (root / "Evaluation.txt").read_text()
    (root / "Evaluation.txt").rename(root / "Evalution.txt")  # as some copies of the release spell it
    assert len(get_dataset("msp_improv").manifest(root, data_config(CFG))) == 6
    (root / "Evalution.txt").write_text(text + "UTD-IMPROV-S01A-X01.avi; A\nUTD-IMPROV-S1A-F01.avi; A; A:3.0; V:3.0;\n")
    with pytest.raises(LayoutError, match=r"Evalution.txt has lines not in the expected form: line 2[0-9]: "
                                          r"'UTD-IMPROV-S01A-X01.avi; A'; line 2[0-9]: 'UTD-IMPROV-S1A-F01.avi"):
        get_dataset("msp_improv").manifest(root, data_config(CFG))
    (root / "Evalution.txt").write_text(text.replace("; H; ", "; h; ", 1))  # a category that is none of the codes
    with pytest.raises(LayoutError, match=r"line [0-9]+: category 'h' is not one of A, H, S, N, O, X"):
        get_dataset("msp_improv").manifest(root, data_config(CFG))
    (root / "Evalution.txt").write_text(text)
    (root / "old").mkdir()
    (root / "old" / "Evaluation.txt").write_text(text)  # two rating files, or two copies of a video: which one?
    with pytest.raises(LayoutError, match=r"more than one rating file: Evalution.txt, old/Evaluation.txt"):
        get_dataset("msp_improv").manifest(root, data_config(CFG))
    (root / "old" / "Evaluation.txt").unlink()
    video = next(root.rglob("*S01A-F01-P-FM01.avi"))
    shutil.copy(video, root / "old" / video.name)
    with pytest.raises(LayoutError, match=r"1 clip\(s\) with more than one video file \(old/MSP-IMPROV-S01A-F01-P-FM01"
                                          r".avi and session1/.*S01A-F01-P-FM01.avi\)"):
        get_dataset("msp_improv").manifest(root, data_config(CFG))


def test_msp_improv_continuous_uses_every_rated_clip(real_layouts, capsys):
    import numpy as np

    from raybench.data.annotations import read_annotation

    ds = get_dataset("msp_improv")
    cfg = {**CFG, "msp_improv": {"task": "continuous"}}
    assert ds.task_for(data_config(cfg)) == "continuous" and ds.class_names_for(data_config(cfg), []) == ("valence", "arousal")
    clips = ds.manifest(real_layouts["msp_improv"], data_config(cfg))
    assert len(clips) == 7  # the X-coded clip has ratings too; the O-coded one's are NaN: left out, and said
    out = capsys.readouterr().out
    assert "1 clip(s) of " in out and "have a NaN valence or arousal rating (first: S08N-M03-P-FM08); left out" in out
    c = next(c for c in clips if c.clip_id == "S02H-M01-P-FM02")  # V:3.0, A:3.0 -> (0, 0)
    va = read_annotation(c.to_row(), n_frames=5)
    assert va.shape == (5, 2) and np.allclose(va, 0.0)
    c = next(c for c in clips if c.clip_id == "S03S-F02-P-FM03")  # V:4.0 -> 0.5
    assert np.allclose(read_annotation(c.to_row(), n_frames=2), [[0.5, 0.0], [0.5, 0.0]])


def test_a_missing_official_test_split_is_said_before_decoding(real_layouts, tiny_affwild2, tmp_path):
    """AFEW's, Aff-Wild2's and RECOLA's official validation sets are their test splits: without one,
    the manifest stops, naming the folder, instead of a sweep that trains and has nothing to test."""
    import shutil

    afew = tmp_path / "afew"
    shutil.copytree(real_layouts["afew"] / "Train_AFEW", afew / "Train_AFEW")
    with pytest.raises(LayoutError, match=r"no validation folder \(Val_AFEW, Val, \.\.\.\) with emotion folders: "
                                          "it is the test split"):
        get_dataset("afew").manifest(afew, data_config(CFG))
    aff = tmp_path / "affwild2"
    shutil.copytree(tiny_affwild2, aff)
    shutil.rmtree(aff / "annotations/VA_Set/Validation_Set")
    with pytest.raises(LayoutError, match=r"no VA annotation folder Validation_Set \(the test split\)"):
        get_dataset("affwild2").manifest(aff, data_config(CFG))
    recola = tmp_path / "recola"
    shutil.copytree(real_layouts["recola"], recola)
    for f in recola.rglob("dev_*.arff"):
        f.unlink()
    with pytest.raises(LayoutError, match=r"no dev_N gold-standard .arff files \(dev: the test split\)"):
        get_dataset("recola").manifest(recola, data_config(CFG))
