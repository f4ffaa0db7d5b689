"""A clip store keeps each clip's labels: a clip whose label or annotation file changed after it was
decoded is refused by name, not trained on with its old labels (tests/integration/test_pipeline.py
checks it through plan() on a real continuous store)."""

from __future__ import annotations

import pytest

from raybench.data.manifest import Clip
from raybench.data.store import ClipStore, PrepareError, check_labels, label_digests, random_store


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


def test_a_stored_clip_decoded_from_another_annotation_is_refused_by_name(tmp_path):
    store = ClipStore(tmp_path / "store")
    random_store(store.path, [3, 4], task="continuous", image_size=4, n_mels=2)  # holds clip00000, clip00001
    clips = _clips(tmp_path)
    check_labels("ds", store, clips, label_digests(clips))  # a store from before labels.json: nothing to compare
    store.record_label_digests(label_digests(clips))
    (tmp_path / "a" / "v2.txt").write_text("valence,arousal\n0.5,0.7\n")  # a corrected release
    (tmp_path / "a" / "v1.txt").write_text("valence,arousal\n0.1,0.2\n0.3,0.4\n")  # rewritten, the same bytes
    with pytest.raises(PrepareError, match=r"ds: 1 clip\(s\) of the clip store .*store were decoded from other "
                                           r"labels or annotation files .*: clip00001 \(.*v2.txt\)\. .*delete"):
        check_labels("ds", store, clips, label_digests(clips))
    (tmp_path / "a" / "v2.txt").write_text("valence,arousal\n0.5,0.6\n")  # put back: reused
    check_labels("ds", store, clips, label_digests(clips))
    # a clip the store does not hold (clip00002: recorded, but its part is gone) may change freely
    store.record_label_digests({"clip00002": "0" * 16})
    check_labels("ds", store, clips, label_digests(clips))


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
