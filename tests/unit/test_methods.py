"""One parametrized test over every registered method and task it supports."""

import pytest
import torch

from raybench.methods import METHODS, create_method

B, T, K, F, H, E = 4, 6, 4, 20, 32, 12
K2, F2 = 2, 16  # speech embeddings (audio_emb): steps per frame, features (2 layers of 8 in the speech tests)
CASES = [(m, t) for m in METHODS.names() for t in METHODS.get(m).tasks]
# small sizes so every method runs in a fraction of a second on a CPU
SMALL = {"dim": 16, "cnn_width": 4, "visual_dim": 32, "audio_dim": 16, "hidden": 16, "fbp_o": 16,
         "fused_dim": 16, "visual_channels": 16, "audio_channels": 8, "attention_dim": 8, "levels": 2,
         "num_blocks": 1, "heads": 2, "patch_seconds": 0.3}


def batch(task, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = {
        "video": torch.randn(B, T, 3, H, H, generator=g),
        "audio": torch.randn(B, T * K, F, generator=g),
        "mask": torch.ones(B, T, dtype=torch.bool),
        "flow": torch.randn(B, T, 2, H, H, generator=g),
        "video_emb": torch.randn(B, T, E, generator=g) * 3 + 1,  # as stored: not standardised
        "audio_emb": torch.randn(B, T * K2, F2, generator=g),
    }
    b["mask"][0, -2:] = False
    if task == "categorical":
        b["label"] = torch.tensor([0, 1, 2, 3])
    else:
        b["va"] = torch.rand(B, T, 2, generator=g) * 2 - 1
        b["va"][1, 0] = float("nan")
    return b


def build(name, task):
    kw = {k: v for k, v in SMALL.items() if k in METHODS.get(name).defaults}
    return create_method(name, task, 4 if task == "categorical" else 2, n_audio_features=F,
                         audio_steps_per_frame=K, video_emb_dim=E, n_audio_emb_features=F2,
                         audio_emb_steps_per_frame=K2, **kw)


@pytest.mark.parametrize("name,task", CASES)
def test_forward_shapes_no_nan_and_gradients(name, task):
    torch.manual_seed(0)
    model = build(name, task)
    out = model(batch(task))
    if task == "categorical":
        assert out["logits"].shape == (B, 4)
    else:
        assert out["va"].shape == (B, T, 2)
        if name != "zhang2021":  # zhang2021's output is linear, as the authors' regressor
            assert out["va"].abs().max() <= 1
    assert all(torch.isfinite(v).all() for v in out.values())
    loss = model.loss(out, batch(task))
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("name,task", CASES)
def test_overfits_one_small_batch(name, task):
    torch.manual_seed(0)
    model = build(name, task)
    b = batch(task)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    first = None
    for _ in range(100):
        loss = model.loss(model(b), b)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        final = float(model.loss(model(b), b).detach())
    assert final < first / 4, (first, final)


# every method, and each fusion and attention variant that changes how time is mixed
PAD_CASES = CASES + [("av_fusion", t, {"fusion": f}) for t in ("categorical", "continuous")
                     for f in ("attention", "fbp", "leader_follower", "cross_attention", "late")] + [
    ("zhou2019", "categorical", {"attention": a, "fusion": f}) for a in ("relation", "transformer")
    for f in ("concat", "fbp")] + [("de3", t, {"use_flow": False}) for t in ("categorical", "continuous")] + [
    ("zhang2021", "continuous", {"fusion": "concat"}), ("schoneveld2021", "categorical", {"pool": "last"})] + [
    ("schoneveld2021", t, {"fusion": f}) for t in ("categorical", "continuous")
    for f in ("attention", "fbp", "cross_attention")]
# the published methods with an image encoder's frozen face embeddings in place of their face CNN
EMB_CASES = [(m, t, {"backbone": "embeddings"}) for m in ("zhou2019", "schoneveld2021", "de3", "zhang2021")
             for t in METHODS.get(m).tasks]
# ... and a speech encoder's frozen embeddings in place of their audio network (two layers side by side)
SPEECH = {"zhou2019": {"audio_backbone": "embeddings"}, "schoneveld2021": {"audio_backbone": "embeddings"},
          "de3": {"audio_backbone": "embeddings"}, "zhang2021": {"audio_streams": ["embeddings"]}}
SPEECH_CASES = [(m, t, o) for m, o in SPEECH.items() for t in METHODS.get(m).tasks] + [
    ("zhang2021", "continuous", {"audio_streams": ["vggish", "embeddings"], "backbone": "embeddings"})]
PAD_CASES += EMB_CASES + [(m, t, {**o, "_layers": 2}) for m, t, o in SPEECH_CASES]


@pytest.mark.parametrize("case", SPEECH_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{'-'.join(map(str, c[2].values()))}")
def test_published_methods_take_speech_embeddings_in_place_of_their_audio_network(case):
    name, task, opts = case
    torch.manual_seed(0)
    kw = {k: v for k, v in SMALL.items() if k in METHODS.get(name).defaults}
    model = create_method(name, task, 4 if task == "categorical" else 2, n_audio_features=F,
                          audio_steps_per_frame=K, video_emb_dim=E, audio_layers=2, n_audio_emb_features=F2,
                          audio_emb_steps_per_frame=K2, **kw, **opts)
    layer_sums = [m for m in model.modules() if type(m).__name__ == "LayerWeightedAudio"]
    assert layer_sums and all(m.layers == 2 and m.width == F2 // 2 and m.k == K2 for m in layer_sums)
    assert "audio_emb" in model.inputs  # the pipeline reads the embeddings; the features only where a stream uses them
    assert ("audio" in model.inputs) == ("vggish" in opts.get("audio_streams", ()))
    _input_drives_a_trained_model(model, batch(task), task, "audio_emb")


def _input_drives_a_trained_model(model, b, task, key):
    """Finite outputs, a gradient on every parameter, and the prediction changes with input ``key``."""
    out = model(b)
    assert all(torch.isfinite(v).all() for v in out.values())
    model.loss(out, b).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"no gradient reaches {missing}"
    model.eval()
    with torch.no_grad():
        out_key = "logits" if task == "categorical" else "va"
        assert not torch.allclose(model(b)[out_key], model(dict(b, **{key: torch.randn_like(b[key])}))[out_key])


@pytest.mark.parametrize("case", EMB_CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_published_methods_take_face_embeddings_in_place_of_frames(case):
    name, task, opts = case
    torch.manual_seed(0)
    kw = {k: v for k, v in SMALL.items() if k in METHODS.get(name).defaults}
    model = create_method(name, task, 4 if task == "categorical" else 2, n_audio_features=F,
                          audio_steps_per_frame=K, video_emb_dim=E, **kw, **opts)
    assert "video_emb" in model.inputs and "video" not in model.inputs  # the pipeline reads no frames for it
    b = batch(task)
    del b["video"]
    _input_drives_a_trained_model(model, b, task, "video_emb")
    with pytest.raises(ValueError, match="set data.video.encoder.path"):
        create_method(name, task, 2, n_audio_features=F, audio_steps_per_frame=K, **kw, **opts)
    with pytest.raises(ValueError, match="takes no weights"):
        create_method(name, task, 2, n_audio_features=F, audio_steps_per_frame=K, video_emb_dim=E,
                      weights="/models/ir50.pth", **kw, **opts)


@pytest.mark.parametrize("case", PAD_CASES, ids=lambda c: "-".join([c[0], c[1], *map(str, (c[2] if len(c) > 2 else {})
                                                                                        .values())]))
@pytest.mark.parametrize("n", [7, 10])
def test_padding_never_changes_a_prediction(case, n):
    """A clip of n frames padded to a 16-frame window (padding of any content, masked out) gives the
    predictions of the same clip unpadded: its logits, or its n frames' valence/arousal."""
    name, task, opts = (*case, {})[:3]
    opts = dict(opts)
    layers = opts.pop("_layers", 1)
    torch.manual_seed(0)
    kw = {k: v for k, v in SMALL.items() if k in METHODS.get(name).defaults}
    model = create_method(name, task, 4 if task == "categorical" else 2, n_audio_features=F,
                          audio_steps_per_frame=K, video_emb_dim=E, audio_layers=layers, n_audio_emb_features=F2,
                          audio_emb_steps_per_frame=K2, **{**kw, **opts}).eval()
    g = torch.Generator().manual_seed(n)
    L = 16
    clip = {"video": torch.randn(2, n, 3, H, H, generator=g), "audio": torch.randn(2, n * K, F, generator=g),
            "flow": torch.randn(2, n, 2, H, H, generator=g), "video_emb": torch.randn(2, n, E, generator=g),
            "audio_emb": torch.randn(2, n * K2, F2, generator=g),
            "mask": torch.ones(2, n, dtype=torch.bool)}
    padded = {k: torch.cat([v, 3 + torch.randn((2, L * v.shape[1] // n - v.shape[1], *v.shape[2:]), generator=g)], 1)
              for k, v in clip.items() if k != "mask"}  # what padding holds must not matter
    padded["mask"] = torch.arange(L).unsqueeze(0).expand(2, L) < n
    with torch.no_grad():
        a, b = model(clip), model(padded)
    key = "logits" if task == "categorical" else "va"
    got = b[key] if task == "categorical" else b[key][:, :n]
    assert got.shape == a[key].shape
    torch.testing.assert_close(got, a[key], atol=1e-5, rtol=1e-4)


def test_unknown_method_key_is_rejected():
    with pytest.raises(ValueError, match="unknown keys"):
        create_method("audio_only", "categorical", 8, fusion="concat")
    with pytest.raises(KeyError, match="did you mean"):
        create_method("audio_onyl", "categorical", 8)


def test_window_cost_counts_parameters_and_flops_that_grow_with_the_window():
    from raybench.schema import MethodOptions, TrialConfig
    from raybench.train.loop import trainable_parameters, window_cost

    data = {"audio_steps_per_frame": K, "n_audio_features": F}
    m = build("video_only", "categorical")

    def cost(length):
        return window_cost(m, TrialConfig(method=MethodOptions(name="video_only"), window={"length": length},
                                          data={"image_size": H}), data)

    c8, c16 = cost(8), cost(16)
    assert c8["model/parameters"] == sum(p.numel() for p in m.parameters()) == trainable_parameters(m)
    # the frame CNN dominates: one window of 16 frames costs twice one of 8 (independent of the counter's details)
    assert c16["model/gflops_per_window"] == pytest.approx(2 * c8["model/gflops_per_window"], rel=0.02)
    assert c8["model/gflops_per_window"] > 0 and m.training  # left as it was
    # by hand for the first conv layer alone: 2 x (3 x 3 x 3) x width x H x H per frame
    first = m.branch.enc.features[0][0]
    assert c8["model/gflops_per_window"] * 1e9 > 8 * 2 * 27 * first.out_channels * H * H


@pytest.mark.parametrize("case", PAD_CASES, ids=lambda c: "-".join([c[0], c[1], *map(str, (c[2] if len(c) > 2 else {})
                                                                                        .values())]))
def test_a_methods_inputs_are_known_from_its_options_without_building_it(case):
    """What the sweep reserves memory for before a trial starts (``Method.inputs_for``) is what the
    built method reads: every method, fusion, face and speech embedding variant."""
    from raybench.train.feed import method_inputs

    name, task, opts = case[0], case[1], dict(case[2] if len(case) > 2 else {})
    layers = opts.pop("_layers", 1)
    cls = METHODS.get(name)
    kw = {k: v for k, v in SMALL.items() if k in cls.defaults}
    model = create_method(name, task, 4 if task == "categorical" else 2, n_audio_features=F,
                          audio_steps_per_frame=K, video_emb_dim=E, audio_layers=layers,
                          n_audio_emb_features=F2, audio_emb_steps_per_frame=K2, **kw, **opts)
    assert method_inputs(cls, cls.options({**kw, **opts})) == method_inputs(model)
