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
