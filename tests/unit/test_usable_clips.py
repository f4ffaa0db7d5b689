"""The clips a data configuration keeps: bad clips out, data.max_bad_fraction over the whole dataset,
train and val never emptied, and the clips another configuration on the same clip store left out."""

from __future__ import annotations

import pytest

from raybench.data.manifest import Clip
from raybench.data.store import ClipStore, PrepareError, Prepared, _usable, without_clips


def _clips() -> list[Clip]:
    return [Clip(f"c{i}", f"/v/c{i}.mp4", f"s{i}", split) for i, split in
            enumerate(["train", "train", "train", "val", "val", "test"])]


def _bad(*ids: str, reason: str = "too short") -> dict[str, dict]:
    return {i: {"clip_id": i, "video_path": f"/v/{i}.mp4", "reason": reason} for i in ids}


def test_bad_clips_leave_and_past_the_fraction_every_one_is_named():
    assert [c.clip_id for c in _usable("d", _clips(), _bad("c1"), 0.2)] == ["c0", "c2", "c3", "c4", "c5"]
    with pytest.raises(PrepareError, match=r"(?s)2 of 6 clips \(33%\) could not be used, more than "
                                           r"data.max_bad_fraction=0.2.*/v/c1.mp4: too short.*/v/c2.mp4: too short"):
        _usable("d", _clips(), _bad("c1", "c2"), 0.2)
    # the fraction is of the dataset's clips (total), not of those left to check
    with pytest.raises(PrepareError, match=r"2 of 10 clips \(20%\)"):
        _usable("d", _clips(), _bad("c1", "c2"), 0.1, total=10)


def test_a_split_left_without_clips_is_named():
    with pytest.raises(PrepareError, match="d: no usable clip in the 'val' split"):
        _usable("d", _clips(), _bad("c3", "c4"), 0.5)


def test_another_configurations_bad_clips_leave_this_one_too(tmp_path, capsys):
    clips = _clips()
    prep = Prepared(store=ClipStore(tmp_path / "store"), clips=clips[1:], dataset="d", task="categorical",
                    class_names=["a"], root="/v", decoded=0, bad=_bad("c0", reason="no audio track"))
    out = without_clips(prep, {**_bad("c0"), **_bad("c5", reason="encoder: too short")}, 0.5, "elsewhere")
    assert [c.clip_id for c in out.clips] == ["c1", "c2", "c3", "c4"]
    assert out.bad["c0"]["reason"] == "no audio track"  # its own reason kept
    assert out.bad["c5"]["reason"] == "encoder: too short (elsewhere)"
    assert capsys.readouterr().out == "[raybench] skipped /v/c5.mp4: encoder: too short (elsewhere)\n"
    assert without_clips(prep, {}, 0.5, "elsewhere") is prep
    with pytest.raises(PrepareError, match=r"2 of 6 clips \(33%\)"):  # its own bad clip counts with the new one
        without_clips(prep, _bad("c5"), 0.2, "elsewhere")


def test_a_file_that_does_not_come_or_a_full_disk_stops_the_stage_and_marks_no_clip_bad(tmp_path, monkeypatch):
    """A network timeout fetching a remote root's file, or a full disk, is not the clip's fault: the
    batch reports it as fatal (the stage stops, a rerun resumes) and the clip is not marked bad for
    good; a file that does not decode is the clip's own problem."""
    import errno
    import json

    import numpy as np

    from raybench import storage
    from raybench.data import decode, store as store_mod
    from raybench.data.store import ClipStore
    from raybench.schema import DataConfig

    row = {"clip_id": "c1", "video_path": str(tmp_path / "c1.mp4"), "label": 0}
    batch = {"row": np.array([json.dumps(row)])}

    def run(**patches):
        for where, name, fn in patches.values():
            monkeypatch.setattr(where, name, fn)
        path = tmp_path / f"store{len(list(tmp_path.iterdir()))}"
        status = store_mod._prepare_batch(batch, str(path), DataConfig(dataset="csv", fps=5, image_size=16))
        return status, ClipStore(str(path)).bad()

    def timeout(*a, **k):
        raise OSError("AWS Error NETWORK_CONNECTION during GetObject operation: Timeout was reached")

    status, bad = run(fetch=(storage, "fetch_if_placeholder", timeout))
    assert "Timeout was reached" in status["fatal"][0] and not status["ok"][0] and bad == {}
    monkeypatch.setattr(storage, "fetch_if_placeholder", lambda path, *a: path)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    status, bad = run(decode=(decode, "decode_clip", full))
    assert "No space left on device" in status["fatal"][0] and bad == {}

    def broken(*a, **k):
        raise decode.DecodeError("moov atom not found")

    status, bad = run(decode=(decode, "decode_clip", broken))
    assert status["fatal"][0] == "" and bad["c1"]["reason"] == "moov atom not found"
