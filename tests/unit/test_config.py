import subprocess
import sys
from pathlib import Path

import pytest

from raybench.config import ConfigError, SWEEPS_DIR, load, resolve_trial_config

ALL_SWEEPS = sorted(SWEEPS_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", ALL_SWEEPS, ids=[p.name for p in ALL_SWEEPS])
def test_every_shipped_sweep_loads_and_validates(path):
    from omegaconf import OmegaConf

    # a value the file leaves ??? (a local model folder) is given as a user would; without it, named
    must = [f"{k}=/models/given" for k in OmegaConf.missing_keys(OmegaConf.load(path))]
    if must:
        with pytest.raises(ConfigError, match=r"must be set: .* leaves it \?\?\?"):
            load(path)
    cfg = load(path, must)
    assert cfg.method["name"] and cfg.data.dataset


def test_shipped_sweeps_include_default_and_smoke():
    assert {"default.yaml", "smoke.yaml"} <= {p.name for p in ALL_SWEEPS}


def test_dataset_sweeps_run_the_published_methods_as_their_authors_set_them_up():
    """de3 runs on its paper's three datasets; zhang2021's trials get its authors' 300-frame windows
    (hop 200) wherever a sweep runs it, and RECOLA's stores VGGish's 64 Mel bands."""
    for name in ("ravdess", "crema_d", "msp_improv"):
        assert "de3" in load(SWEEPS_DIR / f"{name}.yaml").tune.search_space["method.name"]["grid"], name
    for name in ("recola", "zhang2021_affwild2"):
        cfg = load(SWEEPS_DIR / f"{name}.yaml")
        z = resolve_trial_config(cfg, {"method.name": "zhang2021"})
        assert (z.window.length, z.window.hop, z.train.batch_size) == (300, 200, 8), name
    recola = load(SWEEPS_DIR / "recola.yaml")
    assert recola.data.audio.n_mels == 64
    s = resolve_trial_config(recola, {"method.name": "schoneveld2021"})
    assert (s.window.length, s.train.batch_size) == (300, 4)
    a = resolve_trial_config(recola, {"method.name": "audio_only"})
    assert (a.window.length, a.train.batch_size) == (100, 16)


def _write(tmp_path, text) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


def test_all_problems_in_one_error(tmp_path):
    p = _write(tmp_path, """
data: {dataset: synthetic_ravdes, fsp: 10}
method: {name: av_fusion, fusoin: concat}
train: {epochs: ten, lr: 1.0e-3}
tune:
  search_space:
    window.lenght: {grid: [8, 16]}
    train.lr: {logunifrm: [1.0e-4, 1.0e-2]}
""")
    with pytest.raises(ConfigError) as e:
        load(p)
    msg = str(e.value)
    assert 'unknown key \'data.fsp\' (did you mean "fps"?)' in msg
    assert 'did you mean "synthetic_ravdess"' in msg
    assert 'did you mean "fusion"' in msg
    assert "'train.epochs' must be int, got str 'ten'" in msg
    assert "window.lenght" in msg and 'did you mean "length"' in msg
    assert 'did you mean "loguniform"' in msg
    assert len(e.value.problems) == 6


def test_unknown_method_and_task_mismatch(tmp_path):
    with pytest.raises(ConfigError, match=r'unknown method \'video_onyl\' \(did you mean "video_only"\?\)'):
        load(SWEEPS_DIR / "smoke.yaml", ["method.name=video_onyl"])
    from raybench.methods import METHODS

    class CatOnly(METHODS.get("audio_only")):
        tasks = ("categorical",)

    METHODS._items["_cat_only_test"] = CatOnly
    try:
        with pytest.raises(ConfigError, match="does not support dataset 'synthetic_affwild2'"):
            load(SWEEPS_DIR / "smoke.yaml", ["method.name=_cat_only_test", "data.dataset=synthetic_affwild2",
                                             "method.dim=8", "method.cnn_width=4"])
    finally:
        del METHODS._items["_cat_only_test"]


def test_metric_must_fit_the_task():
    with pytest.raises(ConfigError, match="val/ccc"):
        load(SWEEPS_DIR / "smoke.yaml", ["tune.metric=val/uar", "data.dataset=synthetic_affwild2"])


def test_overrides_apply_and_types_are_checked():
    cfg = load(SWEEPS_DIR / "smoke.yaml", ["train.epochs=3", "window.hop=2"])
    assert cfg.train.epochs == 3 and cfg.window.hop == 2
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load(SWEEPS_DIR / "smoke.yaml", ["train.epochs"])
    # the sweep's name makes its id, MLflow experiment and folders: a quote or a space is refused up front
    with pytest.raises(ConfigError, match=r"'name': String should match pattern"):
        load(SWEEPS_DIR / "smoke.yaml", ["name=bob's sweep"])
    # a typo on the command line: the error says where to look, the file and the overrides
    with pytest.raises(ConfigError, match=r"smoke.yaml with the command line's train.epoch=3 window.hop=2: 1 problem"):
        load(SWEEPS_DIR / "smoke.yaml", ["train.epoch=3", "window.hop=2"])


def test_search_space_values_are_type_checked():
    with pytest.raises(ConfigError, match="value 'x' must be int"):
        load(SWEEPS_DIR / "smoke.yaml", ["tune.search_space={window.length: {grid: [4, x]}}"])


def test_trial_config_drops_other_methods_keys():
    cfg = load(SWEEPS_DIR / "default.yaml")
    t = resolve_trial_config(cfg, {"method.name": "audio_only", "window.length": 8})
    assert t.method.name == "audio_only" and "fusion" not in t.method.model_dump()
    assert t.window.length == 8
    t = resolve_trial_config(cfg, {"method.name": "av_fusion"})
    assert t.method.fusion == "concat"


def test_mlflow_params_are_the_flattened_config():
    from raybench.tracking import params_of

    assert params_of({"a": {"b": 1, "c": {"d": [1, 2]}}}) == {"a.b": "1", "a.c.d": "[1, 2]"}
    t = resolve_trial_config(load(SWEEPS_DIR / "default.yaml"), {"method.name": "de3"})
    p = params_of(t)
    # a trial's typed config: every key under the name users write (de3's `lambda`, not `lambda_`)
    assert p["method.lambda"] == "0.5" and "method.lambda_" not in p
    assert p["method.name"] == "de3" and p["data.audio.n_mels"] == "40" and p["data.ravdess.channels"] == '["speech"]'
    assert p["data.fold"] == "None" and p["train.lr"] == str(t.train.lr)


def test_cli_config_error_exits_2_without_traceback(tmp_path):
    p = _write(tmp_path, "method: {name: audio_onyl}\ntrain: {epohcs: 2}\n")
    r = subprocess.run([sys.executable, "-m", "raybench.sweep", str(p)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert 'did you mean "audio_only"' in r.stderr and 'did you mean "epochs"' in r.stderr


def test_missing_sweep_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="sweep file not found"):
        load(tmp_path / "nope.yaml")


def test_a_builtin_sweep_is_found_by_name_from_any_folder_and_a_local_file_wins(tmp_path, monkeypatch):
    from raybench.config import builtin_sweeps, load_raw, sweep_path

    monkeypatch.chdir(tmp_path)
    own = builtin_sweeps()
    assert "smoke" in own and "default" in own and len(own) == len(list(SWEEPS_DIR.glob("*.yaml")))
    assert sweep_path("smoke") == SWEEPS_DIR / "smoke.yaml"
    assert load("smoke", ["train.epochs=3"]).name == load(SWEEPS_DIR / "smoke.yaml").name
    # the path that works from the repository names the built-in file from elsewhere, not silently used
    with pytest.raises(ConfigError, match=r"not found: sweeps/smoke.yaml \(relative to .*did you mean \"smoke\"") as e:
        load("sweeps/smoke.yaml")
    assert "default, fusion_x_window" in str(e.value)
    with pytest.raises(ConfigError, match='did you mean "smoke"'):
        load_raw("smok.yaml")
    with pytest.raises(ConfigError, match=r"not of the form key=value \(did you mean \"smoke\"\?\)"):
        load(None, ["smok"])
    (tmp_path / "smoke").mkdir()  # a folder of that name (a results folder, say) is not a sweep file
    assert sweep_path("smoke") == SWEEPS_DIR / "smoke.yaml"
    with pytest.raises(ConfigError, match="sweep file not a file: .*nope.yaml; raybench's own") as e:
        (tmp_path / "nope.yaml").mkdir()
        load(tmp_path / "nope.yaml")
    assert "relative to" not in str(e.value)  # an absolute path
    (tmp_path / "smoke").rmdir()
    (tmp_path / "smoke").write_text("name: mine\n")  # a file in the working directory wins over a name
    assert sweep_path("smoke") == Path("smoke") and load_raw("smoke")["name"] == "mine"


def test_flow_is_stored_only_when_a_method_needs_it():
    from raybench.trials import data_variants

    assert [d.flow for d in data_variants(load(SWEEPS_DIR / "smoke.yaml"))] == [False]
    de3 = load(SWEEPS_DIR / "smoke.yaml", ["method.name=de3", "method.dim=16"])
    assert de3.data.flow is False  # validation leaves the config as written ...
    assert [d.flow for d in data_variants(de3)] == [True]  # ... the store is built with flow
    with pytest.raises(ConfigError, match="flow_algorithm"):
        load(SWEEPS_DIR / "smoke.yaml", ["data.flow_algorithm=tvl1"])


def test_fusion_names_are_checked_up_front():
    with pytest.raises(ConfigError, match='unknown fusion \'fbb\' \\(did you mean "fbp"\\?\\)'):
        load(SWEEPS_DIR / "smoke.yaml", ["method.fusion=fbb"])


def test_pairs_whose_tasks_differ_are_left_out_of_a_method_x_dataset_grid():
    from raybench.config import valid_pairs

    cfg = load(SWEEPS_DIR / "synthetic_methods.yaml")
    pairs = valid_pairs(cfg)
    assert ("zhou2019", "synthetic_ravdess") in pairs and ("zhou2019", "synthetic_affwild2") not in pairs
    assert ("zhang2021", "synthetic_affwild2") in pairs and ("zhang2021", "synthetic_ravdess") not in pairs
    assert len(pairs) == 14
    from raybench.trials import data_variants

    assert all(d.flow for d in data_variants(cfg))  # de3 is in the sweep


def test_search_space_entries_can_be_overridden_from_the_command_line():
    cfg = load(SWEEPS_DIR / "default.yaml", ["tune.search_space.method.name={grid: [audio_only, av_fusion]}",
                                              "tune.search_space.train.lr={loguniform: [1.0e-4, 1.0e-2]}"])
    space = cfg.tune.search_space
    assert space["method.name"] == {"grid": ["audio_only", "av_fusion"]}
    assert space["train.lr"] == {"loguniform": [1.0e-4, 1.0e-2]}
    assert space["window.length"] == {"grid": [8, 16]}


def test_per_method_settings_apply_to_that_methods_trials_only(tmp_path):
    p = _write(tmp_path, """
train: {lr: 2.0e-3, epochs: 4}
per_method:
  zhang2021: {train: {lr: 3.0e-4, epochs: 6}, method: {visual_channels: 32}}
  audio_only: {window: {length: 8}}
tune:
  search_space:
    method.name: {grid: [audio_only, zhang2021]}
    data.dataset: {grid: [synthetic_ravdess, synthetic_affwild2]}
""")
    cfg = load(p)
    z = resolve_trial_config(cfg, {"method.name": "zhang2021", "data.dataset": "synthetic_affwild2"})
    assert (z.train.lr, z.train.epochs, z.method.visual_channels) == (3.0e-4, 6, 32)
    assert z.window.length == 16
    a = resolve_trial_config(cfg, {"method.name": "audio_only", "data.dataset": "synthetic_ravdess"})
    assert (a.train.lr, a.train.epochs, a.window.length) == (2.0e-3, 4, 8)
    assert "visual_channels" not in a.method.model_dump()
    # a value the search space samples wins over per_method
    z2 = resolve_trial_config(cfg, {"method.name": "zhang2021", "train.lr": 1.0e-2})
    assert z2.train.lr == 1.0e-2


def test_per_method_typos_are_reported(tmp_path):
    p = _write(tmp_path, """
per_method:
  zhang202: {train: {lr: 3.0e-4}}
  audio_only: {trian: {lr: 1.0e-3}, train: {lrr: 1.0e-3, num_workers: 1, epochs: many}, method: {dimm: 8}}
  zhou2019: {train: {lr: 1.0e-3}}
tune:
  search_space:
    method.name: {grid: [audio_only, av_fusion]}
""")
    with pytest.raises(ConfigError) as e:
        load(p)
    msg = str(e.value)
    assert "'per_method.zhang202'" in msg and "zhang2021" in msg  # did you mean
    assert "unknown section 'trian'" in msg
    assert "'per_method.audio_only.train.lrr' (did you mean \"lr\"?)" in msg
    assert "train.num_workers is set once" in msg
    assert "'per_method.audio_only.train.epochs' must be int" in msg
    assert "'per_method.audio_only.method.dimm' (did you mean \"dim\"?)" in msg
    assert "the sweep never runs 'zhou2019'" in msg


TYPOS = {  # each used to pass validation and fail inside a trial (or not at all)
    "method value": (["method.name=zhou2019", "method.fusion=attention"],
                     "'method.fusion' (zhou2019) must be one of concat, fbp, got 'attention'"),
    "method choice typo": (["method.name=zhou2019", "method.attention=selff"],
                           "'method.attention' (zhou2019) must be one of self, relation, transformer, got 'selff' "
                           '(did you mean "self"?)'),
    "backbone": (["method.name=zhou2019", "method.backbone=resnet_nope"],
                 "'method.backbone' (zhou2019): unknown backbone 'resnet_nope'"),
    "list entry": (["method.name=zhang2021", "data.dataset=synthetic_affwild2",
                    "method.audio_streams=[mfcc,wavlm]"],
                   "'method.audio_streams.1' (zhang2021) must be one of mfcc, vggish, embeddings, got 'wavlm'"),
    "range (train)": (["train.lr=-1"], "'train.lr' must be > 0"),
    "range (data)": (["data.audio.n_mels=0"], "'data.audio.n_mels' must be >= 1, got 0"),
    "range (method)": (["method.dropout=1.5"], "'method.dropout' (av_fusion) must be < 1"),
    "zhou2019 window too short for its audio CNN": (["method.name=zhou2019", "window.length=1"],
                                                    "zhou2019's audio CNN needs windows of at least 8 audio steps"),
    "even kernel": (["method.name=de3", "method.conv_kernel=4"],
                    "'method.conv_kernel' (de3): must be odd (the Conformer's convolution keeps the frame count), "
                    "got 4"),
    "unknown method key": (["method.name=zhou2019", "method.fbp_kk=3"],
                           "unknown key 'method.fbp_kk' for method zhou2019 (did you mean \"fbp_k\"?)"),
    "search-space value": (["method.name=zhou2019",
                            "tune.search_space={method.attention: {grid: [self, selff]}}"],
                           "'tune.search_space.method.attention' (zhou2019): value 'selff' must be one of"),
    "search-space range": (["tune.search_space={train.lr: {loguniform: [-1, 0.1]}}"],
                           "'tune.search_space.train.lr': value -1 must be > 0"),
    "eval choice": (["eval.ccc_over=videos"], "'eval.ccc_over' must be one of frames, clips, got 'videos'"),
    "mfcc of openSMILE descriptors": (["method.name=zhang2021", "data.dataset=synthetic_affwild2",
                                      "data.audio.features=egemaps"],
                                     "'data.audio.features' egemaps with zhang2021's mfcc audio stream"),
    "mfcc of a swept feature": (["method.name=zhang2021", "data.dataset=synthetic_affwild2",
                                 "tune.search_space={data.audio.features: {grid: [logmel, spectrogram]}}"],
                                "'data.audio.features' spectrogram with zhang2021's mfcc audio stream"),
    "encoder layer": (["data.audio.encoder.layer=last"], "'data.audio.encoder.layer'"),
    "speech embeddings without an encoder": (["method.name=zhou2019", "method.audio_backbone=embeddings"],
                                             "zhou2019 (method.audio_backbone) reads speech embeddings, and "
                                             "'data.audio.encoder.path' is not set"),
    "face embeddings without an encoder": (["method.name=zhou2019", "tune.search_space={method.backbone: "
                                            "{grid: [small_cnn, embeddings]}}"],
                                           "zhou2019 (backbone embeddings) reads face embeddings, and "
                                           "'data.video.encoder.path' is not set"),
    "a frozen-fusion method without an encoder": (["method.name=frozen_fusion"], "method frozen_fusion reads face"),
    "a speech-embedding method without an encoder": (["method.name=audio_embedding"],
                                                     "method audio_embedding reads speech embeddings"),
    "encoder key": (["data.audio.encoder.layers=all"],
                    "unknown key 'data.audio.encoder.layers' (did you mean \"layer\"?)"),
    "per_method method value": (["per_method={av_fusion: {method: {fusion: fbb}}}"],
                                "'per_method.av_fusion.method.fusion': unknown fusion 'fbb'"),
}


@pytest.mark.parametrize("case", sorted(TYPOS))
def test_every_value_is_checked_before_ray_starts(case):
    overrides, expected = TYPOS[case]
    with pytest.raises(ConfigError) as e:  # load() is all the command line does before Ray starts
        load(SWEEPS_DIR / "smoke.yaml", overrides)
    assert any(expected in p for p in e.value.problems), e.value.problems


def test_zhang2021_without_its_mfcc_stream_or_with_log_mel_takes_any_audio_features():
    zhang = SWEEPS_DIR / "zhang2021_affwild2.yaml"
    with pytest.raises(ConfigError):
        load(zhang, ["data.audio.features=egemaps"])
    assert load(zhang, ["data.audio.features=egemaps", "method.audio_streams=[vggish]"])
    assert load(zhang, ["data.audio.features=logmel"])
    assert load(SWEEPS_DIR / "smoke.yaml", ["data.audio.features=egemaps"])  # no zhang2021 in the sweep


def test_cli_refuses_a_bad_method_value_before_ray_starts(tmp_path):
    r = subprocess.run([sys.executable, "-m", "raybench.sweep", "sweeps/smoke.yaml", "method.name=zhou2019",
                        "method.fusion=attention"], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 2 and "Traceback" not in r.stderr and "Ray" not in r.stdout + r.stderr
    assert "'method.fusion' (zhou2019) must be one of concat, fbp, got 'attention'" in r.stderr


def test_method_files_must_exist_and_relative_ones_become_absolute(tmp_path, monkeypatch):
    """Tune runs each trial in its own folder: a relative method.weights named nothing there."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "student.pt").write_bytes(b"x")
    (tmp_path / "teacher.pt").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    p = _write(tmp_path, """
method: {name: schoneveld2021, weights: models/student.pt}
per_method:
  schoneveld2021: {method: {distill_teacher: teacher.pt}}
tune:
  search_space:
    method.name: {grid: [schoneveld2021, zhou2019]}
    method.weights: {grid: [null, models/student.pt]}
""")
    cfg = load(p)
    student, teacher = str(tmp_path / "models" / "student.pt"), str(tmp_path / "teacher.pt")
    assert cfg.method["weights"] == student
    assert cfg.tune.search_space["method.weights"] == {"grid": [None, student]}
    t = resolve_trial_config(cfg, {"method.name": "schoneveld2021", "method.weights": student})
    assert (t.method.weights, t.method.distill_teacher) == (student, teacher)
    with pytest.raises(ConfigError) as e:
        load(p, ["method.weights=models/nope.pt", "per_method.schoneveld2021.method.distill_teacher=/abs/t.pt",
                 "tune.search_space.method.weights.grid=[models]"])
    msg = str(e.value)
    assert f"'method.weights': 'models/nope.pt' is not a file (a relative path is read from {tmp_path})" in msg
    assert "'per_method.schoneveld2021.method.distill_teacher': '/abs/t.pt' is not a file" in msg
    assert "'tune.search_space.method.weights': 'models' is not a file" in msg


def test_relative_local_folders_become_absolute_and_uris_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = _write(tmp_path, """
storage: results
data: {dataset: synthetic_ravdess, root: data/ravdess, store_dir: s3://bucket/stores, audio: {encoder: {path: ~/m}}}
eval: {cross_corpus: [{dataset: synthetic_crema_d, root: ../crema}]}
tune:
  search_space:
    data.root: {grid: [data/a, /abs/b, gs://bucket/c]}
""")
    cfg = load(p)
    assert cfg.storage == str(tmp_path / "results")
    assert cfg.data.root == str(tmp_path / "data" / "ravdess") and cfg.data.store_dir == "s3://bucket/stores"
    assert cfg.data.audio.encoder.path == "~/m"  # already absolute once ~ is expanded: left as written
    assert cfg.eval.cross_corpus[0].root == str(tmp_path.parent / "crema")
    assert cfg.tune.search_space["data.root"] == {"grid": [str(tmp_path / "data" / "a"), "/abs/b", "gs://bucket/c"]}


def test_swept_data_values_meet_the_checks_across_keys():
    """A data value the search space gives is checked with the others as a fixed one is: video_only
    RAVDESS files without the .wav audio, fractions that leave no training set, a dataset given two
    tasks (one sweep ranks a dataset's trials on one metric)."""
    with pytest.raises(ConfigError, match="video_only files have no audio track"):
        load(SWEEPS_DIR / "smoke.yaml", ["data.dataset=ravdess",
                                         "tune.search_space={data.ravdess.video: {grid: [av, video_only]}}"])
    with pytest.raises(ConfigError, match=r"val_fraction \+ test_fraction must be < 1, got 0.6 and 0.5"):
        load(SWEEPS_DIR / "smoke.yaml", ["data.split.test_fraction=0.5",
                                         "tune.search_space={data.split.val_fraction: {grid: [0.3, 0.6]}}"])
    with pytest.raises(ConfigError, match=r"gives dataset 'msp_improv' two tasks \(categorical, continuous\)"):
        load(SWEEPS_DIR / "smoke.yaml", ["data.dataset=msp_improv", "tune.metric=null",
                                         "tune.search_space={data.msp_improv.task: {grid: [categorical, continuous]}}"])
    # values that fit pass
    cfg = load(SWEEPS_DIR / "smoke.yaml", ["data.dataset=ravdess", "data.ravdess.audio=wav",
                                           "tune.search_space={data.ravdess.video: {grid: [av, video_only]}, "
                                           "data.split.val_fraction: {grid: [0.2, 0.3]}}"])
    assert cfg.tune.search_space["data.ravdess.video"] == {"grid": ["av", "video_only"]}
