"""The bring-your-own CSV adapter and the annotation readers."""

from __future__ import annotations

import numpy as np
import pytest

from raybench.data.annotations import read_arff_values, read_csv_va
from raybench.data.datasets import LayoutError, get_dataset
from raybench.schema import data_config

EMO = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


def _cfg(**csv):
    return {"split": {"seed": 0, "val_fraction": 0.25, "test_fraction": 0.25, "folds": None}, "fold": None,
            "csv": {"manifest": "manifest.csv", "task": "categorical", "classes": None, **csv}}


def _write_manifest(root, tiny_ravdess, extra_rows=()):
    vids = sorted(tiny_ravdess.rglob("*.mp4"))
    lines = ["video,subject,label"]
    for v in vids:
        emo = EMO[int(v.name.split("-")[2]) - 1]
        lines.append(f"{v},{v.parent.name},{emo}")
    lines += list(extra_rows)
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    (root / "README.txt").write_text("an unrelated file")
    return vids


def test_csv_categorical_manifest(tiny_ravdess, tmp_path):
    vids = _write_manifest(tmp_path, tiny_ravdess)
    ds = get_dataset("csv")
    clips = ds.manifest(tmp_path, data_config(_cfg()))
    assert len(clips) == len(vids) == 45
    names = ds.class_names_for(data_config(_cfg()), clips)
    assert names == tuple(sorted(EMO))
    assert all(names[c.label] == EMO[int(c.clip_id.split("-")[2]) - 1] for c in clips)
    by_subject = {}
    for c in clips:
        by_subject.setdefault(c.subject, set()).add(c.split)
    assert all(len(s) == 1 for s in by_subject.values()) and {c.split for c in clips} == {"train", "val", "test"}
    # fixed class order
    fixed = ds.manifest(tmp_path, data_config(_cfg(classes=list(EMO))))
    assert all(EMO[c.label] == EMO[int(c.clip_id.split("-")[2]) - 1] for c in fixed)


def test_csv_errors_name_the_line_and_what_was_expected(tiny_ravdess, tmp_path):
    _write_manifest(tmp_path, tiny_ravdess, extra_rows=[f"{tmp_path}/missing.mp4,Actor_09,happy",
                                                       f"{next(tiny_ravdess.rglob('*.mp4'))},Actor_01,bored"])
    with pytest.raises(LayoutError) as e:
        get_dataset("csv").manifest(tmp_path, data_config(_cfg(classes=list(EMO))))
    msg = str(e.value)
    assert "manifest.csv line 47: video" in msg and "missing.mp4 does not exist" in msg
    assert "line 48: label 'bored'" in msg
    (tmp_path / "manifest.csv").write_text("file,speaker\nx.mp4,a\n")
    with pytest.raises(LayoutError, match="lacks column.*video, subject, label.*it has file, speaker"):
        get_dataset("csv").manifest(tmp_path, data_config(_cfg()))
    (tmp_path / "manifest.csv").unlink()
    with pytest.raises(LayoutError, match="no manifest manifest.csv"):
        get_dataset("csv").manifest(tmp_path, data_config(_cfg()))


def test_csv_numeric_class_names_are_names_not_indices(tiny_ravdess, tmp_path):
    """With classes "1", "2", "3" a label 1 is the class named "1"; with named classes, an index works."""
    vids = sorted(tiny_ravdess.rglob("*.mp4"))[:6]
    (tmp_path / "manifest.csv").write_text("video,subject,label\n" + "".join(
        f"{v},{v.parent.name},{1 + k % 3}\n" for k, v in enumerate(vids)))
    ds = get_dataset("csv")
    cfg = data_config(_cfg(classes=["1", "2", "3"], **{}))
    cfg.split.test_fraction = 0.0
    clips = ds.manifest(tmp_path, cfg)
    names = ds.class_names_for(cfg, clips)
    assert [names[c.label] for c in clips] == [str(1 + k % 3) for k in range(6)]
    # with names that are not numbers, an index picks the class; one past the end is refused, naming the line
    cfg = data_config(_cfg(classes=["a", "b", "c", "d"]))
    cfg.split.test_fraction = 0.0
    clips = ds.manifest(tmp_path, cfg)
    assert [c.label for c in clips] == [1 + k % 3 for k in range(6)]
    with pytest.raises(LayoutError, match=r"line 4: label '3' is not one of the classes \['a', 'b', 'c'\] "
                                          r"\(nor an index 0-2\)"):
        ds.manifest(tmp_path, data_config(_cfg(classes=["a", "b", "c"])))


def test_csv_a_subject_in_two_splits_or_folds_is_refused(tiny_ravdess, tmp_path):
    vids = sorted(tiny_ravdess.rglob("*.mp4"))
    last_02 = max(k for k, v in enumerate(vids) if v.parent.name == "Actor_02")
    lines = ["video,subject,label,split,fold"]
    for k, v in enumerate(vids):
        actor = v.parent.name
        split = "test" if actor == "Actor_03" and k % 2 == 0 else ""  # some of Actor_03's rows only
        fold = "1" if k == last_02 else ("0" if actor != "Actor_03" else "")  # one of Actor_02's rows
        lines.append(f"{v},{actor},{EMO[int(v.name.split('-')[2]) - 1]},{split},{fold}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(LayoutError) as e:
        get_dataset("csv").manifest(tmp_path, data_config(_cfg()))
    msg = str(e.value)
    assert "subject 'Actor_03' has rows with split empty and 'test'" in msg
    assert "subject 'Actor_02' has rows with fold '0' and '1'" in msg and f"lines {last_02 + 2} (1)" in msg
    assert "Actor_01" not in msg


def test_csv_official_split_and_given_folds(tiny_ravdess, tmp_path):
    vids = sorted(tiny_ravdess.rglob("*.mp4"))
    lines = ["video,subject,label,split,fold"]
    for v in vids:
        actor = v.parent.name
        split = "test" if actor == "Actor_03" else ""
        fold = "" if split else ("0" if actor == "Actor_01" else "1")
        lines.append(f"{v},{actor},{EMO[int(v.name.split('-')[2]) - 1]},{split},{fold}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    cfg = _cfg()
    cfg["split"]["folds"], cfg["fold"] = 2, 1
    clips = get_dataset("csv").manifest(tmp_path, data_config(cfg))
    assert {c.split for c in clips if c.subject == "Actor_03"} == {"test"}
    assert {c.split for c in clips if c.subject == "Actor_02"} == {"val"}  # fold 1 validates
    assert {c.split for c in clips if c.subject == "Actor_01"} == {"train"}


def test_csv_continuous_needs_va_files(tiny_ravdess, tmp_path):
    v = next(tiny_ravdess.rglob("*.mp4"))
    (tmp_path / "a.csv").write_text("frame,arousal,valence\n0,0.5,0.1\n1,,-5\n2,0.2,-0.3\n")
    (tmp_path / "manifest.csv").write_text(f"video,subject,va\n{v},s1,a.csv\n{v},s2,a.csv\n{v},s3,nope.csv\n")
    with pytest.raises(LayoutError, match="line 4: annotation .*nope.csv does not exist"):
        get_dataset("csv").manifest(tmp_path, data_config(_cfg(task="continuous")))
    va = read_csv_va(tmp_path / "a.csv")
    assert va.shape == (3, 2)
    np.testing.assert_allclose(va[0], [0.1, 0.5])
    assert np.isnan(va[1]).all() and va[2, 1] == pytest.approx(0.2)


def test_arff_gold_standard_values(tmp_path):
    p = tmp_path / "train_1.arff"
    p.write_text("@relation GOLDSTANDARD\n@attribute Instance_name string\n@attribute frameTime numeric\n"
                 "@attribute GoldStandard numeric\n\n@data\n\ntrain_1,0.00,0.1\ntrain_1,0.04,-0.2\n")
    np.testing.assert_allclose(read_arff_values(p), [0.1, -0.2])
    (tmp_path / "bad.arff").write_text("@relation x\n")
    with pytest.raises(ValueError, match="no @data"):
        read_arff_values(tmp_path / "bad.arff")


def test_annotation_rows_of_the_wrong_width_name_their_line(tmp_path):
    """An Aff-Wild2 file of one value per line is not read as pairs of lines, and a short CSV row is not
    read as an unannotated frame: both stop, naming the file and line."""
    from raybench.data.annotations import read_va

    va = tmp_path / "a.txt"
    va.write_text("valence,arousal\n0.1,0.2\n\n-5,-5\n0.3,0.4\n")
    got = read_va(va)
    assert got.shape == (3, 2) and np.isnan(got[1]).all() and np.allclose(got[[0, 2]], [[0.1, 0.2], [0.3, 0.4]])
    va.write_text("valence,arousal\n0.1\n0.2\n0.3\n0.4\n")  # 4 numbers, one per line: not 2 frames
    with pytest.raises(ValueError, match=r"a.txt line 2: expected 'valence,arousal' \(two numbers\), got '0.1'"):
        read_va(va)
    va.write_text("valence,arousal\n0.1,0.2\n0.1,0.2,0.3\n")
    with pytest.raises(ValueError, match=r"line 3: .*got '0.1,0.2,0.3' \(3 value"):
        read_va(va)
    csv_va = tmp_path / "b.csv"
    csv_va.write_text("frame,valence,arousal\n0,0.1,0.2\n1,,0.3\n2,0.5\n")
    with pytest.raises(ValueError, match=r"b.csv line 4: 2 cell\(s\), the header has 3"):
        read_csv_va(csv_va)
    csv_va.write_text("frame,valence,arousal\n0,0.1,0.2\n1,,0.3\n")  # an empty cell: that frame unannotated
    got = read_csv_va(csv_va)
    assert np.isnan(got[1, 0]) and np.allclose(got[[0], :], [[0.1, 0.2]]) and got[1, 1] == np.float32(0.3)


def test_a_csv_store_is_another_when_its_labels_are(tiny_ravdess, tmp_path):
    """The store keeps each clip's label index and annotation: another class order or an edited label is
    another store; a split setting (not in the store) is not."""
    from raybench.data.store import fingerprint

    _write_manifest(tmp_path, tiny_ravdess)
    ds = get_dataset("csv")

    def fp(**kw):
        cfg = data_config({**_cfg(**kw), "dataset": "csv", "root": str(tmp_path)})
        return fingerprint("csv", tmp_path, cfg, ds.manifest(tmp_path, cfg))

    base = fp(classes=list(EMO))
    assert fp(classes=list(EMO)) == base
    assert fp(classes=list(reversed(EMO))) != base  # the same names, other indices
    cfg = data_config({**_cfg(classes=list(EMO)), "dataset": "csv", "root": str(tmp_path)})
    cfg.split.val_fraction = 0.3
    assert fingerprint("csv", tmp_path, cfg, ds.manifest(tmp_path, cfg)) == base
    text = (tmp_path / "manifest.csv").read_text().splitlines()
    video, subject, _ = text[1].split(",")
    (tmp_path / "manifest.csv").write_text("\n".join([text[0], f"{video},{subject},surprised", *text[2:]]) + "\n")
    assert fp(classes=list(EMO)) != base  # one label edited in place
