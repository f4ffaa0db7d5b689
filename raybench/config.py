"""Sweep configuration: load a YAML file, merge OmegaConf dotlist overrides, validate.

Validation runs before Ray starts and reports every problem at once in one
``ConfigError``: unknown keys (with "did you mean"), wrong types, unknown method
or dataset names, a method that does not support the dataset's task, a search
space entry that is malformed or points at a key that does not exist.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from pydantic import ValidationError

from raybench import schema
from raybench.labels import label_map
from raybench.registry import did_you_mean
from raybench.schema import SweepConfig, TrialConfig, type_name

PACKAGE_ROOT = Path(__file__).resolve().parent
SWEEPS_DIR = PACKAGE_ROOT.parent / "sweeps"
DEFAULT_SWEEP = SWEEPS_DIR / "default.yaml"

# Every key a sweep file may set, with its default: the schema's models (raybench/schema.py), except
# the method-specific keys under `method:`, which each method declares (Method.Options).
DEFAULTS: dict[str, Any] = SweepConfig().model_dump()
PER_METHOD_SECTIONS = ("train", "window", "method")
PER_METHOD_FIXED = ("num_workers", "cpus_per_worker", "gpus_per_worker", "use_gpu")  # sized once per sweep

_MISSING = object()

SEARCH_KINDS = {
    "grid": "a non-empty list of values",
    "choice": "a non-empty list of values",
    "uniform": "[low, high]",
    "loguniform": "[low, high] with 0 < low < high",
    "randint": "[low, high) integers",
}
CATEGORICAL_METRICS = ("acc", "uar", "f1")
CONTINUOUS_METRICS = ("ccc", "ccc_valence", "ccc_arousal")


class ConfigError(ValueError):
    """Every problem found in a config, one per line."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n{lines}")


def _to_container(cfg: Any) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else cfg


def builtin_sweeps() -> list[str]:
    """The names of raybench's own sweep files (``sweeps/<name>.yaml``)."""
    return sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))


def sweep_path(arg: str | os.PathLike | None) -> Path:
    """The sweep file a command line names: a path (relative to the working directory), or the bare name
    of one of raybench's own sweep files (``smoke`` is ``<repo>/sweeps/smoke.yaml``) when no file of that
    name is in the working directory. A missing file is a ConfigError that lists the built-in names."""
    if not arg:
        return DEFAULT_SWEEP
    path = Path(arg)
    if path.is_file():
        return path
    own = builtin_sweeps()
    if path.suffix == "" and len(path.parts) == 1 and path.name in own:
        return SWEEPS_DIR / f"{path.name}.yaml"
    if path.stem in own:
        hint = f' (did you mean "{path.stem}", raybench\'s own {SWEEPS_DIR / (path.stem + ".yaml")}?)'
    else:
        hint = did_you_mean(path.stem, own)
    where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
    what = "not a file" if path.exists() else "not found"
    builtins = (f"; raybench's own sweep files can be given by name from any folder: {', '.join(own)} (in "
                f"{SWEEPS_DIR})") if own else ""
    raise ConfigError([f"sweep file {what}: {path}{where}{hint}{builtins}"], source=str(path))


def load_raw(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> dict:
    """Read a sweep YAML (a path or a built-in name, see sweep_path) and apply dotlist overrides; no
    defaults, no validation."""
    path = sweep_path(path)
    problems: list[str] = []
    try:
        base = OmegaConf.load(path)
    except Exception as e:  # yaml errors carry line numbers; keep them
        raise ConfigError([f"cannot parse YAML: {e}"], source=str(path)) from None
    if not isinstance(_to_container(base), dict):
        raise ConfigError(["the top level must be a mapping"], source=str(path))
    ov = []
    for item in overrides or []:
        if "=" not in item:
            problems.append(f"override {item!r} is not of the form key=value{did_you_mean(item, builtin_sweeps())} "
                            f"(nor a sweep file: a path ending in "
                            f".yaml, or one of raybench's own by name: {', '.join(builtin_sweeps())})")
        else:
            ov.append(item)
    if problems:
        raise ConfigError(problems, source="command line")
    try:
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(ov))
    except Exception as e:
        raise ConfigError([f"cannot apply overrides {ov}: {e}"], source="command line") from None
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:  # a sweep file's ``???``: a value the user must give (e.g. a local model folder)
        raise ConfigError([f"{k!r} must be set: {path.name} leaves it ??? (give it on the command line, "
                           f"{k}=...)" for k in missing], source=str(path))
    out = _to_container(merged)
    space = (out.get("tune") or {}).get("search_space") if isinstance(out.get("tune"), dict) else None
    if isinstance(space, dict):
        out["tune"]["search_space"] = _dotted_space(space)
    return out


def _dotted_space(space: dict, prefix: str = "") -> dict:
    """{"method": {"name": {"grid": [..]}}} (what a dotlist override makes) -> {"method.name": {"grid": [..]}}."""
    out = {}
    for k, v in space.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and not (len(v) == 1 and next(iter(v)) in SEARCH_KINDS) and all(
                isinstance(x, dict) for x in v.values()):
            out.update(_dotted_space(v, key + "."))
        else:
            out[key] = v
    return out


def select(cfg: dict, key: str, default: Any = None) -> Any:
    """The value at dotted ``key`` (OmegaConf.select), ``default`` when a part is missing."""
    v = OmegaConf.select(OmegaConf.create(cfg), key, default=default)
    return OmegaConf.to_container(v) if OmegaConf.is_config(v) else v


def with_values(cfg: dict, values: dict[str, Any]) -> dict:
    """A copy of ``cfg`` with the dotted keys of ``values`` set (OmegaConf.update)."""
    c = OmegaConf.create(cfg)
    for k, v in values.items():
        OmegaConf.update(c, k, v, merge=False)
    return OmegaConf.to_container(c)


def _check_search_space(space: Any, problems: list[str]) -> None:
    if not isinstance(space, dict):
        problems.append(f"'tune.search_space' must be a mapping, got {type_name(space)}")
        return
    for key, spec in space.items():
        where = f"tune.search_space.{key}"
        if not isinstance(spec, dict) or len(spec) != 1:
            problems.append(f"{where!r} must be one of {{{', '.join(SEARCH_KINDS)}: ...}}, got {spec!r}")
            continue
        kind, arg = next(iter(spec.items()))
        if kind not in SEARCH_KINDS:
            problems.append(
                f"{where!r}: unknown search kind {kind!r}{did_you_mean(kind, list(SEARCH_KINDS))}; "
                f"known: {', '.join(SEARCH_KINDS)}"
            )
            continue
        if not isinstance(arg, list) or not arg:
            problems.append(f"{where}.{kind} must be {SEARCH_KINDS[kind]}, got {arg!r}")
            continue
        if kind in ("uniform", "loguniform", "randint"):
            ok = len(arg) == 2 and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in arg)
            ok = ok and arg[0] < arg[1] and (kind != "loguniform" or arg[0] > 0)
            ok = ok and (kind != "randint" or all(isinstance(a, int) for a in arg))
            if not ok:
                problems.append(f"{where}.{kind} must be {SEARCH_KINDS[kind]}, got {arg!r}")


def search_values(spec: dict) -> list[Any] | None:
    """The finite list of values a grid/choice entry can take (None for continuous ones)."""
    kind, arg = next(iter(spec.items()))
    return list(arg) if kind in ("grid", "choice") else None


PAIR_KEY = "method.name|data.dataset"


def _plain(cfg: SweepConfig | dict) -> dict:
    """A sweep config as a dict (``validate`` works on the raw dict; the rest of raybench has the
    :class:`SweepConfig` it returns)."""
    return cfg.model_dump() if isinstance(cfg, SweepConfig) else cfg


def pairs_swept(cfg: SweepConfig | dict) -> bool:
    """True when both method.name and data.dataset are grid-swept: their pairs are enumerated
    together and the pairs whose tasks do not fit are left out."""
    space = _plain(cfg).get("tune", {}).get("search_space") or {}
    return all(isinstance(space.get(k), dict) and "grid" in space[k] for k in ("method.name", "data.dataset"))


def valid_pairs(cfg: SweepConfig | dict) -> list[tuple[str, str]]:
    from raybench.registry import DATASETS, METHODS

    cfg = _plain(cfg)
    space = cfg["tune"]["search_space"]
    data = schema.data_config(cfg["data"])
    out = []
    for m in space["method.name"]["grid"]:
        for d in space["data.dataset"]["grid"]:
            mc, dc = METHODS.get_or_none(m), DATASETS.get_or_none(d)
            if mc is not None and dc is not None and dc.task_for(data) in mc.tasks:
                out.append((m, d))
    return out


def _variants(cfg: dict, data_keys: bool = False) -> list[dict]:
    """Configs for every combination of the finite values of method.name and data.dataset (and, with
    ``data_keys``, of every other swept ``data.*`` key but data.fold: the checks across keys)."""
    space = cfg.get("tune", {}).get("search_space") or {}
    if not isinstance(space, dict):
        return [cfg]
    keys = [k for k in ("method.name", "data.dataset") if isinstance(space.get(k), dict)]
    if data_keys:
        keys += [k for k in space if isinstance(k, str) and k.startswith("data.") and k not in keys
                 and k != "data.fold" and isinstance(space[k], dict)]
    values = []
    for k in keys:
        vals = search_values(space[k]) if len(space[k]) == 1 else None
        values.append(vals or [select(cfg, k)])
    out = []
    for combo in itertools.product(*values):
        out.append(with_values(cfg, dict(zip(keys, combo))))
    return out or [cfg]


def reachable_methods(cfg: SweepConfig | dict) -> list[str]:
    """The method names a sweep can run (method.name, or the values its search space gives it)."""
    return list(dict.fromkeys(v["method"].get("name") for v in _variants(_plain(cfg))))


def validate(raw: dict, source: str | None = None) -> SweepConfig:
    """Merge ``raw`` over the defaults and check every value; return the typed sweep config.

    The sections are checked against their schema (raybench/schema.py), the method keys against
    each swept method's ``Options``, the search space's values against the key they sweep. Raises
    ConfigError listing every problem.
    """
    from raybench.registry import DATASETS, METHODS

    source = source or "config"
    _, problems = schema.check(SweepConfig, raw)
    cfg = OmegaConf.to_container(OmegaConf.merge(DEFAULTS, {k: v for k, v in raw.items() if k in DEFAULTS}))
    if not isinstance(cfg.get("method"), dict):
        raise ConfigError(problems + [f"'method' must be a mapping with a 'name', got {cfg.get('method')!r}"], source)
    for sec in ("data", "train", "window", "tune"):  # a section of the wrong type: nothing more to check
        if not isinstance(cfg.get(sec), dict):
            raise ConfigError(problems, source)

    _check_search_space(cfg["tune"]["search_space"], problems)
    space = cfg["tune"]["search_space"] if isinstance(cfg["tune"]["search_space"], dict) else {}

    # names, for every method/dataset the sweep can reach
    seen_pairs = set()
    tasks_of: dict[str, set[str]] = {}  # dataset -> the tasks its swept data values give it
    for variant in _variants(cfg, data_keys=True):
        mname, dname = variant["method"].get("name"), variant["data"].get("dataset")
        key = (mname, json.dumps(variant["data"], sort_keys=True, default=str))
        if key in seen_pairs:
            continue
        seen_pairs.add(key)
        _check_data_across_keys(variant["data"], problems)
        method = METHODS.get_or_none(mname)
        dataset = DATASETS.get_or_none(dname)
        if method is None:
            problems.append(f"'method.name': {METHODS.unknown_message(mname)}")
        if dataset is None:
            problems.append(f"'data.dataset': {DATASETS.unknown_message(dname)}")
        data = schema.check(schema.DataConfig, variant["data"])[0]
        if method is None or dataset is None or data is None:  # a bad data value is reported on its own
            continue
        task = dataset.task_for(data)
        tasks_of.setdefault(dname, set()).add(task)
        if task not in method.tasks and not pairs_swept(cfg):
            problems.append(
                f"method {mname!r} does not support dataset {dname!r}: the dataset's task is "
                f"{task!r}, the method supports {', '.join(method.tasks)}"
            )
        metric = cfg["tune"]["metric"]
        if metric is not None and task in method.tasks:
            allowed = CATEGORICAL_METRICS if task == "categorical" else CONTINUOUS_METRICS
            if not (isinstance(metric, str) and metric.startswith("val/") and metric[4:] in allowed):
                problems.append(
                    f"'tune.metric' {metric!r} does not fit the {task} dataset {dname!r}: "
                    f"expected one of {', '.join('val/' + m for m in allowed)}"
                )

    for dname, tasks in tasks_of.items():
        if len(tasks) > 1:  # a sweep ranks each dataset's trials on one metric (and records them under its name)
            problems.append(f"the search space gives dataset {dname!r} two tasks ({', '.join(sorted(tasks))}): a "
                            "sweep chooses each dataset's best configuration on one metric; run one sweep per task")

    # the cross-corpus targets: known categorical corpora sharing classes with every dataset trained on
    cross = (cfg.get("eval") or {}).get("cross_corpus") or []
    named: dict[str, int] = {}
    for i, target in enumerate(cross if isinstance(cross, list) else []):
        if not isinstance(target, dict) or not isinstance(target.get("dataset"), str):
            continue  # the schema reports its shape
        where = f"'eval.cross_corpus[{i}].dataset'"
        if target["dataset"] in named:  # its metrics are named after the dataset: a second entry would overwrite
            problems.append(f"{where}: {target['dataset']!r} is already eval.cross_corpus[{named[target['dataset']]}]"
                            "; name each target corpus once")
            continue
        named[target["dataset"]] = i
        tds = DATASETS.get_or_none(target["dataset"])
        if tds is None:
            problems.append(f"{where}: {DATASETS.unknown_message(target['dataset'])}")
            continue
        if tds.task != "categorical":
            problems.append(f"{where}: {target['dataset']!r} is {tds.task}; the cross-corpus track maps classes "
                            "between categorical corpora")
            continue
        sources = {d: DATASETS.get_or_none(d) for d in dict.fromkeys(v["data"].get("dataset") for v in _variants(cfg))}
        sources = {d: sds for d, sds in sources.items() if sds is not None}
        if sources and all(sds.task != "categorical" for sds in sources.values()):
            problems.append(f"{where}: the sweep trains on {', '.join(map(repr, sources))}, not a categorical "
                            "dataset; the cross-corpus track maps classes between categorical corpora")
        for dname, sds in sources.items():
            if sds.task != "categorical":
                continue  # a continuous dataset of the sweep: its trials are not tested across corpora
            try:
                label_map(sds.class_names, tds.class_names, target.get("labels"))
            except ValueError as e:
                problems.append(f"'eval.cross_corpus[{i}]' ({dname} -> {target['dataset']}): {e}")

    # method keys: each must belong to at least one method the sweep can run (a sweep over
    # method.name drops a key for the methods that do not have it), and be valid for every such method
    swept = list({m.method_name: m for v in _variants(cfg)
                  if (m := METHODS.get_or_none(v["method"].get("name"))) is not None}.values())
    method_key_union = {"name"} | {k for m in swept for k in m.defaults}
    if swept:
        for k in cfg["method"]:
            if k != "name" and not any(k in m.defaults for m in swept):
                names = sorted({m.method_name for m in swept})
                known = sorted(method_key_union - {"name"})
                problems.append(
                    f"unknown key 'method.{k}' for method {' / '.join(names)}{did_you_mean(k, known)}; "
                    f"known keys: {', '.join(known) or '(none)'}")
        by_problem: dict[str, list[str]] = {}  # one line for a problem several swept methods share
        for m in swept:
            mine = {k: v for k, v in cfg["method"].items() if k in m.defaults}
            for p in schema.check(m.Options, mine, "method.", " (\0)")[1]:
                by_problem.setdefault(p, []).append(m.method_name)
        problems += [p.replace("\0", ", ".join(names)) for p, names in by_problem.items()]
    if pairs_swept(cfg) and not problems and not valid_pairs(cfg):
        problems.append("no method in 'tune.search_space.method.name' supports a dataset in "
                        "'tune.search_space.data.dataset' (their tasks differ)")
    for key, spec in space.items():
        if key.startswith("data.") and isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) not in (
                "grid", "choice"):
            problems.append(f"'tune.search_space.{key}': data settings are swept with grid or choice only "
                            "(each value prepares its own clip store)")

    # search-space keys must name existing settings, and each value must be valid for that setting
    for key, spec in space.items():
        if key in ("method.name", "data.dataset"):
            continue  # names, checked above
        if key.startswith("method."):
            sub = key[len("method."):]
            if sub not in method_key_union:
                problems.append(
                    f"'tune.search_space.{key}': no such method key{did_you_mean(sub, sorted(method_key_union))}"
                )
                continue
            checks = [(m.Options, "tune.search_space.method.", sub, f" ({m.method_name})") for m in swept
                      if sub in m.defaults]
        elif select(DEFAULTS, key, _MISSING) is _MISSING:
            leaf = key.rsplit(".", 1)[-1]
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            siblings = list(select(DEFAULTS, parent, {}) or {}) if parent else list(DEFAULTS)
            problems.append(f"'tune.search_space.{key}': no such setting{did_you_mean(leaf, siblings)}")
            continue
        else:
            checks = [(SweepConfig, "tune.search_space.", key, "")]
        for v in space_values(spec):
            for model, prefix, sub_key, what in checks:
                problems += schema.check(model, with_values({}, {sub_key: v}), prefix, f"{what}: value {v!r}")[1]

    # checks across keys
    t, d = cfg["train"], cfg["data"]
    gpw = t.get("gpus_per_worker")
    if isinstance(gpw, (int, float)) and gpw > 0 and not (gpw <= 1 or float(gpw).is_integer()):
        problems.append(f"'train.gpus_per_worker' must be a fraction in (0, 1] or a whole number, got {gpw!r}")
    elif isinstance(gpw, (int, float)) and gpw < 1 and isinstance(t["num_workers"], int) and t["num_workers"] > 1 \
            and t["use_gpu"] is True:
        problems.append(f"'train.gpus_per_worker' {gpw!r} < 1 needs train.num_workers=1: NCCL cannot put two "
                        "ranks of one trial on the same GPU")
    sp = d["split"] if isinstance(d.get("split"), dict) else {}
    k, fold = sp.get("folds"), d.get("fold")
    if sp.get("protocol") == "chunks" and k is None:
        problems.append("'data.split.protocol' chunks needs 'data.split.folds' (the paper uses 6)")
    space_folds = space.get("data.fold")
    fold_values = [fold] if fold is not None else []
    if isinstance(space_folds, dict):
        for v in space_folds.values():
            fold_values += list(v) if isinstance(v, (list, tuple)) else []
    for f in fold_values:
        if k is None:
            problems.append(f"'data.fold' is {f!r} but 'data.split.folds' is not set (set it to the number of folds)")
            break
        if isinstance(k, int) and (not isinstance(f, int) or isinstance(f, bool) or not 0 <= f < k):
            problems.append(f"'data.fold' must be an integer in 0..{k - 1} (data.split.folds={k}), got {f!r}")

    _check_per_method(cfg, swept, problems)
    _local_paths(cfg, space, problems)
    _check_mfcc_input(cfg, space, swept, problems)
    _check_zhou2019_audio_image(cfg, space, swept, problems)
    _check_face_embeddings(cfg, space, swept, problems)
    if isinstance(cfg["tune"].get("repeats"), int) and cfg["tune"]["repeats"] > 1 and "train.seed" in space:
        problems.append("'tune.search_space.train.seed' and 'tune.repeats' both vary the seed: with repeats, "
                        "each configuration runs with seeds train.seed .. train.seed + repeats - 1 (remove the "
                        "train.seed entry from the search space)")

    if problems:
        raise ConfigError(list(dict.fromkeys(problems)), source)  # one line per problem, once
    return SweepConfig.model_validate(cfg)


def _check_data_across_keys(d: dict, problems: list[str]) -> None:
    """Checks across ``data`` keys, for the fixed values and each combination the search space gives."""
    if not isinstance(d, dict):
        return
    rv = d.get("ravdess") if isinstance(d.get("ravdess"), dict) else {}
    if rv.get("video") == "video_only" and rv.get("audio") != "wav":
        problems.append("'data.ravdess.video' video_only files have no audio track: set data.ravdess.audio=wav "
                        "(the 03-..wav files of the Audio_*_Actors archives)")
    sp = d["split"] if isinstance(d.get("split"), dict) else {}
    vf, tf = sp.get("val_fraction"), sp.get("test_fraction")
    if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (vf, tf)) and vf + tf >= 1:
        problems.append(f"'data.split': val_fraction + test_fraction must be < 1, got {vf!r} and {tf!r}")


def _check_mfcc_input(cfg: dict, space: dict, swept: list, problems: list[str]) -> None:
    """zhang2021's MFCC audio stream is a DCT of log-Mel energies (the authors' MFCCs): a sweep that can
    give it other audio features (a spectrogram, openSMILE's descriptors) is refused up front (an
    encoder's embeddings are another input, ``audio_emb``: the features stay log-Mel)."""
    if not any(m.method_name == "zhang2021" for m in swept):
        return
    audio = cfg["data"].get("audio") if isinstance(cfg["data"].get("audio"), dict) else {}
    feats = {audio.get("features", "logmel"), *space_values(space.get("data.audio.features"))} - {"logmel"}
    pm = ((cfg.get("per_method") or {}).get("zhang2021") or {}).get("method") or {}
    streams = [pm.get("audio_streams", cfg["method"].get("audio_streams", ["mfcc", "vggish"])),
               *space_values(space.get("method.audio_streams"))]
    if feats and any(isinstance(x, (list, tuple)) and "mfcc" in x for x in streams):
        problems.append(f"'data.audio.features' {', '.join(sorted(map(str, feats)))} with zhang2021's mfcc audio "
                        "stream: its MFCCs are a DCT of log-Mel features; use data.audio.features=logmel, or "
                        "method.audio_streams=[vggish]")


def _check_zhou2019_audio_image(cfg: dict, space: dict, swept: list, problems: list[str]) -> None:
    """zhou2019's audio CNN pools the window's time-frequency image three times by 2: a window of fewer than
    8 audio steps (``window.length`` x ``data.audio.frames_per_video_frame``) has no region left, and the
    trial would stop at its first batch; refused up front, naming the keys."""
    if not any(m.method_name == "zhou2019" for m in swept):
        return
    pm = ((cfg.get("per_method") or {}).get("zhou2019") or {})
    if ((pm.get("method") or {}).get("audio_backbone", cfg["method"].get("audio_backbone", "cnn")) != "cnn"
            and not space_values(space.get("method.audio_backbone"))):
        return
    window = cfg.get("window") if isinstance(cfg.get("window"), dict) else {}
    audio = cfg["data"].get("audio") if isinstance(cfg["data"].get("audio"), dict) else {}
    lengths = [(pm.get("window") or {}).get("length", window.get("length", 16)), *space_values(space.get("window.length"))]
    ks = [audio.get("frames_per_video_frame", 4), *space_values(space.get("data.audio.frames_per_video_frame"))]
    lengths = [x for x in lengths if isinstance(x, int) and not isinstance(x, bool)]
    ks = [x for x in ks if isinstance(x, int) and not isinstance(x, bool)]
    if lengths and ks and min(lengths) * min(ks) < 8:
        problems.append(f"zhou2019's audio CNN needs windows of at least 8 audio steps (it pools them 3 times by 2): "
                        f"'window.length' {min(lengths)} x 'data.audio.frames_per_video_frame' {min(ks)} = "
                        f"{min(lengths) * min(ks)}; use a longer window or more steps per frame")


def _check_face_embeddings(cfg: dict, space: dict, swept: list, problems: list[str]) -> None:
    """A method that reads face embeddings (``video_emb`` among its inputs, or ``method.backbone:
    embeddings``, set, swept or per method) needs an image encoder."""
    needs = [m.method_name for m in swept if "video_emb" in getattr(m, "inputs", ())]
    backbones = {cfg["method"].get("backbone"), *space_values(space.get("method.backbone"))}
    for m in swept:
        pm = ((cfg.get("per_method") or {}).get(m.method_name) or {}).get("method") or {}
        if "backbone" in m.defaults and "embeddings" in backbones | {pm.get("backbone")}:
            needs.append(f"{m.method_name} (backbone embeddings)")
    needs = sorted(set(needs))
    _check_speech_embeddings(cfg, space, swept, problems)
    video = cfg["data"].get("video") if isinstance(cfg["data"].get("video"), dict) else {}
    enc = video.get("encoder") if isinstance(video.get("encoder"), dict) else {}
    if needs and not (enc.get("path") or any(space_values(space.get("data.video.encoder.path")))):
        problems.append(f"method {', '.join(needs)} reads face embeddings, and 'data.video.encoder.path' is not set: "
                        "give a local image encoder folder (README: Pretrained encoders)")


def _check_speech_embeddings(cfg: dict, space: dict, swept: list, problems: list[str]) -> None:
    """A method that reads speech embeddings (``audio_emb`` among its inputs, ``method.audio_backbone:
    embeddings``, or zhang2021's ``audio_streams`` with ``embeddings``), set, swept or per method, needs a
    speech encoder."""
    audio = cfg["data"].get("audio") if isinstance(cfg["data"].get("audio"), dict) else {}
    enc = audio.get("encoder") if isinstance(audio.get("encoder"), dict) else {}
    if enc.get("path") or any(space_values(space.get("data.audio.encoder.path"))):
        return
    needs = [m.method_name for m in swept if "audio_emb" in getattr(m, "inputs", ())]
    for m in swept:
        pm = ((cfg.get("per_method") or {}).get(m.method_name) or {}).get("method") or {}
        for key in ("audio_backbone", "audio_streams"):
            if key not in m.defaults:
                continue
            values = [cfg["method"].get(key), pm.get(key), *space_values(space.get(f"method.{key}"))]
            if any(v == "embeddings" or (isinstance(v, (list, tuple)) and "embeddings" in v) for v in values):
                needs.append(f"{m.method_name} (method.{key})")
    if needs:
        problems.append(f"method {', '.join(sorted(set(needs)))} reads speech embeddings, and 'data.audio.encoder.path' is "
                        "not set: give a local speech encoder folder (README: Pretrained encoders)")


def space_values(spec: Any) -> list[Any]:
    """The values a search-space entry can take that can be checked: a grid/choice's values, the
    bounds of a uniform/loguniform/randint range."""
    if not isinstance(spec, dict) or len(spec) != 1:
        return []
    kind, arg = next(iter(spec.items()))
    return list(arg) if kind in SEARCH_KINDS and isinstance(arg, list) else []


# local paths a sweep names, made absolute from the folder it starts in: Ray Tune runs each trial in
# its own folder (a relative method.weights named nothing there) and pyarrow's filesystems refuse a
# relative path ("URI has empty scheme"). The method files a trial's model loads must exist (said
# before anything runs); the folders are checked where they are read.
LOCAL_FILE_KEYS = ("method.weights", "method.distill_teacher")
LOCAL_PATH_KEYS = ("storage", "data.root", "data.store_dir", "data.video.encoder.path", "data.audio.encoder.path")


def _local_paths(cfg: dict, space: dict, problems: list[str]) -> None:
    """``LOCAL_FILE_KEYS`` and ``LOCAL_PATH_KEYS`` wherever the sweep sets them (the sections,
    ``per_method``, the search space's values) and ``eval.cross_corpus[i].root``: a relative local
    path becomes absolute; URIs (``s3://``, ...) and None stay as they are."""

    def absolute(where: str, v, must_be_file: bool):
        if not isinstance(v, str) or not v or "://" in v:
            return v  # None: no path; another type is the schema's to report
        p = Path(v).expanduser()
        if must_be_file and not p.is_file():
            rel = "" if p.is_absolute() else f" (a relative path is read from {os.getcwd()})"
            problems.append(f"'{where}': {v!r} is not a file{rel}")
            return v
        return v if p.is_absolute() else str(p.resolve())

    pm = cfg.get("per_method") if isinstance(cfg.get("per_method"), dict) else {}
    for key in LOCAL_FILE_KEYS + LOCAL_PATH_KEYS:
        file = key in LOCAL_FILE_KEYS
        places = [(cfg, key)] + [(over, f"per_method.{m}.{key}") for m, over in pm.items()
                                 if key.startswith("method.") and isinstance(over, dict)]
        for root, where in places:
            *parents, leaf = key.split(".")
            node = root
            for p in parents:
                node = node.get(p) if isinstance(node, dict) else None
            if isinstance(node, dict) and leaf in node:
                node[leaf] = absolute(where, node[leaf], file)
        spec = space.get(key)
        if isinstance(spec, dict):
            for kind, vals in spec.items():
                if isinstance(vals, list):
                    spec[kind] = [absolute(f"tune.search_space.{key}", v, file) for v in vals]
    for target in (cfg.get("eval") or {}).get("cross_corpus") or []:
        if isinstance(target, dict) and "root" in target:
            target["root"] = absolute("eval.cross_corpus.root", target["root"], False)


def _check_per_method(cfg: dict, swept: list, problems: list[str]) -> None:
    """``per_method``: method names the sweep runs, and train/window/method keys each of them has."""
    from raybench.registry import METHODS

    pm = cfg.get("per_method") or {}
    if not isinstance(pm, dict):
        return  # reported as a type error already
    names = sorted({m.method_name for m in swept})
    sections = {"train": schema.TrainConfig, "window": schema.WindowConfig}
    for mname, over in pm.items():
        where = f"'per_method.{mname}'"
        method = METHODS.get_or_none(mname)
        if method is None:
            problems.append(f"{where}: {METHODS.unknown_message(mname)}")
            continue
        if mname not in names:
            problems.append(f"{where}: the sweep never runs {mname!r} (it runs {', '.join(names)})")
        if not isinstance(over, dict):
            problems.append(f"{where} must be a mapping of train/window/method settings, got {over!r}")
            continue
        for sec, vals in over.items():
            if sec not in PER_METHOD_SECTIONS:
                problems.append(f"{where}: unknown section {sec!r}{did_you_mean(str(sec), list(PER_METHOD_SECTIONS))};"
                                f" per_method takes {', '.join(PER_METHOD_SECTIONS)} settings")
                continue
            if not isinstance(vals, dict):
                problems.append(f"'per_method.{mname}.{sec}' must be a mapping, got {vals!r}")
                continue
            for k in vals:
                if sec == "train" and k in PER_METHOD_FIXED:
                    problems.append(f"'per_method.{mname}.train.{k}': train.{k} is set once for the whole sweep "
                                    "(trials are sized from it)")
            vals = {k: v for k, v in vals.items() if not (sec == "train" and k in PER_METHOD_FIXED)}
            model = method.Options if sec == "method" else sections[sec]
            problems += schema.check(model, vals, f"per_method.{mname}.{sec}.")[1]


def load(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> SweepConfig:
    """Load, override and validate a sweep file; return the typed sweep config."""
    # the problems may come from the file or from the command line's overrides: the source names both
    source = str(sweep_path(path)) + (f" with the command line's {' '.join(overrides)}" if overrides else "")
    return validate(load_raw(path, overrides), source=source)


def resolve_trial_config(cfg: SweepConfig, trial_params: dict) -> TrialConfig:
    """A trial's typed configuration: the sweep config with the trial's sampled dotted params and its
    method's ``per_method`` settings applied; ``method`` is the method's typed options (its defaults
    fill the keys the sweep does not set)."""
    from raybench.registry import METHODS

    params = expand_params(trial_params)
    out = with_values(_plain(cfg), params)
    for sec, vals in ((out.get("per_method") or {}).get(out["method"]["name"]) or {}).items():
        for k, v in vals.items():
            if f"{sec}.{k}" not in params:  # a sampled value wins
                out[sec][k] = copy.deepcopy(v)
    method = METHODS.get(out["method"]["name"])
    # keys of other swept methods do not apply to this one
    mine = {k: v for k, v in out["method"].items() if k in method.defaults}
    try:
        out["method"] = method.options(mine)
        return TrialConfig.model_validate(out)
    except (ValueError, ValidationError) as e:  # validate() checked these values: a bug if reached
        raise ConfigError([str(e)], "trial config") from e


def expand_params(params: dict) -> dict:
    """Trial params with combined keys (``a|b``: {a: .., b: ..}) spread into dotted keys."""
    out = {}
    for k, v in params.items():
        if "|" in k and isinstance(v, dict):
            out.update(v)
        else:
            out[k] = v
    return out
