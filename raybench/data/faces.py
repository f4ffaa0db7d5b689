"""Face cropping before frames are resized (``data.face``).

- ``none``: the whole frame, resized (the default; right for the synthetic sets, whose faces fill
  the frame).
- ``center``: the central square of the frame.
- ``detect``: a face detector (``data.face_detector``): ``haar``, OpenCV's Haar cascade for frontal
  faces (``haarcascade_frontalface_default.xml``, which ships inside the opencv package), or ``hog``,
  dlib's HOG + linear SVM detector (``dlib.get_frontal_face_detector``: five HOG filters, frontal,
  turned left and right, tilted left and right; its model is compiled into the dlib-bin wheel).
  Nothing is downloaded. On real footage turned in the image plane by 25-45 degrees HOG finds faces
  that Haar misses (README, "Face detection"). Faces are detected on up to
  ``DETECT_FRAMES`` frames spread over the clip; the largest face of each is kept, and the clip is
  cropped to the median of those boxes, enlarged by ``MARGIN`` and made square, so the crop does not
  jitter. A clip with no face found falls back to ``center`` (counted in the clip's
  ``face_found`` column).
- ``dataset``: the organisers' crops where the dataset ships them (Aff-Wild2
  ``cropped_aligned/<video>/00001.jpg``, one image per frame); else as ``detect``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

MODES = ("none", "center", "detect", "dataset")
DETECT_FRAMES = 8
MARGIN = 1.4
# data.face detect/dataset: under this share of clips with a face found, prepare warns and the run is tagged
FACE_MIN_SHARE = 0.9


@lru_cache(maxsize=1)
def _cascade():
    import cv2

    if not hasattr(cv2, "CascadeClassifier"):
        raise RuntimeError(f"OpenCV {cv2.__version__} has no CascadeClassifier: data.face=detect needs "
                           "opencv-python-headless 4.x (raybench pins <5)")
    c = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    if c.empty():
        raise RuntimeError("OpenCV's bundled haarcascade_frontalface_default.xml could not be loaded")
    return c


def detect_largest(frame: np.ndarray) -> tuple[int, int, int, int] | None:
    """The largest frontal face in an RGB frame as (x, y, w, h), or None."""
    import cv2

    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    min_side = max(20, min(gray.shape) // 8)
    faces = _cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
    return int(x), int(y), int(w), int(h)


@lru_cache(maxsize=1)
def _hog():
    try:
        import dlib
    except ImportError as e:  # envcheck checks it first; an ImportError stops prepare (no clip is blamed)
        raise ImportError(f"data.face_detector=hog needs dlib (the dlib-bin wheel, installed with raybench): {e}") from e
    return dlib.get_frontal_face_detector()


def detect_largest_hog(frame: np.ndarray) -> tuple[int, int, int, int] | None:
    """The largest face dlib's HOG detector finds in an RGB frame as (x, y, w, h), or None. Its
    smallest face is 80 px: frames whose shorter side is under 480 px are searched upsampled once
    (faces from 40 px; four times the work)."""
    upsample = 1 if min(frame.shape[:2]) < 480 else 0
    rects = _hog()(np.ascontiguousarray(frame), upsample)
    if len(rects) == 0:
        return None
    H, W = frame.shape[:2]
    r = max(rects, key=lambda r: r.width() * r.height())
    # dlib's boxes may reach past the frame: kept inside it
    x0, y0 = max(0, r.left()), max(0, r.top())
    x1, y1 = min(W, r.right() + 1), min(H, r.bottom() + 1)
    return int(x0), int(y0), int(x1 - x0), int(y1 - y0)


DETECTORS = {"haar": detect_largest, "hog": detect_largest_hog}


def square_box(box: tuple[float, float, float, float], shape: tuple[int, int], margin: float = MARGIN):
    """(x, y, w, h) -> a square (x0, y0, x1, y1) around its centre, ``margin`` times its larger side,
    shifted (and if needed shrunk) to lie inside an image of ``shape`` (H, W)."""
    H, W = shape
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    side = min(int(round(max(box[2], box[3]) * margin)), H, W)
    x0 = int(round(min(max(cx - side / 2, 0), W - side)))
    y0 = int(round(min(max(cy - side / 2, 0), H - side)))
    return x0, y0, x0 + side, y0 + side


def center_box(shape: tuple[int, int]):
    H, W = shape
    side = min(H, W)
    return (W - side) // 2, (H - side) // 2, (W - side) // 2 + side, (H - side) // 2 + side


def clip_box(frames: np.ndarray, detector=detect_largest) -> tuple[tuple[int, int, int, int], bool]:
    """One crop box for a whole clip (T, H, W, 3): the median of the faces found on a few frames."""
    T = len(frames)
    picks = np.unique(np.linspace(0, T - 1, min(T, DETECT_FRAMES)).round().astype(int))
    boxes = [b for b in (detector(frames[i]) for i in picks) if b is not None]
    if not boxes:
        return center_box(frames.shape[1:3]), False
    med = np.median(np.array(boxes, np.float64), axis=0)
    return square_box(tuple(med), frames.shape[1:3]), True


def crop(frames: np.ndarray, mode: str, crops_dir: str | None = None, frame_index: np.ndarray | None = None,
         detector=detect_largest) -> tuple[np.ndarray, bool]:
    """Frames (T, H, W, 3) -> cropped frames (T, h, w, 3) and whether a face was found (or given)."""
    if mode == "none":
        return frames, True
    if mode == "dataset" and crops_dir and frame_index is not None:
        got = read_crops(crops_dir, frame_index)
        if got is not None:
            return got, True
    if mode == "center":
        x0, y0, x1, y1 = center_box(frames.shape[1:3])
        return frames[:, y0:y1, x0:x1], True
    (x0, y0, x1, y1), found = clip_box(frames, detector)
    return frames[:, y0:y1, x0:x1], found


def read_crops(crops_dir: str, frame_index: np.ndarray, transform=None, missing: dict | None = None,
               fetch=None) -> np.ndarray | None:
    """Organisers' per-frame crops ``<dir>/00001.jpg`` (1-based); a missing frame repeats the last one
    found before it. None when the folder has none of the frames. ``transform`` (e.g. the resize)
    is applied to each image as it is read. ``missing`` (a dict) gets ``frames``: how many of the
    frames had no crop (the organisers leave out frames with no face), so the caller can say it.
    ``fetch``: path -> the local file to read, or None when there is no such crop (a remote root: its
    mirror holds empty placeholders, and only on the driver's node; the crop is fetched when read)."""
    import cv2

    d = Path(crops_dir)
    out, last, absent = [], None, 0
    for i in frame_index:
        p = d / f"{int(i) + 1:05d}.jpg"
        src = fetch(str(p)) if fetch else (str(p) if p.exists() else None)
        img = cv2.imread(src) if src else None
        if img is not None:
            last = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            if transform is not None:
                last = transform(last)
        else:
            absent += 1
        out.append(last)
    if missing is not None:
        missing["frames"] = absent
    if last is None:
        return None
    first = next(x for x in out if x is not None)
    return np.stack([x if x is not None else first for x in out])
