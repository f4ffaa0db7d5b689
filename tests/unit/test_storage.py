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
