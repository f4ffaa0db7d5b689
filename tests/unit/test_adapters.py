import shutil

import numpy as np
import pytest

from raybench.data.datasets import DATASETS, LayoutError, get_dataset
from raybench.data.manifest import Clip, assign_splits
from raybench.schema import data_config

DATA_CFG = {"split": {"seed": 0, "val_fraction": 0.34, "test_fraction": 0.34}, "ravdess": {"channels": ["speech"]}}


def test_ravdess_manifest_ignores_other_files(tiny_ravdess, tmp_path):
    root = tmp_path / "r"
    shutil.copytree(tiny_ravdess, root)
    a1 = root / "Actor_01"
    (a1 / "02-01-03-01-01-01-01.mp4").write_bytes(b"video-only file")  # modality 02: not audio-visual
    (a1 / "01-02-03-01-01-01-01.mp4").write_bytes(b"song")  # song: off by default
    (a1 / "notes.txt").write_text("unrelated")
    clips = get_dataset("ravdess").manifest(root, data_config(DATA_CFG))
    assert len(clips) == 45
    assert {c.label for c in clips} == set(range(8))
    assert all(c.video_path.endswith(".mp4") and "/02-" not in c.video_path for c in clips)
    song = get_dataset("ravdess").manifest(root, data_config({**DATA_CFG, "ravdess": {"channels": ["speech", "song"]}}))
    assert len(song) == 46


def test_ravdess_split_is_speaker_independent_and_seeded(tiny_ravdess):
    ds = get_dataset("ravdess")
    clips = ds.manifest(tiny_ravdess, data_config(DATA_CFG))
    by_subject = {}
    for c in clips:
        by_subject.setdefault(c.subject, set()).add(c.split)
    assert all(len(s) == 1 for s in by_subject.values())
    assert {c.split for c in clips} == {"train", "val", "test"}
    again = ds.manifest(tiny_ravdess, data_config(DATA_CFG))
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
        get_dataset("ravdess").manifest(tmp_path, data_config(DATA_CFG))
    msg = str(e.value)
    assert "Actor_" in msg and "something" in msg


def test_affwild2_manifest_official_validation_is_test(tiny_affwild2):
    clips = get_dataset("affwild2").manifest(tiny_affwild2, data_config(DATA_CFG))
    assert len(clips) == 4
    val_set = [c for c in clips if c.meta["official_split"] == "Validation_Set"]
    assert val_set and all(c.split == "test" for c in val_set)
    assert {c.split for c in clips if c.meta["official_split"] == "Train_Set"} == {"train", "val"}
    assert all(c.va_path and c.label is None for c in clips)
    # Zhang et al.'s protocol: fold 0 validates on the official Validation_Set, no test split
    chunks = get_dataset("affwild2").manifest(tiny_affwild2, data_config({**DATA_CFG, "fold": 0, "split": {
        **DATA_CFG["split"], "folds": 3, "protocol": "chunks", "test_fraction": 0.0}}))
    assert {c.clip_id for c in chunks if c.split == "val"} == {c.clip_id for c in val_set}
    assert {c.split for c in chunks if c.clip_id not in {v.clip_id for v in val_set}} == {"train"}


def test_affwild2_left_right_annotations_share_a_video(tiny_affwild2, tmp_path):
    root = tmp_path / "a"
    shutil.copytree(tiny_affwild2, root)
    ann = root / "annotations/VA_Set/Train_Set"
    src = ann / "1-30-64x64.txt"
    shutil.copy(src, ann / "1-30-64x64_left.txt")
    shutil.move(src, ann / "1-30-64x64_right.txt")
    clips = {c.clip_id: c for c in get_dataset("affwild2").manifest(root, data_config(DATA_CFG))}
    assert clips["1-30-64x64_left"].video_path == clips["1-30-64x64_right"].video_path
    # one video is one subject (same frames, same audio): the two sides never land in different splits
    assert clips["1-30-64x64_left"].subject == clips["1-30-64x64_right"].subject == "1-30-64x64"
    for seed in range(8):
        cfg = {**DATA_CFG, "split": {**DATA_CFG["split"], "seed": seed}}
        c = {c.clip_id: c for c in get_dataset("affwild2").manifest(root, data_config(cfg))}
        assert c["1-30-64x64_left"].split == c["1-30-64x64_right"].split


def test_affwild2_reads_the_va_track_beside_the_others_and_the_2020_names(tiny_affwild2, tmp_path):
    root = tmp_path / "a"
    shutil.copytree(tiny_affwild2, root)
    for track in ("AU_Detection_Challenge", "EXPR_Classification_Challenge"):  # as released: all tracks side by side
        for split in ("Train_Set", "Validation_Set"):
            (root / "annotations" / track / split).mkdir(parents=True)
            (root / "annotations" / track / split / "1-30-64x64.txt").write_text("Neutral,Anger\n0\n")
    (root / "annotations/VA_Set").rename(root / "annotations/VA_Estimation_Challenge")
    clips = get_dataset("affwild2").manifest(root, data_config(DATA_CFG))
    assert len(clips) == 4 and all("/VA_Estimation_Challenge/" in c.va_path for c in clips)
    (root / "annotations/VA_Estimation_Challenge/Train_Set").rename(
        root / "annotations/VA_Estimation_Challenge/Training_Set")  # ABAW 2020's name
    clips = get_dataset("affwild2").manifest(root, data_config(DATA_CFG))
    assert len(clips) == 4 and {c.meta["official_split"] for c in clips} == {"Train_Set", "Validation_Set"}
    shutil.copytree(root / "annotations/VA_Estimation_Challenge", root / "old/VA_Set")  # two copies: which one?
    with pytest.raises(LayoutError, match=r"more than one VA annotation folder Train_Set: "
                                          r"annotations/VA_Estimation_Challenge/Training_Set, old/VA_Set/Training_Set"):
        get_dataset("affwild2").manifest(root, data_config(DATA_CFG))


def test_affwild2_face_crops_by_the_annotations_own_name(tiny_affwild2, tmp_path):
    root = tmp_path / "a"
    shutil.copytree(tiny_affwild2, root)
    ann = root / "annotations/VA_Set/Train_Set"
    shutil.copy(ann / "1-30-64x64.txt", ann / "1-30-64x64_left.txt")
    shutil.move(ann / "1-30-64x64.txt", ann / "1-30-64x64_right.txt")
    (root / "cropped_aligned/cropped_aligned/2-30-64x64").mkdir(parents=True)  # unpacked one level deeper
    (root / "cropped_aligned_new_50_vids/3-30-64x64").mkdir(parents=True)  # a later edition's extra crops
    (root / "cropped_aligned_new_50_vids/1-30-64x64_left").mkdir(parents=True)
    (root / "cropped_aligned/1-30-64x64").mkdir()  # the whole video's crops: not a side's face
    clips = {c.clip_id: c for c in get_dataset("affwild2").manifest(root, data_config(DATA_CFG))}
    crops = {k: c.meta.get("crops_dir") for k, c in clips.items()}
    assert crops["2-30-64x64"] == str(root / "cropped_aligned/cropped_aligned/2-30-64x64")
    assert crops["3-30-64x64"] == str(root / "cropped_aligned_new_50_vids/3-30-64x64")
    assert crops["1-30-64x64_left"] == str(root / "cropped_aligned_new_50_vids/1-30-64x64_left")
    assert crops["1-30-64x64_right"] is None and crops["4-30-64x64"] is None


def test_affwild2_parts_of_one_recording_are_one_subject(tiny_affwild2, tmp_path):
    """Aff-Wild2 releases some recordings in parts, each its own video (122-60-1920x1080-1 .. -5,
    video45_1 .. _7, video10_1_left): the same people, so one subject."""
    root = tmp_path / "a"
    shutil.copytree(tiny_affwild2, root)
    ann, vids = root / "annotations/VA_Set/Train_Set", root / "videos"
    video = next(vids.glob("1-30-64x64.*"))
    for name in ("1-30-64x64-1", "1-30-64x64-2", "video45_1", "video45_2"):
        shutil.copy(video, vids / f"{name}{video.suffix}")
        shutil.copy(ann / "1-30-64x64.txt", ann / f"{name}.txt")
    shutil.copy(ann / "1-30-64x64.txt", ann / "video45_2_left.txt")
    subjects = {c.clip_id: c.subject for c in get_dataset("affwild2").manifest(root, data_config(DATA_CFG))}
    assert subjects["1-30-64x64-1"] == subjects["1-30-64x64-2"] == "1-30-64x64" == subjects["1-30-64x64"]
    assert subjects["video45_1"] == subjects["video45_2"] == subjects["video45_2_left"] == "video45"
    assert subjects["2-30-64x64"] == "2-30-64x64"


def test_affwild2_annotation_without_video_is_named(tiny_affwild2, tmp_path):
    root = tmp_path / "a"
    shutil.copytree(tiny_affwild2, root)
    (root / "annotations/VA_Set/Train_Set/99-30-640x360.txt").write_text("valence,arousal\n0.1,0.2\n")
    with pytest.raises(LayoutError, match="99-30-640x360.txt"):
        get_dataset("affwild2").manifest(root, data_config(DATA_CFG))


def test_registry_knows_the_datasets_and_suggests():
    assert {"ravdess", "affwild2", "synthetic_ravdess", "synthetic_affwild2"} <= set(DATASETS.names())
    with pytest.raises(KeyError, match='did you mean "ravdess"'):
        DATASETS.get("ravdes")


def _folds_cfg(k, fold, seed=0):
    return {**DATA_CFG, "split": {**DATA_CFG["split"], "folds": k, "seed": seed}, "fold": fold}


def test_kfold_by_subject_no_subject_in_two_folds_and_every_clip_in_one_split():
    from raybench.data.manifest import split_clips

    base = [Clip(f"c{i}", f"v{i}", subject=f"s{i % 7}") for i in range(70)]
    runs = {f: split_clips([Clip(**vars(c)) for c in base], data_config(_folds_cfg(3, f))) for f in range(3)}
    folds_of = {}
    for c in runs[0]:
        folds_of.setdefault(c.subject, set()).add(c.fold)
    assert all(len(v) == 1 for v in folds_of.values())  # a subject is in exactly one fold
    sizes = sorted(sum(1 for s in folds_of.values() if s == {f}) for f in range(3))
    assert sizes == [2, 2, 3]  # 7 subjects dealt into 3 folds
    for f, clips in runs.items():
        assert all(c.split in ("train", "val", "test") for c in clips)
        assert {c.fold for c in clips if c.split == "test"} == {f}
        val = {c.subject for c in clips if c.split == "val"}
        train = {c.subject for c in clips if c.split == "train"}
        assert val and train and not val & train and f not in {c.fold for c in clips if c.split != "test"}
        assert [c.fold for c in clips] == [c.fold for c in runs[0]]  # the folds do not depend on data.fold
    # over the k runs every clip is held out (tested) exactly once
    tested = [c.clip_id for clips in runs.values() for c in clips if c.split == "test"]
    assert sorted(tested) == sorted(c.clip_id for c in base)
    # same seed -> same folds; another seed -> other folds
    again = split_clips([Clip(**vars(c)) for c in base], data_config(_folds_cfg(3, 0)))
    assert [c.fold for c in again] == [c.fold for c in runs[0]]
    other = split_clips([Clip(**vars(c)) for c in base], data_config(_folds_cfg(3, 0, seed=5)))
    assert [c.fold for c in other] != [c.fold for c in runs[0]]


def test_kfold_keeps_an_official_test_split_and_rotates_validation():
    from raybench.data.manifest import split_clips

    clips = [Clip(f"c{i}", f"v{i}", subject=f"s{i % 4}") for i in range(8)]
    clips.append(Clip("official", "v", subject="other", split="test"))
    out = split_clips(clips, data_config(_folds_cfg(2, 1)))
    assert next(c for c in out if c.clip_id == "official").split == "test"
    assert {c.split for c in out if c.clip_id != "official"} == {"train", "val"}
    assert {c.fold for c in out if c.split == "val"} == {1}


def test_kfold_needs_enough_subjects():
    from raybench.data.manifest import split_clips

    with pytest.raises(ValueError, match="data.split.folds=3 needs at least 3 subjects"):
        split_clips([Clip("a", "v", subject="s0"), Clip("b", "v", subject="s1")], data_config(_folds_cfg(3, 0)))


def test_ravdess_video_only_files_with_the_audio_only_wavs(tiny_ravdess, tmp_path):
    import numpy as np

    from raybench.data.synth import write_wav

    root = tmp_path / "r"
    shutil.copytree(tiny_ravdess, root)
    vids = sorted((root / "Actor_01").glob("01-01-*.mp4"))
    for v in vids[:3]:  # video-only twins of three recordings, with the audio-only WAV of two of them
        shutil.copy(v, v.with_name("02" + v.name[2:]))
    for v in vids[:2]:
        write_wav(root / "Audio_Speech" / "Actor_01" / ("03" + v.stem[2:] + ".wav"), np.zeros(160, np.float32), 16000)
    ds = get_dataset("ravdess")
    cfg = {**DATA_CFG, "ravdess": {"channels": ["speech"], "video": "video_only", "audio": "wav"}}
    clips = ds.manifest(root, data_config(cfg))
    assert sorted(c.clip_id for c in clips) == sorted("02" + v.stem[2:] for v in vids[:2])
    assert all(c.meta["audio_path"].endswith(".wav") and "/03-" in c.meta["audio_path"] for c in clips)
    av_wav = ds.manifest(root, data_config({**DATA_CFG, "ravdess": {"channels": ["speech"], "video": "av", "audio": "wav"}}))
    assert len(av_wav) == 2 and all(c.clip_id.startswith("01-") for c in av_wav)


def test_ravdess_video_only_needs_wav_audio():
    from raybench.config import SWEEPS_DIR, ConfigError, load

    with pytest.raises(ConfigError, match="video_only files have no audio track"):
        load(SWEEPS_DIR / "smoke.yaml", ["data.dataset=ravdess", "data.ravdess.video=video_only"])


def _chunks_cfg(k, fold, test_fraction=0.0, chunks="authors"):
    return {**DATA_CFG, "split": {**DATA_CFG["split"], "folds": k, "protocol": "chunks", "chunks": chunks,
                                  "test_fraction": test_fraction}, "fold": fold}


def test_chunks_protocol_cuts_the_training_files_as_the_authors_code(capsys):
    """sucv/ABAW2 (base/dataset.py): the Train_Set annotation files as listed (by name on their file
    system) in slices [0:70], [70:140], [140:210], [210:280], [280:351], the official Validation_Set
    sixth; fold f puts numpy.roll(range(6), f)[-1] last and validates on it. Expected sets computed
    here from that description, on 351 names in shuffled order with mixed case and _left/_right."""
    import random

    from raybench.data.manifest import split_clips, subjects_in_two_folds

    names = [f"{i}-30-640x360" for i in range(100)] + [f"video{i}" for i in range(120)] + \
        [f"Video{i}_left" for i in range(60)] + [f"video{i}_right" for i in range(71)]
    assert len(names) == 351
    official = [f"val{i}" for i in range(5)]
    listed = sorted(names, key=lambda n: (n + ".txt").upper())  # os.walk on NTFS: upper-cased file names
    parts = [listed[0:70], listed[70:140], listed[140:210], listed[210:280], listed[280:351], official]
    shuffled = names[:]
    random.Random(3).shuffle(shuffled)
    for f in range(6):
        clips = [Clip(n, "v", subject=n.split("_")[0], meta={"official": "train"}) for n in shuffled]
        clips += [Clip(n, "v", subject=n, split="test", meta={"official": "val"}) for n in official]
        got = split_clips(clips, data_config(_chunks_cfg(6, f)))
        expect = set(parts[np.roll(np.arange(6), f)[-1]])
        assert {c.clip_id for c in got if c.split == "val"} == expect, f
        assert {c.split for c in got if c.clip_id not in expect} == {"train"}
        assert all(c.fold == f for c in got if c.split == "val")
    # file names, ".txt" included, as their list has them: "106-30-720x1280.txt" before "106.txt"
    names = ["107", "106", "107-30-640x480", "106-30-720x1280"]
    for f, val in enumerate(["107", "107-30-640x480", "106", "106-30-720x1280"]):  # k = 4 chunks of one
        clips = [Clip(n, "v", subject=n, va_path=f"/a/VA_Set/Train_Set/{n}.txt") for n in names]
        assert [c.clip_id for c in split_clips(clips, data_config(_chunks_cfg(4, f))) if c.split == "val"] == [val]
    # a video's _left and _right files fall in two chunks here, as in the authors' code (and it is said) ...
    clips = [Clip(n, "v", subject=n.split("_")[0], meta={"official": "train"}) for n in ["a_left", "a_right", "b", "c"]]
    folds = {c.clip_id: c.fold for c in split_clips(clips, data_config(_chunks_cfg(4, 0, chunks="authors")))}
    assert folds["a_left"] != folds["a_right"]
    assert ("data.split.chunks=authors: 1 subject(s) have clips in two chunks (first: a), as in zhang2021's "
            "authors' code") in capsys.readouterr().out
    assert subjects_in_two_folds(clips) == ["a"]  # what MLflow records (data/<dataset>/subjects_in_two_folds)
    # ... never with chunks: subjects
    clips = [Clip(n, "v", subject=n.split("_")[0], meta={"official": "train"}) for n in ["a_left", "a_right", "b", "c"]]
    folds = {c.clip_id: c.fold for c in split_clips(clips, data_config(_chunks_cfg(3, 0, chunks="subjects")))}
    assert folds["a_left"] == folds["a_right"]
    assert subjects_in_two_folds(clips) == [] and "two chunks" not in capsys.readouterr().out


def test_chunks_protocol_rotates_training_chunks_and_the_official_validation_set():
    """Zhang et al. 2021: 5 chunks of the training videos + the official validation set; fold f
    rotates the list by f and validates on the last part; fold 0 is the official split."""
    from raybench.data.manifest import split_clips

    def base():
        train = [Clip(f"t{i}", "v", subject=f"t{i}", meta={"official": "train"}) for i in range(10)]
        val = [Clip(f"o{i}", "v", subject=f"o{i}", split="test", meta={"official": "val"}) for i in range(3)]
        return train + val  # as the Aff-Wild2 adapter marks them

    runs = {f: {c.clip_id: c for c in split_clips(base(), data_config(_chunks_cfg(6, f)))} for f in range(6)}
    official = {f"o{i}" for i in range(3)}
    val_sets = [frozenset(i for i, c in runs[f].items() if c.split == "val") for f in range(6)]
    assert val_sets[0] == official  # fold 0: the official split
    assert all(not (v & official) for v in val_sets[1:])
    # the six validation parts are disjoint and cover every clip: each validates exactly once
    assert sorted(i for v in val_sets for i in v) == sorted(runs[0])
    assert sorted(len(v) for v in val_sets[1:]) == [2, 2, 2, 2, 2]  # 10 training videos in 5 chunks
    for f in range(6):
        assert {c.split for c in runs[f].values()} == {"train", "val"}  # no test: test_fraction 0
        assert all(c.fold == f for c in runs[f].values() if c.split == "val")
        assert [c.fold for c in runs[f].values()] == [c.fold for c in runs[0].values()]
    # rotation as numpy.roll(range(6), f): fold f validates chunk 5 - f (t0 t1 in chunk 0, ... t8 t9 in chunk 4)
    for f in range(1, 6):
        assert val_sets[f] == {f"t{2 * (5 - f)}", f"t{2 * (5 - f) + 1}"}


def test_chunks_protocol_holds_out_one_test_split_for_every_fold():
    from raybench.data.manifest import split_clips

    base = [Clip(f"c{i}", "v", subject=f"s{i % 10}") for i in range(30)]  # no official split
    runs = [split_clips([Clip(**vars(c)) for c in base],
                        data_config(_chunks_cfg(3, f, test_fraction=0.2, chunks="subjects"))) for f in range(3)]
    tests = [{c.clip_id for c in r if c.split == "test"} for r in runs]
    assert tests[0] and tests[0] == tests[1] == tests[2]  # the same test clips in every fold
    assert len({c.subject for c in runs[0] if c.split == "test"}) == 2
    vals = [{c.subject for c in r if c.split == "val"} for r in runs]
    assert all(vals) and not (vals[0] & vals[1]) and not (vals[1] & vals[2]) and not (vals[0] & vals[2])
    assert sorted(s for v in vals for s in v) == sorted({c.subject for c in runs[0] if c.split != "test"})
    with pytest.raises(ValueError, match="needs at least 3 training subjects"):
        split_clips([Clip("a", "v", subject="s0"), Clip("b", "v", subject="s1")],
                    data_config(_chunks_cfg(3, 0, chunks="subjects")))
    with pytest.raises(ValueError, match="needs at least 3 training clips"):
        split_clips([Clip("a", "v", subject="s0"), Clip("b", "v", subject="s1")], data_config(_chunks_cfg(3, 0)))


def test_chunks_protocol_needs_folds():
    from raybench.config import ConfigError, validate

    with pytest.raises(ConfigError, match="chunks needs 'data.split.folds'"):
        validate({"data": {"split": {"protocol": "chunks"}}})
    with pytest.raises(ConfigError, match="'data.split.protocol' must be one of subjects, chunks"):
        validate({"data": {"split": {"protocol": "chunk", "folds": 3}}})
