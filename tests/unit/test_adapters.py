import shutil

import pytest

from raybench.data.datasets import DATASETS, LayoutError, get_dataset
from raybench.data.manifest import Clip, assign_splits

DATA_CFG = {"split": {"seed": 0, "val_fraction": 0.34, "test_fraction": 0.34}, "ravdess": {"channels": ["speech"]}}


def test_ravdess_manifest_ignores_other_files(tiny_ravdess, tmp_path):
    root = tmp_path / "r"
    shutil.copytree(tiny_ravdess, root)
    a1 = root / "Actor_01"
    (a1 / "02-01-03-01-01-01-01.mp4").write_bytes(b"video-only file")  # modality 02: not audio-visual
    (a1 / "01-02-03-01-01-01-01.mp4").write_bytes(b"song")  # song: off by default
    (a1 / "notes.txt").write_text("unrelated")
    clips = get_dataset("ravdess").manifest(root, DATA_CFG)
    assert len(clips) == 45
    assert {c.label for c in clips} == set(range(8))
    assert all(c.video_path.endswith(".mp4") and "/02-" not in c.video_path for c in clips)
    song = get_dataset("ravdess").manifest(root, {**DATA_CFG, "ravdess": {"channels": ["speech", "song"]}})
    assert len(song) == 46


def test_ravdess_split_is_speaker_independent_and_seeded(tiny_ravdess):
    ds = get_dataset("ravdess")
    clips = ds.manifest(tiny_ravdess, DATA_CFG)
    by_subject = {}
    for c in clips:
        by_subject.setdefault(c.subject, set()).add(c.split)
    assert all(len(s) == 1 for s in by_subject.values())
    assert {c.split for c in clips} == {"train", "val", "test"}
    again = ds.manifest(tiny_ravdess, DATA_CFG)
    assert [c.split for c in clips] == [c.split for c in again]


def test_assign_splits_every_clip_once_and_other_seed_differs():
    clips = [Clip(f"c{i}", f"v{i}", subject=f"s{i % 10}") for i in range(50)]
    a = assign_splits([Clip(**vars(c)) for c in clips], 0.2, 0.2, seed=1)
    b = assign_splits([Clip(**vars(c)) for c in clips], 0.2, 0.2, seed=2)
    assert all(c.split in ("train", "val", "test") for c in a)
    assert sum(c.split == "test" for c in a) == 10 and sum(c.split == "val" for c in a) == 10
    assert [c.split for c in a] != [c.split for c in b]


def test_ravdess_layout_error_says_what_was_expected(tmp_path):
    (tmp_path / "something").mkdir()
    (tmp_path / "something" / "a.mp4").write_bytes(b"")
    with pytest.raises(LayoutError) as e:
        get_dataset("ravdess").manifest(tmp_path, DATA_CFG)
    msg = str(e.value)
    assert "Actor_" in msg and "something" in msg


def test_affwild2_manifest_official_validation_is_test(tiny_affwild2):
    clips = get_dataset("affwild2").manifest(tiny_affwild2, DATA_CFG)
    assert len(clips) == 4
    val_set = [c for c in clips if c.meta["official_split"] == "Validation_Set"]
    assert val_set and all(c.split == "test" for c in val_set)
    assert {c.split for c in clips if c.meta["official_split"] == "Train_Set"} == {"train", "val"}
    assert all(c.va_path and c.label is None for c in clips)


def test_affwild2_left_right_annotations_share_a_video(tiny_affwild2, tmp_path):
    root = tmp_path / "a"
    shutil.copytree(tiny_affwild2, root)
    ann = root / "annotations/VA_Set/Train_Set"
    src = ann / "1-30-64x64.txt"
    shutil.copy(src, ann / "1-30-64x64_left.txt")
    shutil.move(src, ann / "1-30-64x64_right.txt")
    clips = {c.clip_id: c for c in get_dataset("affwild2").manifest(root, DATA_CFG)}
    assert clips["1-30-64x64_left"].video_path == clips["1-30-64x64_right"].video_path
    assert clips["1-30-64x64_left"].subject != clips["1-30-64x64_right"].subject


def test_affwild2_annotation_without_video_is_named(tiny_affwild2, tmp_path):
    root = tmp_path / "a"
    shutil.copytree(tiny_affwild2, root)
    (root / "annotations/VA_Set/Train_Set/99-30-640x360.txt").write_text("valence,arousal\n0.1,0.2\n")
    with pytest.raises(LayoutError, match="99-30-640x360.txt"):
        get_dataset("affwild2").manifest(root, DATA_CFG)


def test_registry_knows_the_datasets_and_suggests():
    assert {"ravdess", "affwild2", "synthetic_ravdess", "synthetic_affwild2"} <= set(DATASETS.names())
    with pytest.raises(KeyError, match='did you mean "ravdess"'):
        DATASETS.get("ravdes")
