"""A clip store keeps each clip's labels: a clip whose label or annotation file changed after it was
decoded is found by name and taken out of the store (to be decoded again), not trained on with its old
labels (tests/integration/test_pipeline.py decodes one again through build() on a real continuous
store); a sweep is not resumed on other labels than it started with."""

from __future__ import annotations

import pytest

from raybench.data.manifest import Clip
from raybench.data.store import ClipStore, PrepareError, label_digests, labels_digest, random_store, relabelled


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
    assert relabelled(store, clips, label_digests(clips)) == []  # a store from before labels.json: nothing to compare
    store.record_label_digests(label_digests(clips))
    (tmp_path / "a" / "v2.txt").write_text("valence,arousal\n0.5,0.7\n")  # a corrected release
    (tmp_path / "a" / "v1.txt").write_text("valence,arousal\n0.1,0.2\n0.3,0.4\n")  # rewritten, the same bytes
    assert [c.clip_id for c in relabelled(store, clips, label_digests(clips))] == ["clip00001"]
    (tmp_path / "a" / "v2.txt").write_text("valence,arousal\n0.5,0.6\n")  # put back: nothing changed
    assert relabelled(store, clips, label_digests(clips)) == []
    # a clip the store does not hold (clip00002: recorded, but its part is gone) may change freely
    store.record_label_digests({"clip00002": "0" * 16})
    assert relabelled(store, clips, label_digests(clips)) == []
    assert labels_digest(label_digests(clips)) != labels_digest({**label_digests(clips), "clip00002": "0" * 16})


def test_dropping_clips_rewrites_their_parts_without_them_and_keeps_every_other_clip(tmp_path):
    """``drop_clips`` takes clips out of their part files (the others stay, once each, readable),
    with their bad marks and warnings; the index no longer matches, so the parts are read."""
    store = ClipStore(tmp_path / "store")
    random_store(store.path, [3, 4, 5, 6], task="continuous", image_size=4, n_mels=2, clips_per_part=2)
    before = {r["clip_id"]: r for r in store.read_clips()}
    parts = store.part_files()
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


def test_a_sweep_is_not_resumed_on_other_labels_than_it_started_with(tmp_path, monkeypatch):
    """prepare_all refuses a data configuration whose labels digest is not the one the sweep's state
    recorded, naming the clips whose store rows were decoded from other files, before Ray starts or
    anything is decoded (the file listing is replaced: the store and its clips are real)."""
    from types import SimpleNamespace

    import ray

    import raybench.data.store as store_mod
    import raybench.trials as trials
    from raybench.config import load
    from raybench.trials import data_key, data_variants, prepare_all

    store = ClipStore(tmp_path / "store")
    random_store(store.path, [3, 4], task="continuous", image_size=4, n_mels=2)
    clips = _clips(tmp_path)
    started = label_digests(clips)
    store.record_label_digests(started)
    monkeypatch.setattr(store_mod, "plan", lambda dcfg: SimpleNamespace(name="ds", store=store, clips=clips,
                                                                        labels=label_digests(clips)))
    cfg = load(None, [])
    key = data_key(data_variants(cfg)[0])
    decoded = []
    monkeypatch.setattr(store_mod, "build", lambda p, **k: decoded.append(p))
    (tmp_path / "a" / "v2.txt").write_text("valence,arousal\n0.5,0.7\n")  # changed since the sweep started
    with pytest.raises(PrepareError, match=r"ds: the labels or annotation files of the dataset changed since this "
                                           r"sweep started \(1 clip\(s\) of its clip store: clip00001 \(.*v2.txt\)\): "
                                           r"its trials so far trained on the old ones\. Put back the files"):
        prepare_all(cfg, labels={key: labels_digest(started)})
    assert not ray.is_initialized() and not decoded
    (tmp_path / "a" / "v2.txt").write_text("valence,arousal\n0.5,0.6\n")  # put back: it goes on to the decoding
    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # (no Ray: the cluster's checks replaced too)
    monkeypatch.setattr(trials, "wait_for_nodes", lambda cfg: None)
    monkeypatch.setattr(trials, "size_trials", lambda cfg: None)
    monkeypatch.setattr(store_mod, "build", lambda p, **k: (_ for _ in ()).throw(RuntimeError("decoding")))
    with pytest.raises(RuntimeError, match="decoding"):
        prepare_all(cfg, labels={key: labels_digest(started)})
