"""The Parquet clip store: decode each clip once, keep it for every trial.

Layout of one store (``<store_dir>/<dataset>-<fingerprint>/``)::

    parts/part-<hash>.parquet   decoded clips, one row per clip, written atomically
    bad/<clip_id>.json          clips that could not be used, with the reason
    warnings/<clip_id>.json     what a clip's decoding warned of (an annotation shorter than its video)
    labels.json                 clip id -> a digest of the label and annotation files it was decoded from
    media.json                  clip id -> a digest of the video (and audio) files it was decoded from
    index.json                  the clip ids of every part file's row groups
    _COMPLETE.json              the store's settings and counts, once every clip is done

The fingerprint covers the dataset, its root and every preprocessing setting,
so changing one builds a new store and changing a training setting never does.
Split and fold assignment are *not* in the store: they come from the manifest,
so a new split or fold reuses the decoded clips.

An interrupted prepare resumes: clips already in a part or in ``bad/`` are
skipped. A dataset that gains clips only decodes the new ones; a clip whose
label, annotation, video or audio files changed since it was decoded (or
marked bad) is decoded again (``changed_clips``, ``ClipStore.drop_clips``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from raybench import storage
from raybench.paths import cache_home
from raybench.data.manifest import Clip, fold_record
from raybench.schema import DataConfig, data_config
from raybench.storage import is_remote

log = logging.getLogger(__name__)

# 2: continuous stores keep each clip's annotation at its own rate (source_va, source_va_rate) for the metrics
# (2026-11-30: new part files hold one clip per Parquet row group, so training reads and shuffles clips
# one by one; version-2 stores written before keep up to 8 clips per row group and are still read, and
# shuffled by those groups: the version is unchanged so that they are not decoded again)
STORE_VERSION = 2
PREPROCESSING_KEYS = ("fps", "image_size", "sample_rate", "audio", "max_clips", "ravdess", "flow", "flow_algorithm")
# fingerprinted only when they differ from these values (so that older stores keep their fingerprint)
LATER_KEYS = {"crema_d": {"audio": "video"}, "annotation_mismatch": "truncate", "face": "none",
              "msp_improv": {"task": "categorical"}}
# keys of those sections that choose clips, as a split does, and decode nothing differently: not fingerprinted
LISTING_KEYS = {"crema_d": ("keep_flagged",)}


# a clip's audio and video durations further apart than this (seconds) is the clip's warning: its audio
# features are spread over its frames (decord gives the audio track from its first sample, without the
# stream's start offset), so a track that starts late, ends early or runs on would be misaligned
AUDIO_VIDEO_GAP_S = 0.25
# a synthetic set uploaded to a remote root: written after its files, naming the generator settings
SYNTH_MARKER = ".raybench-synthetic.json"


class PrepareError(RuntimeError):
    pass


def fingerprint(dataset: str, root: str | Path, data_cfg: DataConfig, clips: list | None = None) -> str:
    """The store's settings' hash. ``clips``: the manifest's clips, for a dataset whose labels are not
    in its file names (``csv``: its rows' labels, class order and annotation files are in the store's
    rows, so another manifest, ``data.csv.classes`` or task is another store; before 2026-12-03 they
    reused the old store and its labels)."""
    d = data_cfg.model_dump(mode="json")
    spec = {
        "version": STORE_VERSION,
        "dataset": dataset,
        "root": str(root) if is_remote(str(root)) else str(Path(root).expanduser().resolve()),
        **{k: _without_defaults(k, d[k], data_cfg) for k in PREPROCESSING_KEYS},
        **{k: value for k, v in LATER_KEYS.items() if (value := _without_listing(k, d[k])) != v},
    }
    if dataset == "affwild2" and d["face"] == "dataset":
        # 2026-12-02: a _left/_right annotation's crops are its own folder's only (before: the whole video's)
        spec["crops"] = "annotation name"
    if d["face"] in ("detect", "dataset") and d["face_detector"] != "haar":  # added later; haar before
        spec["face_detector"] = d["face_detector"]
    if dataset == "csv" and clips is not None:
        # file names, not paths: a remote root is read through a local mirror whose folder differs by machine
        rows = sorted((c.clip_id, Path(c.video_path).name, c.label, Path(c.va_path).name if c.va_path else None)
                      for c in clips)
        spec["rows"] = hashlib.sha256(json.dumps(rows, default=str).encode()).hexdigest()
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _without_listing(key: str, value: Any) -> Any:
    """A section of ``LATER_KEYS`` without its ``LISTING_KEYS``."""
    drop = LISTING_KEYS.get(key, ())
    return {k: v for k, v in value.items() if k not in drop} if drop else value


def _without_defaults(key: str, value: Any, data_cfg: DataConfig) -> Any:
    """Options added after a key was fingerprinted count only when they leave their default; a
    ``data.audio.win_ms`` left to the feature's own counts as that value (log-Mel stores made when the
    default was 25 ms keep their fingerprint); ``data.audio.encoder`` does not count."""
    if key == "audio":
        from raybench.data.features import window_ms

        # the encoder's embeddings are a store of their own (raybench/data/embed.py): choosing one decodes nothing again
        out = {k: v for k, v in value.items() if k != "encoder"}
        if out.get("align") == "stretch":  # added 2026-12-04; stores made before stretched the audio
            out.pop("align")
        if not str(value.get("features", "")).endswith("_functionals"):  # added later; only functionals use them
            out.pop("functionals_s", None)
            out.pop("functionals_hop_s", None)
        return {**out, "win_ms": window_ms(data_cfg.audio)}
    if key == "ravdess" and isinstance(value, dict):
        return {k: v for k, v in value.items() if (k, v) not in (("video", "av"), ("audio", "video"))}
    return value


def _to_bytes(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def _joined(*parts: str | None) -> str | None:
    """A clip's warnings, or its reason to be skipped and a warning, as one ("; " between them); None
    when there is none."""
    return "; ".join(p for p in parts if p) or None


class _FetchFailed(RuntimeError):
    """A file of a remote root that did not come (decode_row): not the clip's fault."""


def _not_the_files_fault(e: BaseException) -> bool:
    """Out of memory or of disk space: the machine's state, not the clip's; another run may decode it."""
    import errno

    return isinstance(e, MemoryError) or (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT,
                                                                                 errno.ENOMEM))


def decode_row(row: dict[str, Any], data_cfg: DataConfig, mirror: str | None = None,
               root_uri: str | None = None) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """Decode + featurise one manifest row -> (store row, bad reason, warning). With a remote dataset
    root (``root_uri``), the row's paths are in the local ``mirror`` and fetched when needed."""
    from raybench.data.annotations import read_annotation
    from raybench.data.decode import DecodeError, decode_clip
    from raybench.envcheck import is_environment_error
    from raybench.data.features import AudioTooShort, audio_features, frames_audio, optical_flow, resample_labels

    def local(path: str) -> str:  # a file of a remote root: fetched to this node when needed
        return storage.fetch_if_placeholder(path, mirror, root_uri, cache_home())

    # outside the try below: a file that does not come (a network timeout, a full disk) is not the clip's
    # fault, and must not mark it bad for good; it stops the stage, which a rerun resumes (before
    # 2026-12-03 such a clip was marked bad, and left out of every later run)
    video = local(row["video_path"])
    audio = (row.get("meta") or {}).get("audio_path")
    audio = local(audio) if audio else None
    def crop(path: str) -> str | None:  # a crop of a remote root: fetched when read (None: the bucket has none);
        try:  # one that does not come stops the stage
            return storage.fetch_if_there(path, mirror, root_uri, cache_home())
        except Exception as e:
            raise _FetchFailed(f"{path}: {type(e).__name__}: {e}") from e

    crops_dir = (row.get("meta") or {}).get("crops_dir")
    try:
        d = decode_clip(video, data_cfg.fps, data_cfg.image_size, data_cfg.sample_rate, audio_path=audio,
                        face=data_cfg.face, face_detector=data_cfg.face_detector, crops_dir=crops_dir,
                        fetch_crop=crop if root_uri else None)
    except DecodeError as e:
        return None, str(e), None
    except Exception as e:  # anything unexpected in one file must not kill the whole stage
        if is_environment_error(e) or _not_the_files_fault(e) or isinstance(e, _FetchFailed):  # ... unless it
            raise  # is not about the file
        return None, f"{type(e).__name__}: {e}", None
    T = len(d.frames)
    # a stream shorter than its container's count: the clip's warning (with any other it gets), printed and
    # recorded; part of the reason when the clip is skipped for another (it may be why: a label count
    # that does not match the container's)
    ended = (f"{row['video_path']}: its container counts {d.source_frames} frames but its stream ended after "
             f"{d.frames_decoded}: the last {d.repeated} of its {T} frames at data.fps repeat frame "
             f"{d.frames_decoded - 1}") if d.repeated else None
    # (the frames the stream held, when it ended before its container's count: that is said above)
    audio_s = len(d.audio) / data_cfg.sample_rate
    video_s = (d.frames_decoded if d.repeated and d.frames_decoded else d.source_frames) / d.source_fps
    if abs(audio_s - video_s) > AUDIO_VIDEO_GAP_S:  # said, not silent
        ended = _joined(ended, f"{row['video_path']}: its audio lasts {audio_s:.2f} s and its video {video_s:.2f} s"
                        + (": the audio is stretched over the video's frames, so they may not line up"
                           if data_cfg.audio.align == "stretch" else
                           (": the frames after the audio's end get silence" if audio_s < video_s else
                            ": the audio after the last frame is left out")))
    if d.crops_fallback:  # data.face=dataset: a clip with none of the organisers' crops
        ended = _joined(ended, f"{row['video_path']}: none of its frames has a crop of the dataset's "
                               f"({crops_dir or 'the dataset lists no crops folder for it'}): its face was detected "
                               f"({data_cfg.face_detector}) instead, or the frame's centre taken where none was "
                               "found (for a _left/_right annotation: the largest face, the same for both)")
    if d.crops_missing:  # data.face=dataset: frames the organisers left without a crop (no face found)
        ended = _joined(ended, f"{row['video_path']}: {d.crops_missing} of its {T} frames at data.fps have no crop "
                               f"in {(row.get('meta') or {}).get('crops_dir')} (the crop before each repeats)")
    try:
        feats = audio_features(frames_audio(d.audio, T, data_cfg.fps, data_cfg.sample_rate, data_cfg.audio.align),
                               T, data_cfg.sample_rate, data_cfg.audio)  # (T*k, F)
    except AudioTooShort as e:  # shorter than the features' window: this clip is skipped, with the reason
        return None, _joined(str(e), ended), None
    warning = None
    va = np.zeros((0, 2), np.float32)
    src_keep, src_rate = np.zeros((0, 2), np.float32), 0.0
    if row.get("va_path"):
        meta = row.get("meta") or {}
        try:
            for k in ("valence_path", "arousal_path"):  # RECOLA: one file per dimension
                if meta.get(k):
                    meta[k] = local(meta[k])
            src_va = read_annotation(dict(row, meta=meta), local(row["va_path"]), n_frames=d.source_frames)
        except (OSError, ValueError, KeyError) as e:
            return None, _joined(f"bad annotation: {e}", ended), None
        rate = meta.get("va_rate")
        if rate:  # labels at their own rate: compare durations, allow one step of rounding
            expected = int(round(d.source_frames / d.source_fps * float(rate)))
            mismatch = abs(len(src_va) - expected) > 1
            unit = f"values at {float(rate):g} Hz"
            label_index = np.floor(d.frame_index / d.source_fps * float(rate) + 1e-6).astype(np.int64)
            src_rate = float(rate)
            # the annotated steps inside the video (time k / rate before its end)
            inside = int(np.ceil(d.source_frames / d.source_fps * src_rate - 1e-6))
        else:  # one line per frame: one line more or less is frame counting (decord's count vs the
            # annotators' tool: in sucv/ABAW2's length.csv, 106 of Aff-Wild2's 422 train and validation VA
            # files have one frame more annotated and cropped than OpenCV counts), not a wrong file
            expected, unit, label_index = d.source_frames, "frames", d.frame_index
            mismatch = abs(len(src_va) - expected) > 1
            src_rate, inside = float(d.source_fps), d.source_frames
        if mismatch:
            what = (f"annotation {row['va_path']} has {len(src_va)} {unit}, its video {row['video_path']} "
                    f"needs {expected}")
            if data_cfg.annotation_mismatch == "skip":
                return None, _joined(f"{what} (data.annotation_mismatch=skip)", ended), None
            warning = f"{what}: frames past the shorter one are left unannotated (data.annotation_mismatch=truncate)"
        va = resample_labels(src_va, label_index)  # (T, 2), NaN unannotated
        # the annotation at its own rate, as far as the video goes: continuous metrics are computed over
        # these frames (predictions at data.fps mapped back by time), not over the resampled ones
        src_keep = np.asarray(src_va[:inside], np.float32).reshape(-1, 2)
        if np.isnan(va).all():
            return None, _joined(f"no annotated frame in {row['va_path']}", ended), warning
    warning = _joined(warning, ended)
    flow = (optical_flow(d.frames, data_cfg.flow_algorithm) if data_cfg.flow
            else np.zeros((0, 0, 0, 2), np.float16))
    out = store_row(row["clip_id"], int(row["label"]) if row.get("label") is not None else -1, d.frames, feats,
                    va, src_keep, src_rate, flow, d.source_fps, d.source_frames)
    if data_cfg.face != "none":
        out["face_found"] = d.face_found
    return out, None, warning


def store_row(clip_id: str, label: int, frames: np.ndarray, feats: np.ndarray, va: np.ndarray,
              source_va: np.ndarray, source_va_rate: float, flow: np.ndarray, source_fps: float,
              source_frames: int) -> dict[str, Any]:
    """One clip's row of the store: frames (T,H,W,3) uint8, audio features (T*k,F) float32, va (T,2)
    (or (0,2)), its annotation at its own rate (N,2), flow (T,H,W,2) float16 (or empty)."""
    return {
        "clip_id": clip_id,
        "label": label,
        "num_frames": int(frames.shape[0]),
        "video": _to_bytes(frames),
        "video_shape": list(frames.shape),
        "audio": _to_bytes(feats),
        "audio_shape": list(feats.shape),
        "va": _to_bytes(va),
        "source_va": _to_bytes(source_va),
        "source_va_rate": float(source_va_rate),
        "flow": _to_bytes(flow),
        "flow_shape": list(flow.shape),
        "audio_sum": feats.astype(np.float64).sum(0).tolist(),
        "audio_sumsq": (feats.astype(np.float64) ** 2).sum(0).tolist(),
        "source_fps": float(source_fps),
        "source_frames": int(source_frames),
    }


def write_part(store: ClipStore, rows: list[dict[str, Any]]) -> str:
    """Write rows as one part file of ``store`` (one clip per row group); returns its name."""
    import pyarrow as pa

    return write_table(store, pa.Table.from_pylist(rows))


def write_table(store: ClipStore, table) -> str:
    """Write an Arrow table of store rows as one part file (one clip per row group), named by its clip ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = ",".join(sorted(table.column("clip_id").to_pylist()))
    name = f"part-{hashlib.sha1(ids.encode()).hexdigest()[:16]}.parquet"
    buf = pa.BufferOutputStream()
    # one clip per row group: a trial reads any clip alone (ClipStore.row_groups, iter_groups)
    pq.write_table(table, buf, row_group_size=1)
    store.write_bytes(f"parts/{name}", buf.getvalue().to_pybytes())
    return name


def _prepare_batch(batch: dict[str, np.ndarray], store_path: str, data_cfg: dict[str, Any], mirror: str | None = None,
                   root_uri: str | None = None) -> dict[str, Any]:
    """Ray Data map_batches function: decode a batch of manifest rows, write one part file."""
    store = ClipStore(store_path)
    rows = [json.loads(r) for r in batch["row"]]
    labels = dict(zip([r["clip_id"] for r in rows], batch["labels"])) if "labels" in batch else {}
    media = dict(zip([r["clip_id"] for r in rows], batch["media"])) if "media" in batch else {}
    good, status = [], {"clip_id": [], "ok": [], "reason": [], "warning": [], "fatal": []}
    for row in rows:
        fatal = ""
        try:
            out, reason, warning = decode_row(row, data_cfg, mirror, root_uri)
        except Exception as e:
            # not a problem of this clip (those come back as a reason): a library that does not load on
            # this worker, or a bug, would fail every clip. It goes back as a status row (not raised: Ray
            # would bury it in a traceback and drop its type), and the driver stops the stage on it.
            out, reason, warning = None, None, None
            fatal = f"clip {row['clip_id']} ({row['video_path']}): " + " ".join(f"{type(e).__name__}: {e}".split())
        for k, v in (("clip_id", row["clip_id"]), ("ok", out is not None), ("reason", reason or ""),
                     ("warning", warning or ""), ("fatal", fatal)):
            status[k].append(v)
        if fatal:
            break
        if out is None:
            store.mark_bad(row["clip_id"], row["video_path"], reason, labels.get(row["clip_id"]),
                           media.get(row["clip_id"]))
        else:
            good.append(out)
        if warning:  # kept with the store, so a run that reuses it still reports it
            store.write_text(f"warnings/{row['clip_id']}.json",
                             json.dumps({"clip_id": row["clip_id"], "video_path": row["video_path"], "warning": warning}))
    if good:
        write_part(store, good)
    return status


def table_rows(table, keep: set[str] | None = None) -> list[dict[str, Any]]:
    """An Arrow table of store rows -> row dicts (only the clips in ``keep`` when given). Binary
    columns (the arrays) are views of the table's buffers, not copies (``to_pylist`` would copy
    every clip's bytes into Python ``bytes``); the other columns are Python values."""
    import pyarrow as pa

    ids = table.column("clip_id").to_pylist()
    idx = [i for i, c in enumerate(ids) if keep is None or c in keep]
    rows: list[dict[str, Any]] = [{} for _ in idx]
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            arr = col.combine_chunks()
            off_type = np.int64 if pa.types.is_large_binary(col.type) else np.int32
            offsets = np.frombuffer(arr.buffers()[1], off_type)[arr.offset : arr.offset + len(arr) + 1]
            data = memoryview(arr.buffers()[2]) if arr.buffers()[2] is not None else memoryview(b"")
            valid = arr.is_valid().to_numpy(zero_copy_only=False) if arr.null_count else None
            for j, i in enumerate(idx):
                rows[j][name] = data[offsets[i] : offsets[i + 1]] if valid is None or valid[i] else None
        else:
            values = col.to_pylist()
            for j, i in enumerate(idx):
                rows[j][name] = values[i]
    return rows


LABELS_FILE = "labels.json"  # clip id -> the digest of what its labels were decoded from (label_digests)


def label_digests(clips: list[Clip]) -> dict[str, str]:
    """clip id -> a digest of what its store row's labels are decoded from: its label (categorical,
    from the listing), the bytes of its annotation files (continuous: ``va_path``, and RECOLA's
    ``valence_path``/``arousal_path``) and how they are read (``va_format``, ``va_rate``, a constant
    ``va_value``: raybench/data/annotations.py). No path goes in: a store reached from another
    machine, or through another mirror of a remote root, compares alike."""
    of_file: dict[str, bytes] = {}  # an annotation file several clips read (one per person of a video)

    def file_digest(path: str) -> bytes:
        if path not in of_file:
            of_file[path] = hashlib.sha256(Path(path).read_bytes()).digest()
        return of_file[path]

    out = {}
    for c in clips:
        meta = c.meta or {}
        read = [c.label] + [meta.get(k) for k in ("va_format", "va_rate", "va_value")]
        h = hashlib.sha256(str(read).encode())  # (str: an int or a NumPy integer alike)
        for path in (c.va_path, meta.get("valence_path"), meta.get("arousal_path")):
            h.update(file_digest(path) if path else b"-")
        out[c.clip_id] = h.hexdigest()[:16]
    return out


MEDIA_FILE = "media.json"  # clip id -> the digest of the media files it was decoded from (media_digests)
def media_digests(clips: list[Clip], mirror: str | Path | None = None) -> dict[str, str]:
    """clip id -> a digest of the media files its store row is decoded from: its video and a separate
    audio file (``meta.audio_path``), each by its size and first and last 16 KiB
    (:func:`raybench.storage.ends_digest`); copying the dataset, or uploading the same files again,
    keeps it. A file of a remote root (``mirror``: its local mirror) has its digest read from the bucket
    by :func:`raybench.storage.mirror_root`. A file that is not there counts as such (it is decoded when
    it comes). The dataset's face crops (``data.face=dataset``: a file per frame) are not covered. No
    path goes in."""
    stamps = storage.mirror_stamps(Path(mirror)) if mirror else {}

    def file_digest(path: str | None) -> str:
        if not path:
            return "-"
        if mirror and str(path).startswith(str(mirror)):  # a placeholder of the mirror (else a local file)
            stamp = stamps.get(str(path)[len(str(mirror)):].lstrip("/")) or []
            return stamp[2] if len(stamp) == 3 else "none"
        try:
            return storage.local_ends_digest(path)
        except OSError:  # not there, not readable, a folder: the decoding says what (the clip is marked bad)
            return "none"

    return {c.clip_id: hashlib.sha256(f"{file_digest(c.video_path)}|{file_digest((c.meta or {}).get('audio_path'))}"
                                      .encode()).hexdigest()[:16] for c in clips}


def media_files(c: Clip) -> str:
    """A clip's video, and its separate audio file where it has one (for the messages)."""
    audio = (c.meta or {}).get("audio_path")
    return f"{c.video_path} and {audio}" if audio else c.video_path


def changed_clips(store: "ClipStore", clips: list[Clip], labels: dict[str, str] | None = None,
                  media: dict[str, str] | None = None) -> list[Clip]:
    """The clips the store holds whose label or annotation files changed since they were decoded (a
    corrected annotation release, an edited label: their digest recorded in ``labels.json`` is not
    ``labels``', :func:`label_digests`), or whose video or audio files did (a video replaced under its
    name: ``media.json`` against ``media``, :func:`media_digests`). A clip with nothing recorded (a store
    made before labels.json, 2026-12-03, or media.json, 2026-12-04) is taken as decoded from its files now."""
    checks = [(store.recorded(f), now) for f, now in ((LABELS_FILE, labels), (MEDIA_FILE, media)) if now is not None]
    changed = [c for c in clips if any(c.clip_id in had and had[c.clip_id] != now[c.clip_id] for had, now in checks)]
    done = store.done_ids() if changed else set()
    return [c for c in changed if c.clip_id in done]


def retried_clips(store: "ClipStore", clips: list[Clip], labels: dict[str, str] | None = None,
                  media: dict[str, str] | None = None) -> list[Clip]:
    """The clips the store marked bad whose label, annotation, video or audio files changed since (a
    mended annotation, a video put right): their mark's recorded digests against ``labels`` and
    ``media``. A mark that records no digest of a kind (labels: written before 2026-12-03; media: before
    2026-12-04) is kept whatever those files say now."""
    bad = store.bad()
    return [c for c in clips if c.clip_id in bad and any(
        bad[c.clip_id].get(k) not in (None, now[c.clip_id]) for k, now in (("labels", labels), ("media", media))
        if now is not None)]


def stale_clips(p: "Plan") -> tuple[list[Clip], list[Clip]]:
    """(:func:`changed_clips` of the plan's store; its :func:`retried_clips`): :func:`build` takes both out
    of the store and decodes them again."""
    return (changed_clips(p.store, p.clips, p.labels, p.media),
            retried_clips(p.store, p.clips, p.labels, p.media))


def stale_reasons(clips: list[Clip], store: "ClipStore", p: "Plan") -> list[str]:
    """Which of each stale clip's files changed, with their names (for the message that says so): its
    bad mark's digests, or the store's recorded ones, against the plan's."""
    bad, labels, media = store.bad(), store.recorded(LABELS_FILE), store.recorded(MEDIA_FILE)
    return [_stale_reason(c, bad.get(c.clip_id) or {"labels": labels.get(c.clip_id), "media": media.get(c.clip_id)},
                          p) for c in clips]


def _stale_reason(c: Clip, had: dict, p: "Plan") -> str:
    what = []
    if had.get("labels") not in (None, p.labels.get(c.clip_id)):
        what.append(c.va_path or f"label {c.label}")
    if had.get("media") not in (None, p.media.get(c.clip_id)):
        what.append(media_files(c))
    return f"{c.clip_id} ({', '.join(what)})"


def labels_digest(digests: dict[str, str]) -> str:
    """One digest of every listed clip's :func:`label_digests` (or :func:`media_digests`): recorded with
    a sweep's data (the MLflow dataset's profile), so that runs on one store trained on other annotation
    releases (or other videos under the same names) tell apart."""
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:16]


class ClipStore:
    """One store, on a local disk (``path`` a folder) or in an object store (``path`` a URI)."""

    def __init__(self, path: str | Path):
        self.path: str | Path = path if is_remote(str(path)) else Path(path)
        self.fs, self._root = storage.split(path)
        self._footers: dict[str, Any] = {}  # part file -> its parsed Parquet footer, columns (_metadata)

    def __repr__(self) -> str:
        return f"ClipStore({str(self.path)!r})"

    def __getstate__(self) -> dict[str, Any]:  # sent to a Ray task: without the footers read so far
        return {**self.__dict__, "_footers": {}}

    def _p(self, rel: str) -> str:
        return f"{self._root.rstrip('/')}/{rel}"

    def write_bytes(self, rel: str, data: bytes) -> None:
        storage.write_bytes(self.fs, self._p(rel), data)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode())

    def part_files(self) -> list[str]:
        return [p for p in storage.list_files(self.fs, self._p("parts"), ".parquet")
                if p.rsplit("/", 1)[-1].startswith("part-")]

    def done_ids(self) -> set[str]:
        parts = self.part_files()
        groups = self.index(parts) or self._scan_groups(parts)
        return {c for part in groups.values() for g in part for c in g}

    def mark_bad(self, clip_id: str, video_path: str, reason: str, labels: str | None = None,
                 media: str | None = None) -> None:
        """Record a clip that cannot be used (``bad/<clip id>.json``): skipped by every later run, until
        its label, annotation or media files change (``labels``, ``media``: its :func:`label_digests` and
        :func:`media_digests` digests when marked: :func:`retried_clips`)."""
        self.write_text(f"bad/{clip_id}.json", json.dumps({"clip_id": clip_id, "video_path": video_path,
                                                           "reason": reason,
                                                           **({"labels": labels} if labels else {}),
                                                           **({"media": media} if media else {})}))

    def _remove(self, rel: str) -> None:
        p = self._p(rel)
        if storage.exists(self.fs, p):
            self.fs.delete_file(p)

    def drop_clips(self, ids: set[str]) -> None:
        """Take these clips out of the store (their rows, bad marks and warnings), so that the next
        build decodes them again. A part file holding one is written anew without it; the old one is
        deleted first: a drop cut short loses that part's other clips, which the next build decodes
        again, and never leaves a clip in two parts."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        parts = self.part_files()
        groups = self.index(parts) or self._scan_groups(parts)
        for part in parts:
            if not any(ids.intersection(g) for g in groups[part.rsplit("/", 1)[-1]]):
                continue
            with self.fs.open_input_file(part) as f:
                table = pq.ParquetFile(f).read()
            kept = table.filter(pc.invert(pc.is_in(table.column("clip_id"), value_set=pa.array(sorted(ids)))))
            self.fs.delete_file(part)
            self._footers.pop(part, None)
            if kept.num_rows:
                write_table(self, kept)
        for i in ids:
            self._remove(f"bad/{i}.json")
            self._remove(f"warnings/{i}.json")

    def bad(self) -> dict[str, dict]:
        out = {}
        for p in storage.list_files(self.fs, self._p("bad"), ".json"):
            out[p.rsplit("/", 1)[-1][: -len(".json")]] = json.loads(storage.read_bytes(self.fs, p))
        return out

    def warnings(self) -> dict[str, str]:
        """clip id -> the warning its decoding gave (e.g. an annotation shorter than its video)."""
        out = {}
        for p in storage.list_files(self.fs, self._p("warnings"), ".json"):
            w = json.loads(storage.read_bytes(self.fs, p))
            out[w["clip_id"]] = w["warning"]
        return out

    def faces_found(self, ids: list[str]) -> int:
        """How many of these clips had a face found (``data.face: detect``; a clip without falls back
        to the centre crop)."""
        rows = self.read_clips(ids, columns=["face_found"]) if ids else []
        return sum(bool(r.get("face_found", True)) for r in rows)

    def recorded(self, name: str) -> dict[str, str]:
        """clip id -> the digest recorded in ``name``: ``labels.json`` (:func:`label_digests` of what its row's
        labels were decoded from; none in a store made before 2026-12-03) or ``media.json``
        (:func:`media_digests` of its video and audio files; none before 2026-12-04)."""
        p = self._p(name)
        return json.loads(storage.read_bytes(self.fs, p)) if storage.exists(self.fs, p) else {}

    def record(self, name: str, digests: dict[str, str]) -> None:
        """Add these clips' digests to ``name`` (:meth:`recorded`; the ones recorded before are kept)."""
        had = self.recorded(name)
        if any(had.get(k) != v for k, v in digests.items()):
            self.write_text(name, json.dumps({**had, **digests}, sort_keys=True))

    def info(self) -> dict[str, Any]:
        p = self._p("_COMPLETE.json")
        return json.loads(storage.read_bytes(self.fs, p)) if storage.exists(self.fs, p) else {}

    def read_clips(self, ids: list[str] | set[str] | None = None,
                   columns: list[str] | None = None) -> list[dict[str, Any]]:
        """Rows for the given clip ids (all when None), read with pyarrow (no Ray)."""
        import pyarrow.dataset as pads

        if ids is not None and not len(ids):
            return []
        ds = pads.dataset(self.part_files(), format="parquet", filesystem=self.fs)
        filt = pads.field("clip_id").isin(sorted(ids)) if ids is not None else None
        return ds.to_table(filter=filt, columns=columns).to_pylist()

    def _scan_groups(self, parts: list[str]) -> dict[str, list[list[str]]]:
        """part file name -> the clip ids of each of its row groups (one read per part file)."""
        import pyarrow.parquet as pq

        out = {}
        for p in parts:
            with self.fs.open_input_file(p) as f:
                pf = pq.ParquetFile(f)
                ids = pf.read(columns=["clip_id"]).column("clip_id").to_pylist()
                sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
            starts = np.cumsum([0, *sizes])
            out[p.rsplit("/", 1)[-1]] = [ids[a:b] for a, b in zip(starts[:-1], starts[1:])]
        return out

    def write_index(self) -> None:
        """Write ``index.json``: the clip ids of every part file's row groups, so that a trial's workers
        find their clips' row groups with one read (:meth:`row_groups`) instead of one per part file."""
        self.write_text("index.json", json.dumps({"parts": self._scan_groups(self.part_files())}))

    def index(self, parts: list[str]) -> dict[str, list[list[str]]] | None:
        """The store's index when it covers exactly ``parts`` (the part files now), else None (a store
        from before the index, or one that gained parts after it was written: read the parts then)."""
        p = self._p("index.json")
        if not storage.exists(self.fs, p):
            return None
        groups = json.loads(storage.read_bytes(self.fs, p))["parts"]
        return groups if set(groups) == {q.rsplit("/", 1)[-1] for q in parts} else None

    def row_groups(self, ids: list[str] | set[str] | None = None) -> list[tuple[str, int]]:
        """The (part file, row group) pairs that hold any of ``ids`` (all when None), in a fixed order.
        A store written by this version holds one clip per row group; an older one up to a part file's
        clips (its other clips are filtered out when read: :meth:`iter_groups`). From the store's index
        when it is current, else from the part files themselves."""
        want = None if ids is None else set(ids)
        parts = sorted(self.part_files())
        groups = self.index(parts) or self._scan_groups(parts)
        out = []
        for p in parts:
            for g, members in enumerate(groups[p.rsplit("/", 1)[-1]]):
                if want is None or want.intersection(members):
                    out.append((p, g))
        return out

    def _metadata(self, part: str):
        """A part file's Parquet footer and column names, parsed once per store object (parts are immutable): a clip read
        then skips the footer (2026-11-30, 48 px clips of 32 frames: 0.7 -> 0.5 ms a clip)."""
        md = self._footers.get(part)
        if md is None:
            import pyarrow.parquet as pq

            with self.fs.open_input_file(part) as f:
                meta = pq.read_metadata(f)
            md = self._footers[part] = (meta, meta.schema.to_arrow_schema().names)
        return md

    def iter_groups(self, groups: list[tuple[str, int]], keep: set[str] | None = None,
                    columns: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """Rows of the given row groups, one group read at a time, in the order given; only the clips
        in ``keep`` (all when None), only the ``columns`` the store has of those given (all when None:
        training reads only what its method uses). Memory holds one row group. Safe to call from
        several threads at once."""
        import pyarrow.parquet as pq

        want = None if columns is None else set(columns)
        for p, g in groups:
            md, names = self._metadata(p)
            cols = None if want is None else [c for c in names if c in want or c == "clip_id"]  # (keep needs it)
            with self.fs.open_input_file(p) as f:
                table = pq.ParquetFile(f, metadata=md).read_row_group(g, columns=cols)
            yield from table_rows(table, keep)

    def group_rows(self, group: tuple[str, int]) -> int:
        """How many clips a row group holds (one, in a store written since 2026-11-30)."""
        return self._metadata(group[0])[0].row_group(group[1]).num_rows

    def arrays_nbytes(self, ids: list[str] | set[str] | None, modalities: Iterable[str], labels: bool = True) -> int:
        """The bytes of these clips' arrays of ``modalities`` (video, audio, flow) and labels (unless not
        ``labels``) as the input pipeline holds them (from their shapes: one read of small columns): what
        keeping the clips in memory takes (``train.cache_gib``)."""
        itemsize = {"video": 1, "audio": 4, "flow": 2, "video_emb": 4, "audio_emb": 4}
        mods = [m for m in modalities if m in itemsize]
        rows = self.read_clips(ids, columns=["num_frames"] + [f"{m}_shape" for m in mods])
        total = 0
        for r in rows:
            total += int(r["num_frames"]) * 2 * 4 if labels else 0  # va
            for m in mods:
                total += int(np.prod(r[f"{m}_shape"] or [0])) * itemsize[m]
        return total

    def iter_clips(self, ids: list[str] | set[str], columns: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """Rows of ``ids`` (their ``columns``: all when None) streamed one row group at a time, in the
        store's order."""
        yield from self.iter_groups(self.row_groups(ids), set(ids), columns)

    def audio_stats(self, ids: list[str] | set[str], modality: str = "audio") -> tuple[np.ndarray, np.ndarray]:
        """Per-feature mean and std of the audio features (or of ``modality``'s: ``audio_emb``) over
        ``ids`` (the training clips); every clip must be in the store."""
        rows = self.read_clips(ids, columns=["clip_id", f"{modality}_sum", f"{modality}_sumsq", f"{modality}_shape"])
        if not rows:
            raise PrepareError(f"no clips to compute audio statistics from in {self.path}")
        if len(rows) < len(set(ids)):
            lack = sorted(set(ids) - {r["clip_id"] for r in rows})
            raise PrepareError(f"{len(lack)} clip(s) are not in {self.path} ({modality}), e.g. {lack[0]}; rerun the "
                               "sweep to encode them")
        s = np.sum([r[f"{modality}_sum"] for r in rows], 0)
        ss = np.sum([r[f"{modality}_sumsq"] for r in rows], 0)
        n = float(sum(r[f"{modality}_shape"][0] for r in rows))
        mean = s / n
        std = np.sqrt(np.maximum(ss / n - mean**2, 1e-8))
        return mean.astype(np.float32), std.astype(np.float32)


# an embedding store's columns for the modality it replaces (raybench/data/embed.py)
EMBEDDED_COLUMNS = {m: (m, f"{m}_shape", f"{m}_sum", f"{m}_sumsq") for m in ("audio_emb", "video_emb")}


class JoinedStore:
    """A clip store whose arrays of some modalities come from embedding stores of the same clips
    (``data.audio.encoder``): reads, clip by clip, the clip store's row and its embeddings' row, and
    gives them as one row. Training reads it as it reads a :class:`ClipStore` (the clip store's row
    groups; the embedding stores hold one clip per row group)."""

    def __init__(self, base: ClipStore, embedded: dict[str, ClipStore]):
        self.base, self.embedded = base, embedded
        self.path = base.path
        self._where: dict[str, dict[str, tuple[str, int]]] = {}  # modality -> clip id -> its row group

    def __repr__(self) -> str:
        return f"JoinedStore({self.base!r}, {self.embedded!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_where": {}}

    def _cols(self, columns: Iterable[str] | None) -> tuple[list[str] | None, dict[str, list[str]]]:
        """``columns`` split into the clip store's and each embedding store's (all when None)."""
        want = None if columns is None else set(columns)
        emb = {m: [c for c in EMBEDDED_COLUMNS[m] if want is None or c in want] for m in self.embedded}
        taken = {c for cs in emb.values() for c in cs}
        base = None if want is None else [c for c in want if c not in taken] + ["clip_id"]
        return (None if base is None else list(dict.fromkeys(base))), emb

    def _group_of(self, modality: str, clip_id: str) -> tuple[str, int]:
        where = self._where.get(modality)
        if where is None:
            store = self.embedded[modality]
            parts = sorted(store.part_files())
            groups = store.index(parts) or store._scan_groups(parts)
            where = self._where[modality] = {c: (p, g) for p in parts for g, members in
                                             enumerate(groups[p.rsplit("/", 1)[-1]]) for c in members}
        if clip_id not in where:
            raise PrepareError(f"clip {clip_id} is not in the embedding store {self.embedded[modality].path} "
                               f"({modality}); rerun the sweep to encode it")
        return where[clip_id]

    def _join(self, rows: Iterable[dict[str, Any]], emb: dict[str, list[str]]) -> Iterator[dict[str, Any]]:
        for row in rows:
            for m, cols in emb.items():
                if cols:
                    cid = row["clip_id"]
                    (erow,) = self.embedded[m].iter_groups([self._group_of(m, cid)], {cid}, ["clip_id", *cols])
                    row.update(erow)
            yield row

    def iter_groups(self, groups: list[tuple[str, int]], keep: set[str] | None = None,
                    columns: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        base, emb = self._cols(columns)
        yield from self._join(self.base.iter_groups(groups, keep, base), emb)

    def iter_clips(self, ids: list[str] | set[str], columns: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        yield from self.iter_groups(self.row_groups(ids), set(ids), columns)

    def read_clips(self, ids: list[str] | set[str] | None = None,
                   columns: list[str] | None = None) -> list[dict[str, Any]]:
        base, emb = self._cols(columns)
        rows = self.base.read_clips(ids, base)
        for m, cols in emb.items():
            if cols:
                got = {r["clip_id"]: r for r in self.embedded[m].read_clips(ids, ["clip_id", *cols])}
                for r in rows:
                    if r["clip_id"] not in got:
                        raise PrepareError(f"clip {r['clip_id']} is not in the embedding store "
                                           f"{self.embedded[m].path} ({m}); rerun the sweep to encode it")
                    r.update(got[r["clip_id"]])
        return rows

    def row_groups(self, ids: list[str] | set[str] | None = None) -> list[tuple[str, int]]:
        return self.base.row_groups(ids)

    def group_rows(self, group: tuple[str, int]) -> int:
        return self.base.group_rows(group)

    def arrays_nbytes(self, ids: list[str] | set[str] | None, modalities: Iterable[str], labels: bool = True) -> int:
        mods = list(modalities)
        total = self.base.arrays_nbytes(ids, [m for m in mods if m not in self.embedded], labels)
        return total + sum(self.embedded[m].arrays_nbytes(ids, [m], labels=False) for m in mods if m in self.embedded)


    def audio_stats(self, ids: list[str] | set[str], modality: str = "audio") -> tuple[np.ndarray, np.ndarray]:
        return (self.embedded[modality] if modality in self.embedded else self.base).audio_stats(ids, modality)

    def faces_found(self, ids: list[str]) -> int:
        return self.base.faces_found(ids)

    def info(self) -> dict[str, Any]:
        return self.base.info()


def open_store(store_path: str, embeddings: dict[str, str] | None = None) -> ClipStore | JoinedStore:
    """The store a trial reads (``data["store_path"]``, ``data["embeddings"]``): the clip store, joined
    with the embedding stores that replace a modality's arrays when there are any."""
    base = ClipStore(store_path)
    return JoinedStore(base, {m: ClipStore(p) for m, p in embeddings.items()}) if embeddings else base


@dataclass
class Prepared:
    store: ClipStore
    clips: list[Clip]  # usable clips (bad ones removed), with splits
    dataset: str
    task: str
    class_names: list[str]
    root: str
    decoded: int  # clips decoded by this call (0 when the store was reused)
    bad: dict[str, dict] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # one per clip that has one, this call's or the store's
    face_found: int | None = None  # data.face detect/dataset: usable clips with a face found (else a centre crop)
    left_out: list[dict] = field(default_factory=list)  # Plan.left_out: listed files the manifest left out
    fingerprint: str = ""  # the store's fingerprint (its settings' hash, the suffix of its folder name)
    # modality -> the embedding store that replaces its arrays (data.audio.encoder), and what it holds
    embeddings: dict[str, str] = field(default_factory=dict)
    embedding_info: dict[str, dict] = field(default_factory=dict)
    label_digests: dict[str, str] = field(default_factory=dict)  # clip id -> label_digests (what its labels came from)
    media_digests: dict[str, str] = field(default_factory=dict)  # clip id -> media_digests (its video and audio files)

    def joined(self) -> ClipStore | JoinedStore:
        """The store training reads: the clip store, with the embeddings in place of their modality's arrays."""
        return open_store(str(self.store.path), self.embeddings)

    def ids(self, split: str) -> list[str]:
        return [c.clip_id for c in self.clips if c.split == split]


def store_root(data_cfg: DataConfig) -> str | Path:
    d = data_cfg.store_dir
    return d if is_remote(d) else Path(d or cache_home() / "stores").expanduser()


@dataclass
class Plan:
    """What the prepare stage will do, worked out from the file listing alone (no Ray, no decoding)."""

    dataset: Any  # the adapter (raybench.data.datasets.base.Dataset)
    data_cfg: DataConfig
    root: Path  # local root (a mirror of a remote one)
    root_uri: str | None
    clips: list[Clip]  # every clip of the manifest, with splits
    fingerprint: str
    store: ClipStore
    # files the dataset lists that its manifest left out, and why: [{"files": n, "why": text}]
    left_out: list[dict] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # clip id -> label_digests (recorded by build)
    media: dict[str, str] = field(default_factory=dict)  # clip id -> media_digests (recorded by build)

    @property
    def name(self) -> str:
        return self.data_cfg.dataset


def plan(data_cfg: DataConfig | dict[str, Any]) -> Plan:
    """The part of the prepare stage that needs only the file listing: the dataset root (generated
    when synthetic, mirrored when remote), the manifest, splits and folds, the store's fingerprint.

    Every error it raises (a missing root, a layout that does not match, fewer subjects than
    folds) comes before Ray starts: the sweep plans every dataset first."""
    from raybench.data.datasets import get_dataset

    data_cfg = data_config(data_cfg)
    ds_name = data_cfg.dataset
    dataset = get_dataset(ds_name)
    root_uri = data_cfg.root if is_remote(data_cfg.root) else None
    if root_uri:
        fs, rpath = storage.split(root_uri)
        if hasattr(dataset, "generator_kwargs"):
            # a synthetic set with a root in a bucket: generated here once, uploaded for every node; the marker,
            # written last, names the generator settings (the local folder's name): an upload cut short has
            # none and is made again, a set of other settings is refused (before 2026-12-04 any file there
            # counted as the whole set, of whatever settings)
            import pyarrow.fs as pafs

            want = Path(dataset.default_root(data_cfg)).name
            marker = f"{rpath.rstrip('/')}/{SYNTH_MARKER}"
            have = (json.loads(storage.read_bytes(fs, marker)).get("generated")
                    if storage.exists(fs, marker) else None)
            if have is not None and have != want:
                raise PrepareError(f"{root_uri} holds a synthetic {ds_name} generated with other data.synth "
                                   f"settings ({have}; these make {want}): give data.root another folder, or the "
                                   "settings it was generated with")
            if have is None:
                local = dataset.ensure(dataset.default_root(data_cfg), data_cfg)
                there = {p[len(rpath.rstrip("/")):].lstrip("/") for p in storage.list_files(fs, rpath, recursive=True)}
                ours = {str(f.relative_to(local)) for f in Path(local).rglob("*")
                        if f.is_file() and not f.name.startswith(".")}
                if there - ours:  # not an upload of this set cut short: another set (or other files) is there
                    raise PrepareError(f"{root_uri} holds files that are not the synthetic {ds_name} these data.synth "
                                       f"settings make (e.g. {sorted(there - ours)[0]}), and no marker of a "
                                       "raybench upload: give data.root an empty folder (or clear that one)")
                partial = bool(there)
                print(f"[raybench] prepare: uploading the generated {ds_name} to {root_uri}"
                      + (" (again: the files there have no completion marker, an upload cut short)" if partial else ""),
                      flush=True)
                pafs.copy_files(str(local), rpath, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
                storage.write_bytes(fs, marker, json.dumps({"generated": want}).encode())
        # adapters read a local mirror (annotations downloaded, media as placeholders fetched when decoded)
        try:
            root = storage.mirror_root(root_uri, cache_home())
        except OSError as e:  # a listing or a read that failed: said with the dataset, not as a traceback
            raise PrepareError(f"{ds_name}: data.root {root_uri}: {e}") from None
        print(f"[raybench] prepare: {ds_name} root {root_uri} mirrored to {root}", flush=True)
    else:
        root = Path(data_cfg.root or dataset.default_root(data_cfg)).expanduser()
    dataset.ensure(root, data_cfg)
    try:
        clips, left_out = dataset.listed(root, data_cfg)
    except ValueError as e:  # e.g. fewer subjects than folds
        raise PrepareError(f"{ds_name} under {root}: {e}") from None
    if data_cfg.max_clips:
        keyed = sorted(clips, key=lambda c: hashlib.sha1(c.clip_id.encode()).hexdigest())
        keep = {c.clip_id for c in keyed[: data_cfg.max_clips]}
        clips = [c for c in clips if c.clip_id in keep]
    ids = [c.clip_id for c in clips]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise PrepareError(f"{ds_name}: clip ids are not unique under {root}: {dup}")
    for split in ("train", "val"):
        if not any(c.split == split for c in clips):
            raise PrepareError(f"{ds_name}: no clip in the {split!r} split (of {len(clips)} clips under {root}); "
                               "check data.split and data.max_clips")
    from raybench.data.embed import EncoderError, encoder_spec, vision_spec

    try:  # a missing or unusable encoder folder is said before Ray starts
        if data_cfg.audio.encoder.path:
            encoder_spec(data_cfg.audio.encoder)
        if data_cfg.video.encoder.path:
            vision_spec(data_cfg.video.encoder)
    except EncoderError as e:
        raise PrepareError(f"{ds_name}: {e}") from None
    fp = fingerprint(ds_name, root_uri or root, data_cfg, clips)
    store = ClipStore(storage.join(store_root(data_cfg), f"{ds_name}-{fp}"))
    return Plan(dataset=dataset, data_cfg=data_cfg, root=root, root_uri=root_uri, clips=clips, fingerprint=fp,
                store=store, left_out=left_out, labels=label_digests(clips),
                media=media_digests(clips, root if root_uri else None))


def clips_per_task(n: int, cpus: int, batch_size: int = 8, tasks_per_cpu: int = 4) -> int:
    """Clips one prepare task decodes (and writes as one part file): at most ``batch_size``, and few
    enough that every CPU of the cluster gets ``tasks_per_cpu`` tasks, so the last tasks' tail is short.
    (Before 2026-11-30 a set under 2 x ``batch_size`` clips went to Ray Data as one block: one task
    decoded every clip while the other CPUs idled.)"""
    return max(1, min(batch_size, math.ceil(n / (max(1, cpus) * tasks_per_cpu))))


def build(p: Plan, batch_size: int = 8, progress: bool = True, reservation: bool = True) -> Prepared:
    """The decoding part of the prepare stage: Ray Data decodes the clips the store lacks.

    ``reservation``: Ray Data's per-operator resource reservation (on: Ray's default).
    ``python -m raybench.bench --prepare`` compares both: no difference once the clips are split
    into enough tasks (``clips_per_task``)."""
    import ray

    ds_name, data_cfg, clips, store = p.name, p.data_cfg, p.clips, p.store
    ids = [c.clip_id for c in clips]
    # clips decoded, or marked bad, from other labels, annotation, video or audio files than these (a corrected
    # release, a video replaced under its name): out of the store, to be decoded again from these (before
    # 2026-12-04 a changed annotation's store was refused, naming them: the remedy, deleting the store, decoded
    # every clip again; before 2026-12-03 it was reused with the old labels; a replaced video was never noticed)
    relabel, retry = stale_clips(p)
    if relabel or retry:
        shown = "; ".join(stale_reasons((relabel + retry)[:5], store, p))
        print(f"[raybench] prepare: {ds_name}: {len(relabel)} clip(s) of the clip store {store.path}"
              + (f" and {len(retry)} it marked bad" if retry else "") + " were decoded from other label, "
              f"annotation, video or audio files than the dataset's now: {shown}"
              f"{' ...' if len(relabel) + len(retry) > 5 else ''}; decoding them again", flush=True)
        store.drop_clips({c.clip_id for c in relabel + retry})
    done, bad = store.done_ids(), store.bad()
    pending = [c for c in clips if c.clip_id not in done and c.clip_id not in bad]
    # what the clips about to be decoded are decoded from, recorded first: a build cut short, and files put back
    # before the next, must not leave a clip decoded from new files recorded with the old digest
    store.record(LABELS_FILE, {c.clip_id: p.labels[c.clip_id] for c in pending})
    store.record(MEDIA_FILE, {c.clip_id: p.media[c.clip_id] for c in pending})
    warnings: list[str] = []
    decoded = 0
    if pending:
        verb = "resuming" if (done or bad) else "building"
        print(f"[raybench] prepare: {verb} clip store {store.path} ({len(pending)} of {len(clips)} clips to decode)",
              flush=True)
        t0 = time.time()
        items = [{"row": json.dumps(c.to_row()), "labels": p.labels[c.clip_id], "media": p.media[c.clip_id]}
                 for c in pending]
        per_task = clips_per_task(len(items), int(ray.cluster_resources().get("CPU", 1)), batch_size)
        ctx = ray.data.DataContext.get_current()
        was = ctx.op_resource_reservation_enabled
        ctx.op_resource_reservation_enabled = reservation  # the datasets made here take a copy of the context
        try:
            # one block per task: map_batches runs one task per block of per_task rows
            rds = ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / per_task))
            out = rds.map_batches(_prepare_batch, batch_size=per_task, batch_format="numpy",
                                  fn_kwargs={"store_path": str(store.path), "data_cfg": data_cfg,
                                             "mirror": str(p.root) if p.root_uri else None, "root_uri": p.root_uri})
        finally:
            ctx.op_resource_reservation_enabled = was
        n_done, next_report = 0, 0.1
        for status in out.iter_batches(batch_size=None, batch_format="numpy"):
            fatal = [f for f in status["fatal"] if f]
            if fatal:
                raise PrepareError(
                    f"{ds_name}: the prepare stage stopped: {fatal[0]}\n"
                    "  This is not a problem of that one clip: the same error would stop every clip (a library "
                    "that does not load on a worker, a bug, a full disk, no memory) or it may pass next time (a "
                    "file of a remote root that did not come), so no clip was marked bad for it. Clips decoded "
                    f"before it are kept in {store.path}; fix the cause and rerun to go on from there.")
            n_done += len(status["clip_id"])
            decoded += int(np.sum(status["ok"]))
            warnings += [w for w in status["warning"] if w]
            if progress and n_done / len(pending) >= next_report:
                print(f"[raybench] prepare: {n_done}/{len(pending)} clips ({time.time() - t0:.0f} s)", flush=True)
                next_report = n_done / len(pending) + 0.1
        bad = store.bad()
        for w in warnings:
            log.warning(w)
            print(f"[raybench] warning: {w}", flush=True)
    else:
        print(f"[raybench] prepare: reusing clip store {store.path} ({len(clips)} clips, nothing to decode)",
              flush=True)

    done_now = store.done_ids()  # what the clips decoded (now or before) came from: changed_clips compares
    store.record(LABELS_FILE, {c: d for c, d in p.labels.items() if c in done_now})
    store.record(MEDIA_FILE, {c: d for c, d in p.media.items() if c in done_now})
    bad_here = {k: v for k, v in bad.items() if k in set(ids)}
    _say_skipped(bad_here)
    usable = _usable(ds_name, clips, bad_here, data_cfg.max_bad_fraction)
    dataset = p.dataset
    task, class_names = dataset.task_for(data_cfg), list(dataset.class_names_for(data_cfg, clips))
    root = p.root_uri or str(p.root)
    info = {
        "dataset": ds_name, "task": task, "class_names": class_names, "root": root,
        "fingerprint": p.fingerprint, "settings": {k: getattr(data_cfg, k) for k in PREPROCESSING_KEYS},
        "clips": len(done_now), "bad": len(store.bad()),
    }
    if decoded or store.index(store.part_files()) is None:  # new parts, or a store from before the index
        store.write_index()
    store.write_text("_COMPLETE.json", json.dumps(info, indent=1, default=str))
    sp = data_cfg.split
    folds = fold_record(clips, by_clip=sp.protocol == "chunks")  # for this fold count and seed
    if folds:
        chunks = f"-chunks-{sp.chunks}" if sp.protocol == "chunks" else ""
        store.write_text(f"folds/k{sp.folds}{chunks}-seed{sp.seed}.json",
                         json.dumps(folds, indent=1, sort_keys=True))
    embeddings, embedding_info = {}, {}
    for modality, enc in (("audio_emb", data_cfg.audio.encoder), ("video_emb", data_cfg.video.encoder)):
        if not enc.path:
            continue
        from raybench.data.embed import EncoderError, build_embeddings

        try:  # the embedding stage: the encoder over the clips its store lacks
            built = build_embeddings(p, usable, progress, modality)
        except EncoderError as e:
            raise PrepareError(f"{ds_name}: {e}") from None
        embeddings[modality] = built["path"]
        spec = built["spec"]
        embedding_info[modality] = {"encoder": spec["kind"], "folder": spec["folder"], "layers": spec["kept_layers"],
                                    "fingerprint": spec["fingerprint"], "encoded": built["encoded"],
                                    "libraries": built.get("libraries", []), "padded": built.get("padded", 0)}
        if built["bad"]:  # clips the encoder could not take: out of this data configuration, for every method
            _say_skipped(built["bad"])
            bad_here.update(built["bad"])
            usable = _usable(ds_name, clips, bad_here, data_cfg.max_bad_fraction)
    usable_ids = [c.clip_id for c in usable]
    stored = store.warnings()
    for k in usable_ids:  # warnings of clips decoded by an earlier run still hold: say them again
        if k in stored and stored[k] not in warnings:
            print(f"[raybench] warning (clip store): {stored[k]}", flush=True)
    warnings = [stored[k] for k in usable_ids if k in stored]
    face_found = None
    if data_cfg.face in ("detect", "dataset"):
        face_found = store.faces_found(usable_ids)
        print(f"[raybench] {ds_name}: data.face={data_cfg.face} (detector {data_cfg.face_detector}): a face was found "
              f"in {face_found} of {len(usable_ids)} clips" + ("" if face_found == len(usable_ids) else
                                            "; the others use the centre crop of the frame"), flush=True)
        from raybench.data.faces import FACE_MIN_SHARE

        if face_found < FACE_MIN_SHARE * len(usable_ids):
            print(f"[raybench] warning: data.face={data_cfg.face} found a face in under {FACE_MIN_SHARE:.0%} of the "
                  f"{ds_name} clips; "
                  "check that the videos show faces (or the crops are where the dataset keeps them), or use "
                  "data.face=center", flush=True)
    return Prepared(store=store, clips=usable, dataset=ds_name, task=task,
                    class_names=class_names, root=root, decoded=decoded, bad=bad_here, warnings=warnings,
                    face_found=face_found, fingerprint=p.fingerprint, embeddings=embeddings,
                    embedding_info=embedding_info, left_out=list(p.left_out), label_digests=dict(p.labels),
                    media_digests=dict(p.media))


def _say_skipped(bad: dict[str, dict]) -> None:
    for _, v in sorted(bad.items()):
        print(f"[raybench] skipped {v['video_path']}: {v['reason']}", flush=True)


def _usable(ds_name: str, clips: list, bad: dict[str, dict], max_bad_fraction: float,
            total: int | None = None) -> list:
    """The ``clips`` not in ``bad``; a PrepareError listing every bad clip when more than
    ``max_bad_fraction`` (``data.max_bad_fraction``) of the dataset's ``total`` clips (default: the
    ``clips``) are bad, or when the train or val split is left with none."""
    total = len(clips) if total is None else total
    frac = len(bad) / max(1, total)
    if frac > max_bad_fraction:
        listing = "\n".join(f"  - {v['video_path']}: {v['reason']}" for v in bad.values())
        raise PrepareError(
            f"{ds_name}: {len(bad)} of {total} clips ({frac:.0%}) could not be used, more than "
            f"data.max_bad_fraction={max_bad_fraction}:\n{listing}")
    usable = [c for c in clips if c.clip_id not in bad]
    for split in ("train", "val"):
        if not any(c.split == split for c in usable):
            raise PrepareError(f"{ds_name}: no usable clip in the {split!r} split (of {len(usable)} clips)")
    return usable


def without_clips(prep: Prepared, dropped: dict[str, dict], max_bad_fraction: float, why: str) -> Prepared:
    """``prep`` without the clips of ``dropped`` (clip id -> ``{"clip_id", "video_path", "reason"}``) it
    still uses, each skipped (printed, counted against ``max_bad_fraction``) with its reason and ``why``.
    A sweep's data configurations on one clip store (several encoders, or with and without one) leave
    out every clip one of their encoders could not take, so that all are scored on the same clips."""
    import dataclasses

    ids = {c.clip_id for c in prep.clips}
    extra = {k: {**v, "reason": f"{v['reason']} ({why})"} for k, v in sorted(dropped.items()) if k in ids}
    if not extra:
        return prep
    _say_skipped(extra)
    bad = {**prep.bad, **extra}
    clips = _usable(prep.dataset, prep.clips, bad, max_bad_fraction, total=len(prep.clips) + len(prep.bad))
    usable_ids = [c.clip_id for c in clips]
    stored = prep.store.warnings()
    return dataclasses.replace(
        prep, clips=clips, bad=bad, warnings=[stored[k] for k in usable_ids if k in stored],
        face_found=None if prep.face_found is None else prep.store.faces_found(usable_ids))


def prepare(data_cfg: DataConfig | dict[str, Any], batch_size: int = 8, progress: bool = True) -> Prepared:
    """PREPARE stage: manifest -> Ray Data (decode, features) -> Parquet clip store. ``data_cfg``: the
    ``data`` settings (a mapping takes the defaults for the keys it lacks)."""
    return build(plan(data_cfg), batch_size=batch_size, progress=progress)


def decode_arrays(row: dict[str, Any]) -> dict[str, np.ndarray]:
    """Store row -> video uint8 (T,H,W,3), audio float32 (T*k,F) (each when the row has it), va
    float32 (T,2) (or (0,2)),
    flow float16 (T,H,W,2) when the store has it, and for an annotated clip ``source_va`` float32
    (N,2): its annotation at its own rate (``row["source_va_rate"]`` Hz: the video's frame rate, or the
    annotation's own), NaN where unannotated."""
    out = {"va": np.frombuffer(row["va"], np.float32).reshape(-1, 2)}
    if row.get("video") is not None:  # a row read without a modality (a method that does not use it) lacks it
        out["video"] = np.frombuffer(row["video"], np.uint8).reshape(row["video_shape"])
    if row.get("audio") is not None:
        out["audio"] = np.frombuffer(row["audio"], np.float32).reshape(row["audio_shape"])
    for m in ("audio_emb", "video_emb"):  # an encoder's embeddings (data.audio.encoder, data.video.encoder)
        if row.get(m) is not None:
            out[m] = np.frombuffer(row[m], np.float32).reshape(row[f"{m}_shape"])
    shape = list(row.get("flow_shape") or [])
    if shape and shape[0]:
        out["flow"] = np.frombuffer(row["flow"], np.float16).reshape(shape)
    if row.get("source_va") is not None:
        out["source_va"] = np.frombuffer(row["source_va"], np.float32).reshape(-1, 2)
    return out


def random_store(path: str | Path, frames: list[int], task: str = "categorical", image_size: int = 48,
                 n_mels: int = 64, steps_per_frame: int = 4, n_classes: int = 8, flow: bool = False,
                 fps: float = 10.0, seed: int = 0, clips_per_part: int = 8) -> dict[str, Any]:
    """A clip store of random clips (``frames``: each clip's length) in the store's own layout, written
    without decoding any video: for benchmarks and tests of the input pipeline. Returns the data
    summary a trial takes; every clip is in every split."""
    rng = np.random.default_rng(seed)
    store = ClipStore(path)
    rows, ids = [], []
    for i, T in enumerate(frames):
        cid = f"clip{i:05d}"
        video = rng.integers(0, 256, (T, image_size, image_size, 3), dtype=np.uint8)
        feats = rng.standard_normal((T * steps_per_frame, n_mels), dtype=np.float32)
        va = (rng.uniform(-1, 1, (T, 2)).astype(np.float32) if task == "continuous" else np.zeros((0, 2), np.float32))
        fl = (rng.standard_normal((T, image_size, image_size, 2)).astype(np.float16) if flow
              else np.zeros((0, 0, 0, 2), np.float16))
        rows.append(store_row(cid, int(rng.integers(0, n_classes)) if task == "categorical" else -1, video, feats,
                              va, va, fps, fl, fps, T))
        ids.append(cid)
        if len(rows) == clips_per_part or i == len(frames) - 1:
            write_part(store, rows)
            rows = []
    store.write_index()
    return {"dataset": "random", "task": task, "store_path": str(store.path),
            "class_names": [f"c{c}" for c in range(n_classes)] if task == "categorical" else [],
            "ids": {"train": list(ids), "val": list(ids), "test": list(ids)},
            "audio_mean": [0.0] * n_mels, "audio_std": [1.0] * n_mels, "n_audio_features": n_mels,
            "audio_steps_per_frame": steps_per_frame, "fps": fps}
