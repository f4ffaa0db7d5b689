"""A clip store keeps a digest of each clip's video and audio files: a video replaced under its name
after its clip was decoded is found and decoded again (and re-encoded in an embedding store), not
trained on in its old version (tests/integration/test_pipeline.py replaces a real video of a real
store); a remote root's node copy follows the bucket; a sweep is not resumed on other videos."""

from __future__ import annotations

import json
import os

import pytest

from raybench.data.manifest import Clip
from raybench.data.store import (MEDIA_FILE, ClipStore, PrepareError, changed_clips, media_digests, random_store,
                                 retried_clips)
from raybench.storage import MEDIA_SAMPLE


def _files(d, size=3 * MEDIA_SAMPLE):
    d.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(("v1.mp4", "v2.mp4", "a2.wav")):
        (d / name).write_bytes(bytes([i + 1]) * size)
    return [Clip("clip00000", str(d / "v1.mp4"), "s1"),
            Clip("clip00001", str(d / "v2.mp4"), "s2", meta={"audio_path": str(d / "a2.wav")})]


def _poke(path, at, value=b"\xff"):
    """One byte of a file changed in place (its size, the same)."""
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(value)


def test_the_digest_follows_the_media_files_ends_and_size_not_their_path(tmp_path):
    here, there = media_digests(_files(tmp_path / "a")), media_digests(_files(tmp_path / "b"))
    assert here == there and len(set(here.values())) == 2  # a copy in another folder: alike
    v1 = tmp_path / "a" / "v1.mp4"
    for at in (0, MEDIA_SAMPLE - 1, v1.stat().st_size - 1, v1.stat().st_size - MEDIA_SAMPLE):  # each end's edges
        _poke(v1, at)
        assert media_digests([Clip("clip00000", str(v1), "s1")])["clip00000"] != here["clip00000"], at
        _poke(v1, at, b"\x01")  # put back
        assert media_digests([Clip("clip00000", str(v1), "s1")])["clip00000"] == here["clip00000"]
    with open(v1, "ab") as f:  # longer (a re-encode rarely keeps the size)
        f.write(b"\x01")
    assert media_digests([Clip("clip00000", str(v1), "s1")])["clip00000"] != here["clip00000"]
    clips = _files(tmp_path / "c")  # the separate audio file counts for its clip
    _poke(tmp_path / "c" / "a2.wav", 5)
    assert media_digests(clips)["clip00001"] != here["clip00001"]
    assert media_digests(clips)["clip00000"] == here["clip00000"]
    # a file that is not there (it is marked bad when decoded) counts as such: it changes when it comes
    gone = [Clip("clip00009", str(tmp_path / "c" / "nope.mp4"), "s9")]
    before = media_digests(gone)
    (tmp_path / "c" / "nope.mp4").write_bytes(b"at last")
    assert media_digests(gone) != before
    small = [Clip("clip00008", str(tmp_path / "c" / "small.mp4"), "s8")]  # under one sample: read once, whole
    (tmp_path / "c" / "small.mp4").write_bytes(b"abc")
    first = media_digests(small)
    (tmp_path / "c" / "small.mp4").write_bytes(b"abd")
    assert media_digests(small) != first


def test_a_remote_roots_media_count_by_their_bytes_read_from_the_bucket(tmp_path, monkeypatch):
    """A remote root's media are empty placeholders in its mirror: mirror_root reads each one's ends from
    the bucket (ranged reads) when it is first listed or its size or time changes, so the digest is the
    local file's (a file uploaded again, unchanged, keeps it; one replaced under its name does not)."""
    import raybench.storage as st

    bucket = tmp_path / "bucket"
    bucket.mkdir()
    (bucket / "v1.mp4").write_bytes(b"1" * (3 * MEDIA_SAMPLE))
    (bucket / "v2.mp4").write_bytes(b"video two")
    uri, cache = f"file://{bucket}", tmp_path / "cache"
    ends_digest, read = st.ends_digest, []

    def mirror_root():  # -> the mirror, and how many files' ends were read
        n = len(read)
        monkeypatch.setattr(st, "ends_digest", lambda size, read_at: read.append(size) or ends_digest(size, read_at))
        try:
            return st.mirror_root(uri, cache), len(read) - n
        finally:
            monkeypatch.setattr(st, "ends_digest", ends_digest)

    mirror, n = mirror_root()
    assert n == 2

    def digests():
        return media_digests([Clip(f"c{i}", str(mirror / f"v{i}.mp4"), "s") for i in (1, 2)], mirror)

    before = digests()
    assert before == media_digests([Clip(f"c{i}", str(bucket / f"v{i}.mp4"), "s") for i in (1, 2)])  # as on a disk

    def later(name, data):  # written again, a second later
        (bucket / name).write_bytes(data)
        st = (bucket / name).stat()
        os.utime(bucket / name, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

    later("v1.mp4", b"1" * (3 * MEDIA_SAMPLE))  # uploaded again, the same bytes
    later("v2.mp4", b"video TWO")  # replaced under its name: the same size
    assert digests() == before  # (what the bucket held when the mirror was last brought up to date)
    assert mirror_root()[1] == 2
    after = digests()
    assert after["c1"] == before["c1"] and after["c2"] != before["c2"]
    assert mirror_root()[1] == 0 and digests() == after  # nothing changed: nothing read again


def test_a_stored_clip_decoded_from_another_video_is_found_and_a_bad_one_retried(tmp_path):
    store = ClipStore(tmp_path / "store")
    random_store(store.path, [3, 4], task="categorical", image_size=4, n_mels=2)  # holds clip00000, clip00001
    clips = _files(tmp_path / "a")
    then = media_digests(clips)
    assert changed_clips(store, clips, media=then) == []  # a store from before media.json: nothing to compare
    store.record(MEDIA_FILE, then)
    _poke(tmp_path / "a" / "v1.mp4", 0)  # clip00000's video replaced
    now = media_digests(clips)
    assert [c.clip_id for c in changed_clips(store, clips, media=now)] == ["clip00000"]
    assert changed_clips(store, clips) == []  # (media not asked: not compared)
    # a clip marked bad for its video is retried once the video changes; a mark without a digest is kept
    third = Clip("clip00002", str(tmp_path / "a" / "v3.mp4"), "s3")
    store.mark_bad("clip00002", third.video_path, "no video stream", media=media_digests([third])["clip00002"])
    store.mark_bad("clip00003", "w.mp4", "no video stream")
    fourth = Clip("clip00003", str(tmp_path / "a" / "w.mp4"), "s4")
    assert retried_clips(store, [third, fourth], media=media_digests([third, fourth])) == []
    (tmp_path / "a" / "v3.mp4").write_bytes(b"a mended video")
    (tmp_path / "a" / "w.mp4").write_bytes(b"another")
    assert [c.clip_id for c in retried_clips(store, [third, fourth], media=media_digests([third, fourth]))] == [
        "clip00002"]
    assert json.loads((store.path / "bad" / "clip00002.json").read_text())["media"] == \
        media_digests([Clip("clip00002", "/nowhere/v3.mp4", "s3")])["clip00002"]  # recorded: 'not there'


def test_a_build_takes_a_replaced_videos_clip_out_and_records_its_new_digest_first(tmp_path, monkeypatch, capsys):
    """build (cut short at the decoding, as Ctrl-C would) takes the clip whose video changed out of the
    store and records the digests of the clips it is about to decode before decoding them; the clips
    it keeps get theirs recorded too (a store from before media.json adopts its files' digests)."""
    from types import SimpleNamespace

    import ray

    from raybench.data.store import build

    store = ClipStore(tmp_path / "store")
    random_store(store.path, [3, 4], task="categorical", image_size=4, n_mels=2)
    clips = _files(tmp_path / "a")
    p = SimpleNamespace(name="ds", data_cfg=None, clips=clips, store=store, labels={c.clip_id: "l" for c in clips},
                        media=media_digests(clips), root=tmp_path, root_uri=None)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})

    class Cut(Exception):
        pass

    def from_items(*a, **k):
        raise Cut

    monkeypatch.setattr(ray.data, "from_items", from_items)
    store.record(MEDIA_FILE, p.media)
    _poke(tmp_path / "a" / "v2.mp4", 7)
    p.media = media_digests(clips)
    with pytest.raises(Cut):
        build(p, progress=False)
    assert store.done_ids() == {"clip00000"}  # clip00001 out, to be decoded again
    assert store.recorded(MEDIA_FILE) == p.media
    said = capsys.readouterr().out
    assert "ds: 1 clip(s) of the clip store" in said and "were decoded from other label, annotation, video or audio" \
        f" files than the dataset's now: clip00001 ({clips[1].video_path} and {clips[1].meta['audio_path']}); " \
        "decoding them again" in said


def test_an_embedding_store_encodes_a_replaced_videos_clip_again(tmp_path, monkeypatch):
    """build_embeddings takes the clips whose media changed since they were encoded out of the embedding
    store (and retries one marked bad then) before encoding what it lacks."""
    from types import SimpleNamespace

    import raybench.data.embed as embed

    store_path = tmp_path / "emb"
    random_store(store_path, [3, 4], task="categorical", image_size=4, n_mels=2)  # stands for the embeddings
    emb = ClipStore(store_path)
    clips = _files(tmp_path / "a")
    emb.record(MEDIA_FILE, media_digests(clips))
    emb.mark_bad("clip00002", "v3.mp4", "too short", media="0" * 16)
    clips.append(Clip("clip00002", str(tmp_path / "a" / "v3.mp4"), "s3"))
    _poke(tmp_path / "a" / "v1.mp4", 3)
    clip_store = ClipStore(tmp_path / "clips")
    random_store(clip_store.path, [3, 4, 5], task="categorical", image_size=4, n_mels=2)
    monkeypatch.setattr(embed, "_encoder_cfg", lambda dcfg, modality: SimpleNamespace(batch_size=2, layer=0))
    monkeypatch.setattr(embed, "embedding_store_path", lambda *a: (str(store_path), {"kind": "k", "folder": "f"}))
    monkeypatch.setattr(embed, "library_versions", lambda: {})

    class Stop(Exception):
        pass

    def encoder(cfg):
        raise Stop  # (the encoder is loaded once the clips to encode are known)

    monkeypatch.setattr(embed, "AudioEncoder", encoder)
    p = SimpleNamespace(name="ds", data_cfg=None, store=clip_store, fingerprint="f", media=media_digests(clips))
    with pytest.raises(Stop):
        embed.build_embeddings(p, clips, progress=False, modality="audio_emb")
    assert emb.done_ids() == {"clip00001"} and emb.bad() == {}  # clip00000 (new video) and clip00002 out
    assert emb.recorded(MEDIA_FILE) == p.media


def test_a_node_fetches_a_remote_video_again_only_when_the_bucket_has_another(tmp_path, monkeypatch):
    import raybench.storage as st

    bucket = tmp_path / "bucket"
    bucket.mkdir()
    (bucket / "v.mp4").write_bytes(b"one")
    uri, mirror, cache = f"file://{bucket}", str(tmp_path / "mirror-on-the-driver"), tmp_path / "cache"
    fetched = []
    read_bytes = st.read_bytes
    monkeypatch.setattr(st, "read_bytes", lambda fs, path: fetched.append(path) or read_bytes(fs, path))

    def read():
        return open(st.fetch_if_placeholder(f"{mirror}/v.mp4", mirror, uri, cache), "rb").read()

    infos = []
    split = st.split

    def counted_split(uri):  # the bucket's metadata requests, counted
        fs, root = split(uri)
        class Counted:
            def get_file_info(self, p):
                infos.append(p)
                return fs.get_file_info(p)

            def __getattr__(self, name):
                return getattr(fs, name)

        return Counted(), root

    assert read() == b"one" and read() == b"one" and len(fetched) == 1  # once per node
    (bucket / "v.mp4").write_bytes(b"two")  # replaced under its name (the same size)
    s = (bucket / "v.mp4").stat()
    os.utime(bucket / "v.mp4", ns=(s.st_atime_ns, s.st_mtime_ns + 10**9))
    monkeypatch.setattr(st, "split", counted_split)
    assert read() == b"two" and len(fetched) == 2 and len(infos) == 1  # one request for the size and time
    assert read() == b"two" and len(fetched) == 2 and len(infos) == 2
    (bucket / "v.csv").write_text("0.1\n")  # an annotation: read from the bucket each time, no metadata asked
    assert open(st.fetch_if_placeholder(f"{mirror}/v.csv", mirror, uri, cache), "rb").read() == b"0.1\n"
    assert len(infos) == 2 and len(fetched) == 3
    crop = f"{mirror}/crops/1.jpg"  # a crop (a file per frame): fetched once, not asked about again
    (bucket / "crops").mkdir()
    (bucket / "crops" / "1.jpg").write_bytes(b"jpeg")
    monkeypatch.setattr(st, "split", split)
    assert open(st.fetch_if_there(crop, mirror, uri, cache), "rb").read() == b"jpeg"
    (bucket / "crops" / "1.jpg").write_bytes(b"JPEG")
    monkeypatch.setattr(st, "split", counted_split)
    assert open(st.fetch_if_there(crop, mirror, uri, cache), "rb").read() == b"jpeg" and len(infos) == 2


def test_a_sweep_is_not_resumed_on_other_videos_than_it_started_with(tmp_path, monkeypatch):
    """prepare_all refuses a data configuration whose clips' media digests are not those the sweep's
    state recorded, naming the clip and its video, before Ray starts or anything is decoded."""
    from types import SimpleNamespace

    import ray

    import raybench.data.store as store_mod
    from raybench.config import load
    from raybench.trials import data_key, data_variants, prepare_all

    clips = _files(tmp_path / "a")
    started = media_digests(clips)
    monkeypatch.setattr(store_mod, "plan", lambda dcfg: SimpleNamespace(
        name="ds", clips=clips, labels={c.clip_id: "l" for c in clips}, media=media_digests(clips)))
    monkeypatch.setattr(store_mod, "build", lambda p, **k: pytest.fail("decoded"))
    cfg = load(None, [])
    key = data_key(data_variants(cfg)[0])
    _poke(tmp_path / "a" / "v2.mp4", 1)
    with pytest.raises(PrepareError, match=r"ds: the dataset's clips or their files changed since this sweep "
                                           r"started \(1 clip\(s\) whose video or audio files changed: "
                                           r"clip00001 \(.*v2.mp4 and .*a2.wav\)\)"):
        prepare_all(cfg, labels={key: {c.clip_id: "l" for c in clips}}, media={key: started})
    assert not ray.is_initialized()


def test_a_clip_the_decoding_or_the_encoder_cannot_take_is_marked_with_its_media_digest(tmp_path, monkeypatch):
    """_prepare_batch (the decoding's Ray Data function) and EncodeBatch (the embedding stage's actor)
    record the digest each item carries in the bad mark they write: retried_clips compares it."""
    import numpy as np

    import raybench.data.embed as embed
    from raybench.data import decode, store as store_mod
    from raybench.schema import DataConfig

    row = {"clip_id": "c1", "video_path": str(tmp_path / "c1.mp4"), "label": 0}

    def broken(*a, **k):
        raise decode.DecodeError("moov atom not found")

    monkeypatch.setattr(decode, "decode_clip", broken)
    batch = {"row": np.array([json.dumps(row)]), "labels": np.array(["l" * 16]), "media": np.array(["m" * 16])}
    store_mod._prepare_batch(batch, str(tmp_path / "clips"), DataConfig(dataset="csv", fps=5, image_size=16))
    mark = ClipStore(tmp_path / "clips").bad()["c1"]
    assert (mark["reason"], mark["labels"], mark["media"]) == ("moov atom not found", "l" * 16, "m" * 16)

    actor = object.__new__(embed.EncodeBatch)  # (no encoder loaded: _embed replaced)
    actor.modality, actor.key, actor.store_path = "audio_emb", "data.audio.encoder", str(tmp_path / "emb")
    actor.enc = type("Enc", (), {"spec": {"kind": "wav2vec2"}})()

    def too_short(row):
        raise embed.ClipNotEncodable("shorter than one window")

    actor._embed = too_short
    status = actor({"row": np.array([json.dumps({**row, "num_frames": 3, "media": "n" * 16})])})
    assert status["fatal"] == [""]
    assert ClipStore(tmp_path / "emb").bad()["c1"]["media"] == "n" * 16


def test_a_mirror_index_from_before_media_digests_has_them_read_from_the_bucket(tmp_path):
    """An index written before 2026-12-04 holds [size, time] per file: its media files' ends are read
    at the next listing, its annotations are not downloaded again."""
    import raybench.storage as st

    bucket = tmp_path / "bucket"
    bucket.mkdir()
    (bucket / "v.mp4").write_bytes(b"video")
    (bucket / "a.csv").write_text("v,a\n")
    uri, cache = f"file://{bucket}", tmp_path / "cache"
    mirror = st.mirror_root(uri, cache)
    index = mirror.with_name(mirror.name + ".index.json")
    old = {rel: stamp[:2] for rel, stamp in json.loads(index.read_text()).items()}
    index.write_text(json.dumps(old))
    (mirror / "a.csv").write_text("kept\n")  # (not downloaded again: its size and time are the listing's)
    assert media_digests([Clip("c", str(mirror / "v.mp4"), "s")], mirror)["c"] == \
        media_digests([Clip("c", str(tmp_path / "nowhere.mp4"), "s")])["c"]  # no digest yet: 'not there'
    st.mirror_root(uri, cache)
    assert media_digests([Clip("c", str(mirror / "v.mp4"), "s")], mirror) == \
        media_digests([Clip("c", str(bucket / "v.mp4"), "s")])
    assert (mirror / "a.csv").read_text() == "kept\n"


def test_a_media_file_the_bucket_does_not_answer_for_stops_the_listing_with_its_name(tmp_path, monkeypatch):
    import raybench.storage as st

    bucket = tmp_path / "bucket"
    bucket.mkdir()
    for name in ("v1.mp4", "v2.mp4"):
        (bucket / name).write_bytes(b"video")
    uri, cache = f"file://{bucket}", tmp_path / "cache"
    ends_digest = st.ends_digest

    def flaky(size, read_at):
        raise OSError("AWS Error NETWORK_CONNECTION: Timeout was reached")

    monkeypatch.setattr(st, "ends_digest", flaky)
    with pytest.raises(OSError, match=r"2 media file\(s\) of file://.* could not be read from the bucket .*"
                                      r"\(first: .*v\d.mp4: AWS Error NETWORK_CONNECTION"):
        st.mirror_root(uri, cache)
    monkeypatch.setattr(st, "ends_digest", ends_digest)
    mirror = st.mirror_root(uri, cache)  # the next listing reads them
    assert len(set(media_digests([Clip(f"c{i}", str(mirror / f"v{i}.mp4"), "s") for i in (1, 2)], mirror).values())) == 1
