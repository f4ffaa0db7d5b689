"""The embedding stage through the whole pipeline: a sweep over two windows and two fusions trains on a
speech encoder's embeddings, computed once (the embedding store's build log) and equal to the encoder's
hidden states pooled per step; a later sweep reuses them and adds an image encoder's frame embeddings;
a lost part file is encoded again, alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch


def test_a_sweep_encodes_each_clip_once_and_trains_on_the_embeddings(ray_session, tmp_path, make_encoder,
                                                                      make_vision):
    from raybench.config import load
    from raybench.data.embed import build_log
    from raybench.data.store import ClipStore, plan
    from raybench.sweep import run_sweep

    folder = make_encoder(tmp_path / "wavlm", "wavlm")
    path = tmp_path / "sweep.yaml"
    path.write_text(f"""
name: embeddings
data: {{dataset: synthetic_ravdess, fps: 8, image_size: 32, synth: {{actors: 3, seconds: 1.0}},
       audio: {{encoder: {{path: {folder}, layer: all, steps_per_frame: 2}}}}}}
method: {{name: embedding_fusion}}
window: {{length: 4, hop: 2}}
train: {{epochs: 1, batch_size: 16, num_workers: 1}}
tune: {{search_space: {{window.length: {{grid: [4, 8]}}, method.fusion: {{grid: [concat, attention]}}}}}}
""")
    cfg = load(path, [])
    cfg.mlflow.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg.storage = str(tmp_path / "results")
    res = run_sweep(cfg)
    assert res.failed == 0 and len(res.trials) == 4
    data = res.prepared["synthetic_ravdess"]
    emb_path = data["embeddings"]["audio_emb"]
    n_clips = sum(len(v) for v in data["ids"].values())
    (log,) = build_log(emb_path)  # one run of the stage, every clip encoded once
    assert log["encoded"] == n_clips
    # the trials trained on 3 layers x 32 features, 2 steps per video frame; the log-Mel features stay
    assert (data["n_audio_emb_features"], data["audio_layers"], data["audio_emb_steps_per_frame"]) == (96, 3, 2)
    assert (data["n_audio_features"], data["audio_steps_per_frame"]) == (40, 4)
    assert data["fingerprint"] not in emb_path.rsplit("-audio-", 1)[1]  # a store of its own, named by its fingerprint

    # the MLflow record says what the trials trained on: the encoder's keys, the embeddings' fingerprint
    import json

    from transformers import __version__ as tf_version

    from mlflow.tracking import MlflowClient

    client = MlflowClient(cfg.mlflow.tracking_uri)
    children = client.search_runs([client.get_run(res.parent_run_id).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
    assert len(children) == 4
    emb_fp = emb_path.rsplit("-", 1)[1]
    for r in children:
        assert r.data.params["data.audio.encoder.path"] == str(folder)
        assert r.data.params["data.audio.encoder.layer"] == "all"
        (inp,) = r.inputs.dataset_inputs
        assert inp.dataset.digest.startswith(data["fingerprint"] + "-")
        assert json.loads(inp.dataset.profile)["audio_emb_fingerprint"][:8] == emb_fp[:8]  # the embedding store's
        assert json.loads(inp.dataset.profile)["audio_emb_encoder"] == "wavlm"
        # the library versions that encoded the clips, as the stage's log has them
        assert json.loads(inp.dataset.profile)["audio_emb_libraries"] == \
            f"torch {torch.__version__} transformers {tf_version}"
    assert {log["torch"], log["transformers"]} == {torch.__version__, tf_version}

    # one clip's embeddings: the model's hidden states of its audio track at 16 kHz, averaged per step
    import decord
    import transformers as tf

    clip = next(c for c in plan(cfg.data).clips if c.clip_id == data["ids"]["val"][0])
    (row,) = ClipStore(emb_path).read_clips([clip.clip_id])
    got = np.frombuffer(row["audio_emb"], np.float32).reshape(row["audio_emb_shape"])
    x = decord.AudioReader(clip.video_path, sample_rate=16000, mono=True)[:].asnumpy().reshape(-1)
    n = int(round(row["num_frames"] * 16000 / cfg.data.fps))  # the audio under its frames (data.audio.align: time)
    x = np.pad(x[:n], (0, max(0, n - len(x))))
    fe = tf.AutoFeatureExtractor.from_pretrained(folder)
    with torch.no_grad():
        hs = tf.AutoModel.from_pretrained(folder).eval()(
            fe(x, sampling_rate=16000, return_tensors="pt").input_values, output_hidden_states=True).hidden_states
    h = torch.stack(hs, 2)[0].flatten(1).numpy()  # (frames, 96)
    steps = 2 * row["num_frames"]
    centre = (np.arange(len(h)) * 20 + 12.5) / 16000
    step = np.floor(centre / (len(x) / 16000) * steps).astype(int)
    assert got.shape == (steps, 96)
    for j in range(steps):
        np.testing.assert_allclose(got[j], h[step == j].mean(0), atol=1e-4)

    # a later sweep with another method and window, and an image encoder too, reuses the clip store and
    # the speech embeddings (nothing is encoded again) and encodes each clip's frames once
    vision = make_vision(tmp_path / "clip", "clip")
    path2 = tmp_path / "sweep2.yaml"
    text = path.read_text().replace("embedding_fusion", "frozen_fusion").replace(
        "synth: {actors: 3, seconds: 1.0},", f"synth: {{actors: 3, seconds: 1.0}}, video: {{encoder: {{path: {vision}}}}},")
    # ... and zhou2019 on both embeddings in place of its face and audio CNNs (backbone, audio_backbone)
    path2.write_text(text.replace("window.length: {grid: [4, 8]}, method.fusion: {grid: [concat, attention]}",
                                  "window.length: {grid: [6]}, method.name: {grid: [frozen_fusion, zhou2019]}")
                     + "per_method: {zhou2019: {method: {backbone: embeddings, audio_backbone: embeddings, visual_dim: 32, "
                       "audio_dim: 16}}}\n")
    cfg2 = load(path2, [])
    cfg2.mlflow.tracking_uri, cfg2.storage = cfg.mlflow.tracking_uri, cfg.storage
    res2 = run_sweep(cfg2)
    data2 = res2.prepared["synthetic_ravdess"]
    assert res2.failed == 0 and data2["embeddings"]["audio_emb"] == emb_path and data2["decoded"] == 0
    assert len(build_log(emb_path)) == 1
    (vlog,) = build_log(data2["embeddings"]["video_emb"])
    assert vlog["encoded"] == n_clips and data2["video_emb_dim"] == 16
    assert len(res2.trials) == 2 and all(0.0 <= t["val"]["val/uar"] <= 1.0 for t in res2.trials)
    # one clip's face embeddings: CLIP's projected image embedding of each of its stored frames
    (vrow,) = ClipStore(data2["embeddings"]["video_emb"]).read_clips([clip.clip_id])
    (frow,) = ClipStore(data["store_path"]).read_clips([clip.clip_id], ["video", "video_shape"])
    frames = np.frombuffer(frow["video"], np.uint8).reshape(frow["video_shape"])
    model = tf.AutoModel.from_pretrained(vision).eval()
    with torch.no_grad():
        x = tf.AutoImageProcessor.from_pretrained(vision)(images=list(frames), return_tensors="pt").pixel_values
        want = model.visual_projection(model.vision_model(pixel_values=x).pooler_output).numpy()
    np.testing.assert_allclose(np.frombuffer(vrow["video_emb"], np.float32).reshape(vrow["video_emb_shape"]), want,
                               atol=1e-4)

    # an interrupted stage resumes: the clips of a lost part file are encoded again, and only they
    from raybench.data.store import prepare

    emb = ClipStore(emb_path)
    part = sorted(emb.part_files())[0]
    lost = pq.read_metadata(part).num_rows
    Path(part).unlink()
    prep = prepare(cfg.data)
    assert prep.embeddings["audio_emb"] == emb_path and prep.embedding_info["audio_emb"]["encoded"] == lost
    assert [e["encoded"] for e in build_log(emb_path)] == [n_clips, lost]
    assert len(ClipStore(emb_path).done_ids()) == n_clips


def test_a_clip_the_encoder_cannot_take_is_skipped_for_every_method_and_not_tried_again(ray_session, tmp_path,
                                                                                       make_encoder, make_vision,
                                                                                       capsys):
    """A clip whose audio is shorter than the speech encoder's receptive field passes the prepare stage
    (log-Mel features take any length) but not the encoder: it is skipped with its reason, printed,
    counted against data.max_bad_fraction, recorded in the data summary (MLflow's skipped list), not
    given to the image encoder, and not encoded again by a rerun; the other clips are encoded. A sweep
    over two speech encoders leaves it out of both configurations."""
    import pytest

    from raybench.config import SWEEPS_DIR, load
    from raybench.data.embed import build_log
    from raybench.data.store import ClipStore, PrepareError, prepare
    from raybench.data.synth import write_mp4
    from raybench.trials import data_summary

    # receptive field 6000 + 3 x 5 samples: 376 ms at 16 kHz
    folder = make_encoder(tmp_path / "w2v", "wav2vec2", conv_kernel=(6000, 4))
    root = tmp_path / "data"
    rows = ["video,subject,label,split"]
    rng = np.random.default_rng(0)
    lengths = {"a0": 10, "a1": 10, "b0": 10, "b1": 10, "c0": 10, "short": 2}  # frames at 10 fps
    for i, (name, n) in enumerate(lengths.items()):
        audio = (0.3 * np.sin(np.arange(n * 1600) / (5 + i)) + 0.01 * rng.standard_normal(n * 1600)).astype(np.float32)
        write_mp4(root / f"{name}.mp4", rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8), 10, audio, 16000)
        split = {"a": "train", "b": "val", "c": "test", "s": "train"}[name[0]]
        rows.append(f"{name}.mp4,{name},{'xy'[i % 2]},{split}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    data = dict(load(SWEEPS_DIR / "smoke.yaml").data.model_dump(), dataset="csv", root=str(root), fps=10,
                image_size=32, store_dir=str(tmp_path / "stores"), max_bad_fraction=0.2,
                audio={"encoder": {"path": str(folder), "layer": 1}},
                video={"encoder": {"path": str(make_vision(tmp_path / "clip", "clip"))}})
    prep = prepare(data)
    assert "short" in prep.store.done_ids()  # decoded into the clip store: only the encoder refused it
    assert sorted(c.clip_id for c in prep.clips) == ["a0", "a1", "b0", "b1", "c0"] and set(prep.bad) == {"short"}
    reason = prep.bad["short"]["reason"]
    assert reason.startswith("data.audio.encoder (wav2vec2): the audio (") and "receptive field (376 ms)" in reason
    assert f"skipped {root / 'short.mp4'}: {reason}" in capsys.readouterr().out
    emb = ClipStore(prep.embeddings["audio_emb"])
    assert set(emb.bad()) == {"short"} and emb.done_ids() == {"a0", "a1", "b0", "b1", "c0"}
    (log,) = build_log(prep.embeddings["audio_emb"])
    assert (log["encoded"], log["skipped"]) == (5, 1)
    assert ClipStore(prep.embeddings["video_emb"]).done_ids() == {"a0", "a1", "b0", "b1", "c0"}  # not given it
    s = data_summary(prep, 10.0)  # what the sweep records (MLflow: data/<dataset>_skipped.json, the count)
    assert s["bad"] == {"short": reason} and s["skipped"] == 1
    assert s["ids"]["train"] == ["a0", "a1"]

    # a rerun encodes nothing and skips the same clip
    again = prepare(data)
    assert again.embedding_info["audio_emb"]["encoded"] == 0 and len(build_log(prep.embeddings["audio_emb"])) == 1
    assert set(again.bad) == {"short"} and [c.clip_id for c in again.clips] == [c.clip_id for c in prep.clips]
    # ... and past data.max_bad_fraction it stops, naming the clip and why
    with pytest.raises(PrepareError, match=r"(?s)1 of 6 clips \(17%\) could not be used.*short\.mp4: data\.audio\.encoder"):
        prepare({**data, "max_bad_fraction": 0.1})

    # a sweep over this encoder and one that takes the short clip (its receptive field 25 samples): both
    # configurations, on one clip store, leave it out, so that they are chosen and scored on the same clips
    from raybench.schema import DataConfig
    from raybench.trials import prepare_all

    wide = make_encoder(tmp_path / "w2v-wide", "wav2vec2")
    cfg = load(SWEEPS_DIR / "smoke.yaml", [])
    cfg.data = DataConfig.model_validate({**data, "video": {"encoder": {"path": None}}})
    cfg.tune.search_space = {"data.audio.encoder.path": {"grid": [str(folder), str(wide)]}}
    summaries = list(prepare_all(cfg).values())
    assert len(summaries) == 2 and len({s["store_path"] for s in summaries}) == 1
    assert len({s["embeddings"]["audio_emb"] for s in summaries}) == 2
    for s in summaries:
        assert s["ids"] == {"train": ["a0", "a1"], "val": ["b0", "b1"], "test": ["c0"]} and s["skipped"] == 1
    (other,) = [s["bad"]["short"] for s in summaries if s["bad"]["short"] != reason]
    assert other == f"{reason} (in another data configuration of this sweep on the same clip store: every " \
        "configuration leaves it out)"
    (wide_store,) = [s["embeddings"]["audio_emb"] for s in summaries if s["embeddings"]["audio_emb"] != prep.embeddings["audio_emb"]]
    assert "short" in ClipStore(wide_store).done_ids()  # that encoder took it
