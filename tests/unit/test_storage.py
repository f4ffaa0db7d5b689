"""raybench.storage: how paths and URIs become pyarrow filesystems (no server needed)."""

import pyarrow.fs as pafs
import pytest

from raybench import storage as st


def test_local_paths_and_joins(tmp_path):
    fs, path = st.split(tmp_path / "a")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "a")
    assert st.join("s3://b/x?endpoint_override=h:1&scheme=http", "y", "/z/") == "s3://b/x/y/z?endpoint_override=h:1&scheme=http"
    assert st.ray_storage(str(tmp_path)) == (str(tmp_path), None)


def test_gs_uri_with_anonymous_builds_the_filesystem_pyarrow_would_not():
    uri = "gs://bucket/runs?anonymous=true&endpoint_override=127.0.0.1:9023&scheme=http&retry_limit_seconds=5"
    with pytest.raises(Exception, match="anonymous"):
        pafs.FileSystem.from_uri(uri)  # why raybench parses these itself
    fs, path = st.split(uri)
    assert isinstance(fs, pafs.GcsFileSystem) and path == "bucket/runs"
    opts = fs.__reduce__()[1][0]  # the options the filesystem was built with (what pickling keeps)
    assert (opts["anonymous"], opts["endpoint_override"], opts["scheme"]) == (True, "127.0.0.1:9023", "http")
    assert opts["retry_time_limit"].total_seconds() == 5
    path2, fs2 = st.ray_storage(uri)
    assert path2 == "bucket/runs" and isinstance(fs2, pafs.GcsFileSystem)
    with pytest.raises(ValueError, match="unknown option.*endpoint_overide"):
        st.split("gs://bucket/x?anonymous=true&endpoint_overide=h:1")
    with pytest.raises(ValueError, match="anonymous must be true or false"):
        st.split("gs://bucket/x?anonymous=yes")


def test_a_remote_roots_mirror_follows_the_bucket(tmp_path):
    """Annotations are downloaded again when the bucket's copy changes, media stay placeholders, and a file gone
    from the bucket leaves the mirror (before 2026-12-04 a mirrored file was never read again)."""
    import os

    from raybench.storage import mirror_root

    bucket = tmp_path / "bucket"
    (bucket / "a").mkdir(parents=True)
    (bucket / "a" / "labels.csv").write_text("v,a\n0.1,0.2\n")
    (bucket / "a" / "clip.mp4").write_bytes(b"video bytes")
    (bucket / "a" / "gone.mp4").write_bytes(b"video bytes")
    uri, cache = f"file://{bucket}", tmp_path / "cache"
    local = mirror_root(uri, cache)
    assert (local / "a" / "labels.csv").read_text() == "v,a\n0.1,0.2\n"
    assert (local / "a" / "clip.mp4").stat().st_size == 0  # a placeholder, fetched when decoded
    (bucket / "a" / "labels.csv").write_text("v,a\n0.9,0.9\n")  # corrected: same size, a later time
    st = (bucket / "a" / "labels.csv").stat()
    os.utime(bucket / "a" / "labels.csv", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    (bucket / "a" / "gone.mp4").unlink()
    assert mirror_root(uri, cache) == local
    assert (local / "a" / "labels.csv").read_text() == "v,a\n0.9,0.9\n"
    assert not (local / "a" / "gone.mp4").exists() and (local / "a" / "clip.mp4").exists()
    assert sorted(p.name for p in local.rglob("*")) == ["a", "clip.mp4", "labels.csv"]  # nothing else in it


def test_a_file_that_may_not_be_in_the_bucket_is_fetched_or_none_on_any_node(tmp_path):
    """storage.fetch_if_there (the organisers' crops of a remote root): on a node without the driver's mirror
    the bucket is asked; a crop it has is fetched, one it has not is None, not an error."""
    from raybench.storage import fetch_if_there

    bucket = tmp_path / "bucket" / "crops" / "v1"
    bucket.mkdir(parents=True)
    (bucket / "00001.jpg").write_bytes(b"jpeg bytes")
    uri, mirror = f"file://{tmp_path / 'bucket'}", str(tmp_path / "mirror-on-the-driver")
    got = fetch_if_there(f"{mirror}/crops/v1/00001.jpg", mirror, uri, tmp_path / "cache")
    assert got is not None and open(got, "rb").read() == b"jpeg bytes"
    assert fetch_if_there(f"{mirror}/crops/v1/00002.jpg", mirror, uri, tmp_path / "cache") is None


def test_a_node_reads_an_annotation_from_the_bucket_each_time_and_a_video_once_while_it_stays(tmp_path):
    """(A video replaced in the bucket is fetched again: tests/unit/test_store_media.py.)"""
    from raybench.storage import fetch_if_placeholder

    bucket = tmp_path / "bucket"
    bucket.mkdir()
    (bucket / "v.csv").write_text("0.1\n")
    (bucket / "v.mp4").write_bytes(b"one")
    uri, mirror, cache = f"file://{bucket}", str(tmp_path / "mirror-on-the-driver"), tmp_path / "cache"

    def read(name):
        return open(fetch_if_placeholder(f"{mirror}/{name}", mirror, uri, cache), "rb").read()

    assert read("v.csv") == b"0.1\n" and read("v.mp4") == b"one"
    (bucket / "v.csv").write_text("0.9\n")
    assert read("v.csv") == b"0.9\n" and read("v.mp4") == b"one"
