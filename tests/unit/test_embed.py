"""The embedding stage's parts without Ray: the speech encoders loaded from local Hugging Face folders
(against transformers called directly), the pooling of their frames onto video-frame steps (against a
loop over the frames), and the errors for folders raybench cannot use."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


def _direct(folder, signal, kind):
    """Hidden states of ``signal`` by transformers itself: (layers, frames, dim)."""
    import transformers as tf

    fe = tf.AutoFeatureExtractor.from_pretrained(folder)
    model = tf.AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        if kind == "whisper":
            out = model.encoder(fe(signal, sampling_rate=16000, return_tensors="pt").input_features,
                                output_hidden_states=True)
        else:
            out = model(fe(signal, sampling_rate=16000, return_tensors="pt").input_values, output_hidden_states=True)
    return torch.stack(out.hidden_states)[:, 0].numpy()


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert", "wavlm", "whisper"])
def test_encoder_gives_the_models_hidden_states(tmp_path, make_encoder, kind):
    from raybench.data.embed import AudioEncoder
    from raybench.schema import AudioEncoderConfig

    folder = make_encoder(tmp_path / kind, kind)
    x = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    want = _direct(folder, x, kind)  # (3, N, 32)
    n = (len(x) + 319) // 320 if kind == "whisper" else want.shape[1]
    enc = AudioEncoder(AudioEncoderConfig(path=str(folder), layer="all"))
    h, centres = enc.encode(x)
    assert h.shape == (n, 3 * 32)
    np.testing.assert_allclose(h.reshape(n, 3, 32), want[:, :n].transpose(1, 0, 2), atol=1e-4)
    if kind == "whisper":  # centred log-Mel frames, then a stride-2 convolution: frame i at i x 20 ms
        np.testing.assert_allclose(centres, np.arange(n) * 0.02)
    else:  # the middle of each frame's receptive field: 25 samples, stride 20
        np.testing.assert_allclose(centres, (np.arange(n) * 20 + 12.5) / 16000)
    one, _ = AudioEncoder(AudioEncoderConfig(path=str(folder), layer=1)).encode(x)
    np.testing.assert_allclose(one, want[1, :n], atol=1e-4)


def test_a_float16_checkpoint_is_run_in_float32(tmp_path, make_encoder):
    """Whisper's checkpoints are saved in float16: transformers 5 would load them so (dtype "auto") and
    then refuse float32 inputs."""
    import transformers as tf

    from raybench.data.embed import AudioEncoder
    from raybench.schema import AudioEncoderConfig

    folder = make_encoder(tmp_path / "w", "whisper")
    tf.AutoModel.from_pretrained(folder).half().save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text()).get("dtype", "float16") == "float16"
    enc = AudioEncoder(AudioEncoderConfig(path=str(folder), layer=2))
    h, _ = enc.encode(np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1)
    assert h.dtype == np.float32 and np.isfinite(h).all() and next(enc.model.parameters()).dtype == torch.float32


def test_long_audio_is_encoded_in_pieces(tmp_path, make_encoder):
    from raybench.data.embed import AudioEncoder
    from raybench.schema import AudioEncoderConfig

    folder = make_encoder(tmp_path / "w", "wavlm")
    x = np.random.default_rng(2).standard_normal(16000 * 5 + 8000).astype(np.float32) * 0.1  # 5.5 s
    h, centres = AudioEncoder(AudioEncoderConfig(path=str(folder), layer=2, chunk_s=2.0)).encode(x)
    # pieces of 2 s, 2 s and 1.5 s, each alone (the last is over 1 s so it stays a piece of its own)
    want = np.concatenate([_direct(folder, x[a:b], "wavlm")[2] for a, b in ((0, 32000), (32000, 64000), (64000, 88000))])
    np.testing.assert_allclose(h, want, atol=1e-4)
    n1 = (32000 - 25) // 20 + 1  # frames of a 2 s piece: stride 20 samples, field 25
    # each frame's centre: its piece's start + its own offset + half the field
    assert centres[0] == pytest.approx(12.5 / 16000) and centres[n1] == pytest.approx((32000 + 12.5) / 16000)
    # a last piece under a second joins the one before it
    h2, _ = AudioEncoder(AudioEncoderConfig(path=str(folder), layer=2, chunk_s=2.5)).encode(x)
    want2 = np.concatenate([_direct(folder, x[a:b], "wavlm")[2] for a, b in ((0, 40000), (40000, 88000))])
    np.testing.assert_allclose(h2, want2, atol=1e-4)


def test_pieces_of_long_audio_never_leave_a_sliver():
    """chunk_s pieces, a last piece under a second joined to the one before; for Whisper (30 s at most)
    a joined piece over 30 s is cut in two halves, not into 30 s and a sliver of a few samples."""
    from raybench.data.embed import piece_bounds

    sr = 16000
    assert piece_bounds(5 * sr + 8000, sr, 2.0) == [0, 32000, 64000, 88000]
    assert piece_bounds(5 * sr + 8000, sr, 2.5) == [0, 40000, 88000]
    for n in (480100, 30 * sr + sr - 1, 61 * sr - 5):  # 30 s + 6 ms, 30 s + 0.99 s, 61 s - 5 samples
        b = piece_bounds(n, sr, 30.0, cap_s=30.0)
        lengths = np.diff(b)
        assert b[0] == 0 and b[-1] == n and lengths.max() <= 30 * sr and lengths.min() >= sr, (n, b)
    assert piece_bounds(480100, sr, 30.0, cap_s=30.0) == [0, 240050, 480100]
    b = piece_bounds(488000, sr, 29.8, cap_s=30.0)  # 29.8 s + 0.7 s: joined (30.5 s), then halved
    assert np.diff(b).min() > 15 * sr and len(b) == 3


def test_pool_steps_averages_the_frames_of_each_step():
    from raybench.data.embed import pool_steps

    rng = np.random.default_rng(0)
    centres = np.sort(rng.uniform(0, 2.0, 57))
    h = rng.standard_normal((57, 3)).astype(np.float32)
    got = pool_steps(h, centres, 2.0, 10)  # steps of 0.2 s
    for j in range(10):
        inside = (centres >= j * 0.2) & (centres < (j + 1) * 0.2)
        np.testing.assert_allclose(got[j], h[inside].mean(0), rtol=1e-5, atol=1e-6)
    # steps finer than the frames: a step without a frame takes the value at its centre, interpolated
    c = np.array([0.25, 0.75])
    fine = pool_steps(np.array([[0.0], [1.0]], np.float32), c, 1.0, 8)
    assert fine[2, 0] == 0.0 and fine[6, 0] == 1.0  # the steps that hold a frame
    assert fine[4, 0] == pytest.approx((0.5625 - 0.25) / 0.5) and fine[0, 0] == 0.0 and fine[7, 0] == 1.0


def test_speech_embeddings_take_the_audio_under_the_clips_frames(tmp_path, make_encoder):
    """data.audio.align: time: a clip's embeddings come from the audio under its frames, so a track that runs
    on past the last frame gives the same embeddings as one that ends there; stretch spreads the whole
    track over the frames (the steps then hold other audio)."""
    from scipy.io import wavfile

    from raybench.data.embed import EncodeBatch
    from raybench.schema import AudioEncoderConfig

    folder = make_encoder(tmp_path / "enc", "wav2vec2")
    x = (np.random.default_rng(2).standard_normal(3 * 16000) * 0.1).astype(np.float32)
    wavfile.write(tmp_path / "long.wav", 16000, x)  # 3 s under a clip of 20 frames at 10 fps: 2 s
    wavfile.write(tmp_path / "short.wav", 16000, x[:32000])
    enc = EncodeBatch("audio_emb", AudioEncoderConfig(path=str(folder)), str(tmp_path / "s"), "", None, None)

    def emb(wav, align):
        return enc._embed({"clip_id": "c", "video_path": "unused.mp4", "meta": {"audio_path": str(tmp_path / wav)},
                           "num_frames": 20, "fps": 10.0, "align": align})

    np.testing.assert_allclose(emb("long.wav", "time"), emb("short.wav", "time"), atol=1e-5)
    assert np.abs(emb("long.wav", "stretch") - emb("short.wav", "stretch")).mean() > 1e-2


def test_unusable_folders_are_named(tmp_path, make_encoder):
    from raybench.data.embed import AudioEncoder, EncoderError, encoder_spec
    from raybench.schema import AudioEncoderConfig

    def err(path, **kw):
        with pytest.raises(EncoderError) as e:
            AudioEncoder(AudioEncoderConfig(path=str(path), **kw))
        return str(e.value)

    assert "no folder" in err(tmp_path / "nowhere")
    folder = make_encoder(tmp_path / "w", "wav2vec2")
    assert "layer must be 'all' or 0..2" in err(folder, layer=3)
    (folder / "preprocessor_config.json").rename(tmp_path / "pre.json")
    assert "has no preprocessor_config.json" in err(folder)
    (tmp_path / "pre.json").rename(folder / "preprocessor_config.json")
    conf = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**conf, "model_type": "bert"}))
    assert "model_type 'bert'" in err(folder)
    # weights that do not fit the configuration: another width, or keys missing
    (folder / "config.json").write_text(json.dumps({**conf, "hidden_size": 48}))
    msg = err(folder)
    assert str(folder.resolve()) in msg and ("cannot load" in msg or "do not fit" in msg)
    (folder / "config.json").write_text(json.dumps(conf))
    from safetensors.torch import load_file, save_file

    w = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in w.items() if "layers.1." not in k}, folder / "model.safetensors", metadata={"format": "pt"})
    msg = err(folder)
    assert "do not fit" in msg and "missing" in msg and "layers.1." in msg
    assert encoder_spec(AudioEncoderConfig(path=str(folder)))["layers"] == 3  # (the files themselves are there)
    whisper = make_encoder(tmp_path / "wh", "whisper")
    assert "chunk_s must be <= 30" in err(whisper, chunk_s=60.0)


def test_the_fingerprint_follows_the_weights_not_the_path(tmp_path, make_encoder):
    import shutil

    from raybench.data.embed import embed_fingerprint, encoder_spec
    from raybench.schema import AudioEncoderConfig

    a = make_encoder(tmp_path / "a", "hubert", seed=0)
    shutil.copytree(a, tmp_path / "copy")
    b = make_encoder(tmp_path / "b", "hubert", seed=1)

    def fp(path, **kw):
        cfg = AudioEncoderConfig(path=str(path), **kw)
        return embed_fingerprint("clips", cfg, encoder_spec(cfg))

    assert fp(a) == fp(tmp_path / "copy")
    assert len({fp(a), fp(b), fp(a, layer=1), fp(a, steps_per_frame=2), fp(a, chunk_s=10.0)}) == 5


@pytest.mark.parametrize("kind", ["clip", "vit", "dinov2"])
def test_vision_encoder_gives_the_models_frame_embeddings(tmp_path, make_vision, kind):
    import transformers as tf

    from raybench.data.embed import VisionEncoder
    from raybench.schema import VideoEncoderConfig

    folder = make_vision(tmp_path / kind, kind)
    frames = np.random.default_rng(0).integers(0, 256, (7, 48, 48, 3), dtype=np.uint8)
    got = VisionEncoder(VideoEncoderConfig(path=str(folder), frame_batch=3)).encode(frames)  # 3 forward passes
    proc = tf.AutoImageProcessor.from_pretrained(folder)
    model = tf.AutoModel.from_pretrained(folder).eval()
    x = proc(images=list(frames), return_tensors="pt").pixel_values
    with torch.no_grad():
        if kind == "clip":  # the projected image embedding: the vision tower's pooled output, projected
            want = model.visual_projection(model.vision_model(pixel_values=x).pooler_output)
        elif kind == "vit":  # the [CLS] token's final hidden state (not ViTModel's tanh pooler)
            want = model(pixel_values=x).last_hidden_state[:, 0]
        else:  # DINOv2's pooled output: its layer-normalised [CLS] token
            want = model(pixel_values=x).pooler_output
    assert got.shape == (7, 16 if kind == "clip" else 32)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4)
    if kind == "vit":  # a checkpoint without a pooler (DINO's, a classifier's backbone) loads too
        tf.ViTModel(model.config, add_pooling_layer=False).save_pretrained(tmp_path / "nopool")
        proc.save_pretrained(tmp_path / "nopool")
        assert VisionEncoder(VideoEncoderConfig(path=str(tmp_path / "nopool"))).encode(frames).shape == (7, 32)


def test_unusable_vision_folders_are_named(tmp_path, make_vision, make_encoder):
    from raybench.data.embed import EncoderError, VisionEncoder
    from raybench.schema import VideoEncoderConfig

    def err(path):
        with pytest.raises(EncoderError) as e:
            VisionEncoder(VideoEncoderConfig(path=str(path)))
        return str(e.value)

    assert err(tmp_path / "nowhere").startswith("data.video.encoder.path: no folder")
    speech = make_encoder(tmp_path / "speech", "wavlm")
    assert "model_type 'wavlm'; raybench runs clip, vit, dinov2" in err(speech)
    folder = make_vision(tmp_path / "vit", "vit")
    conf = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**conf, "num_hidden_layers": 3}))
    msg = err(folder)
    assert "do not fit" in msg and "missing (e.g." in msg and ".2." in msg  # (the third layer's weights)


def _trained_like(net):
    """Random weights, and batch-norm statistics away from their initial 0 / 1 (as a trained network's)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return net.eval()


@pytest.mark.parametrize("layout", ["evolve", "authors"])
def test_ir50_state_dict_gives_the_backbones_frame_embeddings(tmp_path, layout):
    """data.video.encoder.path: an IR-50 state dict (face.evoLVe's layout at 112 px, or zhang2021's
    authors' backbone.* + logits.* layout at 40 px): the stage's embeddings are the network's output on
    the frames in [-1, 1], computed here with the network itself, in eval mode."""
    from raybench.data.embed import VisionEncoder, vision_spec
    from raybench.nn.irse import IR50, AuthorsIR50
    from raybench.schema import VideoEncoderConfig

    torch.manual_seed(0)
    net = _trained_like(AuthorsIR50() if layout == "authors" else IR50())
    state = net.state_dict()
    if layout == "authors":  # their my_res50 checkpoint: the network under backbone., a classifier under logits.
        state = {**{f"backbone.{k}": v for k, v in state.items()}, "logits.weight": torch.zeros(8, 512)}
    path = tmp_path / "ir50.pth"
    torch.save({"state_dict": state}, path)
    frames = np.random.default_rng(0).integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)
    got = VisionEncoder(VideoEncoderConfig(path=str(path), frame_batch=2)).encode(frames)
    # the authors' network sees the centre 40 px of a 48 px face (their evaluation crop), not the whole
    # face shrunk to 40 px; face.evoLVe's takes the whole frame (resized to 112 by the network)
    seen = frames[:, 4:44, 4:44] if layout == "authors" else frames
    with torch.no_grad():
        want = net(torch.from_numpy(np.ascontiguousarray(seen)).permute(0, 3, 1, 2).float() / 127.5 - 1.0).numpy()
    assert got.shape == (5, 512) and vision_spec(VideoEncoderConfig(path=str(path)))["dim"] == 512
    np.testing.assert_allclose(got, want, atol=1e-4)
    if layout == "authors":
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # their L2-normalised output
    assert np.abs(got[0] - got[1]).max() > 1e-3  # different frames, different embeddings


def test_unusable_ir50_files_are_named(tmp_path):
    from raybench.data.embed import EncoderError, VisionEncoder
    from raybench.nn.irse import IR50
    from raybench.schema import VideoEncoderConfig

    def err(path):
        with pytest.raises(EncoderError) as e:
            VisionEncoder(VideoEncoderConfig(path=str(path)))
        return str(e.value)

    assert err(tmp_path / "none.pth").startswith(f"data.video.encoder.path: no file {tmp_path / 'none.pth'}")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert err(tmp_path / "junk.pth").startswith(f"data.video.encoder.path: cannot read {tmp_path / 'junk.pth'}")
    state = IR50(input_size=56).state_dict()  # another output layer: 512 x 4 x 4 inputs
    torch.save(state, tmp_path / "other.pth")
    msg = err(tmp_path / "other.pth")
    assert "do not fit the architecture" in msg and "output_layer.3.weight" in msg and "expected an IR-50" in msg


def test_video_windows_tile_the_clip_and_each_frame_takes_the_nearest():
    from raybench.data.embed import video_windows

    starts, nearest = video_windows(10, 4, 4)  # [0-3], [4-7], and the last ending at the end: [6-9]
    # centres 1.5, 5.5, 7.5: frame 6 is nearer 5.5 (0.5) than 7.5 (1.5)
    assert starts == [0, 4, 6] and nearest.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    starts, nearest = video_windows(10, 4, 2)  # centres 1.5, 3.5, 5.5, 7.5
    assert starts == [0, 2, 4, 6] and nearest.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]
    starts, nearest = video_windows(12, 4, 4)  # tiled exactly: no extra window
    assert starts == [0, 4, 8] and nearest.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    starts, nearest = video_windows(3, 16, 16)  # shorter than one window: one, padded
    assert starts == [0] and nearest.tolist() == [0, 0, 0]


def test_videomae_encodes_windows_each_frame_takes_its_windows_embedding(tmp_path, make_vision):
    """VideoMAE (num_frames 4): 10 frames -> windows [0-3], [4-7], [6-9] (frames 7-9 take the last);
    3 frames -> one window [0, 1, 2, 2]; each window's embedding is the mean of the model's last hidden
    state over its tokens, computed here with transformers."""
    import transformers as tf

    from raybench.data.embed import VisionEncoder, embed_fingerprint, vision_spec
    from raybench.schema import VideoEncoderConfig

    folder = make_vision(tmp_path / "videomae", "videomae")
    frames = np.random.default_rng(0).integers(0, 256, (10, 48, 48, 3), dtype=np.uint8)
    got = VisionEncoder(VideoEncoderConfig(path=str(folder), frame_batch=8)).encode(frames)  # 2 windows a pass
    proc = tf.AutoImageProcessor.from_pretrained(folder)
    model = tf.AutoModel.from_pretrained(folder).eval()
    windows = [list(frames[0:4]), list(frames[4:8]), list(frames[6:10]), [frames[0], frames[1], frames[2], frames[2]]]
    with torch.no_grad():
        want = model(pixel_values=proc(windows, return_tensors="pt").pixel_values).last_hidden_state.mean(1).numpy()
    assert got.shape == (10, 32)
    np.testing.assert_allclose(got[:4], np.repeat(want[:1], 4, 0), atol=1e-4)
    np.testing.assert_allclose(got[4:7], np.repeat(want[1:2], 3, 0), atol=1e-4)
    np.testing.assert_allclose(got[7:], np.repeat(want[2:3], 3, 0), atol=1e-4)
    short = VisionEncoder(VideoEncoderConfig(path=str(folder))).encode(frames[:3])
    np.testing.assert_allclose(short, np.repeat(want[3:], 3, 0), atol=1e-4)
    spec = vision_spec(VideoEncoderConfig(path=str(folder)))
    assert spec["num_frames"] == 4 and spec["dim"] == 32
    fp = [embed_fingerprint("c", VideoEncoderConfig(path=str(folder), window_hop=h), spec) for h in (None, 4, 2)]
    assert fp[0] == fp[1] != fp[2]  # the default hop is its num_frames


def test_window_hop_is_checked(tmp_path, make_vision):
    from raybench.data.embed import EncoderError, vision_spec
    from raybench.schema import VideoEncoderConfig

    folder = make_vision(tmp_path / "videomae", "videomae")
    with pytest.raises(EncoderError, match=r"window_hop=5 is more than .* num_frames \(4\)"):
        vision_spec(VideoEncoderConfig(path=str(folder), window_hop=5))
    clip = make_vision(tmp_path / "clip", "clip")
    with pytest.raises(EncoderError, match="window_hop applies to VideoMAE's windows; .* is clip"):
        vision_spec(VideoEncoderConfig(path=str(clip), window_hop=2))
    torch.save({}, tmp_path / "ir50.pth")
    with pytest.raises(EncoderError, match="is an IR-50 state dict"):
        vision_spec(VideoEncoderConfig(path=str(tmp_path / "ir50.pth"), window_hop=2))


def test_a_store_encoded_with_other_library_versions_is_named():
    from raybench.data.embed import version_drift

    now = {"torch": "2.11.0", "transformers": "5.1.0"}
    assert version_drift([], now) is None
    assert version_drift([{"encoded": 3}], now) is None  # a log from before versions were recorded
    assert version_drift([{"encoded": 3, **now}], now) is None
    msg = version_drift([{"encoded": 3, **now}, {"encoded": 2, "torch": "2.11.0", "transformers": "4.57.0"}], now)
    assert "transformers 4.57.0, 5.1.0 (this run: 5.1.0)" in msg and "torch" not in msg


def test_an_ir50_checkpoint_from_before_pytorch_0_4_1_loads(tmp_path):
    """BatchNorm's num_batches_tracked buffers came with PyTorch 0.4.1; a state dict without them loads,
    as torch's own load_state_dict takes it, with the same weights."""
    import torch

    from raybench.nn.encoders import load_weights
    from raybench.nn.irse import IR50

    torch.manual_seed(0)
    src = IR50()
    state = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    dst = IR50()
    load_weights(dst, str(tmp_path / "old.pth"), "data.video.encoder.path")
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in dst.state_dict().items() if k in state)
    state.pop(next(k for k in state if k.endswith("running_mean")))  # a real key missing is still refused
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="1 missing"):
        load_weights(IR50(), str(tmp_path / "bad.pth"), "data.video.encoder.path")
