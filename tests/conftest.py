"""Shared fixtures: small generated datasets, isolated cache/results folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_configure(config):
    # torch's default intra-op threads (one per core) thrash on a 2-core machine when anything else
    # runs: the unit suite took 27 s idle and 284-327 s busy, mostly in the overfit tests. One thread
    # per test process keeps it steady (Ray's workers set their own thread counts).
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("raybench")


@pytest.fixture(scope="session", autouse=True)
def isolated_dirs(session_tmp):
    """Keep the user's ~/.cache/raybench and ~/raybench_results untouched."""
    old = {k: os.environ.get(k) for k in ("RAYBENCH_CACHE", "RAYBENCH_RESULTS", "MLFLOW_TRACKING_URI")}
    os.environ["RAYBENCH_CACHE"] = str(session_tmp / "cache")
    os.environ["RAYBENCH_RESULTS"] = str(session_tmp / "results")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_ravdess(session_tmp) -> Path:
    """3 actors x 15 clips of 1 s, 64 px (synthetic RAVDESS layout)."""
    from raybench.data.synth import generate

    return generate("ravdess", session_tmp / "tiny_ravdess", actors=3, statements=1, repetitions=1,
                    seconds=1.0, fps=10, size=64, seed=0)


@pytest.fixture(scope="session")
def tiny_affwild2(session_tmp) -> Path:
    from raybench.data.synth import generate

    return generate("affwild2", session_tmp / "tiny_affwild2", videos=4, seconds=4.0, fps=10, size=64, seed=0)


def _tiny_av(seed: int, seconds: float = 1.0, fps: int = 10, size: int = 32, sr: int = 16000):
    import numpy as np

    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (int(seconds * fps), size, size, 3), dtype=np.uint8)
    t = np.arange(int(seconds * sr)) / sr
    audio = (0.3 * np.sin(2 * np.pi * (150 + 40 * seed) * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    return frames, audio, fps, sr


@pytest.fixture(scope="session")
def real_layouts(session_tmp) -> dict[str, Path]:
    """Small trees in the real layouts and file formats: CREMA-D (.flv + AudioWAV .wav, one clip with no
    audio track), AFEW (Train_AFEW / Val_AFEW emotion folders of .avi), and a bring-your-own CSV with
    per-frame valence/arousal files (one of the wrong length); each with an unrelated extra file."""
    import numpy as np

    from raybench.data.synth import write_video, write_wav

    out = {}
    root = session_tmp / "layouts" / "crema_d"
    i = 0
    for actor in (1001, 1002, 1003, 1004):
        for emo in ("ANG", "HAP", "SAD", "NEU"):
            frames, audio, fps, sr = _tiny_av(i)
            name = f"{actor}_DFA_{emo}_XX"
            write_video(root / "VideoFlash" / f"{name}.flv", frames, fps, audio, sr)
            write_wav(root / "AudioWAV" / f"{name}.wav", audio, sr)
            i += 1
    frames, _, fps, sr = _tiny_av(99)
    write_video(root / "VideoFlash" / "1004_IEO_NEU_XX.flv", frames, fps, None, sr)  # no audio track
    (root / "VideoFlash" / "notes.txt").write_text("not a clip")
    (root / "VideoDemographics.csv").write_text("ActorID,Age,Sex\n1001,51,Male\n")
    out["crema_d"] = root

    root = session_tmp / "layouts" / "afew"
    for split, n in (("Train_AFEW", 3), ("Val_AFEW", 2)):
        for emo in ("Angry", "Happy", "Sad"):
            for k in range(n):
                frames, audio, fps, sr = _tiny_av(i)
                write_video(root / split / emo / f"{k:06d}.avi", frames, fps, audio, sr)
                i += 1
    (root / "Train_AFEW" / "Angry" / "Thumbs.db").write_bytes(b"\x00" * 16)
    out["afew"] = root

    root = session_tmp / "layouts" / "byo"
    rows = ["video,subject,va"]
    for k in range(6):
        frames, audio, fps, sr = _tiny_av(i, seconds=2.0)
        write_video(root / "videos" / f"clip{k}.mp4", frames, fps, audio, sr)
        n = len(frames) if k != 5 else len(frames) - 5  # clip5's annotation is 5 frames short
        va = np.stack([np.linspace(-0.5, 0.5, n), np.linspace(0.5, -0.5, n)], 1)
        (root / "va").mkdir(parents=True, exist_ok=True)
        (root / "va" / f"clip{k}.csv").write_text("valence,arousal\n" + "\n".join(f"{v:.3f},{a:.3f}" for v, a in va) + "\n")
        rows.append(f"videos/clip{k}.mp4,subj{k % 3},va/clip{k}.csv")
        i += 1
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    (root / "videos" / "desktop.ini").write_text("[.ShellClassInfo]\n")
    out["byo"] = root

    root = session_tmp / "layouts" / "recola"
    for name, n_labels in (("train_1", 50), ("train_2", 50), ("train_3", 50), ("dev_1", 45), ("dev_2", 50)):
        frames, audio, fps, sr = _tiny_av(i, seconds=2.0, fps=25)
        write_video(root / "recordings_video" / f"{name}.mp4", frames, fps, None, sr)  # audio in the WAV
        write_wav(root / "recordings_audio" / f"{name}.wav", audio, sr)
        for dim, sign in (("arousal", 1), ("valence", -1)):
            rows = "\n".join(f"{name},{k * 0.04:.2f},{sign * np.sin(k / 8):.4f}" for k in range(n_labels))
            (root / "ratings_gold_standard" / dim).mkdir(parents=True, exist_ok=True)
            (root / "ratings_gold_standard" / dim / f"{name}.arff").write_text(
                "@relation GOLDSTANDARD\n@attribute Instance_name string\n@attribute frameTime numeric\n"
                f"@attribute GoldStandard numeric\n\n@data\n\n{rows}\n")
        i += 1
    for dim in ("arousal", "valence"):  # test recordings: no gold standard values released
        (root / "ratings_gold_standard" / dim / "test_1.arff").write_text("@relation GOLDSTANDARD\n@data\n")
    (root / "README.txt").write_text("AVEC 2016")
    out["recola"] = root

    root = session_tmp / "layouts" / "msp_improv"
    # as released: the session is the speaker's number (F01, M01: session 1), the sentence (S0k) is not it;
    # each clip's line is followed by its raters' lines; "D:x ;" and a closing ";"
    lines = []
    sessions = [(1, "A"), (1, "H"), (2, "S"), (2, "N"), (3, "A"), (3, "H"), (3, "X"), (3, "O")]
    for k, (sess, code) in enumerate(sessions):
        key = f"S{k + 1:02d}{'AHSN'[k % 4]}-{'FM'[k % 2]}0{sess}-P-FM0{k + 1}"
        frames, audio, fps, sr = _tiny_av(i)
        write_video(root / f"session{sess}" / key[:4] / "P" / f"MSP-IMPROV-{key}.avi", frames, fps, audio, sr)
        rating = "A:NaN; V:NaN" if code == "O" else f"A:3.000000; V:{2 + k % 3}.000000"  # O: a clip nobody rated
        lines.append(f"UTD-IMPROV-{key}.avi; {code}; {rating}; D:2.500000 ; N:4.000000;")
        lines += [f"{rater}; Angry; Angry,Frustrated; A:3.000000; V:2.000000; D:2.000000; N:4.000000;"
                  for rater in ("Eval01", "M-12")]
        i += 1
    lines.append("UTD-IMPROV-S04A-F04-P-FM09.avi; N; A:3.0; V:3.0; D:3.0; N:3.0;")  # no video file
    (root / "Evaluation.txt").write_text("\n".join(lines) + "\n")
    out["msp_improv"] = root
    return out


def save_tiny_encoder(folder: Path, kind: str, seed: int = 0, sampling_rate: int = 16000, **conf_kw) -> Path:
    """A speech encoder of ``kind`` (wav2vec2, hubert, wavlm, whisper) with random weights, 2 layers of
    width 32, saved as Hugging Face's ``save_pretrained`` writes it (config.json, model.safetensors,
    preprocessor_config.json): the folder layout users download. wav2vec 2.0's family has a short
    convolution stack here (stride 20 samples, field 25) so that 1 s clips give many frames;
    ``conf_kw`` overrides its config's keys (e.g. ``conv_kernel``)."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    if kind == "whisper":
        conf = tf.WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                                decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80)
        tf.WhisperModel(conf).save_pretrained(folder)
        tf.WhisperFeatureExtractor(feature_size=80, sampling_rate=sampling_rate).save_pretrained(folder)
        return folder
    conf_cls, model_cls = {"wav2vec2": (tf.Wav2Vec2Config, tf.Wav2Vec2Model), "hubert": (tf.HubertConfig, tf.HubertModel),
                           "wavlm": (tf.WavLMConfig, tf.WavLMModel)}[kind]
    conf = conf_cls(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(32, 32),
                    **{"conv_stride": (5, 4), "conv_kernel": (10, 4), "num_conv_pos_embeddings": 16,
                       "num_conv_pos_embedding_groups": 2, **conf_kw})
    model_cls(conf).save_pretrained(folder)
    tf.Wav2Vec2FeatureExtractor(do_normalize=True, sampling_rate=sampling_rate).save_pretrained(folder)
    return folder


def save_tiny_vision(folder: Path, kind: str, seed: int = 0) -> Path:
    """An image encoder of ``kind`` (clip, vit, dinov2, videomae) with random weights, width 32 (CLIP: projected
    to 16), 2 layers, 32 px input in 8 px patches, saved with its image processor as
    ``save_pretrained`` writes them."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                 patch_size=8)
    if kind == "clip":
        conf = tf.CLIPConfig(vision_config=small, projection_dim=16, text_config=dict(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
        tf.CLIPModel(conf).save_pretrained(folder)
        tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    elif kind == "vit":
        tf.ViTModel(tf.ViTConfig(**small)).save_pretrained(folder)
        tf.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    elif kind == "videomae":  # windows of 4 frames in tubelets of 2
        tf.VideoMAEModel(tf.VideoMAEConfig(**small, num_frames=4, tubelet_size=2)).save_pretrained(folder)
        tf.VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    else:
        tf.Dinov2Model(tf.Dinov2Config(**small)).save_pretrained(folder)
        tf.BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture
def make_encoder():
    """``make_encoder(folder, kind, ...)``: :func:`save_tiny_encoder`."""
    return save_tiny_encoder


@pytest.fixture
def make_vision():
    """``make_vision(folder, kind, ...)``: :func:`save_tiny_vision`."""
    return save_tiny_vision
