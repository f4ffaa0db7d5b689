"""A clip store keeps each clip's labels: a clip whose label or annotation file changed after it was
decoded is found by name and taken out of the store (to be decoded again), not trained on with its old
labels (tests/integration/test_pipeline.py decodes one again through build() on a real continuous
store); a sweep is not resumed on other labels than it started with."""

from __future__ import annotations

import pytest

from raybench.data.manifest import Clip
from raybench.data.store import (LABELS_FILE, ClipStore, PrepareError, changed_clips, label_digests, labels_digest,
                                 random_store)


def _clips(tmp_path, folder="a", label=None):
    d = tmp_path / folder
    if not d.exists():  # (a folder made once: later calls list the files as they are)
        d.mkdir()
        (d / "v1.txt").write_text("valence,arousal\n0.1,0.2\n0.3,0.4\n")
        (d / "v2.txt").write_text("valence,arousal\n0.5,0.6\n")
    return [Clip("clip00000", "x.mp4", "s1", va_path=str(d / "v1.txt")),
            Clip("clip00001", "y.mp4", "s2", va_path=str(d / "v2.txt")),
            Clip("clip00002", "z.mp4", "s3", label=label if label is not None else 3)]


def test_the_digest_follows_the_labels_and_the_annotations_bytes_not_the_path(tmp_path):
    here, there = label_digests(_clips(tmp_path, "a")), label_digests(_clips(tmp_path, "b"))
    assert here == there and len(set(here.values())) == 3  # another folder (a mirror, a machine): alike
    assert label_digests(_clips(tmp_path, "a", label=4))["clip00002"] != here["clip00002"]
    (tmp_path / "a" / "v1.txt").write_text("valence,arousal\n0.1,0.2\n0.3,0.5\n")
    moved = label_digests(_clips(tmp_path, "a"))
    assert moved["clip00000"] != here["clip00000"] and moved["clip00001"] == here["clip00001"]


def test_a_stored_clip_decoded_from_another_annotation_is_found_by_name(tmp_path):
    store = ClipStore(tmp_path / "store")
    random_store(store.path, [3, 4], task="continuous", image_size=4, n_mels=2)  # holds clip00000, clip00001
    clips = _clips(tmp_path)
    assert changed_clips(store, clips, label_digests(clips)) == []  # a store from before labels.json: nothing to compare
    store.record(LABELS_FILE, label_digests(clips))
    (tmp_path / "a" / "v2.txt").write_text("valence,arousal\n0.5,0.7\n")  # a corrected release
    (tmp_path / "a" / "v1.txt").write_text("valence,arousal\n0.1,0.2\n0.3,0.4\n")  # rewritten, the same bytes
    assert [c.clip_id for c in changed_clips(store, clips, label_digests(clips))] == ["clip00001"]
    (tmp_path / "a" / "v2.txt").write_text("valence,arousal\n0.5,0.6\n")  # put back: nothing changed
    assert changed_clips(store, clips, label_digests(clips)) == []
    # a clip the store does not hold (clip00002: recorded, but its part is gone) may change freely
    store.record(LABELS_FILE, {"clip00002": "0" * 16})
    assert changed_clips(store, clips, label_digests(clips)) == []
    assert labels_digest(label_digests(clips)) != labels_digest({**label_digests(clips), "clip00002": "0" * 16})


def test_dropping_clips_rewrites_their_parts_without_them_and_keeps_every_other_clip(tmp_path):
    """``drop_clips`` takes clips out of their part files (the others stay, once each, readable),
    with their bad marks and warnings; the index no longer matches, so the parts are read. The part
    of clip00000-1 is in the layout before 2026-11-30 (both clips in one row group)."""
    import pyarrow.parquet as pq

    store = ClipStore(tmp_path / "store")
    random_store(store.path, [3, 4, 5, 6], task="continuous", image_size=4, n_mels=2, clips_per_part=2)
    before = {r["clip_id"]: r for r in store.read_clips()}
    parts = store.part_files()
    old = next(p for p in parts if "clip00001" in pq.read_table(p, columns=["clip_id"]).column("clip_id").to_pylist())
    pq.write_table(pq.read_table(old), old, row_group_size=2)
    store.write_index()
    assert len(store.row_groups()) == 3
    store.write_text("warnings/clip00001.json", '{"clip_id": "clip00001", "video_path": "v", "warning": "w"}')
    store.mark_bad("clip00009", "z.mp4", "bad annotation: short", labels="0" * 16)
    assert store.bad()["clip00009"]["labels"] == "0" * 16
    store.drop_clips({"clip00001", "clip00009"})
    assert len(store.part_files()) == 2 and len(set(parts) & set(store.part_files())) == 1  # clip00002-3's kept
    after = store.read_clips()
    assert sorted(r["clip_id"] for r in after) == ["clip00000", "clip00002", "clip00003"]
    for r in after:  # the same rows, each once
        assert r == before[r["clip_id"]]
    assert store.done_ids() == {"clip00000", "clip00002", "clip00003"}
    groups = store.row_groups()  # (the index, written before, no longer covers the parts: read from them)
    assert sorted(r["clip_id"] for g in groups for r in store.iter_groups([g])) == ["clip00000", "clip00002",
                                                                                      "clip00003"]
    assert store.warnings() == {} and store.bad() == {}


def test_a_bad_mark_is_stale_once_its_files_change_and_an_old_one_never_is(tmp_path):
    """stale_clips: a clip the store holds decoded from other files, and one marked bad when its
    files were others, are decoded again; a bad mark without a digest (before 2026-12-03) stays."""
    from types import SimpleNamespace

    from raybench.data.store import stale_clips

    store = ClipStore(tmp_path / "store")
    random_store(store.path, [3], task="continuous", image_size=4, n_mels=2)  # holds clip00000
    clips = _clips(tmp_path)
    then = label_digests(clips)
    store.record(LABELS_FILE, then)
    store.mark_bad("clip00001", "y.mp4", "bad annotation: short", labels=then["clip00001"])
    store.mark_bad("clip00002", "z.mp4", "no audio track")  # no digest recorded

    def stale():
        now = label_digests(clips)
        plan = SimpleNamespace(store=store, clips=clips, labels=now, media=None)
        return [[c.clip_id for c in x] for x in stale_clips(plan)]

    assert stale() == [[], []]
    (tmp_path / "a" / "v2.txt").write_text("valence,arousal\n0.5,0.7\n")  # the bad clip's file mended
    assert stale() == [[], ["clip00001"]]
    (tmp_path / "a" / "v1.txt").write_text("valence,arousal\n0.1,0.2\n0.3,0.9\n")
    clips[2] = Clip("clip00002", "z.mp4", "s3", label=5)
    assert stale() == [["clip00000"], ["clip00001"]]


def test_a_build_records_what_it_decodes_from_before_decoding(tmp_path, monkeypatch):
    """build takes a clip whose annotation changed out of the store and records the new digest of every
    clip it is about to decode before the decoding (cut short here, as Ctrl-C would): a clip decoded
    from the new files before the cut, with the old files put back after it, is found stale again."""
    from types import SimpleNamespace

    import ray

    from raybench.data.store import build

    store = ClipStore(tmp_path / "store")
    random_store(store.path, [3, 4], task="continuous", image_size=4, n_mels=2)
    clips = _clips(tmp_path)
    store.record(LABELS_FILE, label_digests(clips))
    (tmp_path / "a" / "v1.txt").write_text("valence,arousal\n0.1,0.2\n0.3,0.9\n")  # clip00000's corrected
    now = label_digests(clips)

    class Cut(Exception):
        pass

    def from_items(*a, **k):
        raise Cut

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(ray.data, "from_items", from_items)
    p = SimpleNamespace(name="ds", data_cfg=None, clips=clips, store=store, labels=now,
                        media={c.clip_id: "m" for c in clips}, root=tmp_path, root_uri=None)
    with pytest.raises(Cut):
        build(p, progress=False)
    assert store.done_ids() == {"clip00001"}  # clip00000 out, to be decoded again
    assert store.recorded(LABELS_FILE) == now  # clip00000 and clip00002 (about to be decoded): what they are decoded from


def test_a_sweep_is_not_resumed_on_other_clips_or_labels_than_it_started_with(tmp_path, monkeypatch):
    """prepare_all refuses a data configuration whose clips' label digests are not those the sweep's
    state recorded (a file changed, a clip listed since, one gone), naming them, before Ray starts or
    anything is decoded (the file listing is replaced: the clips and their files are real)."""
    from types import SimpleNamespace

    import ray

    import raybench.data.store as store_mod
    import raybench.trials as trials
    from raybench.config import load
    from raybench.trials import data_key, data_variants, prepare_all

    clips = _clips(tmp_path)
    started = label_digests(clips)
    listed = [clips]
    monkeypatch.setattr(store_mod, "plan", lambda dcfg: SimpleNamespace(name="ds", clips=listed[0],
                                                                        labels=label_digests(listed[0]), media={}))
    cfg = load(None, [])
    key = data_key(data_variants(cfg)[0])
    decoded = []
    monkeypatch.setattr(store_mod, "build", lambda p, **k: decoded.append(p))
    (tmp_path / "a" / "v2.txt").write_text("valence,arousal\n0.5,0.7\n")  # changed since the sweep started
    with pytest.raises(PrepareError, match=r"ds: the dataset's clips or their files changed since this sweep "
                                           r"started \(1 clip\(s\) whose label or annotation files changed: "
                                           r"clip00001 \(.*v2.txt\)\): its trials so far trained on what it listed "
                                           r"then\. Put back the files"):
        prepare_all(cfg, labels={key: started})
    assert not ray.is_initialized() and not decoded
    (tmp_path / "a" / "v2.txt").write_text("valence,arousal\n0.5,0.6\n")  # put back
    listed[0] = clips[1:] + [Clip("clip00003", "w.mp4", "s4", label=1)]  # one clip more, one gone
    with pytest.raises(PrepareError, match=r"\(1 clip\(s\) listed now and not then: clip00003; 1 clip\(s\) "
                                           r"listed then and not now: clip00000\)"):
        prepare_all(cfg, labels={key: started})
    listed[0] = clips  # as it started: it goes on to the decoding
    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # (no Ray: the cluster's checks replaced too)
    monkeypatch.setattr(trials, "wait_for_nodes", lambda cfg: None)
    monkeypatch.setattr(trials, "size_trials", lambda cfg: None)
    monkeypatch.setattr(store_mod, "build", lambda p, **k: (_ for _ in ()).throw(RuntimeError("decoding")))
    for saved in ({key: started}, {"another key": {}}, None):  # (a key or a state without digests: not checked)
        with pytest.raises(RuntimeError, match="decoding"):
            prepare_all(cfg, labels=saved)


def test_recolas_two_gold_standard_files_and_a_constant_annotation_count(tmp_path):
    (tmp_path / "arousal.arff").write_text("@data\n1,0.0,0.1\n")
    (tmp_path / "valence.arff").write_text("@data\n1,0.0,0.2\n")
    meta = {"va_format": "recola", "va_rate": 25.0, "valence_path": str(tmp_path / "valence.arff"),
            "arousal_path": str(tmp_path / "arousal.arff")}
    recola = [Clip("dev_1", "v.mp4", "dev_1", va_path=meta["arousal_path"], meta=meta)]
    before = label_digests(recola)
    (tmp_path / "valence.arff").write_text("@data\n1,0.0,0.3\n")  # only the valence file changed
    assert label_digests(recola) != before
    constant = [Clip("c", "v.mp4", "s", meta={"va_format": "constant", "va_value": [0.1, 0.2]})]
    assert label_digests(constant) != label_digests([Clip("c", "v.mp4", "s", meta={"va_format": "constant",
                                                                                    "va_value": [0.1, 0.3]})])
