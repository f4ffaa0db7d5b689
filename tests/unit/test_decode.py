import numpy as np
import pytest

from raybench.data.decode import DecodeError, decode_clip, resample_indices
from raybench.data.features import audio_features, resample_labels, window_ms
from raybench.data.synth import write_mp4
from raybench.schema import AudioConfig, DataConfig


def test_resample_indices_30_to_10_and_29_97():
    assert resample_indices(30, 30.0, 10.0).tolist() == list(range(0, 30, 3))
    idx = resample_indices(300, 29.97, 15.0)
    assert len(idx) == 150 and idx[-1] <= 299 and np.all(np.diff(idx) >= 1)


def test_decode_resamples_and_resizes(tiny_ravdess):
    f = sorted(tiny_ravdess.glob("Actor_02/*.mp4"))[0]
    d = decode_clip(str(f), fps=5, image_size=40, sample_rate=16000)
    assert d.frames.shape == (5, 40, 40, 3) and d.frames.dtype == np.uint8
    assert d.source_fps == pytest.approx(10) and d.source_frames == 10
    assert abs(len(d.audio) - 16000) < 2048  # 1 s of mono 16 kHz (AAC adds priming samples)


def test_width_decord_cannot_copy_falls_back_to_pyav(tmp_path):
    frames = np.zeros((6, 48, 48, 3), np.uint8)
    frames[:, 10:20, 10:20] = 200
    audio = (0.3 * np.sin(np.arange(8000) / 5)).astype(np.float32)
    write_mp4(tmp_path / "w48.mp4", frames, 10, audio, 16000)
    d = decode_clip(str(tmp_path / "w48.mp4"), fps=10, image_size=48)
    assert d.frames.shape == (6, 48, 48, 3)
    assert d.frames[:, 15, 15].mean() > 150 and d.frames[:, 40, 40].mean() < 50


def test_video_without_audio_track_is_a_decode_error(tmp_path):
    write_mp4(tmp_path / "silent.mp4", np.zeros((5, 64, 64, 3), np.uint8), 10, None, 16000)
    with pytest.raises(DecodeError, match="audio"):
        decode_clip(str(tmp_path / "silent.mp4"), fps=10, image_size=32)


def test_silent_audio_track_is_a_decode_error(tmp_path):
    write_mp4(tmp_path / "mute.mp4", np.zeros((5, 64, 64, 3), np.uint8), 10, np.zeros(8000, np.float32), 16000)
    with pytest.raises(DecodeError, match="silent"):
        decode_clip(str(tmp_path / "mute.mp4"), fps=10, image_size=32)


def test_corrupt_file_is_a_decode_error(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    with pytest.raises(DecodeError, match="cannot open video"):
        decode_clip(str(tmp_path / "bad.mp4"), fps=10, image_size=32)


@pytest.mark.parametrize("kind", ["logmel", "spectrogram"])
def test_audio_features_aligned_to_frames(kind):
    sr = 16000
    t = np.arange(sr) / sr
    audio = (np.sin(2 * np.pi * 440 * t) * (t > 0.5)).astype(np.float32)  # silence, then a tone
    feats = audio_features(audio, num_frames=10, sample_rate=sr,
                           cfg=AudioConfig(features=kind, n_mels=32, win_ms=25, hop_ms=10,
                                           frames_per_video_frame=4, n_fft=400))
    assert feats.shape[0] == 40 and feats.dtype == np.float32
    energy = feats.max(1)
    assert energy[24:].mean() > energy[:16].mean() + 3  # the tone is in the second half of the steps


@pytest.mark.parametrize("kind", ["logmel", "spectrogram"])
def test_audio_shorter_than_half_an_fft_is_a_clip_too_short_not_a_fatal_error(kind):
    """torchaudio pads by reflection, n_fft / 2 each side: a few ms of audio is that clip's problem
    (skipped with its reason), not an error that stops the prepare stage."""
    from raybench.data.features import AudioTooShort

    cfg = AudioConfig(features=kind, n_fft=400, win_ms=25, hop_ms=10)
    n_fft = max(400, int(round(window_ms(cfg) * 16)))
    with pytest.raises(AudioTooShort, match=rf" {n_fft // 2} samples\) is too short for one analysis window"):
        audio_features(np.ones(n_fft // 2, np.float32), 3, 16000, cfg)
    assert audio_features(np.ones(n_fft // 2 + 1, np.float32), 3, 16000, cfg).shape[0] == 3 * cfg.frames_per_video_frame


def test_resample_labels_marks_missing_frames_nan():
    va = np.arange(10, dtype=np.float32).reshape(5, 2)
    out = resample_labels(va, np.array([0, 2, 4, 6]))
    assert out[:3, 0].tolist() == [0, 4, 8] and np.isnan(out[3]).all()


@pytest.mark.parametrize("algorithm", ["farneback", "dis"])
def test_optical_flow_follows_a_moving_square(algorithm):
    from raybench.data.features import optical_flow

    frames = np.zeros((3, 48, 48, 3), np.uint8)
    for t in range(3):
        frames[t, 16:28, 10 + 2 * t : 22 + 2 * t] = 255  # moves 2 px right per frame
    flow = optical_flow(frames, algorithm)
    assert flow.shape == (3, 48, 48, 2) and flow.dtype == np.float16
    assert not flow[0].any()
    dx = flow[1, 18:26, 14:20, 0].astype(float).mean()
    assert 1.0 < dx < 3.0 and abs(flow[1, 18:26, 14:20, 1].astype(float).mean()) < 0.5


@pytest.mark.parametrize("sr", [44100, 48000])
def test_real_rates_29_97_fps_and_44_1_or_48_khz_become_target_fps_and_16_khz(tmp_path, sr):
    """As RAVDESS (29.97 fps, 48 kHz) and CREMA-D ship: frames resampled to data.fps, audio to 16 kHz mono."""
    from raybench.data.synth import write_video, write_wav

    n = 60  # 2.002 s at 29.97 fps
    frames = np.zeros((n, 64, 64, 3), np.uint8)
    frames[:, :, :, 0] = (np.arange(n) * 4).astype(np.uint8)[:, None, None]  # red encodes the frame number
    t = np.arange(int(2.0 * sr)) / sr
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    write_video(tmp_path / "v.mp4", frames, 30000 / 1001, tone, sr)
    write_wav(tmp_path / "a.wav", tone, sr)
    for audio_path in (None, str(tmp_path / "a.wav")):
        d = decode_clip(str(tmp_path / "v.mp4"), fps=10, image_size=32, sample_rate=16000, audio_path=audio_path)
        assert d.source_fps == pytest.approx(29.97, abs=0.01) and d.source_frames == n
        assert d.frames.shape[0] == 20  # 2.002 s at 10 fps
        np.testing.assert_allclose(d.frames[:, 16, 16, 0], d.frame_index * 4, atol=12)  # the right source frames
        assert abs(len(d.audio) - 32000) < 2048  # 2 s at 16 kHz
        spec = np.abs(np.fft.rfft(d.audio[:16000]))  # 1 s at 16 kHz: 1 Hz bins
        assert abs(int(np.argmax(spec)) - 440) <= 2  # the 440 Hz tone survives resampling


def test_the_spectrogram_uses_zhou2019s_40_ms_window_unless_win_ms_is_set():
    from raybench.config import DEFAULTS
    from raybench.data.store import fingerprint

    sr = 16000
    audio = np.random.default_rng(0).normal(0, 0.1, sr).astype(np.float32)
    base = dict(DEFAULTS["data"]["audio"])
    assert base["win_ms"] is None
    # a spectrogram has n_fft // 2 + 1 bins, n_fft = max(400, window): 40 ms at 16 kHz is 640 samples
    spec = audio_features(audio, 10, sr, AudioConfig(**dict(base, features="spectrogram")))
    assert spec.shape == (40, 640 // 2 + 1)
    spec25 = audio_features(audio, 10, sr, AudioConfig(**dict(base, features="spectrogram", win_ms=25.0)))
    assert spec25.shape == (40, 400 // 2 + 1)
    assert audio_features(audio, 10, sr, AudioConfig(**dict(base, features="logmel"))).shape == (40, base["n_mels"])
    # the window is in the store's fingerprint as its value: log-Mel stores built when the default was
    # 25 ms are reused; a spectrogram store with the new window is a new store
    data = dict(DEFAULTS["data"])

    def fp(**audio_kw):
        return fingerprint("ravdess", "/data", DataConfig(**dict(data, audio=dict(base, **audio_kw))))

    assert fp() == fp(win_ms=25.0)
    assert fp(features="spectrogram") != fp(features="spectrogram", win_ms=25.0)
    assert fp(features="spectrogram") == fp(features="spectrogram", win_ms=40.0)


@pytest.mark.parametrize("face", ["none", "center", "detect"])
def test_frames_decoded_one_by_one_are_decords_frames_cropped_and_resized(tmp_path, face):
    """PyAV's frames, each cropped and resized as it comes, equal decoding every frame at once with
    decord, then cropping and resizing (computed here directly with decord and OpenCV)."""
    import cv2
    import decord

    from raybench.data.faces import crop

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (47, 72, 96, 3), dtype=np.uint8)  # not square: the crop matters
    frames[:, 20:50, 30:60] = 220
    write_mp4(tmp_path / "v.mp4", frames, 15, (0.3 * np.sin(np.arange(50000) / 7)).astype(np.float32), 16000)
    vr = decord.VideoReader(str(tmp_path / "v.mp4"), ctx=decord.cpu(0))
    idx = resample_indices(len(vr), vr.get_avg_fps(), 10)
    whole, found = crop(vr.get_batch([int(i) for i in idx]).asnumpy(), face)
    want = np.stack([cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA) for f in whole])
    d = decode_clip(str(tmp_path / "v.mp4"), fps=10, image_size=32, face=face)
    np.testing.assert_array_equal(d.frames, want)
    assert d.face_found == found and d.frame_index.tolist() == idx.tolist()


@pytest.mark.parametrize("face", ["none", "center"])
def test_a_width_decord_cannot_copy_keeps_every_frame_in_order(tmp_path, face):
    """48 px, a width decord 0.6.0 cannot copy: the frames come in order (the centre crop's frame size
    read through the PyAV fallback)."""
    frames = np.stack([np.full((48, 48, 3), 8 * i, np.uint8) for i in range(30)])  # frame i has brightness 8i
    audio = (0.3 * np.sin(np.arange(48000) / 5)).astype(np.float32)
    write_mp4(tmp_path / "w48.mp4", frames, 15, audio, 16000)
    d = decode_clip(str(tmp_path / "w48.mp4"), fps=10, image_size=24, face=face)
    assert d.frames.shape == (20, 24, 24, 3)
    np.testing.assert_allclose(d.frames.reshape(20, -1).mean(1), 8 * d.frame_index, atol=3)


def test_prepare_splits_the_clips_so_every_cpu_gets_several_tasks():
    from raybench.data.store import clips_per_task

    # 12 clips on 2 CPUs (4 tasks each): 8 tasks need 2 clips each (was one block of 12: one task)
    assert clips_per_task(12, 2) == 2
    assert clips_per_task(3, 2) == 1 and clips_per_task(0, 2) == 1
    # never more than batch_size clips in one task (one part file), however few the CPUs
    assert clips_per_task(10_000, 2, batch_size=8) == 8
    # a 4-node cluster of 32 CPUs each, Aff-Wild2's 564 videos: 2 per task
    assert clips_per_task(564, 128) == 2


@pytest.mark.parametrize("container", ["avi", "flv", "flv1.flv", "vfr.mp4"])
def test_pyav_gives_decords_frames_in_avi_flv_and_variable_frame_rate_mp4(tmp_path, container):
    """The containers real datasets ship besides MP4 (AFEW: AVI with MPEG-4 part 2; CREMA-D: FLV, here
    with H.264 and with Sorenson Spark, older Flash video's codec) and a variable-frame-rate MP4
    (frames 1/30 s apart, every fifth after a gap of 3/30 s): PyAV's one-pass decoding gives frame for
    frame what decord decodes at the indices decord counts."""
    import fractions

    import av
    import decord

    from raybench.data.decode import _frames_pyav
    from raybench.data.synth import write_video

    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (20, 48, 64, 3), dtype=np.uint8)  # noise, the hardest to compress
    frames[:, 8:40, 16:48] = np.arange(20, dtype=np.uint8)[:, None, None, None] * 12  # frame i: a flat patch of 12i
    path = tmp_path / f"v.{container}"
    if container == "vfr.mp4":
        tb = fractions.Fraction(1, 30)
        with av.open(str(path), "w") as out:
            s = out.add_stream("libx264", rate=30)
            s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
            pts = 0
            for i, f in enumerate(frames):
                pts += 0 if i == 0 else (3 if i % 5 == 0 else 1)
                vf = av.VideoFrame.from_ndarray(f, format="rgb24")
                vf.pts, vf.time_base = pts, tb
                for p in s.encode(vf):
                    out.mux(p)
            for p in s.encode():
                out.mux(p)
    elif container == "flv1.flv":
        with av.open(str(path), "w", format="flv") as out:
            s = out.add_stream("flv", rate=15)
            s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
            s.options = {"qscale": "2"}
            for f in frames:
                for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    out.mux(p)
            for p in s.encode():
                out.mux(p)
    else:
        write_video(path, frames, 15, (0.3 * np.sin(np.arange(24000) / 7)).astype(np.float32), 16000)
    vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    assert len(vr) == 20
    if container == "vfr.mp4":  # the gaps lengthen it: decord's mean rate is below the 30 fps nominal
        assert vr.get_avg_fps() < 25
    idx = resample_indices(len(vr), vr.get_avg_fps(), 10)
    want = vr.get_batch([int(i) for i in idx]).asnumpy()
    got = np.stack(list(_frames_pyav(str(path), idx)))
    np.testing.assert_array_equal(got, want)
    # and they are the frames in order: each one's patch is its source frame's (lossy codecs and the
    # colour conversion: within half a frame's step of 12)
    err = got[:, 16:32, 24:40].mean((1, 2, 3)) - 12 * idx
    assert np.abs(err).max() < 6, err.round(1)


def test_a_flash_era_flv_sorenson_spark_video_and_mp3_audio_decodes_whole(tmp_path):
    """An .flv with Flash video's own codecs, Sorenson Spark video (30 fps) and MP3 audio at 44.1 kHz
    (the synthetic CREMA-D writes H.264 + AAC into its .flv files; older Flash files hold these):
    ``decode_clip`` gives every frame in order, resampled, and the audio track at 16 kHz with its
    silent gap where it was (MP3's encoder delay: a few tens of ms)."""
    import av

    path, sr, secs = tmp_path / "1001_DFA_ANG_XX.flv", 44100, 2.5
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(sr * secs)) / sr)).astype(np.float32)
    tone[int(sr * 1.0) : int(sr * 1.5)] = 0  # silent from 1.0 s to 1.5 s
    with av.open(str(path), "w", format="flv") as out:
        vs = out.add_stream("flv", rate=30)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        vs.options = {"qscale": "2"}
        a_s = out.add_stream("libmp3lame", rate=sr, layout="mono")
        for i in range(int(30 * secs)):  # frame i: a flat grey of 3i
            for p in vs.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 3 * i, np.uint8), format="rgb24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        step, fmt = a_s.codec_context.frame_size, a_s.codec_context.format.name
        assert fmt == "s32p", fmt  # LAME through PyAV takes 32-bit integer samples
        for i in range(0, len(tone), step):
            af = av.AudioFrame.from_ndarray((tone[None, i : i + step] * (2**31 - 1)).astype(np.int32), format=fmt,
                                            layout="mono")
            af.sample_rate, af.pts = sr, i
            for p in a_s.encode(af):
                out.mux(p)
        for p in a_s.encode():
            out.mux(p)
    with av.open(str(path)) as c:
        assert sorted(s.codec_context.name for s in c.streams) == ["flv", "mp3float"]
    d = decode_clip(str(path), fps=10, image_size=32, sample_rate=16000)
    assert (d.source_frames, d.source_fps, d.frames.shape) == (75, 30.0, (25, 32, 32, 3))
    np.testing.assert_allclose(d.frames.mean((1, 2, 3)), 3 * d.frame_index, atol=3)  # every third frame, in order
    assert abs(len(d.audio) - 16000 * secs) < 0.05 * 16000, len(d.audio)
    rms = np.array([np.sqrt(np.mean(d.audio[int(16000 * t) : int(16000 * (t + 0.05))] ** 2))
                    for t in np.arange(0, 2.45, 0.05)])
    silent = np.flatnonzero(rms < 0.01) * 0.05
    assert silent.min() == pytest.approx(1.05, abs=0.051) and silent.max() == pytest.approx(1.45, abs=0.051), silent
    t = np.arange(len(rms)) * 0.05  # (the first 50 ms: the decoder's start, partly the encoder's delay)
    assert np.all(rms[((t >= 0.05) & (t < 0.95)) | (t > 1.55)] > 0.15), rms.round(3)


def test_a_stream_shorter_than_its_containers_count_is_warned_not_padded_silently(tmp_path, monkeypatch):
    """A container that counts more frames than its stream holds: the frames past the stream's end are
    its last frame, counted (``Decoded.repeated``) and turned into the clip's warning by prepare."""
    import decord

    from raybench.data import decode
    from raybench.data.store import decode_row
    from raybench.schema import DataConfig

    frames = np.stack([np.full((32, 32, 3), 12 * i, np.uint8) for i in range(20)])  # frame i: brightness 12i
    write_mp4(tmp_path / "v.mp4", frames, 10, (0.3 * np.sin(np.arange(32000) / 5)).astype(np.float32), 16000)
    ended: dict = {}
    got = list(decode._frames_pyav(str(tmp_path / "v.mp4"), np.array([3, 15, 25, 30]), ended))
    # past the stream's end: its last frame (19), not the last one asked for (15)
    assert [round(float(f.mean()) / 12) for f in got] == [3, 15, 19, 19] and ended == {"repeated": 2, "decoded": 20}
    ended.clear()
    list(decode._frames_pyav(str(tmp_path / "v.mp4"), np.array([0, 19]), ended))
    assert ended == {}  # a stream as long as its count: nothing repeated

    real = decord.VideoReader

    class Overcounting:  # decord's reader of a container whose index promises 10 frames more
        def __init__(self, *a, **k):
            self.vr = real(*a, **k)

        def __len__(self):
            return len(self.vr) + 10

        def __getattr__(self, name):
            return getattr(self.vr, name)

    monkeypatch.setattr(decord, "VideoReader", Overcounting)
    d = decode.decode_clip(str(tmp_path / "v.mp4"), fps=5, image_size=16)
    assert len(d.frames) == 15 and (d.repeated, d.frames_decoded) == (5, 20)  # 30 counted frames at 10 fps -> 15
    assert np.abs(d.frames[-5:].astype(int) - 12 * 19).max() <= 2  # the stream's last frame
    row, bad, warning = decode_row({"clip_id": "v", "video_path": str(tmp_path / "v.mp4"), "label": 0},
                                   DataConfig(fps=5, image_size=16))
    assert bad is None and row is not None
    assert warning == (f"{tmp_path / 'v.mp4'}: its container counts 30 frames but its stream ended after 20: "
                       "the last 5 of its 15 frames at data.fps repeat frame 19")
    # skipped for another reason (an annotation without an annotated frame): the reason says it too
    va = tmp_path / "v.txt"
    va.write_text("valence,arousal\n" + "-5,-5\n" * 30)
    row, bad, warning = decode_row({"clip_id": "v", "video_path": str(tmp_path / "v.mp4"), "va_path": str(va),
                                    "label": None}, DataConfig(fps=5, image_size=16))
    assert row is None and warning is None
    assert bad == (f"no annotated frame in {va}; {tmp_path / 'v.mp4'}: its container counts 30 frames but its "
                   "stream ended after 20: the last 5 of its 15 frames at data.fps repeat frame 19")


def test_a_per_frame_annotation_one_line_off_is_no_mismatch(tmp_path):
    """Aff-Wild2: many VA files have one line more than the video's frame count (sucv/ABAW2's length.csv);
    one line off is counting, two are a mismatch (warned, truncated; skipped with annotation_mismatch=skip)."""
    from raybench.data.store import decode_row
    from raybench.schema import DataConfig

    frames = np.stack([np.full((32, 32, 3), 12 * i, np.uint8) for i in range(20)])
    write_mp4(tmp_path / "v.mp4", frames, 10, (0.3 * np.sin(np.arange(32000) / 5)).astype(np.float32), 16000)
    row = {"clip_id": "v", "video_path": str(tmp_path / "v.mp4"), "va_path": str(tmp_path / "v.txt"), "label": None}
    for lines, warned in ((19, False), (20, False), (21, False), (22, True), (18, True)):
        (tmp_path / "v.txt").write_text("valence,arousal\n" + "".join(f"{i / 40:.3f},0.1\n" for i in range(lines)))
        out, bad, warning = decode_row(dict(row), DataConfig(fps=10, image_size=16))
        assert bad is None and out is not None, lines
        assert (warning is not None and f"has {lines} frames, its video {tmp_path / 'v.mp4'} needs 20" in warning) \
            == warned, (lines, warning)
        va = np.frombuffer(out["va"], np.float32).reshape(-1, 2)
        assert len(va) == 20 and np.isnan(va[:, 0]).sum() == max(0, 20 - lines)  # a missing last line: unannotated
        np.testing.assert_allclose(va[: min(lines, 20), 0], np.arange(min(lines, 20)) / 40, atol=1e-3)
    out, bad, _ = decode_row(dict(row), DataConfig(fps=10, image_size=16, annotation_mismatch="skip"))
    assert out is None and "has 18 frames" in bad


def test_listing_choices_keep_the_store_and_affwild2_crops_by_annotation_name_make_a_new_one():
    """data.crema_d.keep_flagged chooses clips (as a split does): the store, and every store made before
    the key, keep their fingerprint; Aff-Wild2 stores with the organisers' crops are made again, since
    a _left/_right annotation now takes its own crops (2026-12-02)."""
    from raybench.data.store import fingerprint
    from raybench.schema import DataConfig

    def fp(dataset, **kw):
        return fingerprint(dataset, "/data", DataConfig(dataset=dataset, **kw))

    assert fp("crema_d") == fp("crema_d", crema_d={"keep_flagged": True})
    assert fp("crema_d", crema_d={"audio": "wav"}) == fp("crema_d", crema_d={"audio": "wav", "keep_flagged": True})
    assert fp("crema_d", crema_d={"audio": "wav"}) != fp("crema_d")
    # as computed at 0e9aac4, before either change: stores made then are reused (a CREMA-D store, an
    # Aff-Wild2 store without the organisers' crops) or made again (with them)
    # (with data.audio.align: stretch, the audio as it was then; the default, time, is a store of its own)
    old = {"audio": {"align": "stretch"}}
    assert fp("crema_d", **old) == "137156422c6e2f6a" and fp("affwild2", face="center", **old) == "57b5590a4e9e6024"
    assert fp("affwild2", face="dataset", **old) != "78e1c33123edfb50"
    assert fp("crema_d") != fp("crema_d", **old)


@pytest.mark.parametrize("container", ["mp4", "avi"])
def test_audio_features_meet_their_frames_by_time(tmp_path, container):
    """Frame t's audio features are the audio of [t / fps, (t + 1) / fps): 1 kHz bursts at 0.2, 1.0 and 1.8 s of a
    2 s clip at 15 fps (4 steps per frame) start at steps 12, 60 and 108. An MP4's AAC track decodes ~768
    samples longer than written (its padding): spread over the frames (data.audio.align: stretch, raybench
    before 2026-12-04) the last burst landed 3 steps early. (An FLV's AAC track keeps its encoder's priming, 64 ms
    here, which no container field gives: README, "Known problems".)"""
    from raybench.data.store import decode_row
    from raybench.data.synth import write_video

    sr, fps = 16000, 15
    audio = 1e-3 * np.random.default_rng(1).standard_normal(2 * sr).astype(np.float32)
    for t in (0.2, 1.0, 1.8):
        i = int(t * sr)
        audio[i:i + 400] = 0.8 * np.sin(2 * np.pi * 1000 * np.arange(400) / sr)
    path = tmp_path / f"v.{container}"
    write_video(path, np.zeros((2 * fps, 32, 32, 3), np.uint8), fps, audio, sr)

    def onsets(align):
        cfg = DataConfig(dataset="csv", fps=fps, image_size=16, audio={"align": align})
        out, bad, _ = decode_row({"clip_id": "v", "video_path": str(path), "label": 0}, cfg)
        e = np.frombuffer(out["audio"], np.float32).reshape(out["audio_shape"]).max(1)
        above = e > (e.max() + e.min()) / 2
        return [i for i in range(1, len(e)) if above[i] and not above[i - 1]]

    got = onsets("time")
    assert len(got) == 3 and all(abs(g - w) <= 1 for g, w in zip(got, (12, 60, 108))), got
    if container == "mp4":  # the padding stretched: the last burst early by more than a step
        assert onsets("stretch")[2] < 107


def test_audio_much_shorter_or_longer_than_its_video_is_the_clips_warning(tmp_path):
    """A track that ends well before its video or runs on well after is the clip's warning (printed, counted
    in MLflow) when the gap is over AUDIO_VIDEO_GAP_S: frames past the audio get silence, audio past the
    last frame is left out (data.audio.align: time)."""
    from raybench.data.store import AUDIO_VIDEO_GAP_S, decode_row

    rng = np.random.default_rng(0)
    cfg = DataConfig(dataset="csv", fps=10, image_size=16)
    for name, audio_s, warned in (("same", 2.0, False), ("short", 1.0, True), ("long", 3.0, True)):
        t = np.arange(int(audio_s * 16000)) / 16000
        write_mp4(tmp_path / f"{name}.mp4", rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8), 10,
                  (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
        out, bad, warning = decode_row({"clip_id": name, "video_path": str(tmp_path / f"{name}.mp4"), "label": 0}, cfg)
        assert bad is None and out is not None
        if warned:
            assert f"{name}.mp4: its audio lasts {audio_s:.1f}" in warning and "and its video 2.00 s" in warning
            assert ("get silence" if audio_s < 2 else "after the last frame is left out") in warning
            assert abs(audio_s - 2.0) > AUDIO_VIDEO_GAP_S
        else:
            assert warning is None
