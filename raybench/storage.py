"""Local paths and remote URIs (``s3://``, ``gs://``, ``file://``) through pyarrow filesystems.

Used for the clip store (``data.store_dir``), the dataset root (``data.root``) and the sweep's
``storage`` (Tune results and Ray Train's checkpoints: Ray reads that URI itself; a one-worker trial's
checkpoints: raybench/train/checkpoints.py). Credentials come from the
environment, as pyarrow reads them (AWS_* variables or an instance profile; GCP application-default
credentials). A URI can carry pyarrow's options as a query string, for example
``s3://bucket/raybench?endpoint_override=localhost:9000&scheme=http`` for an S3-compatible server.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "hdfs://", "abfs://", "abfss://")


def is_remote(path: str | Path | None) -> bool:
    return isinstance(path, str) and path.startswith(REMOTE_SCHEMES)


def reach_problem(uri: str, key: str, timeout_s: float = 30.0) -> str | None:
    """What keeps a remote ``uri`` (the setting ``key``) from being read, said before any long work, or
    None (a local path: None). Without this a bucket that is not there, or whose endpoint does not
    answer, failed only where the sweep first wrote to it, after the prepare and with a traceback.
    The probe runs in a thread given ``timeout_s`` (pyarrow's calls take no timeout; its GCS client
    retries an endpoint that does not answer until ``retry_limit_seconds``: unset, a closed port gave no
    answer within 20 s here; the probe sets it to ``timeout_s`` when the URI does not)."""
    if not is_remote(uri):
        return None
    import threading

    out: dict = {}

    probed = uri
    if uri.startswith(("gs://", "gcs://")) and "retry_limit_seconds=" not in uri:  # so the thread ends too
        probed += ("&" if "?" in uri else "?") + f"retry_limit_seconds={timeout_s:g}"

    def probe() -> None:
        import pyarrow.fs as pafs

        try:
            fs, path = split(probed)
            bucket = path.split("/", 1)[0]
            # a path not there yet is fine (a new storage folder), a bucket not there is not: pyarrow
            # reports both as FileType.NotFound, not as an error
            if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                out["error"] = FileNotFoundError(f"no bucket {bucket!r} there")
            else:
                fs.get_file_info(path)
        except Exception as e:  # OSError (no endpoint, credentials), ValueError/ArrowInvalid (a query option)
            out["error"] = e
        out["done"] = True

    t = threading.Thread(target=probe, daemon=True, name=f"raybench-probe-{key}")
    t.start()
    t.join(timeout_s)
    if "done" not in out:
        return (f"{key}={uri}: its object store did not answer within {timeout_s:g} s (is the endpoint right, "
                "and reachable from here?)")
    if "error" in out:
        e = out["error"]
        return (f"{key}={uri}: {type(e).__name__}: {str(e)[:300]} (check the bucket's name, its endpoint and "
                "the credentials in this environment)")
    return None


GCS_QUERY_KEYS = ("anonymous", "scheme", "endpoint_override", "default_bucket_location", "retry_limit_seconds",
                  "project_id")


def split(uri: str | Path):
    """``uri`` -> (pyarrow FileSystem, path inside it). Local paths get the local filesystem.

    A ``gs://`` URI may also say ``anonymous=true`` (no credentials: a public bucket or a local
    emulator), which pyarrow's own URI parser does not take."""
    import pyarrow.fs as pafs

    s = str(uri)
    if s.startswith(("gs://", "gcs://")) and "anonymous=" in s.partition("?")[2]:
        return _gcs(s)
    if is_remote(s) or s.startswith("file://"):
        return pafs.FileSystem.from_uri(s)
    return pafs.LocalFileSystem(), str(Path(s).expanduser().resolve())


def _gcs(uri: str):
    import datetime
    from urllib.parse import parse_qsl, urlsplit

    import pyarrow.fs as pafs

    u = urlsplit(uri)
    q = dict(parse_qsl(u.query, keep_blank_values=True))
    unknown = sorted(set(q) - set(GCS_QUERY_KEYS))
    if unknown:
        raise ValueError(f"{uri}: unknown option(s) {', '.join(unknown)} in a gs:// URI; known: {', '.join(GCS_QUERY_KEYS)}")
    if q.get("anonymous", "").lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"{uri}: anonymous must be true or false, got {q.get('anonymous')!r}")
    kw = {"anonymous": q["anonymous"].lower() in ("true", "1")}
    for k in ("scheme", "endpoint_override", "default_bucket_location", "project_id"):
        if q.get(k):
            kw[k] = q[k]
    if q.get("retry_limit_seconds"):
        kw["retry_time_limit"] = datetime.timedelta(seconds=float(q["retry_limit_seconds"]))
    return pafs.GcsFileSystem(**kw), f"{u.netloc}{u.path}".rstrip("/")


def ray_storage(storage: str) -> tuple[str, object | None]:
    """(storage_path, storage_filesystem) for Ray Tune/Train's RunConfig: a local path as it is; a
    URI as a pyarrow filesystem and a path in it (so the options raybench reads from the URI, such
    as ``anonymous=true``, reach Ray too)."""
    if not is_remote(storage) and not str(storage).startswith("file://"):
        return storage, None
    fs, path = split(storage)
    return path, fs


def join(base: str | Path, *parts: str) -> str:
    """Join path parts onto a local path or a URI (keeping a URI's query string at the end)."""
    s = str(base)
    query = ""
    if "?" in s and (is_remote(s) or s.startswith("file://")):
        s, query = s.split("?", 1)
        query = "?" + query
    return "/".join([s.rstrip("/"), *(p.strip("/") for p in parts)]) + query


def write_bytes(fs, path: str, data: bytes) -> None:
    """Write a whole file so that readers never see it half written: on a local disk through a
    temporary name and a rename; an object store shows an object only once its upload completes."""
    import pyarrow.fs as pafs

    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        with fs.open_output_stream(tmp) as f:
            f.write(data)
        fs.move(tmp, path)
    else:
        with fs.open_output_stream(path) as f:
            f.write(data)


def read_bytes(fs, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def list_files(fs, path: str, suffix: str = "", recursive: bool = False) -> list[str]:
    """Files under ``path`` (sorted), [] when it does not exist; names starting with '.' are skipped."""
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=recursive))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix)
                  and not i.base_name.startswith("."))


def exists(fs, path: str) -> bool:
    import pyarrow.fs as pafs

    return fs.get_file_info(path).type != pafs.FileType.NotFound


# --- a remote dataset root --------------------------------------------------------------------
# Adapters read a root with pathlib. A remote root is mirrored into the local cache: annotation and
# metadata files are downloaded, media files become empty placeholders (names are all an adapter
# reads of them). A decode task that finds a placeholder fetches that one file from the root, on
# whichever node it runs.
SMALL_SUFFIXES = (".txt", ".csv", ".arff", ".json", ".yaml", ".yml", ".xml", ".lab", ".tsv")
MEDIA_SAMPLE = 1 << 14  # bytes of each end of a media file that ends_digest reads


def ends_digest(size: int, read_at) -> str:
    """A digest of a media file of ``size`` bytes from its size and its first and last 16 KiB
    (``MEDIA_SAMPLE``), where a container keeps its header and index: a video re-encoded or replaced
    under its name tells apart without reading every file whole (that would cost about as much as
    decoding it). ``read_at(offset, n)``: n bytes from offset (a local file's, or a bucket's ranged
    read: a file alike in a bucket and on a disk gets the same digest)."""
    head = read_at(0, min(size, MEDIA_SAMPLE))
    start = max(size - MEDIA_SAMPLE, len(head))
    tail = read_at(start, size - start) if size > start else b""
    return hashlib.sha256(str(size).encode() + b":" + head + tail).hexdigest()[:32]


def local_ends_digest(path: str | Path) -> str:
    """:func:`ends_digest` of a local file."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)

        def read_at(offset: int, n: int) -> bytes:
            f.seek(offset)
            return f.read(n)

        return ends_digest(size, read_at)




def mirror_root(uri: str, cache: Path) -> Path:
    """The local mirror of a remote root, brought up to date with the bucket's listing: a small
    (annotation, metadata) file is downloaded again when its size or modification time changed, through
    a temporary name (a download cut short is never taken for the file); a file gone from the bucket
    leaves the mirror. (Before 2026-12-04 a mirrored file was never read again: a corrected annotation
    kept its old version.) Each media file's :func:`ends_digest` is read from the bucket (two ranged
    reads) when it is first listed and when its size or time changes: :func:`mirror_stamps`."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.fs as pafs

    fs, root = split(uri)
    local = cache / "remote" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    local.mkdir(parents=True, exist_ok=True)
    # rel path -> [size, mtime ns] of each file as last listed (a media file's with its ends_digest third); beside
    # the mirror, not in it (adapters list it)
    index_path = local.with_name(local.name + ".index.json")
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True, recursive=True))
    now: dict[str, list] = {}
    to_digest = []
    for i in sorted((i for i in infos if i.type == pafs.FileType.File and not i.base_name.startswith(".")),
                    key=lambda i: i.path):
        rel = i.path[len(root):].lstrip("/")
        stamp = [i.size, i.mtime_ns]
        now[rel] = stamp
        dst = local / rel
        small = i.path.lower().endswith(SMALL_SUFFIXES)
        if not small:  # a media file: [size, time, ends_digest], the digest kept while size and time are
            had = index.get(rel)
            if had and had[:2] == stamp and len(had) == 3:
                now[rel] = had
            else:
                to_digest.append(i)
        if dst.exists() and (index.get(rel) or [None, None])[:2] == stamp:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if small:
            tmp = local.parent / f".tmp-{uuid.uuid4().hex}"  # (outside the mirror: adapters list it)
            tmp.write_bytes(read_bytes(fs, i.path))
            tmp.replace(dst)
        elif not dst.exists():
            dst.touch()
    for rel in set(index) - set(now):  # gone from the bucket
        (local / rel).unlink(missing_ok=True)

    def remote_digest(info) -> str | OSError:
        try:
            with fs.open_input_file(info.path) as f:
                return ends_digest(info.size, lambda offset, n: f.read_at(n, offset))
        except OSError as e:  # (gone since the listing, no access, the network): said below
            return e

    failed = []
    with ThreadPoolExecutor(16) as pool:  # a request's latency each: many at once
        for i, d in zip(to_digest, pool.map(remote_digest, to_digest)):
            if isinstance(d, OSError):
                failed.append((i.path, d))  # its stamp stays [size, time]: read again at the next listing
            else:
                now[i.path[len(root):].lstrip("/")] = [i.size, i.mtime_ns, d]
    tmp = index_path.with_name(f".tmp-{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(now))
    tmp.replace(index_path)
    if failed:  # (after the index: the files read so far are not read again)
        raise OSError(f"{len(failed)} media file(s) of {uri} could not be read from the bucket to tell whether "
                      f"they changed since decoded (first: {failed[0][0]}: {failed[0][1]}); rerun when they can")
    return local


def mirror_stamps(mirror: Path) -> dict[str, list]:
    """rel path -> [size, modification time in ns] of every file of a remote root, as the bucket listed
    them when :func:`mirror_root` last brought ``mirror`` up to date, and for a media file its
    :func:`ends_digest` third ({} for a folder that is no mirror)."""
    import json

    try:
        return json.loads(Path(mirror).with_name(Path(mirror).name + ".index.json").read_text())
    except (OSError, ValueError):
        return {}


def _fetched(cache: Path, uri: str, rel: str) -> Path:
    """Where a node keeps its fetched copy of file ``rel`` of the remote root ``uri``."""
    return cache / "remote-files" / hashlib.sha256(uri.encode()).hexdigest()[:16] / rel


def fetch_if_there(path: str, mirror: str, uri: str, cache: Path) -> str | None:
    """:func:`fetch_if_placeholder` for a file that may not be in the root (a frame without an organisers'
    crop): None when the bucket has no such file. The driver's mirror answers that where it is (its
    folder is there: the listing made it); on another node the bucket itself is asked."""
    if not Path(path).exists():
        if Path(path).parent.is_dir():  # the driver's mirror: the bucket has no such file
            return None
        rel = path[len(mirror):].lstrip("/")
        if not _fetched(cache, uri, rel).exists():
            fs, root = split(uri)
            if not exists(fs, f"{root.rstrip('/')}/{rel}"):
                return None
    return fetch_if_placeholder(path, mirror, uri, cache, recheck=False)


def fetch_if_placeholder(path: str, mirror: str | None, uri: str | None, cache: Path, recheck: bool = True) -> str:
    """The local file to decode for ``path`` (a file in the mirror of a remote root)."""
    if not uri or not mirror or not path.startswith(mirror):
        return path
    p = Path(path)
    if p.exists() and p.stat().st_size > 0:
        return path
    import json

    import pyarrow.fs as pafs

    rel = path[len(mirror):].lstrip("/")
    dst = _fetched(cache, uri, rel)
    fs, root = split(uri)
    src = f"{root.rstrip('/')}/{rel}"
    # an annotation (small) is fetched each time it is read, as the driver's mirror follows the bucket (a corrected
    # one must not be read in its old version on some nodes); a media file once per node, and again when the
    # bucket's size or modification time is not the one fetched (a video replaced under its name; kept beside the
    # copy: a copy fetched before 2026-12-04 has none and is fetched once more; before, the copy fetched first was
    # decoded for good); a crop (``recheck`` off: a file per frame, a request each) once per node
    stamp_file = dst.with_name(dst.name + ".bucket.json")
    small = path.lower().endswith(SMALL_SUFFIXES)
    info = None
    if dst.exists() and not small:
        if not recheck:
            return str(dst)
        info = fs.get_file_info(src)
        try:
            fetched = json.loads(stamp_file.read_text())
        except (OSError, ValueError):
            fetched = None
        if info.type != pafs.FileType.File or [info.size, info.mtime_ns] == fetched:
            return str(dst)  # (gone from the bucket: the copy here is decoded, as the mirror still lists it)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".tmp-{uuid.uuid4().hex}")
    if not small:  # (an annotation needs no stamp: it is fetched each time)
        info = info or fs.get_file_info(src)
    tmp.write_bytes(read_bytes(fs, src))
    tmp.replace(dst)
    if info is not None:
        stamp_file.write_text(json.dumps([info.size, info.mtime_ns]))
    return str(dst)
