import json

import numpy as np
import pytest

from raybench.data import synth
from raybench.data.annotations import read_va
from raybench.data.datasets.ravdess import NAME_RE, parse_name
from raybench.data.decode import decode_clip


def test_ravdess_tree_names_and_counts(tiny_ravdess):
    files = sorted(tiny_ravdess.glob("Actor_*/*.mp4"))
    # 3 actors x (neutral 1 intensity + 7 emotions x 2 intensities) x 1 statement x 1 repetition
    assert len(files) == 3 * 15
    for f in files:
        assert NAME_RE.match(f.name), f.name
        info = parse_name(f.name)
        assert info["modality"] == 1 and info["channel"] == 1
        assert f.parent.name == f"Actor_{info['actor']:02d}"
        assert not (info["emotion"] == 1 and info["intensity"] == 2), "neutral has no strong intensity"
    info = json.loads((tiny_ravdess / "raybench_synthetic.json").read_text())
    assert info["layout"] == "ravdess" and info["clips"] == 45


def test_same_seed_same_files_other_seed_differs(tmp_path, monkeypatch):
    """The generator is deterministic by seed: the frames and audio it encodes are identical, and so
    are the files, whether written in one process or in a pool (in any order)."""
    written = {}
    real = synth.write_mp4

    def capture(path, frames, fps, audio, sr):
        written.setdefault(path.parent.parent.name, {})[path.name] = (frames.copy(), audio.copy())
        real(path, frames, fps, audio, sr)

    monkeypatch.setattr(synth, "write_mp4", capture)
    kw = dict(actors=1, statements=1, repetitions=1, seconds=0.5, fps=10, size=32)
    for name, seed in (("a", 3), ("c", 4)):
        synth.generate("ravdess", tmp_path / name, seed=seed, workers=1, **kw)
    synth.generate("ravdess", tmp_path / "b", seed=3, workers=2, **kw)  # a process pool: no capture
    roots = {n: next(p for p in written if p.startswith(f".{n}.")) for n in "ac"}
    a, c = (written[roots[n]] for n in "ac")
    assert a.keys() == c.keys() and len(a) == 15
    assert sum(not np.array_equal(a[k][1], c[k][1]) for k in a) == len(a)
    for k in a:
        fa, fb, fc = ((tmp_path / n / "Actor_01" / k).read_bytes() for n in "abc")
        assert fa == fb, k
        assert fa != fc, k


def test_same_frames_encode_to_the_same_bytes(tmp_path):
    """libx264's macroblock-tree rate control made repeated encodes of one clip differ (two generations
    of the synthetic RAVDESS set differed in a quarter of their clips); the writer turns it off."""
    rng = np.random.default_rng(0)
    actor = synth.Actor.make(1, rng)
    base = dict(curve=-1.0, open=0.0, brow_tilt=1.0, brow_h=0.0, eye=-0.5, tremor=1.0)
    frames = np.stack([
        np.clip(synth.render_face(64, actor, base, talk=0.5 + 0.5 * np.sin(i), offset=(0.03 * np.sin(4 * i), 0.0),
                                  light=1.0) + rng.normal(0, 6, (64, 64, 3)), 0, 255).astype(np.uint8)
        for i in range(30)])
    audio = (0.1 * np.sin(np.arange(32000) * 0.05)).astype(np.float32)
    digests = set()
    for i in range(12):
        synth.write_mp4(tmp_path / f"{i}.mp4", frames, 15, audio, 16000)
        digests.add((tmp_path / f"{i}.mp4").read_bytes())
    assert len(digests) == 1


def test_clips_are_real_h264_aac(tiny_ravdess):
    import av

    f = next(tiny_ravdess.glob("Actor_01/*.mp4"))
    with av.open(str(f)) as c:
        codecs = {s.type: s.codec_context.name for s in c.streams}
    assert codecs == {"video": "h264", "audio": "aac"}
    d = decode_clip(str(f), fps=10, image_size=64)
    assert d.frames.shape == (10, 64, 64, 3)
    assert d.audio.std() > 0.01  # a voiced track, not silence


def test_emotion_cues_follow_the_design():
    # pairs that differ in one modality only (DATASETS.md): the generator's cue tables say so
    E = synth.EMOTIONS
    assert E["neutral"]["face"] == E["calm"]["face"] and E["neutral"]["voice"] != E["calm"]["voice"]
    assert E["angry"]["face"] == E["disgust"]["face"] and E["angry"]["voice"] != E["disgust"]["voice"]
    assert E["happy"]["voice"] == E["surprised"]["voice"] and E["happy"]["face"] != E["surprised"]["face"]
    static = {k: v for k, v in E["fearful"]["face"].items() if k != "tremor"}
    assert static == {k: v for k, v in E["sad"]["face"].items() if k != "tremor"}
    assert E["fearful"]["face"]["tremor"] > E["sad"]["face"]["tremor"]


def test_face_renders_differ_by_emotion_not_only_by_nuisance():
    rng = np.random.default_rng(0)
    actor = synth.Actor.make(1, rng)
    img = {e: synth.render_face(64, actor, synth.EMOTIONS[e]["face"], 0.0, (0, 0), 1.0).astype(float)
           for e in ("neutral", "happy", "sad")}
    assert np.abs(img["happy"] - img["neutral"]).mean() > 0.5
    assert np.abs(img["sad"] - img["happy"]).mean() > 0.5
    assert np.array_equal(img["neutral"], synth.render_face(64, actor, synth.EMOTIONS["calm"]["face"], 0.0,
                                                            (0, 0), 1.0).astype(float))


def test_affwild2_tree_and_annotations(tiny_affwild2):
    videos = sorted((tiny_affwild2 / "videos").glob("*.mp4"))
    assert [v.stem for v in videos] == sorted(f"{i}-30-64x64" for i in range(1, 5))
    train = sorted((tiny_affwild2 / "annotations/VA_Set/Train_Set").glob("*.txt"))
    val = sorted((tiny_affwild2 / "annotations/VA_Set/Validation_Set").glob("*.txt"))
    assert len(train) == 3 and len(val) == 1
    text = train[0].read_text().splitlines()
    assert text[0] == "valence,arousal"
    assert len(text) - 1 == 40  # one line per frame: 4 s at 10 fps
    assert "-5,-5" in text  # some frames are not annotated
    va = read_va(train[0])
    assert va.shape == (40, 2) and np.isnan(va).any()
    ok = va[~np.isnan(va).any(1)]
    assert (np.abs(ok) <= 1).all() and ok.std(0).min() > 0.05


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        synth.main(["--help"])
    assert e.value.code == 0
    assert "ravdess" in capsys.readouterr().out


def test_synthetic_crema_d_is_read_by_the_crema_d_adapter_with_its_six_classes(tmp_path):
    from raybench.data.datasets.crema_d import EMOTIONS
    from raybench.data.synth import CREMA_D_CODES, EMOTION_NAMES
    from raybench.labels import canonical
    from raybench.registry import DATASETS
    from raybench.schema import DataConfig

    root = synth.generate("crema_d", tmp_path / "cd", actors=3, statements=2, seconds=0.5, fps=8, size=32, seed=0)
    clips = DATASETS.get("synthetic_crema_d").manifest(root, DataConfig(dataset="synthetic_crema_d"))
    assert len(clips) == 3 * 6 * 2 and all(c.video_path.endswith(".flv") for c in clips)
    assert sorted({c.subject for c in clips}) == ["actor1001", "actor1002", "actor1003"]
    for c in clips:  # each file's CREMA-D code is the class the generator drew, under the adapter's name
        code = c.clip_id.split("_")[2]
        assert canonical(EMOTIONS[c.label]) == CREMA_D_CODES[code] and CREMA_D_CODES[code] in EMOTION_NAMES
    assert sorted({c.label for c in clips}) == list(range(6))
