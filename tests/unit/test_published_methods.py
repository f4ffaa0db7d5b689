"""Method-specific behaviour of the published methods (METHODS.md)."""

import numpy as np
import pytest
import torch

from raybench.methods import create_method
from raybench.train.metrics import ccc_centering
from raybench.nn.encoders import build_frame_encoder
from raybench.nn.losses import ccc


def _batch(B=2, T=6, H=32, F=20, K=4, task="categorical"):
    b = {"video": torch.randn(B, T, 3, H, H), "audio": torch.randn(B, T * K, F),
         "mask": torch.ones(B, T, dtype=torch.bool), "flow": torch.randn(B, T, 2, H, H)}
    if task == "categorical":
        b["label"] = torch.tensor([0, 1][:B])
    else:
        b["va"] = torch.rand(B, T, 2) * 2 - 1
    return b


def _ref_ccc(x, y):
    """CCC as the AVEC 2016 gold-standard script (and Zhang et al.'s centering) computes it, in plain
    Python: covariance over N, variances over N - 1."""
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y)) / n
    vx, vy = sum((a - mx) ** 2 for a in x) / (n - 1), sum((b - my) ** 2 for b in y) / (n - 1)
    return 2 * cov / (vx + vy + (mx - my) ** 2)


def _ref_centering(folds):
    k, n = len(folds), len(folds[0])
    r = [sum(_ref_ccc(folds[i], folds[j]) for j in range(k) if j != i) / (k - 1) for i in range(k)]
    means = [sum(f) / n for f in folds]
    w = sum(ri * m for ri, m in zip(r, means)) / sum(r)
    return [min(1.0, max(-1.0, sum(folds[i][t] - means[i] + w for i in range(k)) / k)) for t in range(n)]


def test_ccc_centering_on_known_inputs():
    p1 = [0.1, 0.2, 0.3, 0.4, 0.2]
    p2 = [v + 0.2 for v in p1]  # same shape, shifted: equal agreement, so the offset is the mean of the means
    assert np.allclose(ccc_centering([np.array(p1), np.array(p2)]), [v + 0.1 for v in p1])
    rng = np.random.default_rng(0)
    folds = [list(np.sin(np.arange(30) / 4) * 0.5 + o + rng.normal(0, 0.2, 30)) for o in (0.1, -0.2, 0.3)]
    assert np.allclose(ccc_centering([np.array(f) for f in folds]), _ref_centering(folds), atol=1e-12)
    # a fold that disagrees with the others (negative CCC) weighs negatively, as in the authors' code
    # (not clipped to 0): its mean pulls the offset the other way
    p3 = [0.9 - v for v in p1]
    assert _ref_ccc(p1, p3) < 0
    out = ccc_centering([np.array(p1), np.array(p2), np.array(p3)])
    assert np.allclose(out, _ref_centering([p1, p2, p3]), atol=1e-12)
    clipped_offset = (np.mean(p1) + np.mean(p2)) / 2  # what a weight clipped at 0 would give
    assert abs(float(np.mean(out)) - clipped_offset) > 0.05
    assert np.all(np.abs(ccc_centering([np.full(4, 3.0), np.full(4, 3.0) + 1e-3 * np.arange(4)])) <= 1)


def test_zhang2021_defaults_are_the_papers():
    m = create_method("zhang2021", "continuous", 2, n_audio_features=20, audio_steps_per_frame=4)
    one = m.models[0]
    assert one.v_tcn.receptive_field == 121 and one.v_tcn.out_dim == 128
    assert [s["tcn"].out_dim for s in one.streams] == [32, 32]
    assert [s["enc"].out_dim for s in one.streams] == [39, 128]  # MFCC + deltas, VGGish
    assert one.fusion.z_dim == 224 and one.head.in_features == 224
    assert len(m.models) == 2 and one.head.out_features == 1  # one model per dimension, as the authors
    two = create_method("zhang2021", "continuous", 2, n_audio_features=20, audio_steps_per_frame=4,
                        per_dimension=True, visual_dim=16, levels=1)
    assert len(two.models) == 2 and two(_batch(task="continuous"))["va"].shape == (2, 6, 2)


def test_zhang2021_crop_is_shared_by_the_window_and_centred_in_eval():
    m = create_method("zhang2021", "continuous", 2, n_audio_features=20, audio_steps_per_frame=4, crop=0.5)
    v = torch.arange(16 * 16, dtype=torch.float).view(1, 1, 1, 16, 16).expand(2, 5, 3, 16, 16)
    m.train()
    c = m._augment(v)
    assert c.shape == (2, 5, 3, 8, 8)
    assert all(torch.equal(c[b, 0], c[b, t]) for b in range(2) for t in range(5))  # one crop per window
    m.eval()
    assert torch.equal(m._augment(v), v[..., 4:12, 4:12])


def test_schoneveld2021_distils_from_a_torchscript_teacher(tmp_path):
    teacher = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                  torch.nn.Linear(4, 7))
    path = tmp_path / "teacher.pt"
    torch.jit.script(teacher).save(str(path))
    kw = dict(n_audio_features=20, audio_steps_per_frame=4, visual_dim=16, audio_dim=8, hidden=8, fused_dim=8,
              patch_seconds=0.3, cnn_width=4)
    torch.manual_seed(0)
    plain = create_method("schoneveld2021", "categorical", 2, **kw)
    torch.manual_seed(0)
    student = create_method("schoneveld2021", "categorical", 2, distill_teacher=str(path), **kw)
    b = _batch()
    out = student(b)
    assert out["student_frame"].shape == (2, 6, 7)
    assert not any(p.requires_grad for p in student._teacher[0].parameters())
    assert "teacher" not in "".join(student.state_dict())  # the teacher is not saved with the student
    assert float(student.loss(out, b).detach()) > float(plain.loss(plain(b), b).detach()) - 1e-6
    with pytest.raises(FileNotFoundError, match="TorchScript"):
        create_method("schoneveld2021", "categorical", 2, distill_teacher=str(tmp_path / "nope.pt"), **kw)


def test_de3_flow_ablation_and_weighted_loss():
    kw = dict(n_audio_features=20, audio_steps_per_frame=4, dim=16, heads=2, num_blocks=1, cnn_width=4)
    with_flow = create_method("de3", "categorical", 2, **kw)
    without = create_method("de3", "categorical", 2, use_flow=False, **kw)
    assert hasattr(with_flow, "flow") and not hasattr(without, "flow")
    b = _batch()
    out = with_flow(b)
    assert set(out) == {"logits", "video", "audio"}
    from raybench.nn.losses import task_loss

    expect = task_loss("categorical", out, b) + 0.5 * (
        task_loss("categorical", {"logits": out["video"]}, b) + task_loss("categorical", {"logits": out["audio"]}, b))
    assert torch.allclose(with_flow.loss(out, b), expect)
    b.pop("flow")
    with pytest.raises(KeyError, match="data.flow"):
        with_flow(b)
    assert without(b)["logits"].shape == (2, 2)


def test_zhou2019_variants():
    kw = dict(n_audio_features=20, audio_steps_per_frame=4, visual_dim=16, audio_dim=8, hidden=8, fbp_o=8,
              cnn_width=4)
    for attention in ("self", "relation", "transformer"):
        for fusion in ("concat", "fbp"):
            for deltas in (True, False):
                m = create_method("zhou2019", "categorical", 3, attention=attention, fusion=fusion, deltas=deltas,
                                  **kw)
                assert m(_batch())["logits"].shape == (2, 3)
    with pytest.raises(ValueError, match="fusion"):
        create_method("zhou2019", "categorical", 3, fusion="leader_follower", **kw)
    m = create_method("zhou2019", "categorical", 3, attention="relation", **kw)
    assert m.v_pool.relation_eval == m.a_pool.relation_eval == "authors"  # the FAN code's evaluation by default
    m = create_method("zhou2019", "categorical", 3, attention="relation", relation_eval="as_trained", **kw)
    assert m.v_pool.relation_eval == m.a_pool.relation_eval == "as_trained"


def test_zhou2019_adds_deltas_to_log_mel_only_as_the_papers_two_audio_inputs():
    from raybench.config import SWEEPS_DIR, load, resolve_trial_config
    from raybench.train.loop import build_model

    def channels(m):
        return next(c for c in m.audio.modules() if isinstance(c, torch.nn.Conv2d)).in_channels

    data = {"task": "categorical", "class_names": ["a", "b"], "n_audio_features": 20, "audio_steps_per_frame": 4,
            "fps": 10}
    for features, want in (("logmel", 3), ("spectrogram", 1), ("egemaps", 1)):
        cfg = resolve_trial_config(load(SWEEPS_DIR / "smoke.yaml", [f"data.audio.features={features}"]),
                                   {"method.name": "zhou2019"})
        assert channels(build_model(cfg, data)) == want, features
    cfg = resolve_trial_config(load(SWEEPS_DIR / "smoke.yaml", ["data.audio.features=spectrogram"]),
                               {"method.name": "zhou2019", "method.deltas": True})
    assert channels(build_model(cfg, data)) == 3  # forced


def test_frame_encoder_from_timm_and_local_weights(tmp_path):
    enc = build_frame_encoder("resnet18", 16, None)
    assert enc(torch.randn(1, 2, 3, 32, 32)).shape == (1, 2, 16)
    torch.save({"state_dict": enc.backbone.state_dict()}, tmp_path / "w.pt")
    enc2 = build_frame_encoder("resnet18", 16, str(tmp_path / "w.pt"))
    k = next(iter(enc.backbone.state_dict()))
    assert torch.equal(enc2.backbone.state_dict()[k], enc.backbone.state_dict()[k])
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        build_frame_encoder("resnet18", 16, str(tmp_path / "nope.pt"))
    torch.save({"fc9.weight": torch.zeros(2)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="do not fit"):
        build_frame_encoder("resnet18", 16, str(tmp_path / "bad.pt"))
    with pytest.raises(ValueError, match="unknown backbone"):
        build_frame_encoder("resnett18", 16, None)


def _zhang_with_weights(tmp_path, **kw):
    enc = build_frame_encoder("small_cnn", 32, None, 8)
    path = tmp_path / "face.pt"
    torch.save(enc.state_dict(), path)
    m = create_method("zhang2021", "continuous", 2, n_audio_features=20, audio_steps_per_frame=4,
                      visual_dim=32, cnn_width=8, weights=str(path), **{"per_dimension": False, **kw})
    return m, {k: v.clone() for k, v in enc.state_dict().items()}


def test_zhang2021_gradual_unfreezing_of_a_pretrained_backbone(tmp_path):
    """A loaded backbone starts frozen (no update, batch-norm statistics kept); each LR drop
    releases the next group of layers, top first; the count survives a checkpoint."""
    from raybench.nn.encoders import backbone_groups
    from raybench.train.loop import train_step

    torch.manual_seed(0)
    m, loaded = _zhang_with_weights(tmp_path, unfreeze="per_drop", frozen_batchnorm="keep")
    face = m.models[0].face.backbone  # the loaded CNN (under its L2-normalised embedding)
    groups = backbone_groups(face)
    assert groups[0] == [face.proj] and len(groups) == 5  # projection, then 4 conv blocks from the last
    assert {id(p) for p in m.frozen_parameters()} == {id(p) for p in face.parameters()}
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=1e-2)

    def step():
        m.train()
        train_step(m, m.loss(m(_batch(T=6, task="continuous")), _batch(T=6, task="continuous")), opt)

    tcn_before = next(m.models[0].v_tcn.parameters()).detach().clone()
    step()
    assert all(torch.equal(face.state_dict()[k], v) for k, v in loaded.items())  # weights and BN stats
    assert not torch.equal(next(m.models[0].v_tcn.parameters()), tcn_before)  # the rest trains
    m.on_lr_drop()  # first drop: the projection (top group) is released
    assert int(m.released_groups) == 1
    step()
    assert not torch.equal(face.proj.weight, loaded["proj.weight"])
    assert all(torch.equal(face.state_dict()[k], v) for k, v in loaded.items() if k.startswith("features"))
    for _ in range(10):
        m.on_lr_drop()
    assert int(m.released_groups) == 5 and m.frozen_parameters() == []
    step()
    assert not torch.equal(face.state_dict()["features.0.0.weight"], loaded["features.0.0.weight"])
    # the released count is part of the checkpoint
    again, _ = _zhang_with_weights(tmp_path, unfreeze="per_drop")
    again.load_state_dict(m.state_dict())
    assert int(again.released_groups) == 5 and again.frozen_parameters() == []


def test_zhang2021_freezing_defaults_and_options(tmp_path):
    scratch = create_method("zhang2021", "continuous", 2, n_audio_features=20, audio_steps_per_frame=4)
    assert scratch.frozen_parameters() == []  # from scratch nothing is frozen
    trained, _ = _zhang_with_weights(tmp_path, freeze_backbone=False)
    assert trained.frozen_parameters() == []
    fixed, _ = _zhang_with_weights(tmp_path, unfreeze="per_drop", unfreeze_per_drop=0)
    fixed.on_lr_drop()
    assert len(fixed.frozen_parameters()) == len(list(fixed.models[0].face.parameters()))
    authors, _ = _zhang_with_weights(tmp_path)  # unfreeze: authors ignores LR drops
    authors.on_lr_drop()
    assert int(authors.released_groups) == 0
    two, _ = _zhang_with_weights(tmp_path, unfreeze="per_drop", unfreeze_per_drop=2)
    two.on_lr_drop()
    assert int(two.released_groups) == 2
    with pytest.raises(ValueError, match=r"'method.freeze_backbone' \(zhang2021\) must be bool, got str 'yes'"):
        _zhang_with_weights(tmp_path, freeze_backbone="yes")


def test_ir50_groups_cover_the_backbone_once_top_first():
    from raybench.nn.encoders import backbone_groups

    enc = build_frame_encoder("ir50", 64)
    groups = backbone_groups(enc)
    assert groups[0] == [enc.backbone.output_layer] and groups[-1][-1] is enc.backbone.input_layer
    ids = [id(p) for g in groups for m in g for p in m.parameters()]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in enc.backbone.parameters()}
    assert [len(g) for g in groups] == [1, 3, 7, 7, 4, 4]


def _ref_window_loss(gold, pred):
    """The authors' CCCLoss on (B, T, D) arrays, element-wise as their code writes it: per window and
    dimension, means over time, the covariance term per element, variances with N - 1."""
    gm, pm = gold.mean(1, keepdims=True), pred.mean(1, keepdims=True)
    cov = (gold - gm) * (pred - pm)  # (B, T, D), not averaged
    gv, pv = gold.var(1, ddof=1, keepdims=True), pred.var(1, ddof=1, keepdims=True)
    return float(np.mean(1 - 2 * cov / (gv + pv + (gm - pm) ** 2 + 1e-8)))


def test_zhang2021_loss_is_one_ccc_per_window_as_the_authors_compute_it():
    from raybench.nn.losses import ccc_loss

    rng = np.random.default_rng(0)
    gold = rng.uniform(-1, 1, (4, 12, 2))
    pred = 0.6 * gold + rng.normal(0.1, 0.3, gold.shape) + rng.normal(0, 0.5, (4, 1, 2))  # per-window offsets
    m = create_method("zhang2021", "continuous", 2, n_audio_features=20, audio_steps_per_frame=4, per_dimension=False)
    batch = {"va": torch.tensor(gold, dtype=torch.float32), "mask": torch.ones(4, 12, dtype=torch.bool)}
    got = float(m.loss({"va": torch.tensor(pred, dtype=torch.float32)}, batch))
    assert got == pytest.approx(_ref_window_loss(gold, pred), abs=1e-5)
    # one model per dimension (the default): each model's loss is its own dimension's, as in the
    # authors' one-dimension runs: the sum of the two dimensions' losses, not their mean
    per_dim = create_method("zhang2021", "continuous", 2, n_audio_features=20, audio_steps_per_frame=4)
    got_dims = float(per_dim.loss({"va": torch.tensor(pred, dtype=torch.float32)}, batch))
    assert got_dims == pytest.approx(sum(_ref_window_loss(gold[..., d:d + 1], pred[..., d:d + 1]) for d in range(2)),
                                     abs=1e-5)
    # windows at the right level but flat inside: the pooled CCC is high, each window's CCC is not
    levels = np.array([-0.8, -0.3, 0.3, 0.8])[:, None, None]
    g2 = levels + 0.05 * np.sin(np.arange(12) / 2)[None, :, None] + np.zeros((4, 12, 2))
    p2 = levels + 0.05 * rng.normal(size=(4, 12, 2))
    b2 = {"va": torch.tensor(g2, dtype=torch.float32), "mask": batch["mask"]}
    per_window = float(m.loss({"va": torch.tensor(p2, dtype=torch.float32)}, b2))
    assert per_window == pytest.approx(_ref_window_loss(g2, p2), abs=1e-4)
    assert per_window > 0.7 and float(ccc_loss(torch.tensor(p2), torch.tensor(g2))) < 0.1
    # padded and unannotated frames do not count: the loss equals the loss of the trimmed windows
    pad = np.concatenate([gold, np.full((4, 3, 2), np.nan)], 1)
    pred_pad = np.concatenate([pred, rng.uniform(-1, 1, (4, 3, 2))], 1)
    mask = torch.ones(4, 15, dtype=torch.bool)
    mask[:, 12:] = False
    got_pad = float(m.loss({"va": torch.tensor(pred_pad, dtype=torch.float32)},
                           {"va": torch.tensor(pad, dtype=torch.float32), "mask": mask}))
    assert got_pad == pytest.approx(got, abs=1e-5)
    pooled = create_method("zhang2021", "continuous", 2, n_audio_features=20, audio_steps_per_frame=4, loss="pooled",
                           per_dimension=False)
    assert float(pooled.loss({"va": torch.tensor(pred, dtype=torch.float32)}, batch)) == pytest.approx(
        float(ccc_loss(torch.tensor(pred), torch.tensor(gold))), abs=1e-5)


@pytest.mark.parametrize("fps", [5.0, 10.0, 25.0, 30.0])
def test_vggish_patches_span_0_96_s_at_any_frame_rate(fps):
    """VGGish's examples are 0.96 s long: the patch spans round(0.96 fps) video frames, k audio steps each,
    in schoneveld2021 and in zhang2021's VGGish stream (it used to be 9 frames whatever the rate)."""
    k = 4
    frames = round(0.96 * fps)
    s = create_method("schoneveld2021", "categorical", 3, n_audio_features=20, audio_steps_per_frame=k, fps=fps)
    assert s.audio.patch == frames * k
    z = create_method("zhang2021", "continuous", 2, n_audio_features=20, audio_steps_per_frame=k, fps=fps)
    (vggish,) = [st["enc"] for st in z.models[0].streams if type(st["enc"]).__name__ == "VGGishStream"]
    assert vggish.patch == frames * k
    # methods that do not use the frame rate are built without it
    assert create_method("av_fusion", "categorical", 3, n_audio_features=20, audio_steps_per_frame=k, fps=fps)


@pytest.mark.parametrize("patch_frames", [3, 4])
def test_a_vggish_patch_is_centred_on_its_frames_audio(patch_frames):
    """With the CNN and projection taken out, frame t's output is its patch's mean: an impulse on any step of
    frame 2 reaches the frames whose patch spans it, the same number of frames either side for an odd
    patch (centred on the middle of frame 2's k steps, not on its first step)."""
    from raybench.nn.audio import VGGishStream

    k, T = 4, 8
    st = VGGishStream(1, k, patch_frames=patch_frames)
    st.cnn, st.proj = torch.nn.Identity(), torch.nn.Identity()
    for step in range(2 * k, 3 * k):
        audio = torch.zeros(1, T * k, 1)
        audio[0, step, 0] = 1.0
        hit = [t for t in range(T) if st(audio)[0, t, 0] > 0]
        # patch t spans steps [t*k + k//2 - P//2, t*k + k//2 - P//2 + P), P = patch_frames * k
        P = patch_frames * k
        assert hit == [t for t in range(T) if t * k + k // 2 - P // 2 <= step < t * k + k // 2 - P // 2 + P]
        if patch_frames % 2:
            assert hit == [1, 2, 3]


def test_zhang2021_output_is_linear_as_the_authors_regressor():
    m = create_method("zhang2021", "continuous", 2, n_audio_features=20, audio_steps_per_frame=4, cnn_width=4,
                      visual_dim=16, visual_channels=8, audio_channels=4, levels=1).eval()
    with torch.no_grad():
        for one in m.models:  # one model per dimension
            one.head.bias.fill_(3.0)  # a large bias: a tanh output could not exceed 1
        batch = {"video": torch.randn(2, 5, 3, 48, 48), "audio": torch.randn(2, 20, 20)}
        assert float(m(batch)["va"].min()) > 1.5
        t = create_method("zhang2021", "continuous", 2, n_audio_features=20, audio_steps_per_frame=4, cnn_width=4,
                          visual_dim=16, visual_channels=8, audio_channels=4, levels=1, output="tanh").eval()
        t.models[0].head.bias.fill_(3.0)
        assert float(t(batch)["va"].max()) <= 1.0


def test_zhang2021_release_groups_are_the_authors_parameter_ranges(tmp_path):
    """ParamControl (mode "ir") releases parameter index ranges [4, 10), [163, 187), [142, 163) of the
    authors' backbone, whose parameters come in registration order: input layer, output layer, body."""
    from raybench.nn.irse import IR50

    torch.save(IR50().state_dict(), tmp_path / "ir50.pth")
    m = create_method("zhang2021", "continuous", 2, n_audio_features=20, audio_steps_per_frame=4, backbone="ir50",
                      weights=str(tmp_path / "ir50.pth"), embedding="projected", levels=1, per_dimension=False)
    net = m.models[0].face.backbone
    names = {id(p): n for n, p in net.named_parameters()}
    order = [f"input_layer.{n}" for n, _ in net.input_layer.named_parameters()] + [
        f"output_layer.{n}" for n, _ in net.output_layer.named_parameters()] + [
        f"body.{n}" for n, _ in net.body.named_parameters()]
    assert len(order) == 187
    groups = [[names[id(p)] for p in g] for g in m._groups[0]]
    assert groups == [order[4:10], order[163:187], order[142:163]]
    # what those ranges are: the output layer, stage 4 (units 21-23), the last 3 of stage 3's 14 units
    assert {n.split(".")[0] for n in groups[0]} == {"output_layer"}
    assert {int(n.split(".")[1]) for n in groups[1]} == {21, 22, 23}
    assert {int(n.split(".")[1]) for n in groups[2]} == {18, 19, 20}
    assert len(m.frozen_parameters()) == 187  # all frozen before the first release


def test_zhang2021_authors_schedule_releases_at_epoch_0_and_below_the_lr_then_stops(tmp_path):
    m, _ = _zhang_with_weights(tmp_path)
    n_face = len(list(m.models[0].face.parameters()))
    lr = 1e-5
    assert m.epoch_start(0, lr) == "release"  # the milestone at epoch 0
    m.release_next()
    assert len(m.frozen_parameters()) < n_face
    assert m.epoch_start(1, lr) is None
    once = lr * 0.1  # one plateau drop: a hair above 1e-6 in floating point, no release (as theirs)
    assert once > 1e-6 and m.epoch_start(5, once) is None
    assert m.epoch_start(9, once * 0.1) == "release"
    # the best weights come back without undoing the release count
    best = {k: v.clone() for k, v in m.state_dict().items()}
    m.release_next()
    m.restore_weights({**best, "released_groups": torch.tensor(0)})
    assert int(m.released_groups) == 2
    m.release_next()
    assert m.epoch_start(20, 1e-8) == "stop"  # release_count (3) used: the next moment ends the trial
    scratch = create_method("zhang2021", "continuous", 2, n_audio_features=20, audio_steps_per_frame=4)
    assert scratch.epoch_start(0, lr) is None  # nothing frozen: no schedule


def test_optimizer_is_the_methods_own_unless_set():
    from raybench.schema import TrialConfig
    from raybench.train.loop import make_optimizer

    z = create_method("zhang2021", "continuous", 2, n_audio_features=20, audio_steps_per_frame=4, levels=1)
    a = create_method("audio_only", "continuous", 2, n_audio_features=20, audio_steps_per_frame=4)
    cfg = TrialConfig(method={"name": "x"}, train={"weight_decay": 1e-3, "lr_schedule": "plateau"})
    opt, sched = make_optimizer(z, z, cfg)
    assert type(opt) is torch.optim.Adam and opt.defaults["weight_decay"] == 1e-3
    assert isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert type(make_optimizer(a, a, cfg)[0]) is torch.optim.AdamW
    cfg.train.optimizer = "adamw"
    assert type(make_optimizer(z, z, cfg)[0]) is torch.optim.AdamW


def test_zhang2021_tcn_drops_whole_channels():
    m = create_method("zhang2021", "continuous", 2, n_audio_features=20, audio_steps_per_frame=4, levels=1,
                      dropout=0.5)
    drops = [d for d in m.modules() if isinstance(d, torch.nn.Dropout1d)]
    assert drops and not [d for d in m.models[0].v_tcn.modules() if type(d) is torch.nn.Dropout]
    torch.manual_seed(0)
    y = drops[0].train()(torch.ones(4, 16, 50))
    per_channel = (y == 0).all(-1) | (y != 0).all(-1)  # each channel of each sequence dropped whole or kept
    assert per_channel.all() and (y == 0).any()
